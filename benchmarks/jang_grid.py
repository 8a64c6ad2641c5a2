"""Jang et al. (2017)'s validation search for the categorical VAE (issue 13), run as a user would.

The paper (Section 4.2; configs/jang2017_categorical_vae.yaml quotes it) chose the SGD
learning rate from {3e-5, 1e-5, 3e-4, 1e-4, 3e-3, 1e-3} and the temperature schedule
tau = max(0.5, exp(-r t)), updated every N steps, from N in {500, 1000} and r in {1e-5, 1e-4}
on the validation set, and reported the test bound (m = 1000, one-hot samples) of the chosen
setting: 101.5 nats (Table 1, "VAE (Cat.)", "Gumbel-S."), with no step count. This script
runs that search with the shipped config: for each (rate, N, r)

    python tools/train.py categorical_vae --config configs/jang2017_categorical_vae.yaml \\
        --set train.learning_rate=RATE --set model.anneal_every=N --set model.anneal_rate=R \\
        --output-dir DIR/lrRATE_NN_rR
    python tools/evaluate.py DIR/lrRATE_NN_rR --split valid --which last \\
        --num-samples 1000 --num-examples 0 --output DIR/lrRATE_NN_rR/valid.json

(the training run's own evaluation.json holds the test bound of the same final model), then
picks the setting with the best valid bound and prints the table with the test bound of every
setting beside it (the chosen one marked: selection by valid, never by test). Each run is a
separate process; an interrupted grid reruns the same command: finished runs are skipped, an
interrupted training resumes from its last epoch (`--resume`), and the table is written to
``DIR/grid.json`` / ``DIR/grid.md`` after every run (atomically).

Run: ``python benchmarks/jang_grid.py --out DIR`` (the whole grid: 24 runs, about 15-25 minutes
each on this 2-core machine), or a part of it, e.g. ``--rates 3e-3 1e-3``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import run_cli  # noqa: E402
from zoo.training.checkpoint import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "jang2017_categorical_vae.yaml")
PAPER_RATES = (3e-5, 1e-5, 3e-4, 1e-4, 3e-3, 1e-3)
PAPER_EVERY = (500, 1000)
PAPER_ANNEAL = (1e-5, 1e-4)
PUBLISHED = 101.5  # Jang et al. 2017, Table 1, VAE (Cat.), Gumbel-S.: -(m = 1000 bound), test


def run_name(rate: float, every: int, anneal: float) -> str:
    return f"lr{rate:g}_N{every}_r{anneal:g}"


def bound_key(evaluation: dict, samples: int) -> float:
    """The m-sample importance-weighted bound of an evaluation.json / valid.json."""
    key = f"iwae_log_likelihood_k{samples}"
    if key not in evaluation:
        raise KeyError(f"no {key} in the evaluation ({sorted(evaluation)}); was it run with "
                       f"--num-samples {samples}?")
    return float(evaluation[key])


def _run(command: list[str], log_path: str) -> None:
    """One step of the grid in its own process, its output appended to ``log_path``."""
    print("  $ " + " ".join(command), flush=True)
    with open(log_path, "a") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); its output "
                           f"is in {log_path}")


def one_setting(out: str, rate: float, every: int, anneal: float, args) -> dict:
    """Train (or resume, or skip when finished) one setting, then its valid bound."""
    run_dir = os.path.join(out, run_name(rate, every, anneal))
    log_path = os.path.join(out, run_name(rate, every, anneal) + ".log")
    sets = [f"train.learning_rate={rate:g}", f"model.anneal_every={every}",
            f"model.anneal_rate={anneal:g}", f"train.epochs={args.epochs}",
            f"train.seed={args.seed}", f"train.eval_samples={args.samples}",
            *args.set]
    evaluation_path = os.path.join(run_dir, "evaluation.json")
    state_path = os.path.join(run_dir, "checkpoints", "state.json")
    start = time.perf_counter()
    trained = 0
    if os.path.exists(state_path):
        with open(state_path) as f:
            trained = int(json.load(f)["epoch"])
    if not os.path.exists(evaluation_path) and trained < args.epochs:
        command = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "categorical_vae",
                   "--config", CONFIG, "--output-dir", run_dir, "--no-plots"]
        if args.dataset:
            command += ["--dataset", args.dataset]
        for item in sets:
            command += ["--set", item]
        if trained:
            command.append("--resume")
        _run(command, log_path)
    if not os.path.exists(evaluation_path):  # trained, stopped in its test evaluation
        _run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), run_dir, "--split",
              "test", "--which", "last", "--num-samples", str(args.samples),
              "--output", evaluation_path], log_path)
    valid_path = os.path.join(run_dir, "valid.json")
    if not os.path.exists(valid_path):
        _run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), run_dir, "--split",
              "valid", "--which", "last", "--num-samples", str(args.samples), "--num-examples",
              str(args.valid_examples), "--output", valid_path], log_path)
    with open(evaluation_path) as f:
        test = json.load(f)
    with open(valid_path) as f:
        valid = json.load(f)
    return {"rate": rate, "anneal_every": every, "anneal_rate": anneal, "run_dir": run_dir,
            "valid_bound": bound_key(valid, args.samples),
            "test_bound": bound_key(test, args.samples), "test_elbo": float(test["elbo"]),
            "valid_examples": valid.get("likelihood_examples", valid.get("examples")),
            "test_examples": test.get("likelihood_examples", test.get("examples")),
            "seconds_this_call": round(time.perf_counter() - start, 1)}


def table(rows: list[dict], samples: int) -> str:
    """The grid as markdown, best valid first; the chosen setting (best valid) marked."""
    rows = sorted(rows, key=lambda r: -r["valid_bound"])
    lines = [f"| rate | N | r | valid −(m = {samples} bound) | test −(m = {samples} bound) | "
             "test −ELBO | chosen by valid |", "|--:|--:|--:|--:|--:|--:|:-:|"]
    for i, r in enumerate(rows):
        lines.append(f"| {r['rate']:g} | {r['anneal_every']} | {r['anneal_rate']:g} | "
                     f"{-r['valid_bound']:.2f} | {-r['test_bound']:.2f} | "
                     f"{-r['test_elbo']:.2f} | {'yes' if i == 0 else ''} |")
    if rows:
        lines.append("")
        lines.append(f"The setting chosen on the valid split gives {-rows[0]['test_bound']:.2f} "
                     f"nats on the test split (the published figure: {PUBLISHED}, "
                     f"{-rows[0]['test_bound'] - PUBLISHED:+.2f}).")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the grid's directory (resumable)")
    parser.add_argument("--rates", type=float, nargs="+", default=list(PAPER_RATES))
    parser.add_argument("--anneal-every", type=int, nargs="+", default=list(PAPER_EVERY))
    parser.add_argument("--anneal-rates", type=float, nargs="+", default=list(PAPER_ANNEAL))
    parser.add_argument("--epochs", type=int, default=100, help="epochs of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1000,
                        help="m of the importance-weighted bound (valid and test)")
    parser.add_argument("--valid-examples", type=int, default=0,
                        help="a seeded random subset of the valid split (0: all 10,000)")
    parser.add_argument("--dataset", default=None, help="override the config's dataset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every run (e.g. train.batch_size=100)")
    args = parser.parse_args(argv)
    for name, values in (("--rates", args.rates), ("--anneal-rates", args.anneal_rates)):
        if any(not v > 0 for v in values):
            parser.error(f"{name} must be positive, got {values}")
    if any(v < 1 for v in args.anneal_every) or args.epochs < 1 or args.samples < 1:
        parser.error("--anneal-every, --epochs and --samples must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    grid = list(itertools.product(args.rates, args.anneal_every, args.anneal_rates))
    for i, (rate, every, anneal) in enumerate(grid, 1):
        print(f"[{i}/{len(grid)}] rate {rate:g}, N {every}, r {anneal:g}", flush=True)
        rows.append(one_setting(args.out, rate, every, anneal, args))
        text = table(rows, args.samples)
        atomic_write_json(os.path.join(args.out, "grid.json"), {"args": vars(args), "rows": rows})
        atomic_write_text(os.path.join(args.out, "grid.md"), text + "\n")
        print(text, flush=True)
    return table(rows, args.samples)


if __name__ == "__main__":
    run_cli(main)

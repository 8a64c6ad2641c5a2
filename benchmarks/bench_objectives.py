"""The chorales DMM trained with each objective (issue 15): ELBO, IWAE (K trajectories) and
FIVO (K particles, resampled), same defaults, data order, epochs and seed; each evaluated by
the IWAE K=100 test NLL per step (and the test -ELBO), with the wall time per epoch.

The model and training settings are the trainer's current defaults for ``dmm`` on
``chorales`` (``zoo.training.config.resolve_config("dmm")``: sizes, KL annealing, batch,
learning rate); only ``objective`` / ``num_particles`` differ between the three runs. The
three models are trained interleaved, one epoch each in turn in one process, so a change of
machine load hits all three alike; an epoch's time excludes the first (tracing) epoch.

    .venv/bin/python benchmarks/bench_objectives.py --epochs 12 --out /tmp/objectives.md
    .venv/bin/python benchmarks/bench_objectives.py --quick   # toy sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.bench_dssm import _chorales  # noqa: E402
from zoo.deep_state_space import DeepMarkovModel  # noqa: E402
from zoo.training.config import resolve_config  # noqa: E402

RUNS = (("ELBO", "elbo"), ("IWAE", "iwae"), ("FIVO", "fivo"))
QUICK = dict(epochs=2, iwae_k=4, limit=12, max_length=12, particles=2,
             model=dict(latent_dim=4, rnn_units=8, emission_units=(8,), transition_units=8,
                        kl_annealing_steps=2))


def defaults() -> tuple[dict, dict]:
    """The trainer's model and train settings for ``dmm`` on ``chorales``."""
    config = resolve_config("dmm", "chorales")
    model = {k: tuple(v) if isinstance(v, list) else v for k, v in config["model"].items()}
    return model, config["train"]


def run(epochs: int, particles: int = 4, iwae_k: int = 100, quick: bool = False,
        seed: int = 0, budget_minutes: float | None = None) -> dict:
    """Train the three models interleaved for ``epochs`` epochs, or fewer where one more
    round (one epoch of each, timed as the last one) would pass ``budget_minutes`` of
    training; returns per-objective results."""
    model_kw, train = defaults()
    data = dict(limit=QUICK["limit"], max_length=QUICK["max_length"]) if quick else {}
    if quick:
        model_kw.update(QUICK["model"])
    train_x, test_x = _chorales("train", data), _chorales("test", data)
    ds = tf.data.Dataset.from_tensor_slices(train_x).shuffle(
        len(train_x["mask"]), seed=seed, reshuffle_each_iteration=True).batch(
        train["batch_size"]).map(DeepMarkovModel.prepare_batch)  # as the trainer: trimmed
    models, times = {}, {}
    for name, objective in RUNS:
        keras.utils.set_random_seed(seed)
        model = DeepMarkovModel(observation_shape=(88,), seed=seed, objective=objective,
                                num_particles=particles, **model_kw)
        model.compile(optimizer=keras.optimizers.Adam(train["learning_rate"]))
        models[name], times[name] = model, []
    begin = time.perf_counter()
    for epoch in range(epochs):
        if budget_minutes is not None and epoch > 0:
            last_round = sum(t[-1] for t in times.values())
            if time.perf_counter() - begin + last_round > 60 * budget_minutes:
                break
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(ds, initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                      callbacks=model.default_callbacks())
            times[name].append(time.perf_counter() - start)
        print(f"[bench_objectives] epoch {epoch + 1}/{epochs}: "
              + ", ".join(f"{n} {t[-1]:.0f} s" for n, t in times.items()), file=sys.stderr,
              flush=True)
    steps = test_x["mask"].sum()
    results = {}
    for name, model in models.items():
        ev = model.evaluate(test_x, batch_size=37, verbose=0, return_dict=True)
        start = time.perf_counter()
        bound = model.log_likelihood(test_x, num_samples=iwae_k, batch_size=4,
                                     chunk_size=min(50, iwae_k), seed=seed)
        per_seq = -bound.log_likelihood / test_x["mask"].sum(1)
        later = times[name][1:] or times[name]
        results[name] = dict(
            nll=float(-bound.log_likelihood.sum() / steps),
            se=float(per_seq.std(ddof=1) / np.sqrt(len(per_seq))),
            neg_elbo=float(-ev["elbo_per_step"]), epoch_s=float(np.median(later)),
            first_epoch_s=times[name][0], eval_s=time.perf_counter() - start,
            per_seq=per_seq)
    config = models["ELBO"].get_config()
    shown = ("inference", "structured_posterior", "filter_inference", "transition",
             "rnn_cell", "latent_dim", "rnn_units", "emission_units", "transition_units",
             "kl_annealing_steps", "initial_state", "resample")
    results["_meta"] = dict(model={k: config[k] for k in shown if k in config}, train=train,
                            n_train=len(train_x["mask"]), n_test=len(test_x["mask"]),
                            test_steps=int(steps), epochs=len(times["ELBO"]),
                            budget_minutes=budget_minutes, particles=particles,
                            iwae_k=iwae_k)
    return results


def table(results: dict) -> str:
    meta = results["_meta"]
    base = results["ELBO"]
    rows = []
    for name, _ in RUNS:
        r = results[name]
        k = "" if name == "ELBO" else f", K={meta['particles']}"
        diff = r["per_seq"] - base["per_seq"]  # paired over the same test chorales
        paired = ("0 (reference)" if name == "ELBO" else
                  f"{diff.mean():+.3f} +/- {diff.std(ddof=1) / np.sqrt(len(diff)):.3f}")
        rows.append([f"{name}{k}", f"{r['nll']:.3f} +/- {r['se']:.3f}", paired,
                     f"{r['neg_elbo']:.3f}", f"{r['epoch_s']:.1f}",
                     f"{r['epoch_s'] / base['epoch_s']:.2f}"])
    return common.markdown_table(
        ["Objective (DMM, chorales)", f"test NLL / step, IWAE K={meta['iwae_k']} (+/- SE)",
         "minus ELBO's NLL, paired per chorale", "test -ELBO / step", "s / epoch (median)",
         "time / ELBO's"], rows)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="stop before a round of epochs that would pass this budget")
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="write the report here (atomically)")
    args = parser.parse_args(argv)
    load = [common.load_average()]
    start = time.perf_counter()
    if args.quick:
        results = run(QUICK["epochs"], QUICK["particles"], QUICK["iwae_k"], quick=True)
    else:
        results = run(args.epochs, args.particles, args.iwae_k,
                      budget_minutes=args.budget_minutes)
    load.append(common.load_average())
    meta = results["_meta"]
    report = (
        f"Machine: {common.machine()} Load averages (1/5/15 min) before and after: "
        f"{'; '.join(load)}. Total {time.perf_counter() - start:.0f} s"
        + (" (quick: toy sizes, numbers meaningless)" if args.quick else "") + ".\n\n"
        + table(results) + "\n\n"
        + f"{meta['n_train']} train / {meta['n_test']} test chorales ({meta['test_steps']} "
          f"test steps); {meta['epochs']} epochs each"
        + (f" (training budget {meta['budget_minutes']:g} min, interleaved)"
           if meta["budget_minutes"] else "")
        + f", batch {meta['train']['batch_size']}, "
          f"Adam {meta['train']['learning_rate']}, model {meta['model']} (the trainer's "
          f"defaults), seed 0 for all three; FIVO resamples ({meta['model'].get('resample')}) "
          f"when the ESS falls below K/2. The test NLL is the K={meta['iwae_k']} "
          f"importance-weighted bound over whole trajectories of each model's own inference "
          f"network; s / epoch excludes the first (tracing) epoch.")
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(report + "\n")
        os.replace(tmp, args.out)
    return report


if __name__ == "__main__":
    print(main())

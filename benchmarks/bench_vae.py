"""VAE, DLGM and CategoricalVAE against plain Keras-example references: quality and throughput.

For each offline dataset (``mnist5k``: 4,000 train / 1,000 test real MNIST digits; ``digits``:
scikit-learn's 8x8 digits, 1,438 / 359) and each zoo model, two kinds of reference written the
way the Keras examples write models (``benchmarks/references.py``, no zoo code):

- **the reference** ("reference for M"): a plain implementation of the *same architecture*
  (same MLP widths, activation, latent layers and posterior family): the Keras example's VAE
  for the VAE, a plainly written two-level DLGM with rank-one-precision posteriors for the
  DLGM, a Gumbel-softmax VAE written like Jang et al.'s notebook, with the same temperature
  schedule, for the CategoricalVAE. "We must be no worse" is judged against it.
- **the Keras VAE** ("Keras VAE for M", DLGM and CategoricalVAE only): the Keras example's
  diagonal-Gaussian VAE with the same MLP and as many latent units, a different model,
  reported for context (is the hierarchy / the discrete latent worth it at this budget?).

Every system gets the same budget: Adam (lr 1e-3), batch 100, the same number of epochs over
the same dynamically binarized training stream (a new Bernoulli draw of every pixel each
epoch, ``zoo.datasets.load(binarize="dynamic")``, rebuilt with the same seed for every system,
so all of them see identical batches), and is trained with several seeds (weights and
sampling noise; the data stream follows the seed too). Evaluation uses one fixed static
binarization of the test split (``load_arrays(binarize="static")``):

- test ELBO: the one-sample ELBO over the whole test split (analytic KL where there is one;
  hard samples for the categorical models);
- the K = 5000 importance-weighted bound (Burda et al. 2016) and the ELBO estimated from the
  same K samples (mean log w), on a fixed random subset of the test split (all of it for
  ``digits``), each system with its own evaluation code (ours: ``log_likelihood``);
- the wall time of that K = 5000 evaluation, and its peak resident memory: the peak RSS
  (polled every 5 ms) minus the RSS just before, measured in a fresh
  process on one batch of 100 test examples with an untrained model of the same shape
  (the peak is per batch and does not depend on the weights; in one long process the
  allocator keeps memory freed by earlier evaluations and hides later peaks). Quick mode
  measures in-process instead;
- training throughput: examples per second of ``fit`` for one epoch, after warm-up, every
  system timed in turn for several rounds (interleaved), median and p90 (first seed's models).

"No worse" compares ours with the reference seed by seed (paired over the same test examples)
and asks that the mean difference over seeds be above -2 standard errors of that mean, for
both the IWAE bound and the test ELBO.

Run: ``python benchmarks/run.py vae [--quick]`` (quick: digits only, one seed, tiny budget,
K = 200), or ``python benchmarks/bench_vae.py [--quick] [--out FILE]``; the ``vae`` section
of ``benchmarks/README.md`` holds the tables of a full run with their reading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import load_average, machine, markdown_table, measure  # noqa: E402
from benchmarks.references import (  # noqa: E402
    ReferenceCategoricalVAE,
    ReferenceDLGM,
    ReferenceVAE,
)
from zoo import datasets  # noqa: E402
from zoo.categorical_vae import CategoricalVAE  # noqa: E402
from zoo.dlgm import DLGM  # noqa: E402
from zoo.vae import VAE  # noqa: E402

MODELS = ("VAE", "DLGM", "CategoricalVAE")
REFERENCE = "reference"  # "reference for M": the same architecture, written plainly
CONTEXT = "Keras VAE"  # "Keras VAE for M": the Keras example's VAE, for context
ROLES = ("ours", "reference", "context")
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
SUBSET_SEED = 0


class Budget(NamedTuple):
    epochs: int
    eval_examples: int | None  # None: the whole test split
    num_samples: int
    throughput_repeats: int
    seeds: tuple


FULL = {"mnist5k": Budget(30, 500, 5000, 5, (0, 1, 2, 3, 4)),
        "digits": Budget(60, None, 5000, 5, (0, 1, 2, 3, 4))}
QUICK = {"digits": Budget(1, 24, 200, 1, (0,))}


def _arch(ours, reference, context=None):
    return {"ours": ours, "reference": reference, "context": context}


# Per dataset and model: the zoo model's constructor arguments, its same-architecture
# reference's, and (DLGM, CategoricalVAE) the Keras-example VAE with the same MLP and as many
# latent units (N categorical variables standing for N units in the CategoricalVAE's case).
# The reference DLGM starts its noise maps G_l at the identity as ours does (with Keras'
# default Glorot start it is 3-4 nats worse on mnist5k, measured while writing this).
ARCHITECTURES = {
    "mnist5k": {
        "VAE": _arch(dict(latent_dim=20, hidden_units=(200,), activation="relu",
                          covariance="diag"),
                     dict(hidden_units=(200,), latent_dim=20, activation="relu")),
        "DLGM": _arch(dict(latent_dims=(20, 10), hidden_units=(200,), activation="tanh",
                           covariance="lowrank"),
                      dict(latent_dims=(20, 10), hidden_units=(200,), activation="tanh",
                           noise_map_initializer="identity"),
                      dict(hidden_units=(200,), latent_dim=30, activation="tanh")),
        "CategoricalVAE": _arch(dict(num_variables=20, num_classes=10,
                                     hidden_units=(512, 256), activation="relu"),
                                dict(num_variables=20, num_classes=10,
                                     hidden_units=(512, 256), activation="relu"),
                                dict(hidden_units=(512, 256), latent_dim=20, activation="relu")),
    },
    "digits": {
        "VAE": _arch(dict(latent_dim=8, hidden_units=(64,), activation="relu",
                          covariance="diag"),
                     dict(hidden_units=(64,), latent_dim=8, activation="relu")),
        "DLGM": _arch(dict(latent_dims=(8, 4), hidden_units=(64,), activation="tanh",
                           covariance="lowrank"),
                      dict(latent_dims=(8, 4), hidden_units=(64,), activation="tanh",
                           noise_map_initializer="identity"),
                      dict(hidden_units=(64,), latent_dim=12, activation="tanh")),
        "CategoricalVAE": _arch(dict(num_variables=8, num_classes=10, hidden_units=(128, 64),
                                     activation="relu"),
                                dict(num_variables=8, num_classes=10, hidden_units=(128, 64),
                                     activation="relu"),
                                dict(hidden_units=(128, 64), latent_dim=8, activation="relu")),
    },
}


def system_name(model: str, role: str) -> str:
    return {"ours": model, "reference": f"{REFERENCE} for {model}",
            "context": f"{CONTEXT} for {model}"}[role]


def roles_of(dataset: str, model: str) -> list[str]:
    return [r for r in ROLES if ARCHITECTURES[dataset][model][r] is not None]


def describe_architecture(model: str, kwargs: dict) -> str:
    mlp = f"MLP {'-'.join(map(str, kwargs['hidden_units']))} {kwargs['activation']}"
    if model == "VAE":
        return f"diag Gaussian, latent {kwargs['latent_dim']}, {mlp}"
    if model == "DLGM":
        return (f"rank-one precision, latents {'+'.join(map(str, kwargs['latent_dims']))}, "
                f"{mlp}, G_l from the identity")
    return (f"{kwargs['num_variables']} x {kwargs['num_classes']} categorical (relaxed in "
            f"training, hard at evaluation; tau from 1, r = 3e-5 every 500 steps), {mlp}")


# ------------------------------------------------------------------------------ memory
class PeakRSS:
    """Context manager: the peak resident set size above the starting RSS, polled by a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak_delta = 0

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self.rss()
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        # Not ru_maxrss: Linux carries the parent's high-water mark across fork + exec.
        self.peak = max(self.peak, self.rss())
        self.peak_delta = self.peak - self.start
        return False


# ------------------------------------------------------------------------------ systems
class System(NamedTuple):
    name: str  # "VAE", "reference for VAE", "Keras VAE for DLGM", ...
    model: keras.Model
    callbacks: list
    test_elbo: Callable[[np.ndarray], np.ndarray]  # per-example one-sample ELBO
    iwae: Callable[[np.ndarray, int], tuple]  # (per-example IWAE_K, mean log w)


def ours_elbo(model, x, batch_size=500):
    fn = tf.function(lambda xb: model(xb, training=False)["elbo"])
    return np.concatenate([np.asarray(fn(tf.constant(x[i:i + batch_size])), np.float64)
                           for i in range(0, len(x), batch_size)])


def _ours_iwae(model, x, k):
    r = model.log_likelihood(x, num_samples=k, batch_size=100, chunk_size=500, seed=0)
    return np.asarray(r.log_likelihood, np.float64), np.asarray(r.elbo, np.float64)


def build_system(dataset: str, model: str, role: str, input_shape, seed: int) -> System:
    kwargs = ARCHITECTURES[dataset][model][role]
    name = system_name(model, role)
    keras.utils.set_random_seed(seed)
    if role == "ours":
        cls = {"VAE": VAE, "DLGM": DLGM, "CategoricalVAE": CategoricalVAE}[model]
        net = cls(input_shape=input_shape, seed=seed, **kwargs)
        net.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
        return System(name, net, net.default_callbacks(), lambda x: ours_elbo(net, x),
                      lambda x, k: _ours_iwae(net, x, k))
    cls = ReferenceVAE if role == "context" else {
        "VAE": ReferenceVAE, "DLGM": ReferenceDLGM, "CategoricalVAE": ReferenceCategoricalVAE,
    }[model]
    net = cls(int(np.prod(input_shape)), seed=seed, **kwargs)
    net.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    return System(name, net, net.callbacks(), net.elbo,
                  lambda x, k: net.iwae(x, num_samples=k, batch_size=100, chunk_size=500))


MEMORY_EXAMPLES = 100  # one evaluation batch: the K-sample evaluation's peak is per batch


def eval_memory_here(dataset: str, model: str, role: str, num_samples: int) -> int:
    """Peak RSS added by one K-sample evaluation of ``MEMORY_EXAMPLES`` test examples.

    Memory does not depend on the weights or on how many batches follow (examples go in
    batches of 100, particles in chunks of 500), so an untrained model and one batch give the
    peak of the whole evaluation.
    """
    x = datasets.load_arrays(dataset, "test", binarize="static")["image"][:MEMORY_EXAMPLES]
    system = build_system(dataset, model, role, x.shape[1:], seed=0)
    with PeakRSS() as mem:
        system.iwae(x, num_samples)
    return mem.peak_delta


def eval_memory(dataset: str, model: str, role: str, num_samples: int) -> int | str:
    """``eval_memory_here`` in a fresh Python process, so that memory freed by an earlier
    evaluation and kept by the allocator cannot hide this one's peak."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory", dataset, model,
           str(num_samples), "--role", role]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                             check=True).stdout
        return int(json.loads(out.strip().splitlines()[-1])["peak_rss_delta"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
        return f"failed ({type(e).__name__})"


class Result(NamedTuple):
    """One system trained with one seed."""

    train_s: float
    test_elbo: np.ndarray  # whole test split
    subset_elbo: np.ndarray  # one-sample ELBO on the K-sample subset
    iwae: np.ndarray
    iwae_elbo: np.ndarray
    eval_s: float
    eval_rss: int | str | None  # bytes, fresh process (first seed only; quick: in-process)


def run_dataset(dataset: str, budget: Budget, quick: bool):
    """Train and evaluate every system with every seed; then time fit interleaved.

    Returns ``results[name]``: a list of :class:`Result`, one per seed, and the timings."""
    def train_stream(seed):  # rebuilt with the same seed, it repeats the same epochs
        return datasets.load(dataset, "train", batch_size=BATCH_SIZE, binarize="dynamic",
                             seed=seed, keys="image")

    x_test = datasets.load_arrays(dataset, "test", binarize="static")["image"]
    n_train = len(datasets.load_arrays(dataset, "train")["image"])
    if budget.eval_examples is None or budget.eval_examples >= len(x_test):
        subset = np.arange(len(x_test))
    else:
        subset = np.sort(np.random.default_rng(SUBSET_SEED).choice(
            len(x_test), budget.eval_examples, replace=False))
    x_sub = x_test[subset]
    results: dict[str, list[Result]] = {}
    first_systems = []
    for seed in budget.seeds:
        for model in MODELS:
            for role in roles_of(dataset, model):
                system = build_system(dataset, model, role, x_test.shape[1:], seed)
                start = time.perf_counter()
                system.model.fit(train_stream(seed), epochs=budget.epochs, verbose=0,
                                 callbacks=system.callbacks)
                train_s = time.perf_counter() - start
                test_elbo = system.test_elbo(x_test)
                start = time.perf_counter()
                with PeakRSS() as mem:
                    iwae, iwae_elbo = system.iwae(x_sub, budget.num_samples)
                eval_s = time.perf_counter() - start
                print(f"bench_vae: {dataset} seed {seed} {system.name}: trained {train_s:.0f} "
                      f"s, K-sample evaluation {eval_s:.0f} s, IWAE {iwae.mean():.2f}",
                      file=sys.stderr, flush=True)
                rss = None
                if seed == budget.seeds[0]:
                    rss = mem.peak_delta if quick else eval_memory(
                        dataset, model, role, budget.num_samples)
                    first_systems.append(system)
                results.setdefault(system.name, []).append(Result(
                    train_s, test_elbo, test_elbo[subset], iwae, iwae_elbo, eval_s, rss))
    # Throughput: one epoch of fit per call, systems interleaved, after warm-up.
    train_ds = train_stream(budget.seeds[0])
    timings = measure(
        {s.name: (lambda s=s: s.model.fit(train_ds, epochs=1, verbose=0,
                                            callbacks=s.callbacks)) for s in first_systems},
        repeats=budget.throughput_repeats, warmup=1, min_seconds=0.0,
    )
    return results, timings, n_train, len(x_test), len(subset)


# ------------------------------------------------------------------------------ tables
def mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def fmt(v) -> str:
    m, s = mean_se(v)
    return f"{m:.2f} ± {s:.2f}"


def seed_summary(per_seed: list[np.ndarray]) -> tuple[float, float]:
    """Mean over seeds and its standard error across seeds; with one seed, over examples."""
    if len(per_seed) == 1:
        return mean_se(per_seed[0])
    return mean_se([np.mean(v) for v in per_seed])


def over_seeds(per_seed: list[np.ndarray]) -> str:
    m, s = seed_summary(per_seed)
    return f"{m:.2f} ± {s:.2f}"


def per_seed(per_seed: list[np.ndarray]) -> str:
    return " / ".join(f"{np.mean(v):.2f}" for v in per_seed)


def system_names(dataset: str) -> list[str]:
    return [system_name(m, r) for m in MODELS for r in roles_of(dataset, m)]


def quality_table(dataset: str, results: dict) -> str:
    rows = []
    for name in system_names(dataset):
        rs = results[name]
        first = rs[0]
        rss = first.eval_rss
        rows.append([
            name, over_seeds([r.test_elbo for r in rs]), over_seeds([r.iwae for r in rs]),
            per_seed([r.iwae for r in rs]),
            fmt(first.iwae - first.iwae_elbo), fmt(first.iwae - first.subset_elbo),
            f"{np.mean([r.train_s for r in rs]):.1f}", f"{np.mean([r.eval_s for r in rs]):.1f}",
            f"{rss / 2**20:.0f}" if isinstance(rss, int) else str(rss),
        ])
    return markdown_table(
        ["system", "test ELBO (whole split)", "IWAE K", "IWAE K per seed",
         "IWAE − mean log w (first seed)", "IWAE − ELBO (subset, first seed)", "train s",
         "K-eval s", "K-eval peak RSS MiB (+)"],
        rows,
    )


def paired(ours: list[Result], other: list[Result]):
    """Per seed, the paired mean differences (test ELBO, IWAE), and their summaries."""
    d_elbo = [o.test_elbo - r.test_elbo for o, r in zip(ours, other)]
    d_iwae = [o.iwae - r.iwae for o, r in zip(ours, other)]
    return d_elbo, d_iwae, seed_summary(d_elbo), seed_summary(d_iwae)


def comparison_table(dataset: str, results: dict) -> tuple[str, list]:
    """Ours − the same-architecture reference, seed by seed, and the verdicts."""
    rows, verdicts = [], []
    for model in MODELS:
        ours, ref = results[model], results[system_name(model, "reference")]
        d_elbo, d_iwae, (m_elbo, s_elbo), (m_iwae, s_iwae) = paired(ours, ref)
        no_worse = m_iwae > -2 * s_iwae and m_elbo > -2 * s_elbo
        tighter = all(mean_se(r.iwae - r.iwae_elbo)[0] > 2 * mean_se(r.iwae - r.iwae_elbo)[1]
                      and np.all(r.iwae >= r.iwae_elbo - 1e-6) for r in (*ours, *ref))
        rows.append([model, per_seed(d_elbo), over_seeds(d_elbo), per_seed(d_iwae),
                     over_seeds(d_iwae), "yes" if no_worse else "**no**",
                     "yes" if tighter else "**no**"])
        verdicts.append((model, no_worse, tighter, m_iwae, s_iwae, m_elbo, s_elbo))
    table = markdown_table(
        ["model", "Δ test ELBO per seed", "Δ test ELBO", "Δ IWAE K per seed", "Δ IWAE K",
         "no worse (Δ > −2 SE, both)", "IWAE tighter than ELBO"],
        rows,
    )
    return table, verdicts


def context_table(dataset: str, results: dict) -> str:
    """Ours − the Keras-example VAE with the same MLP and as many latent units."""
    rows = []
    for model in MODELS:
        if "context" not in roles_of(dataset, model):
            continue
        d_elbo, d_iwae, _, _ = paired(results[model], results[system_name(model, "context")])
        rows.append([model, over_seeds(d_elbo), over_seeds(d_iwae)])
    return markdown_table(["model", "Δ test ELBO (ours − Keras VAE)", "Δ IWAE K"], rows)


def throughput_table(dataset: str, timings: dict, n_train: int) -> str:
    rows = []
    for model in MODELS:
        ref = timings[system_name(model, "reference")]
        for name in (system_name(model, r) for r in roles_of(dataset, model)):
            t = timings[name]
            if not hasattr(t, "median"):
                rows.append([name, f"failed ({t.reason})", "", ""])
                continue
            rows.append([name, f"{n_train / t.median:,.0f}", f"{n_train / t.p90:,.0f}",
                         f"{ref.median / t.median:.2f}x"])
    return markdown_table(
        ["system", "examples/s (median)", "examples/s (p90 time)", "speed ÷ reference"], rows)


def main(quick: bool = False) -> str:
    budgets = QUICK if quick else FULL
    parts = [f"Machine: {machine()}", ""]
    parts.append(
        f"Budget (same for every system): Adam lr {LEARNING_RATE:g}, batch {BATCH_SIZE}, "
        + ", ".join(f"{b.epochs} epochs on {d} (seeds {', '.join(map(str, b.seeds))})"
                    for d, b in budgets.items())
        + "; training on dynamically binarized pixels (a fresh Bernoulli draw each epoch), "
        "evaluation on one fixed static binarization of the test split. Nats per example, "
        "higher is better. With several seeds, a cell is the mean over seeds ± its standard "
        "error across seeds (each seed's value a mean over test examples); with one seed, "
        "± the standard error over test examples. \"first seed\" columns: the first seed's "
        "model, ± over test examples."
    )
    all_verdicts = []
    for dataset, budget in budgets.items():
        load_before = load_average()
        start = time.perf_counter()
        results, timings, n_train, n_test, n_sub = run_dataset(dataset, budget, quick)
        elapsed = time.perf_counter() - start
        load_after = load_average()
        table, verdicts = comparison_table(dataset, results)
        all_verdicts += [(dataset, *v) for v in verdicts]
        archs = "; ".join(
            f"{m}: {describe_architecture(m, ARCHITECTURES[dataset][m]['ours'])}"
            for m in MODELS)
        contexts = "; ".join(
            f"for {m}: latent {ARCHITECTURES[dataset][m]['context']['latent_dim']}"
            for m in MODELS if "context" in roles_of(dataset, m))
        parts += [
            "", f"### {dataset}", "",
            f"{n_train} training examples, {n_test} test examples; K = {budget.num_samples} "
            f"importance samples on {n_sub} test examples (a fixed random subset, seed "
            f"{SUBSET_SEED}) in batches of 100 examples x chunks of 500 samples. "
            f"Architectures (each reference has the same): {archs}. Keras VAE (diag Gaussian, "
            f"same MLP) {contexts}. Wall time {elapsed:.0f} s; load average (1/5/15 min) "
            f"before: {load_before}; after: {load_after}.",
            "", "Quality:", "", quality_table(dataset, results),
            "", "Ours − the same-architecture reference, paired over the same test examples, "
            "seed by seed:", "", table,
            "", "For context, ours − the Keras-example VAE with the same MLP and as many latent "
            "units (a different model):", "", context_table(dataset, results),
            "", f"Training throughput, one epoch of `fit` ({n_train} examples) per call, "
            f"{budget.throughput_repeats} interleaved rounds after one warm-up epoch:", "",
            throughput_table(dataset, timings, n_train),
        ]
    worse = [v for v in all_verdicts if not v[2]]
    loose = [v for v in all_verdicts if not v[3]]
    parts += ["", "### Verdicts", ""]
    parts.append(
        "- No worse than the same-architecture reference (mean paired Δ IWAE and Δ test ELBO "
        "over seeds both > −2 SE): "
        + ("holds for every model and dataset." if not worse else "fails for "
           + "; ".join(f"{d} {m} (Δ IWAE {mi:.2f} ± {si:.2f}, Δ ELBO {me:.2f} ± {se:.2f})"
                       for d, m, _, _, mi, si, me, se in worse) + ".")
    )
    parts.append(
        "- IWAE (K samples) tighter than the ELBO: "
        + ("holds for every system and seed (IWAE − mean log w of the same K samples > 2 SE, "
           "and IWAE ≥ mean log w for every example)." if not loose else "fails for "
           + ", ".join(f"{d} {m}" for d, m, *_ in loose) + ".")
    )
    return "\n".join(parts)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--memory", nargs=3, metavar=("DATASET", "MODEL", "K"),
                        help="internal: print one K-sample evaluation's peak RSS as JSON")
    parser.add_argument("--role", choices=ROLES, default="ours", help="with --memory")
    args = parser.parse_args()
    if args.memory:
        dataset, model, k = args.memory
        delta = eval_memory_here(dataset, model, args.role, int(k))
        print(json.dumps({"peak_rss_delta": delta}))
        sys.exit(0)
    section = main(quick=args.quick)
    print(section)
    if args.out:
        Path(args.out).write_text(section + "\n")

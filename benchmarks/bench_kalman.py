"""Kalman filter log-likelihood: ours vs TFP LinearGaussianStateSpaceModel and CPU libraries.

State dim 4, observation dim 2, float64, parameters shared by all series; each call returns
the log-likelihood of every series (filterpy has no log-likelihood in ``batch_filter``, so it
runs the filter only). Throughput is timesteps x series per second for T in {100, 1000,
10000} and B in {1, 256}, all measured in one run and interleaved by
:func:`benchmarks.common.measure`. The first call (trace + XLA compile + one run) is reported
separately. Optional competitors (statsmodels, pykalman, filterpy, simdkalman) are imported
if installed; the table says which were missing. Libraries that filter one series at a time
in a Python loop (statsmodels' compiled filter is called per series; pykalman and filterpy
are pure Python loops) are timed on a few of the 256 series and their throughput, which does
not depend on B, is reported per series (marked †).

Run: ``python benchmarks/run.py kalman [--quick] [--write]`` or
``python benchmarks/bench_kalman.py [--quick] [--targets] [--repeats N]`` (``--targets``:
only the rows that issue 17's targets compare: the model paths, the pure function with and
without the steady state, parameters as arguments, TFP-XLA and statsmodels).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Failed,
    Timing,
    first_call,
    load_average,
    machine,
    markdown_table,
    measure,
)
from zoo.layers import kalman_inference as ki  # noqa: E402

tfd = tfp.distributions
N, P = 4, 2
SUBSET = 2  # series timed for per-series Python-loop libraries at B = 256
OPTIONAL = ("statsmodels", "pykalman", "filterpy", "simdkalman")


def system_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, N))
    a = 0.95 * a / np.max(np.abs(np.linalg.eigvals(a)))
    q = 0.1 * np.eye(N) + 0.02 * np.ones((N, N))
    h = rng.normal(size=(P, N))
    r = np.eye(P)
    return dict(m0=np.zeros(N), p0=np.eye(N), a=a, q=q, h=h, r=r)


def simulate(prm: dict, batch: int, steps: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(prm["m0"], prm["p0"], size=batch)
    lq, lr = np.linalg.cholesky(prm["q"]), np.linalg.cholesky(prm["r"])
    ys = np.empty((batch, steps, P))
    for t in range(steps):
        if t:
            x = x @ prm["a"].T + rng.normal(size=(batch, N)) @ lq.T
        ys[:, t] = x @ prm["h"].T + rng.normal(size=(batch, P)) @ lr.T
    return ys


# ------------------------------------------------------------------------------ systems
def ours(prm, steps, method="sequential", steady_state=True):
    params = ki.LGSSMParams(*[tf.constant(prm[k]) for k in ("m0", "p0", "a", "q", "h", "r")])
    fn = tf.function(lambda y: ki.kalman_filter(params, y, method=method, validate_args=False,
                                                steady_state=steady_state).log_likelihood,
                     jit_compile=True)
    return fn


def ours_arguments(prm, steps):
    """The training path: parameters passed to the compiled function as arguments."""
    params = [tf.constant(prm[k]) for k in ("m0", "p0", "a", "q", "h", "r")]
    fn = tf.function(lambda y, *p: ki.kalman_filter(ki.LGSSMParams(*p), y, validate_args=False)
                     .log_likelihood, jit_compile=True)
    return lambda y: fn(y, *params)


def _model(prm):
    from zoo.kalman_filter import KalmanFilterModel

    return KalmanFilterModel.from_matrices(prm["a"], prm["h"], prm["q"], prm["r"], prm["m0"],
                                           prm["p0"], dtype="float64")


def model_log_likelihood(prm, steps):
    """The documented model path: ``zoo.KalmanFilter.log_likelihood`` called eagerly (its
    checks on the host, then its own compiled filter reading the weights)."""
    return _model(prm).log_likelihood


def model_filter_jit(prm, steps):
    """``zoo.KalmanFilter.filter(y).log_likelihood`` inside the caller's
    ``tf.function(jit_compile=True)``."""
    model = _model(prm)
    return tf.function(lambda y: model.filter(y).log_likelihood, jit_compile=True)


def tfp_lgssm(prm, steps):
    return tfd.LinearGaussianStateSpaceModel(
        steps, tf.linalg.LinearOperatorFullMatrix(prm["a"]),
        tfd.MultivariateNormalTriL(tf.zeros(N, tf.float64), np.linalg.cholesky(prm["q"])),
        tf.linalg.LinearOperatorFullMatrix(prm["h"]),
        tfd.MultivariateNormalTriL(tf.zeros(P, tf.float64), np.linalg.cholesky(prm["r"])),
        tfd.MultivariateNormalTriL(prm["m0"], np.linalg.cholesky(prm["p0"])))


def tfp_xla(prm, steps):
    model = tfp_lgssm(prm, steps)
    return tf.function(model.log_prob, jit_compile=True)


def tfp_eager(prm, steps):
    return tfp_lgssm(prm, steps).log_prob


def statsmodels_filter(prm, steps):
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    def run(y):
        out = []
        for series in y:
            kf = KalmanFilter(k_endog=P, k_states=N, k_posdef=N)
            kf.design, kf.obs_cov, kf.transition = prm["h"], prm["r"], prm["a"]
            kf.selection, kf.state_cov = np.eye(N), prm["q"]
            kf.initialize_known(prm["m0"], prm["p0"])
            kf.bind(np.ascontiguousarray(series))
            out.append(kf.loglike())
        return np.array(out)
    return run


def pykalman_filter(prm, steps):
    import pykalman

    kf = pykalman.KalmanFilter(
        transition_matrices=prm["a"], observation_matrices=prm["h"],
        transition_covariance=prm["q"], observation_covariance=prm["r"],
        initial_state_mean=prm["m0"], initial_state_covariance=prm["p0"])
    return lambda y: np.array([kf.loglikelihood(series) for series in y])


def filterpy_filter(prm, steps):
    from filterpy.kalman import KalmanFilter

    def run(y):
        for series in y:
            kf = KalmanFilter(dim_x=N, dim_z=P)
            kf.F, kf.H, kf.Q, kf.R = prm["a"], prm["h"], prm["q"], prm["r"]
            kf.x, kf.P = prm["m0"].copy(), prm["p0"].copy()
            kf.batch_filter(series, update_first=True)
        return np.full(len(y), np.nan)  # no log-likelihood from batch_filter
    return run


def simdkalman_filter(prm, steps):
    import simdkalman

    kf = simdkalman.KalmanFilter(state_transition=prm["a"], process_noise=prm["q"],
                                 observation_model=prm["h"], observation_noise=prm["r"])

    def run(y):
        res = kf.compute(y, 0, initial_value=prm["m0"], initial_covariance=prm["p0"],
                         smoothed=False, filtered=False, states=False, covariances=False,
                         observations=False, log_likelihood=True)
        # simdkalman leaves out the constant -p/2 log(2 pi) of every step; add it back so the
        # log-likelihoods can be compared (it costs nothing).
        return np.asarray(res.log_likelihood) - 0.5 * P * y.shape[1] * np.log(2 * np.pi)
    return run


EAGER_MAX_STEPS = 100  # TFP eager takes seconds per 100 steps: longer sequences are skipped

# (label, builder, module needed, per-series Python loop)
SYSTEMS = (
    ("ours, XLA, sequential", lambda p, t: ours(p, t), None, False),
    ("ours, XLA, sequential, no steady state", lambda p, t: ours(p, t, steady_state=False),
     None, False),
    ("ours, XLA, parallel", lambda p, t: ours(p, t, method="parallel"), None, False),
    ("ours, XLA, parameters as arguments", ours_arguments, None, False),
    ("zoo.KalmanFilter.log_likelihood (eager call)", model_log_likelihood, None, False),
    ("zoo.KalmanFilter.filter in jit tf.function", model_filter_jit, None, False),
    ("TFP LGSSM, XLA", tfp_xla, None, False),
    ("TFP LGSSM, eager", tfp_eager, None, False),
    ("statsmodels KalmanFilter (Cython)", statsmodels_filter, "statsmodels", True),
    ("pykalman", pykalman_filter, "pykalman", True),
    ("filterpy (filter only, no log-lik)", filterpy_filter, "filterpy", True),
    ("simdkalman", simdkalman_filter, "simdkalman", False),
)
REFERENCE = "TFP LGSSM, XLA"
OURS = "ours, XLA, sequential"
NO_STEADY = "ours, XLA, sequential, no steady state"
MODEL_PATHS = ("zoo.KalmanFilter.log_likelihood (eager call)",
               "zoo.KalmanFilter.filter in jit tf.function")
STATSMODELS = "statsmodels KalmanFilter (Cython)"


def missing_modules() -> list[str]:
    out = []
    for mod in OPTIONAL:
        try:
            importlib.import_module(mod)
        except ImportError:
            out.append(mod)
    return out


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for mod in OPTIONAL:
        try:
            found.append(f"{mod} {version(mod)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found) or "none"


# ------------------------------------------------------------------------------ running
# ``--targets``: only the rows that issue 17's Kalman targets compare (the model paths, the
# pure function with and without the steady state, TFP-XLA and statsmodels), in minutes.
TARGET_SYSTEMS = (OURS, NO_STEADY, "ours, XLA, parameters as arguments", *MODEL_PATHS,
                  REFERENCE, STATSMODELS)


def run(sizes, batches, repeats, min_seconds, slow_limit, only=None):
    """{(T, B, label): (first-call seconds or Failed, Timing or Failed, series timed, ll)}."""
    prm = system_params()
    missing = set(missing_modules())
    results = {}
    for steps in sizes:
        y_all = simulate(prm, max(batches), steps)
        for batch in batches:
            y = y_all[:batch]
            calls = {}
            for label, build, module, per_series in SYSTEMS:
                if module in missing or (only is not None and label not in only):
                    continue
                if label == "TFP LGSSM, eager" and steps > EAGER_MAX_STEPS:
                    results[(steps, batch, label)] = (Failed("skipped: too slow"), None, 0, None)
                    continue
                timed = min(batch, SUBSET) if per_series else batch
                data = y[:timed] if per_series else tf.constant(y[:timed])
                try:
                    fn = build(prm, steps)
                except Exception as e:  # noqa: BLE001
                    results[(steps, batch, label)] = (Failed(type(e).__name__), None, timed, None)
                    continue
                call = (lambda fn=fn, data=data: fn(data))
                first = first_call(call)
                ll = None if isinstance(first, Failed) else np.asarray(call())[:1]
                results[(steps, batch, label)] = (first, first, timed, ll)
                if isinstance(first, Failed):
                    continue
                # A call slower than slow_limit is timed once more, not repeated.
                start = time.perf_counter()
                call()
                once = time.perf_counter() - start
                if once > slow_limit:
                    results[(steps, batch, label)] = (first, Timing(once, once, 1, 1), timed, ll)
                else:
                    calls[label] = call
            timings = measure(calls, repeats=repeats, warmup=1, min_seconds=min_seconds)
            for label, timing in timings.items():
                first, _, timed, ll = results[(steps, batch, label)]
                results[(steps, batch, label)] = (first, timing, timed, ll)
    return results


def throughput(entry, steps):
    _, timing, timed, _ = entry
    if not isinstance(timing, Timing):
        return None
    return steps * timed / timing.median


def fmt_rate(x):
    return "n/a" if x is None else f"{x:.3g}"


def report(results, sizes, batches, quick, load_before, repeats, min_seconds, slow_limit):
    combos = [(t, b) for t in sizes for b in batches]
    labels = [s[0] for s in SYSTEMS]
    missing = missing_modules()
    rows, first_rows = [], []
    for label, *_, per_series in SYSTEMS:
        if not any((t, b, label) in results for t, b in combos):
            continue
        cells, firsts = [], []
        for t, b in combos:
            entry = results.get((t, b, label))
            if entry is None:
                cells.append("n/a")
                firsts.append("n/a")
                continue
            first = entry[0]
            if isinstance(first, Failed):
                skipped = first.reason.startswith("skipped")
                cells.append(first.reason if skipped else f"failed ({first.reason})")
                firsts.append("skipped" if skipped else "failed")
                continue
            rate = throughput(entry, t)
            ref = throughput(results.get((t, b, REFERENCE), (None, None, 0, None)), t)
            ratio = f" ({rate / ref:.2f}x)" if rate and ref else ""
            mark = "†" if per_series and b > entry[2] else ""
            cells.append(f"{fmt_rate(rate)}{mark}{ratio}")
            firsts.append(f"{first * 1e3:,.0f}")
        rows.append([label, *cells])
        first_rows.append([label, *firsts])
    header = ["system", *[f"T={t}, B={b}" for t, b in combos]]
    # Agreement of the log-likelihoods (first series, largest T) as a sanity check.
    t_big = sizes[-1]
    ref_ll = results.get((t_big, batches[0], OURS), (None, None, 0, None))[3]
    agree = []
    for label in labels:
        entry = results.get((t_big, batches[0], label))
        if entry is None or entry[3] is None or ref_ll is None or not np.isfinite(entry[3][0]):
            continue
        agree.append(f"{label}: {abs(entry[3][0] - ref_ll[0]) / abs(ref_ll[0]):.1e}")
    out = [
        f"Machine: {machine()}",
        f"Competitors: {versions()}." + (f" Missing (not installed): {', '.join(missing)}."
                                         if missing else " None missing."),
        "",
        f"State dim {N}, observation dim {P}, float64, parameters shared by the B series; "
        "each call returns the log-likelihood of every series. Cells: timesteps x series per "
        f"second (median of {repeats} interleaved repeats, each ≥ {min_seconds * 1e3:.0f} ms; "
        f"calls slower than {slow_limit:.0f} s timed once) and, in brackets, the ratio to "
        f"{REFERENCE} (higher is faster). † = timed on {SUBSET} of the {max(batches)} series "
        f"(a per-series loop). TFP eager runs only for T ≤ {EAGER_MAX_STEPS}: it takes seconds "
        "per call there already. "
        f"{'**Quick mode** (smoke run, not for quoting). ' if quick else ''}"
        f"Load average (1/5/15 min) before: {load_before}; after: {load_average()}.",
        "",
        markdown_table(header, rows),
        "",
        "First call (trace + compile + one run), milliseconds:",
        "",
        markdown_table(header, first_rows),
        "",
        f"Relative difference of the first series' log-likelihood from ours at T={t_big}, "
        f"B={batches[0]}: " + "; ".join(agree) + ".",
    ]
    out += ["", targets(results, sizes, batches)]
    return "\n".join(out)


def targets(results, sizes, batches) -> str:
    lines = []

    def rate(t, b, label):
        entry = results.get((t, b, label))
        return None if entry is None else throughput(entry, t)

    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    big = max(batches)
    for t in sizes:
        for label in (OURS, NO_STEADY):
            o, r = rate(t, big, label), rate(t, big, REFERENCE)
            if o and r:
                lines.append(f"- B={big}, T={t}, {label}: {o:.3g} vs TFP-XLA {r:.3g} steps/s "
                             f"= {o / r:.2f}x (target ≥ 3x: {met(o >= 3 * r)}).")
    for t in sizes:
        for b in batches:
            pure = rate(t, b, OURS)
            for label in MODEL_PATHS:
                m = rate(t, b, label)
                if m and pure:
                    lines.append(f"- T={t}, B={b}, {label}: {m / pure:.2f}x the pure function "
                                 f"(target ≥ 0.9x: {met(m >= 0.9 * pure)}).")
    for t in sizes:
        s = rate(t, 1, STATSMODELS)
        for label in (OURS,) + MODEL_PATHS[:1]:
            o = rate(t, 1, label)
            if o and s:
                lines.append(f"- One series, T={t}, {label}: {o:.3g} vs statsmodels {s:.3g} "
                             f"steps/s = {o / s:.2f}x (target ≥ 1x at T=100: "
                             f"{met(o >= s)}).")
    return "**Targets**\n\n" + "\n".join(lines) if lines else ""


def main(quick: bool = False, targets_only: bool = False, repeats: int | None = None) -> str:
    """Run the benchmark and return its markdown section (``targets_only``: the rows of
    ``TARGET_SYSTEMS`` alone)."""
    load_before = load_average()
    sizes = (100,) if quick else (100, 1000, 10000)
    batches = (1, 8) if quick else (1, 256)
    default, min_seconds, slow_limit = (3, 0.005, 1.0) if quick else (7, 0.05, 2.0)
    repeats = repeats or default
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")
    try:
        results = run(sizes, batches, repeats, min_seconds, slow_limit,
                      TARGET_SYSTEMS if targets_only else None)
    finally:
        logger.setLevel(level)
    return report(results, sizes, batches, quick, load_before, repeats, min_seconds,
                  slow_limit)


if __name__ == "__main__":
    argv = sys.argv[1:]
    print(main(quick="--quick" in argv, targets_only="--targets" in argv,
               repeats=int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else None))

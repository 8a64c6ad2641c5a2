"""GaussianPosterior: sample + log q + KL per covariance family, eager vs tf.function vs XLA.

One forward call on a batch of 256 feature vectors (64 features) draws one z per example and
returns (z, log q(z), KL(q || N(0, I))). The same math is timed, in the same run and modes,
with ``tfp.layers`` under tf_keras (``IndependentNormal`` for "diag",
``MultivariateNormalTriL`` for "full"; tfp.layers has no rank-one-precision layer), and with
a dense ``tfd.MultivariateNormalFullCovariance`` built from ``(D + u u^T)^-1`` to show what
the O(d) closed form of "lowrank" saves.

Run: ``python benchmarks/run.py gaussian [--quick] [--write]``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Failed,
    Timing,
    first_call,
    fmt_ratio,
    fmt_seconds_ms,
    fmt_us,
    load_average,
    machine,
    markdown_table,
    measure,
)
from zoo.layers.gaussian_posterior import GaussianPosterior  # noqa: E402

tfd, tfpl = tfp.distributions, tfp.layers

BATCH, FEATURES = 256, 64
MODES = ("eager", "function", "xla")
MODE_TITLES = {"eager": "eager", "function": "tf.function", "xla": "XLA"}
# (label, family) of every row, in table order.
SYSTEMS = (
    ("ours", "diag"),
    ("ours", "lowrank"),
    ("ours", "full"),
    ("ours, noise given", "diag"),
    ("ours, noise given", "lowrank"),
    ("ours, noise given", "full"),
    ("tfp.layers IndependentNormal", "diag"),
    ("tfp.layers (none)", "lowrank"),
    ("tfp.layers MultivariateNormalTriL", "full"),
    ("dense MVNFullCovariance((D+uu^T)^-1)", "lowrank"),
)
NO_EQUIVALENT = "tfp.layers (none)"


# ------------------------------------------------------------------------------ systems
def ours(family: str, d: int, noise_given: bool = False):
    """Our layer; returns (z, log_q, kl). No KL loss and no finiteness check, as in tfp.layers.

    With ``noise_given`` the standard-normal draw is an input instead of ``keras.random``, to
    separate the random number generator's cost from the family's math.
    """
    layer = GaussianPosterior(d, covariance=family, add_kl_loss=False, validate_args=False, seed=0)

    def f(x, eps):
        out = layer(x, noise=eps) if noise_given else layer(x)
        return out["z"], out["log_q"], out["kl"]

    return f


def tfp_layers(family: str, d: int):
    """tf_keras Dense -> tfp.layers distribution layer; sample, log_prob, KL to N(0, I)."""
    if family == "diag":
        head = tfpl.IndependentNormal(d)
        size = tfpl.IndependentNormal.params_size(d)
        prior = tfd.Independent(tfd.Normal(tf.zeros(d), 1.0), 1)
    else:
        head = tfpl.MultivariateNormalTriL(d)
        size = tfpl.MultivariateNormalTriL.params_size(d)
        prior = tfd.MultivariateNormalDiag(tf.zeros(d), tf.ones(d))
    model = tf_keras.Sequential([tf_keras.layers.Dense(size), head])

    def f(x, eps):
        q = model(x)
        z = tf.convert_to_tensor(q)  # the sample the layer already drew
        return z, q.log_prob(z), tfd.kl_divergence(q, prior)

    return f


def dense_rank_one(d: int):
    """The "lowrank" family through a dense covariance: inverse + Cholesky, O(d^3)."""
    layer = GaussianPosterior(d, covariance="lowrank", add_kl_loss=False, validate_args=False)
    prior = tfd.MultivariateNormalDiag(tf.zeros(d), tf.ones(d))

    def f(x, eps):
        p = layer.posterior_parameters(x)
        u = p["precision_factor"]
        precision = tf.linalg.diag(p["precision_diag"]) + u[..., :, None] * u[..., None, :]
        q = tfd.MultivariateNormalFullCovariance(p["loc"], tf.linalg.inv(precision))
        z = q.sample()
        return z, q.log_prob(z), tfd.kl_divergence(q, prior)

    return f


def build(label: str, family: str, d: int):
    if label.startswith("ours"):
        return ours(family, d, noise_given=label.endswith("noise given"))
    if label.startswith("tfp.layers"):
        return tfp_layers(family, d)
    return dense_rank_one(d)


def in_mode(f, mode: str):
    if mode == "eager":
        return f
    return tf.function(f, jit_compile=(mode == "xla"), reduce_retracing=True)


# ------------------------------------------------------------------------------ running
def run(dims, repeats: int, min_seconds: float, warmup: int):
    """{(d, label, family, mode): (first-call seconds or Failed, Timing or Failed)}."""
    x = tf.random.stateless_normal([BATCH, FEATURES], seed=[1, 2])
    calls, firsts = {}, {}
    for d in dims:
        eps = tf.random.stateless_normal([BATCH, d], seed=[3, 4])
        for label, family in SYSTEMS:
            if label == NO_EQUIVALENT:
                continue
            f = build(label, family, d)
            f(x, eps)  # build the variables outside any tf.function
            for mode in MODES:
                g = in_mode(f, mode)
                key = (d, label, family, mode)
                call = (lambda g=g, eps=eps: g(x, eps))
                firsts[key] = first_call(call)
                if not isinstance(firsts[key], Failed):
                    calls[key] = call
    # One interleaved measurement over every size, so the growth exponents compare times
    # taken under the same load.
    timings = measure(calls, repeats=repeats, warmup=warmup, min_seconds=min_seconds)
    return {key: (first, timings.get(key, first)) for key, first in firsts.items()}


def growth_exponent(t_small: Timing | Failed | None, t_big, d_small: int, d_big: int):
    """Slope of log(time) against log(d) between two sizes."""
    if not isinstance(t_small, Timing) or not isinstance(t_big, Timing):
        return None
    return math.log(t_big.median / t_small.median) / math.log(d_big / d_small)


def report(results, dims, quick: bool, load_before: str, repeats: int, min_seconds: float) -> str:
    rows = []
    for d in dims:
        for label, family in SYSTEMS:
            if label == NO_EQUIVALENT:
                rows.append([d, label, family, *["no tfp.layers equivalent"] * 3, "", ""])
                continue
            times = [results[(d, label, family, m)][1] for m in MODES]
            diag = [results[(d, "ours", "diag", m)][1] for m in MODES]
            firsts = [results[(d, label, family, m)][0] for m in MODES]
            rows.append([
                d,
                label,
                family,
                *[fmt_us(t) for t in times],
                " / ".join(fmt_ratio(t, b) for t, b in zip(times, diag)),
                " / ".join(fmt_seconds_ms(s) for s in firsts),
            ])
    header = [
        "d", "system", "family",
        *[f"{MODE_TITLES[m]} µs (median / p90)" for m in MODES],
        "÷ ours diag (eager / fn / XLA)", "first call ms (eager / fn / XLA)",
    ]
    out = [
        f"Machine: {machine()}",
        "",
        f"Batch {BATCH}, {FEATURES} input features, one sample per example; each call returns "
        "z, log q(z) and KL(q ‖ N(0, I)). Microseconds per call, median / p90 over "
        f"{repeats} interleaved repeats (each repeat averages enough calls to last "
        f"≥ {min_seconds * 1e3:.0f} ms). First call = trace + compile + one run. "
        f"{'**Quick mode** (smoke run, not for quoting). ' if quick else ''}"
        f"Load average (1/5/15 min) before: {load_before}; after: {load_average()}.",
        "",
        markdown_table(header, rows),
    ]
    if len(dims) > 1 and 256 in dims and 64 in dims:
        out += ["", targets(results)]
    return "\n".join(out)


def targets(results) -> str:
    """Plain statements of the issue's targets, computed from the measured medians."""

    def median_ratio(key_a, key_b):
        a, b = results[key_a][1], results[key_b][1]
        return a.median / b.median if isinstance(a, Timing) and isinstance(b, Timing) else None

    def fmt(ratios):
        return ", ".join(
            f"{MODE_TITLES[m]} {r:.2f}x" if r is not None else f"{MODE_TITLES[m]} n/a"
            for m, r in ratios.items()
        )

    ratio = {
        label: {m: median_ratio((256, label, "lowrank", m), (256, label, "diag", m)) for m in MODES}
        for label in ("ours", "ours, noise given")
    }
    ok = all(r is not None and r <= 2.0 for rs in ratio.values() for r in rs.values())
    lines = [
        "**Target 1 — lowrank within 2x of diag at d = 256: "
        + ("met" if ok else "NOT met")
        + f"** (lowrank ÷ diag: {fmt(ratio['ours'])}; "
        + f"with the noise given: {fmt(ratio['ours, noise given'])})."
    ]
    exps, exp_rows = {}, []
    for label, family in SYSTEMS:
        if label == NO_EQUIVALENT:
            continue
        for m in MODES:
            exps[(label, family, m)] = growth_exponent(
                results[(64, label, family, m)][1], results[(256, label, family, m)][1], 64, 256
            )
        exp_rows.append([
            label, family, *["n/a" if exps[(label, family, m)] is None
                             else f"{exps[(label, family, m)]:.2f}" for m in MODES]
        ])
    compiled = [exps[("ours", "full", m)] for m in ("function", "xla")]
    grows = all(e is not None and e >= 1.5 for e in compiled)
    lines += [
        "",
        "**Target 2 — \"full\" shows its growth: "
        + ("met" if grows else "NOT met")
        + "** (exponent of ours/full under tf.function and XLA: "
        + ", ".join("n/a" if e is None else f"{e:.2f}" for e in compiled)
        + "; near 2 = O(d^2): the layer emits the Cholesky factor directly, so its own cost "
        "is the O(d^2) factor, matvec and triangular solve, while the O(d^3) inverse + Cholesky "
        "shows in the dense MVNFullCovariance row). Exponent p in time ∝ d^p between d = 64 "
        "and d = 256 (slope of log median time against log d; 0 = flat). A fixed per-call "
        "overhead pulls every exponent down, most in eager mode:",
        "",
        markdown_table(["system", "family", *[f"p ({MODE_TITLES[m]})" for m in MODES]], exp_rows),
    ]
    return "\n".join(lines)


def main(quick: bool = False) -> str:
    """Run the benchmark and return its markdown section."""
    load_before = load_average()
    dims = (16,) if quick else (16, 64, 256)
    repeats, min_seconds, warmup = (3, 0.005, 1) if quick else (15, 0.02, 2)
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # one tf.function per mode trips the retracing warning
    try:
        results = run(dims, repeats=repeats, min_seconds=min_seconds, warmup=warmup)
    finally:
        logger.setLevel(level)
    return report(results, dims, quick, load_before, repeats, min_seconds)


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))

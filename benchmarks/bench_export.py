"""Exported decoders and filter steps: file size per quantization, single-frame latency in
LiteRT (XNNPACK, one thread) against the Keras model called eagerly and as a ``tf.function``.

Rows:
- VAE decoder 16-512-512-784 (Bernoulli): ``decode`` through the export protocol, and the
  bare decoder network (logits only, no probabilistic wrapper) converted the same way, the
  reference of the "within 1.2x of the bare network" target.
- DLGM (50, 50) and CategoricalVAE (20 x 10) decoders at their MNIST sizes (full run only).
- Kalman filter step, state 4, observation 2 (target <= 10 us per frame): the model's own
  ``filter_step``; inputs ``state`` (mean, covariance and started flag packed in one vector of
  21), ``observation``, ``observed``; outputs ``state``, ``estimate``, ``uncertainty``,
  ``log_likelihood``.
- LSTM Kalman filter step (the model's own ``filter_step``, with ``observed``), state 4,
  observation 2, three 64-unit LSTMs.
- DKF (q-RNN) and DMM (ST-L) filter steps at their default sizes: 88 binary values per frame,
  latent 32, GRU 256, emission 100-100 (target <= 50 us per frame).

Latency is timed per call (``perf_counter_ns``), median and p99 over N calls after warm-up
(N shrinks, to at least 10, where the calls would take more than 5 s).
"LiteRT frame" copies every input in, invokes and copies every output out (what an app does
per frame, :class:`export.runtime.SignatureCall`); "invoke" is the interpreter alone; "runner
step" is :meth:`export.runtime.StreamingFilter.step` with the state held between frames (the
previous output state fed back, the frame's inputs checked, every output copied out, through
``SignatureCall.frame_runner``).

Run: ``python benchmarks/run.py export [--quick] [--write]`` (``--write`` rewrites its
section of ``benchmarks/README.md``: this text and the results).

``python benchmarks/bench_export.py --particle [--quick]`` prints only the particle-filter
table (:func:`particle_main`, issue 15): the exported ``filter_step`` of a bootstrap particle
filter over a linear-Gaussian model (state 2, observation 1, systematic resampling at ESS <
N/2) at N = 100 and N = 1000, with the O(N^2) "compare" and the O(N) "linear" resampling.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import load_average, machine, markdown_table  # noqa: E402
from zoo.export.exporter import export_spec_of, export_tflite  # noqa: E402
from zoo.export.litert import load_interpreter  # noqa: E402
from zoo.export.protocol import ExportSpec, Signature, spec  # noqa: E402
from zoo.export.runtime import SignatureCall, StreamingFilter  # noqa: E402

MODES = (None, "dynamic", "float16", "int8")
DKF = "DKF q-RNN filter_step 88-32-GRU256"
DMM = "DMM ST-L filter_step 88-32-GRU256"
TARGETS = {"decoder_vs_bare": 1.2, "kalman_us": 10.0, "dkf_us": 50.0, "quant_size": 0.30}


class _Bare:
    """The decoder network alone, exported through the same protocol (the reference)."""

    def __init__(self, network, latent_dim):
        self.network, self.latent_dim = network, latent_dim
        self.name = "bare_decoder"

    def export_spec(self, batch_size=1):
        return ExportSpec({"decode": Signature(
            lambda z: {"logits": self.network(z)}, {"z": spec((batch_size, self.latent_dim), "z")},
            lambda rng: {"z": rng.standard_normal((batch_size, self.latent_dim)).astype(
                "float32")})}, {"model": "bare decoder network"})


def _times(fn, n, warmup=20, budget_s=5.0):
    """Median and p99 in us of n timed calls (fewer, at least 10, for slow calls)."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    n = max(10, min(n, int(budget_s / max(time.perf_counter() - start, 1e-9))))
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - start
    return float(np.median(out)) / 1e3, float(np.percentile(out, 99)) / 1e3


def _fmt(t):
    return "n/a" if t is None else f"{t[0]:,.1f} / {t[1]:,.1f}"


def _block(out):
    for v in tf.nest.flatten(out):
        np.asarray(v)


def _bench_model(label, model, signature, tmp, n_lite, n_eager, modes, calib=None):
    """Sizes and latencies of one exported signature; returns a dict of table cells."""
    es = export_spec_of(model, signature)
    sig = es.signatures[signature]
    example = sig.example(np.random.default_rng(0))
    row = {"label": label, "sizes": {}, "lite": {}, "invoke": None, "parity": None,
           "runner": None}
    for mode in modes:
        path = os.path.join(tmp, f"{label.replace(' ', '_')}_{mode}.tflite")
        meta = export_tflite(model, path, what=signature, quantize=mode,
                             representative_data=calib if mode == "int8" else None)
        row["sizes"][mode] = meta["size_bytes"]
        call = SignatureCall(load_interpreter(path, num_threads=1), signature)
        feed = {k: np.asarray(v, np.float32) for k, v in example.items()}
        row["lite"][mode] = _times(lambda: call(**feed), n_lite)
        if mode is None:
            row["invoke"] = _times(call.invoke, n_lite)
            row["parity"] = max(p["max_rel"] for p in meta["parity"][signature].values())
            if signature == "filter_step":
                stream = StreamingFilter(path, num_threads=1)
                frame = {k: feed[k] for k in stream.frame_inputs}
                row["runner"] = _times(lambda: stream.step(**frame), n_lite)
    tensors = {k: tf.constant(v) for k, v in example.items()}
    row["eager"] = _times(lambda: _block(sig.fn(**tensors)), n_eager, warmup=3)
    fn = tf.function(lambda kw: sig.fn(**kw), autograph=False)
    row["function"] = _times(lambda: _block(fn(tensors)), n_eager * 3, warmup=3)
    return row


def main(quick: bool = False) -> str:
    from zoo.categorical_vae import CategoricalVAE
    from zoo.deep_state_space import DeepKalmanFilter, DeepMarkovModel
    from zoo.dlgm import DLGM
    from zoo.kalman_filter import KalmanFilterModel
    from zoo.lstm_kalman_filter import LSTMKalmanFilter
    from zoo.vae import VAE

    keras.utils.set_random_seed(0)
    load_before = load_average()
    n_lite, n_eager = (300, 30) if quick else (5000, 300)
    modes = (None, "dynamic") if quick else MODES
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vae = VAE(input_shape=(784,), latent_dim=16, hidden_units=(512, 512), seed=0)
        calib = {"decode": [{"z": np.random.default_rng(i).standard_normal((1, 16)).astype(
            "float32")} for i in range(32)]}
        rows.append(_bench_model("bare decoder 16-512-512-784", _Bare(vae.decoder, 16),
                                 "decode", tmp, n_lite, n_eager, modes, calib))
        rows.append(_bench_model("VAE decode 16-512-512-784", vae, "decode", tmp, n_lite,
                                 n_eager, modes, calib))
        if not quick:
            dlgm = DLGM(input_shape=(784,), latent_dims=(50, 50), hidden_units=(200,), seed=0)
            rows.append(_bench_model("DLGM decode (50, 50)-200-784", dlgm, "decode", tmp,
                                     n_lite, n_eager, modes))
            cat = CategoricalVAE(input_shape=(784,), seed=0)
            rows.append(_bench_model("CategoricalVAE decode 20x10-256-512-784", cat, "decode",
                                     tmp, n_lite, n_eager, modes))
        kf = KalmanFilterModel(4, use_offsets=True, dtype="float64")
        kf.build((None, None, 2))
        rows.append(_bench_model("Kalman filter_step n=4, p=2", kf, "filter_step", tmp, n_lite,
                                 n_eager, (None,)))
        lkf = LSTMKalmanFilter(state_dim=4, observation_dim=2,
                               observation_matrix=[[1, 0, 0, 0], [0, 1, 0, 0]])
        rows.append(_bench_model("LSTM-KF filter_step n=4, p=2, 3x LSTM64", lkf, "filter_step",
                                 tmp, n_lite, n_eager, (None,)))
        dkf = DeepKalmanFilter(seed=0)
        rows.append(_bench_model(DKF, dkf, "filter_step", tmp, n_lite, n_eager, modes[:2]))
        if not quick:
            dmm = DeepMarkovModel(inference="st-l", seed=0)
            rows.append(_bench_model(DMM, dmm, "filter_step", tmp, n_lite, n_eager, modes[:2]))
    bare = rows[0]["lite"][None]

    size_rows = []
    for r in rows:
        f32 = r["sizes"][None]
        cells = [f"{f32 / 1024:,.1f}"]
        for mode in MODES[1:]:
            s = r["sizes"].get(mode)
            cells.append("n/a" if s is None else f"{s / 1024:,.1f} ({100 * s / f32:.0f}%)")
        size_rows.append([r["label"], *cells, f"{r['parity']:.1e}"])
    lat_rows = []
    for r in rows:
        same_net = r is rows[0] or r["label"].startswith("VAE decode")
        ratio = f"{r['lite'][None][0] / bare[0]:.2f}x" if same_net else ""
        lat_rows.append([r["label"], _fmt(r["lite"][None]), _fmt(r["invoke"]),
                         "" if r["runner"] is None else _fmt(r["runner"]),
                         *[_fmt(r["lite"].get(m)) for m in MODES[1:]],
                         _fmt(r["eager"]), _fmt(r["function"]), ratio])

    def ok(flag):
        return "met" if flag else "NOT met"

    by = {r["label"]: r for r in rows}
    vae_row, kf_row = by["VAE decode 16-512-512-784"], by["Kalman filter_step n=4, p=2"]
    dec_ratio = vae_row["lite"][None][0] / bare[0]
    dyn = vae_row["sizes"]["dynamic"] / vae_row["sizes"][None]
    int8 = (vae_row["sizes"]["int8"] / vae_row["sizes"][None]) if "int8" in vae_row["sizes"] \
        else None
    targets = [
        f"- VAE decoder within {TARGETS['decoder_vs_bare']}x of the bare network (LiteRT frame, "
        f"float32): {dec_ratio:.2f}x, {ok(dec_ratio <= TARGETS['decoder_vs_bare'])}.",
        f"- Kalman step (n=4, p=2) at most {TARGETS['kalman_us']:.0f} us per frame: invoke "
        f"{kf_row['invoke'][0]:.1f} us ({ok(kf_row['invoke'][0] <= TARGETS['kalman_us'])}); "
        f"with the Python copies in and out {kf_row['lite'][None][0]:.1f} us "
        f"({ok(kf_row['lite'][None][0] <= TARGETS['kalman_us'])}); through the streaming "
        f"runner (state held, inputs checked) {kf_row['runner'][0]:.1f} us "
        f"({ok(kf_row['runner'][0] <= TARGETS['kalman_us'])}).",
        *[f"- {label} at most {TARGETS['dkf_us']:.0f} us per frame: invoke "
          f"{by[label]['invoke'][0]:.1f} us, with copies {by[label]['lite'][None][0]:.1f} us "
          f"({ok(by[label]['lite'][None][0] <= TARGETS['dkf_us'])})." for label in (DKF, DMM)
          if label in by],
        f"- Dynamic-range file at most 30% of float32 (VAE decoder): {100 * dyn:.0f}%, "
        f"{ok(dyn <= TARGETS['quant_size'])}"
        + ("." if int8 is None else f"; int8: {100 * int8:.0f}%, "
           f"{ok(int8 <= TARGETS['quant_size'])}."),
        f"- Float32 parity within 1e-5 relative: worst {max(r['parity'] for r in rows):.1e}, "
        f"{ok(max(r['parity'] for r in rows) <= 1e-5)}.",
    ]
    gpu = tf.config.list_physical_devices("GPU")
    return "\n".join([
        __doc__.strip(),
        "",
        "### Results",
        "",
        f"Machine: {machine()}",
        "",
        f"Batch 1 (one frame). Microseconds per call, median / p99 over {n_lite:,} LiteRT calls "
        f"(XNNPACK, 1 thread) and {n_eager:,} eager / {3 * n_eager:,} tf.function calls. "
        f"Load average before: {load_before}; after: {load_average()}. "
        + ("GPU: none on this machine (not measured)." if not gpu else f"GPU: {gpu}."),
        "",
        "File size in KiB (share of the float32 file), and the float32 file's worst relative "
        "difference from Keras:",
        "",
        markdown_table(["exported", "float32", "dynamic", "float16", "int8",
                        "parity (rel)"], size_rows),
        "",
        "Latency per frame, µs (median / p99):",
        "",
        markdown_table(["exported", "LiteRT f32 frame", "LiteRT f32 invoke",
                        "runner step (f32)", "LiteRT dynamic",
                        "LiteRT float16", "LiteRT int8", "Keras eager", "tf.function",
                        "÷ bare (f32)"], lat_rows),
        "",
        "Targets:",
        "",
        *targets,
    ])


PARTICLES = (100, 1000)
DKF_PF = "PF over the DKF 88-32-GRU256, learned_prior, N=100"


def _keywords(fn):
    return lambda kw: fn(**kw)


def particle_main(quick: bool = False) -> str:
    """Per-frame latency of the exported particle-filter step (issue 15), timed interleaved.

    Cases per N and resampling method: "invoke" (the interpreter alone), "LiteRT frame"
    (:class:`export.runtime.SignatureCall` with every input copied in and every output out),
    "runner, noise given" / "runner, noise drawn" (:meth:`StreamingFilter.step` with the
    state held; the noise passed in, or drawn by the runner from its numpy generator), and the
    same step as a ``tf.function`` (float32, TF's own kernels). Every case runs a batch of
    calls per round, all cases alternating over the rounds, so that load on a shared machine
    hits them alike; cells: median and p99 over rounds of the per-call mean (µs).
    """
    from zoo.export.adapters_particle_filter import ParticleFilterAdapter
    from zoo.kalman_filter import KalmanFilterModel
    from zoo.particle_filter import ParticleFilter

    load_before = load_average()
    lg = KalmanFilterModel.from_matrices([[1.0, 0.1], [0.0, 0.9]], [[1.0, 0.0]],
                                         0.3 * np.eye(2), [[1.0]], dtype="float32")
    rounds = 5 if quick else 40
    cases, sizes = {}, {}
    configs = [(f"PF filter_step N={n}", ParticleFilter(lg, num_particles=n, seed=0), method)
               for n in PARTICLES for method in ("compare", "linear")]
    if not quick:
        from zoo.deep_state_space import DeepKalmanFilter

        configs.append((DKF_PF, ParticleFilter(DeepKalmanFilter(seed=0), num_particles=100,
                                               proposal="learned_prior"), "compare"))
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, method in configs:
            n = model.num_particles
            adapter = ParticleFilterAdapter(model, method)
            path = os.path.join(tmp, f"pf_{len(cases)}.tflite")
            meta = export_tflite(adapter, path)
            sizes[(label, method)] = (meta["size_bytes"], max(
                p["max_rel"] for p in meta["parity"]["filter_step"].values()))
            sig = adapter.export_spec().signatures["filter_step"]
            feed = {k: np.asarray(v, np.float32)
                    for k, v in sig.example(np.random.default_rng(0)).items()}
            call = SignatureCall(load_interpreter(path, num_threads=1), "filter_step")
            call(**feed)
            stream = StreamingFilter(path, num_threads=1, seed=0)
            y, noise = feed["observation"], feed["noise"]
            tensors = {k: tf.constant(v) for k, v in feed.items()}
            fn = tf.function(_keywords(sig.fn), autograph=False)
            calls = 20 if n >= 1000 or label == DKF_PF else 100
            cases[(label, method)] = {
                "LiteRT invoke": call.invoke,
                "LiteRT frame": lambda call=call, feed=feed: call(**feed),
                "runner, noise given": lambda s=stream, y=y, e=noise: s.step(
                    observation=y, noise=e),
                "runner, noise drawn": lambda s=stream, y=y: s.step(observation=y),
                "tf.function": lambda fn=fn, t=tensors: _block(fn(t)),
            }, calls
        times = {(key, name): [] for key, (group, _) in cases.items() for name in group}
        for (group, calls) in cases.values():
            for f in group.values():
                for _ in range(3):
                    f()  # warm-up (traces the tf.function)
        for _ in range(rounds):
            for key, (group, calls) in cases.items():
                for name, f in group.items():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        f()
                    times[(key, name)].append((time.perf_counter_ns() - start) / calls / 1e3)
    names = list(next(iter(cases.values()))[0])
    rows = []
    for key in cases:
        label, method = key
        cells = [_fmt((float(np.median(times[(key, c)])),
                       float(np.percentile(times[(key, c)], 99)))) for c in names]
        ratio = np.median(times[(key, "LiteRT invoke")]) / np.median(
            times[((label, "compare"), "LiteRT invoke")])
        rows.append([label, method, *cells, f"{ratio:.2f}x",
                     f"{sizes[key][0] / 1024:,.1f}", f"{sizes[key][1]:.1e}"])
    return "\n".join([
        "Particle filter ``filter_step`` (issue 15): linear-Gaussian state 2, observation 1, "
        "systematic resampling when ESS < N/2 (the resampling is computed every frame and "
        "selected, so the cost does not depend on whether a frame resamples). Last row (full "
        "run only): a ParticleFilter over the default DeepKalmanFilter (88 binary values per "
        "frame, latent 32, untrained) with the learned_prior proposal (its q-RNN runs in the "
        "step).",
        "",
        f"Machine: {machine()} Load average before: {load_before}; after: {load_average()}. "
        f"µs per frame, median / p99 over {rounds} interleaved rounds of 20 (N=1000, the DKF) "
        f"or 100 (N=100) calls each.",
        "",
        markdown_table(["exported", "resampling", *[f"{c}" for c in names],
                        "invoke ÷ compare", "KiB", "parity (rel)"], rows),
    ])


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    text = particle_main(quick=quick) if "--particle" in sys.argv else main(quick=quick)
    print(text)

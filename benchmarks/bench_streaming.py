"""Per-frame cost of ``export.runtime.StreamingFilter.step`` by frame layout (issue 12, item 10).

A Kalman filter (state 4, observation 2) exported to float32 TFLite; each row times one
``step(observation=frame)`` with the held state, for frames as the exported float32 [1, p],
as the README's loop gives them ([p]) and as NumPy's default float64 ([p] and [1, p]), plus
``SignatureCall`` alone (copies in, invoke, copies out: the floor). Rows are timed
interleaved in rounds so that load on a shared machine hits all of them alike; cells are
the median and p99 over rounds of the per-frame mean, in microseconds.

``--runtime PATH`` times the ``StreamingFilter`` of another copy of ``export/runtime.py``
(e.g. the previous commit's, ``git show HEAD~1:export/runtime.py > /tmp/old_runtime.py``)
beside this one, in the same process and rounds.

Run: ``python benchmarks/bench_streaming.py [--runtime PATH] [--quick]``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def _load_runtime(path):
    spec = importlib.util.spec_from_file_location("runtime_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def export_kalman(path: str) -> None:
    from zoo.export.exporter import export_tflite
    from zoo.kalman_filter import KalmanFilterModel

    rng = np.random.default_rng(0)
    a = 0.9 * np.eye(4) + 0.05 * rng.normal(size=(4, 4))
    model = KalmanFilterModel.from_matrices(a, rng.normal(size=(2, 4)), 0.1 * np.eye(4),
                                            np.eye(2))
    export_tflite(model, path, what=("init_state", "filter_step"))


def main(runtime_paths=(), quick: bool = False) -> str:
    from zoo.export import runtime as current

    runtimes = [("this", current)] + [(f"from {p}", _load_runtime(p)) for p in runtime_paths]
    rounds, per_round = (20, 200) if quick else (60, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kf.tflite")
        export_kalman(path)
        rng = np.random.default_rng(1)
        y64 = rng.normal(size=(per_round, 2))
        layouts = {"float32 [1, p] (exported)": y64.astype(np.float32)[:, None, :],
                   "float32 [p]": y64.astype(np.float32),
                   "float64 [p] (README loop)": y64,
                   "float64 [1, p]": y64[:, None, :]}
        cases = {}
        for name, rt in runtimes:
            for layout, frames in layouts.items():
                f = rt.StreamingFilter(path, num_threads=1)

                def run(f=f, frames=frames):
                    step = f.step
                    for y in frames:
                        step(observation=y)
                cases[(name, layout)] = run
            call = rt.SignatureCall(f.interpreter, "filter_step")
            state = f.reset()["state"]
            frames32 = layouts["float32 [1, p] (exported)"]
            obs = np.ones(1, np.float32)

            def floor(call=call, state=state, frames=frames32, obs=obs):
                s = state
                for y in frames:
                    s = call(state=s, observation=y, observed=obs)["state"]
            cases[(name, "SignatureCall alone (floor)")] = floor
        times = {k: [] for k in cases}
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(rounds):
            for key, fn in cases.items():
                start = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - start) / per_round * 1e6)
    lines = ["| runtime | frame | µs/frame median | p99 |", "|---|---|---:|---:|"]
    for (name, layout), t in times.items():
        lines.append(f"| {name} | {layout} | {np.median(t):.2f} | {np.percentile(t, 99):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    paths = [args[i + 1] for i, a in enumerate(args) if a == "--runtime"]
    print(main(paths, quick="--quick" in args))

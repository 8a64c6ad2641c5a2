"""Issue 17 goal 4: DKF/DMM training with and without XLA (``jit_compile=True``), both in one
run on the chorales split, whole epochs alternated; time per epoch and the test ELBO per step
after the same epochs (same initial weights and data order).

    python benchmarks/bench_jit.py [--epochs 4] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_dssm import _chorales, dmm_config  # noqa: E402
from benchmarks.common import load_average, machine, markdown_table  # noqa: E402
from zoo import DeepKalmanFilter, DeepMarkovModel  # noqa: E402


def _dataset(data, batch_size, seed):
    n = len(data["mask"])
    return tf.data.Dataset.from_tensor_slices(data).shuffle(n, seed=seed).batch(batch_size)


def run(epochs: int = 4, quick: bool = False, batch_size: int = 20, seed: int = 0) -> dict:
    cfg = {"limit": 40, "max_length": 64} if quick else {}
    train, test = _chorales("train", cfg), _chorales("test", cfg)
    rows = []
    for cls in (DeepMarkovModel, DeepKalmanFilter):
        models = {}
        for jit in (False, True):
            keras.utils.set_random_seed(seed)
            model = cls(observation_shape=(88,), seed=seed, **dmm_config())
            model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
            models[jit] = model
        models[True].set_weights(models[False].get_weights())
        times = {False: [], True: []}
        for epoch in range(epochs):
            for jit in (False, True):  # alternated: the same machine load for both
                start = time.perf_counter()
                models[jit].fit(_dataset(train, batch_size, seed + epoch), epochs=1, verbose=0)
                times[jit].append(time.perf_counter() - start)
        for jit in (False, True):
            result = models[jit].evaluate(_dataset(test, batch_size, seed), verbose=0,
                                          return_dict=True)
            later = times[jit][1:] or times[jit]
            rows.append({"model": f"{cls.__name__}{' (XLA)' if jit else ''}",
                         "first epoch s": times[jit][0], "later epochs s (median)":
                         statistics.median(later),
                         "speed-up": statistics.median(times[False][1:] or times[False])
                         / statistics.median(later),
                         "test ELBO / step": result["elbo_per_step"]})
    return {"rows": rows, "epochs": epochs, "train_sequences": len(train["mask"]),
            "test_sequences": len(test["mask"])}


def main(quick: bool = False, epochs: int = 4) -> str:
    before = load_average()
    out = run(epochs=2 if quick else epochs, quick=quick)
    fmt = {"first epoch s": "{:.1f}", "later epochs s (median)": "{:.2f}",
           "speed-up": "{:.2f}x", "test ELBO / step": "{:.2f}"}
    header = list(out["rows"][0])
    rows = [[fmt[k].format(r[k]) if k in fmt else r[k] for k in header] for r in out["rows"]]
    text = (markdown_table(header, rows) + "\n\n" + f"{out['epochs']} epochs each, alternated, batch "
            f"20, Adam 1e-3, {out['train_sequences']} training / {out['test_sequences']} test "
            f"chorales; the trainer's DMM sizes for both models; the first epoch includes "
            f"tracing (and XLA compilation).\n\n" + machine() + "; load averages "
            + before + " before, " + load_average() + " after.")
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.quick, args.epochs)

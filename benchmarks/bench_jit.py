"""Issue 17 goal 4: DKF/DMM training with and without XLA (``jit_compile=True``), both in one
run on the chorales split, whole epochs alternated; time per epoch and the test ELBO per step
after the same epochs (same initial weights and data order).

The LSTM Kalman filter (``--models lstm_kf``) on the trainer's ``lstm_kf`` data and settings
(lgssm: 1,000 training / 200 test sequences of 50 steps, 32-unit LSTMs, batch 50, Adam 3e-3):
its Jacobian F_t by ``tape.batch_jacobian`` (the formulation before goal 4, which XLA cannot
compile; kept here as ``TapeJacobianLSTMKF``), in closed form, and in closed form under XLA,
epochs alternated; then the time of one ``filter`` call on the whole test split for each.

    python benchmarks/bench_jit.py [--epochs 4] [--quick] [--models dmm,dkf,lstm_kf]
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
from zoo import DeepKalmanFilter, DeepMarkovModel, LSTMKalmanFilter, datasets  # noqa: E402


class TapeJacobianLSTMKF(LSTMKalmanFilter):
    """The LSTM-KF before issue 17 goal 4: F_t = d f / d x by ``tape.batch_jacobian`` (a
    ``pfor``) of Keras' own cell step; the same model and numbers otherwise (not
    XLA-compilable: the gradient of the pfor has a ConcatOffset op XLA refuses)."""

    def _transition(self, x, lstm_state):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            h, new_state = self.lstm_a(x, lstm_state)
            pred_mean = x + self.out_a(h)
        return pred_mean, tape.batch_jacobian(pred_mean, x), new_state


def _dataset(data, batch_size, seed):
    n = len(data["mask"])
    return tf.data.Dataset.from_tensor_slices(data).shuffle(n, seed=seed).batch(batch_size)


def run(epochs: int = 4, quick: bool = False, batch_size: int = 20, seed: int = 0,
        models=("dmm", "dkf")) -> dict:
    cfg = {"limit": 40, "max_length": 64} if quick else {}
    train, test = _chorales("train", cfg), _chorales("test", cfg)
    rows = []
    for cls in [{"dmm": DeepMarkovModel, "dkf": DeepKalmanFilter}[m] for m in models]:
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


def run_lstm_kf(epochs: int = 4, quick: bool = False, batch_size: int = 50, seed: int = 0,
                lstm_units: int = 32, learning_rate: float = 3e-3, filter_calls: int = 15,
                step_repeats: int = 30) -> dict:
    """The LSTM-KF's three variants (tape Jacobian, closed form, closed form + XLA) from the
    same initial weights, on the same batches, whole epochs alternated; then single training
    steps (``train_on_batch`` on one seeded random batch) and filter calls, alternated one by
    one, whose medians are less exposed to the machine's load swings than an epoch's."""
    size = {"num_sequences": 100} if quick else {}
    train = datasets.load_arrays("lgssm", "train", **size)
    test = datasets.load_arrays("lgssm", "test", **size)
    kwargs = LSTMKalmanFilter.data_kwargs(train)
    variants = [("tape Jacobian", TapeJacobianLSTMKF, False),
                ("closed form", LSTMKalmanFilter, False),
                ("closed form (XLA)", LSTMKalmanFilter, True)]
    models = {}
    for name, cls, jit in variants:
        keras.utils.set_random_seed(seed)
        model = cls(lstm_units=lstm_units, **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse",
                      jit_compile=jit)
        models[name] = model
    first = models[variants[0][0]]
    for model in models.values():
        model.set_weights(first.get_weights())
    x, y = train["observations"], train["states"]
    steps = -(-len(x) // batch_size)
    times = {name: [] for name in models}
    for epoch in range(epochs):
        batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
            len(x), seed=seed + epoch).batch(batch_size)
        for name, model in models.items():  # alternated: the same machine load for all
            start = time.perf_counter()
            model.fit(batches, epochs=1, verbose=0, shuffle=False)
            times[name].append(time.perf_counter() - start)
    z_test = tf.constant(test["observations"])
    ones = tf.ones(z_test.shape[:2])
    call = {name: ((lambda f=tf.function(m._filter, jit_compile=True): f(z_test, ones)) if jit
                   else (lambda m=m: m.filter(z_test)))
            for (name, _, jit), m in zip(variants, models.values())}
    filter_first, filter_times, rmse = {}, {name: [] for name in models}, {}
    for name, fn in call.items():  # after the epochs, before the extra steps below
        start = time.perf_counter()
        means = fn().filtered_means.numpy()
        filter_first[name] = time.perf_counter() - start
        rmse[name] = float(np.sqrt(np.mean((means.astype(np.float64) - test["states"]) ** 2)))
    pick = np.random.default_rng(seed).choice(len(x), batch_size, replace=False)
    xb, yb = tf.constant(x[pick]), tf.constant(y[pick])
    step_times = {name: [] for name in models}
    for _ in range(step_repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(xb, yb)
            step_times[name].append(time.perf_counter() - start)
    for _ in range(filter_calls):
        for name, fn in call.items():
            start = time.perf_counter()
            fn().filtered_means.numpy()
            filter_times[name].append(time.perf_counter() - start)
    medians = {name: (statistics.median(times[name][1:] or times[name]),
                      statistics.median(step_times[name]), statistics.median(filter_times[name]))
               for name in models}
    base, base_step, base_filter = medians[variants[0][0]]  # the tape Jacobian's
    rows = []
    for name in models:
        later, step, filter_s = medians[name]
        rows.append({"LSTM-KF": name, "first epoch s": times[name][0],
                     "later epochs s (median)": later, "speed-up": base / later,
                     "train step ms (median)": 1e3 * step, "step speed-up": base_step / step,
                     "filter call s (first)": filter_first[name],
                     "filter call s (median)": filter_s,
                     "filter speed-up": base_filter / filter_s, "test RMSE": rmse[name]})
    return {"rows": rows, "epochs": epochs, "train_sequences": len(x),
            "test_sequences": len(z_test), "length": x.shape[1], "steps": steps,
            "batch_size": batch_size, "lstm_units": lstm_units,
            "learning_rate": learning_rate, "filter_calls": filter_calls,
            "step_repeats": step_repeats}


def _table(rows, fmt):
    header = list(rows[0])
    return markdown_table(header, [[fmt[k].format(r[k]) if k in fmt else r[k] for k in header]
                                   for r in rows])


def main(quick: bool = False, epochs: int = 4, models=("dmm", "dkf", "lstm_kf")) -> str:
    before = load_average()
    epochs = 2 if quick else epochs
    parts = []
    chorales = [m for m in models if m in ("dmm", "dkf")]
    if chorales:
        out = run(epochs=epochs, quick=quick, models=chorales)
        parts.append(_table(out["rows"], {
            "first epoch s": "{:.1f}", "later epochs s (median)": "{:.2f}",
            "speed-up": "{:.2f}x", "test ELBO / step": "{:.2f}"}) + "\n\n" + (
            f"{out['epochs']} epochs each, alternated, batch 20, Adam 1e-3, "
            f"{out['train_sequences']} training / {out['test_sequences']} test chorales; the "
            f"trainer's DMM sizes for both models; the first epoch includes tracing (and XLA "
            f"compilation)."))
    if "lstm_kf" in models:
        out = run_lstm_kf(epochs=epochs, quick=quick)
        parts.append(_table(out["rows"], {
            "first epoch s": "{:.1f}", "later epochs s (median)": "{:.2f}",
            "speed-up": "{:.2f}x", "train step ms (median)": "{:.0f}",
            "step speed-up": "{:.2f}x", "filter call s (first)": "{:.2f}",
            "filter call s (median)": "{:.3f}", "filter speed-up": "{:.2f}x",
            "test RMSE": "{:.4f}"}) + "\n\n" + (
            f"{out['epochs']} epochs each, alternated, from the same initial weights on the "
            f"same batches: lgssm, {out['train_sequences']} training sequences of "
            f"{out['length']} steps, batch {out['batch_size']} ({out['steps']} steps an epoch), "
            f"{out['lstm_units']}-unit LSTMs, Adam {out['learning_rate']:g}, MSE on the states "
            f"(the trainer's lstm_kf defaults). Speed-ups against the tape Jacobian. Train "
            f"step: median of {out['step_repeats']} train_on_batch calls on one seeded random "
            f"batch of {out['batch_size']}, alternated one by one after the epochs. Filter "
            f"call: one filter over all {out['test_sequences']} test sequences (first call "
            f"includes tracing / XLA compilation; median of {out['filter_calls']} alternated "
            f"calls after it). Test RMSE (after the epochs) of the filtered means against the "
            f"true states, all test sequences."))
    text = "\n\n".join(parts) + "\n\n" + machine().rstrip(".") + "; load averages " + before + \
        " before, " + load_average() + " after."
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default="dmm,dkf,lstm_kf",
                        help="comma-separated, of dmm, dkf, lstm_kf")
    args = parser.parse_args()
    chosen = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = sorted(set(chosen) - {"dmm", "dkf", "lstm_kf"})
    if unknown or not chosen:
        parser.error(f"--models takes dmm, dkf, lstm_kf (comma-separated); got {args.models!r}")
    main(args.quick, args.epochs, chosen)

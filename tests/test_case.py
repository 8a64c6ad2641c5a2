"""Shared checks that every layer and model test uses.

- ``run_layer_test``: build and call, ``get_config`` round trip, and equal outputs from the
  rebuilt layer with the same weights in a deterministic call.
- ``run_saving_test``: ``.keras`` save and reload, equal outputs in a deterministic call.
- ``run_fit_test``: a few ``fit`` steps lower the loss.
- ``run_model_test``: the model contract end to end, as the trainer uses it (config round
  trip, the trainer's input pipeline, fit lowers the loss, evaluate, the model's own
  evaluation report, predict, ``.keras`` reload with equal outputs, bad input named).
- ``run_export_test``: SavedModel + TFLite through ``zoo.export``: built-in ops only, float32
  and dynamic-range parity, and for filters streaming frame by frame equals batch filtering.
- ``check_gradients``: autodiff gradients against central finite differences (float64).
- ``assert_mc_mean`` / ``assert_mc_equal``: Monte Carlo assertions in standard errors.
"""

from __future__ import annotations

import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf


def _to_numpy(tree):
    return tf.nest.map_structure(lambda t: np.asarray(t), tree)


def assert_allclose_tree(a, b, rtol=1e-6, atol=1e-6, msg=""):
    a, b = _to_numpy(a), _to_numpy(b)
    tf.nest.assert_same_structure(a, b)
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=msg)


def run_layer_test(
    layer_cls,
    init_kwargs: dict,
    input_data,
    call_kwargs: dict | None = None,
    expected_output_shapes: dict | tuple | None = None,
    rtol: float = 1e-6,
):
    """Build and call a layer, round-trip its config, and compare a rebuilt twin's outputs.

    ``call_kwargs`` must make the call deterministic (pass the noise explicitly), so that the
    rebuilt layer with copied weights gives the same numbers. Returns (layer, outputs).
    """
    call_kwargs = call_kwargs or {}
    layer = layer_cls(**init_kwargs)
    out = layer(input_data, **call_kwargs)
    if expected_output_shapes is not None:
        shapes = tf.nest.map_structure(lambda t: tuple(t.shape), out)
        assert shapes == expected_output_shapes, f"{shapes} != {expected_output_shapes}"
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() of {layer_cls.__name__} misses `{key}`"
    twin = layer_cls.from_config(config)
    assert twin.get_config() == config, "from_config(get_config()) changed the config"
    # Serialization through the registry, as .keras files do it.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is layer_cls
    twin(input_data, **call_kwargs)
    twin.set_weights(layer.get_weights())
    assert_allclose_tree(out, twin(input_data, **call_kwargs), rtol=rtol, atol=rtol)
    return layer, out


def run_saving_test(model: keras.Model, call: Callable, tmp_path, rtol: float = 1e-6):
    """Save ``model`` as ``.keras``, reload it, and compare ``call(model)`` before and after.

    ``call`` takes a model and returns tensors; it must be deterministic (explicit noise or a
    fixed-seed evaluation). Returns the reloaded model.
    """
    before = call(model)
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert_allclose_tree(before, call(reloaded), rtol=rtol, atol=rtol, msg="after .keras reload")
    return reloaded


def run_fit_test(model: keras.Model, data, epochs: int = 5, **fit_kwargs):
    """Fit a compiled model a few epochs and assert the loss went down; returns the history."""
    history = model.fit(data, epochs=epochs, verbose=0, **fit_kwargs)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), f"non-finite loss during fit: {losses}"
    assert losses[-1] < losses[0], f"fit did not lower the loss: {losses}"
    return history


def check_gradients(
    fn: Callable, params: list, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7
):
    """Compare tf.GradientTape gradients of scalar ``fn(*params)`` with central differences.

    ``params`` are float64 arrays; every entry of every parameter is perturbed.
    """
    params = [tf.constant(np.asarray(p, np.float64)) for p in params]
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = fn(*params)
    grads = tape.gradient(value, params)
    for i, (p, g) in enumerate(zip(params, grads)):
        assert g is not None, f"no gradient for parameter {i}"
        flat = p.numpy().ravel()
        numeric = np.zeros_like(flat)
        for j in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[j] += eps
            down[j] -= eps
            args_up = [*params[:i], tf.constant(up.reshape(p.shape)), *params[i + 1:]]
            args_down = [*params[:i], tf.constant(down.reshape(p.shape)), *params[i + 1:]]
            numeric[j] = (float(fn(*args_up)) - float(fn(*args_down))) / (2 * eps)
        np.testing.assert_allclose(
            g.numpy().ravel(), numeric, rtol=rtol, atol=atol,
            err_msg=f"gradient of parameter {i} disagrees with finite differences",
        )


def assert_mc_mean(samples, expected, n_se: float = 4.0, axis: int = 0):
    """Assert the sample mean along ``axis`` is within ``n_se`` standard errors of ``expected``."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[axis]
    mean = samples.mean(axis)
    se = samples.std(axis, ddof=1) / np.sqrt(n)
    err = np.abs(mean - np.asarray(expected, np.float64))
    bound = n_se * se + 1e-12
    assert np.all(err <= bound), (
        f"Monte Carlo mean off by more than {n_se} standard errors: max |err|/se = "
        f"{np.max(err / (se + 1e-30)):.2f}\nmean={mean}\nexpected={expected}\nse={se}"
    )


def assert_mc_equal(samples_a, samples_b, n_se: float = 4.0, axis: int = 0):
    """Two independent Monte Carlo estimates have equal means within ``n_se`` standard errors."""
    a = np.asarray(samples_a, np.float64)
    b = np.asarray(samples_b, np.float64)
    se = np.sqrt(a.var(axis, ddof=1) / a.shape[axis] + b.var(axis, ddof=1) / b.shape[axis])
    err = np.abs(a.mean(axis) - b.mean(axis))
    assert np.all(err <= n_se * se + 1e-12), (
        f"Monte Carlo means differ by more than {n_se} standard errors: "
        f"max |diff|/se = {np.max(err / (se + 1e-30)):.2f}"
    )


def run_model_test(model_fn: Callable, arrays: dict, *, deterministic: Callable, tmp_path,
                   bad_inputs=(), epochs: int = 3, batch_size: int = 32,
                   learning_rate: float = 1e-2, fit_kwargs: dict | None = None,
                   eval_samples: int = 4, eval_examples: int = 8, rtol: float = 1e-5):
    """The model contract (``zoo.contract.ZooModel``) as ``zoo-train`` exercises it.

    Args:
        model_fn: builds the model (a fresh one each call).
        arrays: one split of a dataset as ``zoo.datasets.load_arrays`` gives it.
        deterministic: ``(model, x) -> tensors`` with no randomness (explicit noise or a
            fixed seed); compared before and after a ``.keras`` round trip.
        bad_inputs: ``(fn(model), exception type, regex)`` triples that must raise.
    Returns the trained model and its evaluation report.
    """
    from zoo.contract import EvalSettings
    from zoo.training import data as run_data

    model = model_fn()
    cls = type(model)
    config = model.get_config()
    assert cls.from_config(config).get_config() == config, "from_config(get_config()) differs"
    model.validate_data(arrays)
    x, y = cls.fit_inputs(arrays)
    run_config = {"train": {"batch_size": batch_size, "seed": 0, "epochs": epochs},
                  "data": {}}
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), **model.compile_kwargs())
    n = len(tf.nest.flatten(x)[0])
    steps = -(-n // batch_size)
    stream = run_data.train_stream(cls, x, y, run_config, 0)
    history = model.fit(stream, epochs=epochs, steps_per_epoch=steps, verbose=0,
                        callbacks=model.default_callbacks(), **(fit_kwargs or {}))
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), f"non-finite loss during fit: {losses}"
    assert losses[-1] < losses[0], f"fit did not lower the loss: {losses}"
    metrics = model.evaluate(run_data.eval_stream(cls, x, y, batch_size), verbose=0,
                             return_dict=True)
    assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
    picked = {k: np.asarray(v)[:eval_examples] if np.ndim(v) and len(v) == n else v
              for k, v in arrays.items()}
    px, py = cls.fit_inputs(picked)
    report = model.evaluation(px, py, picked, EvalSettings(num_samples=eval_samples, seed=0,
                                                           batch_size=batch_size))
    for key, value in report.items():
        if isinstance(value, float):
            assert np.isfinite(value), f"evaluation {key} = {value}"
    predicted = model.predict(run_data.eval_stream(cls, x, y, batch_size).map(
        lambda *b: b[0]), verbose=0)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in tf.nest.flatten(predicted)
               if np.asarray(p).dtype.kind == "f"), "predict gave non-finite values"
    run_saving_test(model, lambda m: deterministic(m, px), tmp_path, rtol=rtol)
    for fn, error, match in bad_inputs:
        try:
            fn(model)
        except error as err:
            import re

            assert re.search(match, str(err)), f"{error.__name__} {err!r} does not match {match!r}"
        else:
            raise AssertionError(f"expected {error.__name__} matching {match!r}")
    return model, report


def run_export_test(model, tmp_path, *, quantize=("float32", "dynamic"), what=None,
                    streaming: Callable | None = None, float32_rtol: float = 1e-4,
                    dynamic_rtol: float = 0.1):
    """Export ``model`` through ``zoo.export`` and check every file as an app would get it.

    The SavedModel and one TFLite file per mode are written; each file's ops must be TFLite
    built-ins only; parity against the Keras model within ``float32_rtol`` (float32) or
    ``dynamic_rtol`` (dynamic range) relative to each output's scale, and finite. ``streaming``:
    ``(tflite_path) -> None`` asserting that frame-by-frame use equals batch filtering.
    Returns ``{mode: VerifyReport}``.
    """
    from zoo.export import export_saved_model, export_tflite, verify
    from zoo.export.litert import list_ops

    out = str(tmp_path)
    export_saved_model(model, os.path.join(out, "saved_model"), what=what)
    reports = {}
    for mode in quantize:
        path = os.path.join(out, f"model_{mode}.tflite")
        export_tflite(model, path, what=what, quantize=None if mode == "float32" else mode)
        ops = list_ops(path)
        assert ops.builtin_only, f"{mode}: non-built-in ops {ops.custom}"
        report = verify(path, model)
        bound = float32_rtol if mode == "float32" else dynamic_rtol
        for signature, outputs in report.parity.items():
            for key, parity in outputs.items():
                assert np.isfinite(parity.max_rel), f"{mode} {signature}.{key}: non-finite"
                assert parity.max_rel <= bound, (
                    f"{mode} {signature}.{key}: relative error {parity.max_rel:.3g} > {bound}")
        reports[mode] = report
        if streaming is not None:
            streaming(path)
    return reports


def assert_bound_grows_with_k(log_w, ks=(1, 10, 100)) -> None:
    """E[L_k] grows with k (Burda et al. 2016, Theorem 1): ``log_w`` [examples, particles]
    split per example into groups of k, the k-sample bounds averaged within each example, and
    each step's per-example gain above 4 standard errors."""
    from zoo.bounds import iwae_bound

    log_w = np.asarray(log_w)
    mean_bound = {k: iwae_bound(tf.constant(log_w.reshape(len(log_w), -1, k))).numpy().mean(1)
                  for k in ks}
    for small, large in zip(ks, ks[1:]):
        gain = mean_bound[large] - mean_bound[small]
        se = gain.std(ddof=1) / np.sqrt(len(gain))
        assert gain.mean() > 4 * se, (small, large, gain.mean(), se)

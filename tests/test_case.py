"""Shared checks that every layer and model test uses.

- ``run_layer_test``: build and call, ``get_config`` round trip, and equal outputs from the
  rebuilt layer with the same weights in a deterministic call.
- ``run_saving_test``: ``.keras`` save and reload, equal outputs in a deterministic call.
- ``run_fit_test``: a few ``fit`` steps lower the loss.
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

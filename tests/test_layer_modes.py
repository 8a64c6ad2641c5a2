"""Every public layer under tf.function, XLA, float64 and mixed precision, with numbers
compared against the plain eager float32 call."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.layers import (BernoulliLikelihood, CategoricalLikelihood, Combiner, GaussianLikelihood,
                    GaussianPosterior, KalmanFilterLayer, RelaxedCategorical, StateTransition)

RNG = np.random.RandomState(0)
FEATURES = RNG.randn(4, 6)
BINARY = (RNG.rand(4, 6) > 0.5).astype("float64")
NOISE = RNG.randn(4, 2, 3)
SERIES = RNG.randn(4, 5, 2)
OBSERVED = RNG.rand(4, 5) > 0.3

# name: (constructor, call(layer, dtype) -> dict or tensor of deterministic outputs)
CASES = {
    "gaussian_posterior_lowrank": (
        lambda **kw: GaussianPosterior(3, covariance="lowrank", num_samples=2, **kw),
        lambda l, dt: l(FEATURES.astype(dt), noise=NOISE.astype(dt))),
    "relaxed_categorical": (
        lambda **kw: RelaxedCategorical(2, 3, temperature=0.7, **kw),
        lambda l, dt: l(FEATURES.astype(dt), noise=np.full((4, 2, 3), 0.3, dt), training=True)),
    "bernoulli": (lambda **kw: BernoulliLikelihood(**kw),
                  lambda l, dt: l(FEATURES.astype(dt), BINARY.astype(dt))),
    "gaussian": (lambda **kw: GaussianLikelihood("per_pixel", **kw),
                 lambda l, dt: l(np.tile(FEATURES, 2).astype(dt), FEATURES.astype(dt))),
    "categorical": (lambda **kw: CategoricalLikelihood(event_ndims=1, **kw),
                    lambda l, dt: l(FEATURES.reshape(4, 2, 3).astype(dt),
                                    np.zeros((4, 2), "int32"))),
    "state_transition": (lambda **kw: StateTransition(6, kind="gated", hidden_units=5, **kw),
                         lambda l, dt: l(FEATURES.astype(dt))),
    "kalman_filter": (
        lambda **kw: KalmanFilterLayer(3, transition_cov="full", initial_cov="full",
                                       use_offsets=True, **kw),
        lambda l, dt: l(SERIES.astype(dt), observed=OBSERVED)),
    "combiner": (lambda **kw: Combiner(6, **kw),
                 lambda l, dt: l(FEATURES[:, :3].astype(dt), [FEATURES.astype(dt)])),
}


def _reference(name):
    make, call = CASES[name]
    layer = make()
    return layer, call(layer, "float32")


def _as_numpy(tree):
    return tf.nest.map_structure(lambda t: np.asarray(t, np.float64), tree)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["function", "xla"])
def test_compiled_matches_eager(name, mode):
    layer, eager = _reference(name)
    call = CASES[name][1]
    fn = tf.function(lambda: call(layer, "float32"), jit_compile=(mode == "xla"))
    for a, b in zip(tf.nest.flatten(_as_numpy(eager)), tf.nest.flatten(_as_numpy(fn()))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_matches_float32(name):
    layer, eager = _reference(name)
    make, call = CASES[name]
    twin = make(dtype="float64")
    call(twin, "float64")
    twin.set_weights([w.astype("float64") if w.dtype.kind == "f" else w
                      for w in layer.get_weights()])
    out = call(twin, "float64")
    assert all(t.dtype == tf.float64 for t in tf.nest.flatten(out) if t.dtype.is_floating)
    for a, b in zip(tf.nest.flatten(_as_numpy(eager)), tf.nest.flatten(_as_numpy(out))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_precision_keeps_distribution_math_in_float32(name):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        make, call = CASES[name]
        layer = make()
        out = call(layer, "float32")
        floats = [t for t in tf.nest.flatten(out) if t.dtype.is_floating]
        assert all(np.all(np.isfinite(np.asarray(t, np.float64))) for t in floats)
        if name not in ("state_transition", "combiner"):  # distribution layers
            assert all(t.dtype == tf.float32 for t in floats)
    finally:
        keras.mixed_precision.set_global_policy("float32")

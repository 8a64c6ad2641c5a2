"""MaskedDense and the MADE layer (AutoregressiveNetwork): autoregressive Jacobians, TFP
equality, direct input -> output connections, serialization, compiled / float64 /
mixed-precision calls, bad arguments."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_case import run_layer_test, run_saving_test
from zoo.layers import AutoregressiveNetwork, MaskedDense
from zoo.layers.autoregressive_network import direct_mask, input_degrees, made_masks

RNG = np.random.RandomState(0)


def test_masked_dense_equals_numpy():
    x = RNG.randn(4, 3).astype("float32")
    masks = (RNG.rand(2, 3, 5) > 0.5).astype("float32")
    layer, out = run_layer_test(MaskedDense, {"units": 5, "num_masks": 2, "activation": "tanh"},
                                x, call_kwargs={"mask_index": 1})
    layer.set_masks(masks)
    w, b = layer.kernel.numpy(), layer.bias.numpy()
    for k in range(2):
        np.testing.assert_allclose(layer(x, mask_index=k), np.tanh(x @ (w * masks[k]) + b),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="masks"):
        layer.set_masks(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="0 and 1"):
        layer.set_masks(np.full((2, 3, 5), 0.5))
    with pytest.raises(ValueError, match="units"):
        MaskedDense(0)


def _jacobian(net, x, mask_index, conditional=None):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = net(x, conditional=conditional, mask_index=mask_index)
    return tape.batch_jacobian(y, x).numpy()  # [batch, D, params, D]


@pytest.mark.parametrize("input_order,hidden_degrees,conditional,direct", [
    ("left-to-right", "equal", False, False),
    ("right-to-left", "random", True, False),
    ("random", "random", False, False),
    ([3, 1, 5, 2, 6, 4], "equal", True, False),
    ("random", "random", True, True),
])
def test_jacobian_is_strictly_triangular_in_the_ordering(input_order, hidden_degrees,
                                                         conditional, direct):
    d, masks = 6, 3
    net = AutoregressiveNetwork(d, params=2, hidden_units=(16, 16), input_order=input_order,
                                hidden_degrees=hidden_degrees, num_masks=masks,
                                activation="tanh", seed=3, direct_connections=direct,
                                conditional_size=2 if conditional else None)
    x = RNG.randn(3, d).astype("float32")
    c = RNG.randn(3, 2).astype("float32") if conditional else None
    net(x, conditional=c)
    orders = np.asarray(net.degrees)
    if input_order == "random":  # the draws are different orderings
        assert len({tuple(o) for o in orders}) == masks
    for k in range(masks):
        jac = np.abs(_jacobian(net, x, k, c)).max(axis=(0, 2))  # [out d, in j]
        deg = orders[k]
        allowed = deg[None, :] < deg[:, None]
        assert np.all(jac[~allowed] == 0.0), f"mask {k} leaks a forbidden input"
        # The masks cut only what they must: the last output in the ordering sees every
        # other input (tanh hidden units, generic weights).
        last = int(np.argmax(deg))
        assert np.all(jac[last, np.arange(d) != last] > 0)
        if direct:  # every output sees every input before it
            assert np.all(jac[allowed] > 0), f"mask {k}"


def test_direct_connections_add_the_masked_linear_map():
    """out = hidden path + x (D * M), M[j, d] = [m(j) < m(d)]: with the hidden path's output
    kernel at zero the outputs are the bias plus that masked map (NumPy); with 2 hidden units
    some allowed input -> output pairs have no path unless the direct connection is on."""
    d, params = 7, 2
    x = RNG.randn(4, d).astype("float32")
    reach = {}
    for direct in (False, True):
        net = AutoregressiveNetwork(d, params=params, hidden_units=(2,), input_order="random",
                                    hidden_degrees="random", num_masks=2, activation="tanh",
                                    direct_connections=direct, seed=4)
        net(x)
        deg = np.asarray(net.degrees)
        jac = np.abs(_jacobian(net, x, 1)).max(axis=(0, 2))
        allowed = deg[1][None, :] < deg[1][:, None]
        assert np.all(jac[~allowed] == 0.0)
        reach[direct] = np.all(jac[allowed] > 0)
        if direct:
            np.testing.assert_array_equal(net.direct.masks.numpy()[1],
                                          direct_mask(deg[1], params))
            out = net.masked[-1]
            out.kernel.assign(np.zeros(out.kernel.shape, "float32"))
            kernel = net.direct.kernel.numpy() * direct_mask(deg[1], params)
            expected = (x @ kernel + out.bias.numpy()).reshape(4, d, params)
            np.testing.assert_allclose(net(x, mask_index=1), expected, rtol=1e-5, atol=1e-6)
    assert reach == {False: False, True: True}


def test_made_with_direct_connections_sums_to_one():
    """Each mask of a MADE with direct connections, and the mask ensemble, is normalized
    over all 2^8 binary vectors; the direct weights change the model."""
    from zoo.autoregressive import MADE

    everything = np.array(list(itertools.product([0.0, 1.0], repeat=8)), np.float32)
    model = MADE((8,), hidden_units=(6,), input_order="random", num_masks=3,
                 direct_connections=True, seed=3)
    rng = np.random.RandomState(0)
    for w in model.trainable_weights:
        w.assign(rng.randn(*w.shape).astype("float32"))
    totals = [float(tf.reduce_logsumexp(tf.cast(model.log_prob(everything, member=k),
                                                tf.float64))) for k in (0, 1, 2, None)]
    np.testing.assert_allclose(totals, 0.0, atol=1e-5)
    before = np.asarray(model.log_prob(everything))
    model.network.direct.kernel.assign(np.zeros(model.network.direct.kernel.shape, "float32"))
    assert np.max(np.abs(np.asarray(model.log_prob(everything)) - before)) > 0.1
    twin = MADE.from_config(model.get_config())
    assert twin.direct_connections and twin.network.direct is not None


def test_made_equals_tfp_autoregressive_network():
    tfp = pytest.importorskip("tensorflow_probability")
    pytest.importorskip("tf_keras")
    d, c = 5, 3
    order = input_degrees(d, "random", np.random.RandomState(1))
    ref = tfp.bijectors.AutoregressiveNetwork(
        params=2, event_shape=[d], hidden_units=[7, 6], activation="tanh", input_order=order,
        conditional=True, conditional_event_shape=[c])
    x = RNG.randn(4, d).astype("float32")
    cond = RNG.randn(4, c).astype("float32")
    ours = AutoregressiveNetwork(d, params=2, hidden_units=(7, 6), activation="tanh",
                                 input_order=order, conditional_size=c)
    ours(x, conditional=cond)
    # Same masks (built independently from the same degrees) ...
    ref(x, conditional_input=cond)
    for theirs, mine in zip(ref._masks, ours.masked):
        np.testing.assert_array_equal(theirs.astype("float32"), mine.masks.numpy()[0])
    # ... and the same weights give the same outputs.
    dense = [l for l in ref._network.layers if type(l).__name__ == "Dense"]
    masked = [l for l in dense if l.use_bias]
    cond_layers = [l for l in dense if not l.use_bias]
    for theirs, mine in zip(masked, ours.masked):
        mine.kernel.assign(theirs.kernel.numpy() * mine.masks.numpy()[0])
        mine.bias.assign(theirs.bias.numpy())
    for theirs, mine in zip(cond_layers, ours.conditioners):
        mine.kernel.assign(theirs.kernel.numpy())
    np.testing.assert_allclose(ours(x, conditional=cond), ref(x, conditional_input=cond),
                               rtol=1e-5, atol=1e-6)


def test_made_masks_for_no_hidden_layer_are_strictly_lower_triangular():
    (mask,) = made_masks([np.array([2, 1, 3])])
    np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 0, 1], [0, 0, 0]])


def test_config_round_trip_and_saving(tmp_path):
    x = RNG.randn(2, 4).astype("float32")
    layer, _ = run_layer_test(
        AutoregressiveNetwork,
        {"event_size": 4, "params": 2, "hidden_units": (8,), "input_order": "random",
         "hidden_degrees": "random", "num_masks": 2, "direct_connections": True, "seed": 5},
        x, call_kwargs={"mask_index": 1})
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs, mask_index=1))
    reloaded = run_saving_test(model, lambda m: m(x), tmp_path)
    np.testing.assert_array_equal(reloaded.layers[-1].degrees.numpy(), layer.degrees.numpy())
    np.testing.assert_array_equal(reloaded.layers[-1].direct.masks.numpy(),
                                  layer.direct.masks.numpy())


@pytest.mark.parametrize("mode,direct", [("function", False), ("xla", True)])
def test_compiled_float64_and_mixed_precision(mode, direct):
    x = RNG.randn(3, 4)
    kwargs = {"conditional_size": 2, "direct_connections": direct}
    net = AutoregressiveNetwork(4, params=2, hidden_units=(8,), seed=0, **kwargs)
    c = RNG.randn(3, 2)
    eager = net(x.astype("float32"), conditional=c.astype("float32"), mask_index=0)
    fn = tf.function(lambda k: net(x.astype("float32"), conditional=c.astype("float32"),
                                   mask_index=k), jit_compile=(mode == "xla"))
    np.testing.assert_allclose(fn(tf.constant(0)), eager, rtol=1e-5, atol=1e-6)
    twin = AutoregressiveNetwork(4, params=2, hidden_units=(8,), seed=0, dtype="float64",
                                 **kwargs)
    twin(x, conditional=c)
    twin.set_weights(net.get_weights())
    out = twin(x, conditional=c)
    assert out.dtype == tf.float64
    np.testing.assert_allclose(out, eager, rtol=1e-5, atol=1e-5)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = AutoregressiveNetwork(4, params=2, hidden_units=(8,), seed=0, **kwargs)
        half(x.astype("float32"), conditional=c.astype("float32"))
        half.set_weights(net.get_weights())
        out = half(x.astype("float32"), conditional=c.astype("float32"))
        assert out.dtype == tf.float16
        np.testing.assert_allclose(np.asarray(out, np.float32), eager, rtol=2e-2, atol=2e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="input_order"):
        AutoregressiveNetwork(3, input_order=[1, 1, 2])
    with pytest.raises(ValueError, match="input_order"):
        AutoregressiveNetwork(3, input_order="diagonal")
    with pytest.raises(ValueError, match="hidden_degrees"):
        AutoregressiveNetwork(3, hidden_degrees="odd")
    net = AutoregressiveNetwork(3, hidden_units=(4,))
    with pytest.raises(ValueError, match="event_size"):
        net(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="conditional"):
        AutoregressiveNetwork(3, conditional_size=2)(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="direct_connections"):
        AutoregressiveNetwork(3, direct_connections=True)  # no hidden layer
    with pytest.raises(ValueError, match="direct_connections"):
        AutoregressiveNetwork(3, hidden_units=(4,), direct_connections="yes")


def test_masks_survive_a_first_call_inside_a_model_build():
    """The masks are the weights' initial values: an assign after creation was dropped when
    the first call ran inside a model's symbolic build (an IAF in a VAE had all-ones masks)."""
    from zoo.layers import IAF

    class Wrapper(keras.Model):
        def __init__(self):
            super().__init__()
            self.flow = IAF(4, hidden_units=(8,), input_order="right-to-left")

        def call(self, z):
            return self.flow(z)["z"]

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Wrapper()(inputs))
    net = model.layers[-1].flow.network
    np.testing.assert_array_equal(net.degrees.numpy()[0], [4, 3, 2, 1])
    expected = made_masks(net.draw_degrees(0), params=2)
    for layer, mask in zip(net.masked, expected):
        np.testing.assert_array_equal(layer.masks.numpy()[0], mask)


def test_masks_are_uint8_and_float32_masks_of_older_files_load():
    """Masks are stored as uint8 (a quarter of float32: Germain et al.'s 32 masks of a
    2 x 8000 MADE fit in memory); a file saved when they were float32 still loads."""
    from zoo.layers import MaskedDense

    layer = MaskedDense(3, num_masks=2)
    layer.build((None, 2))
    assert layer.masks.dtype == "uint8"
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    masks = np.array([[[1, 0, 1], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)
    layer.load_own_variables({"0": kernel, "1": np.zeros(3, np.float32), "2": masks})
    assert layer.masks.dtype == "uint8"
    np.testing.assert_array_equal(layer.masks.numpy(), masks)
    np.testing.assert_array_equal(layer.masked_kernel(1).numpy(), kernel * masks[1])

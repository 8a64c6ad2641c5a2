"""The DMM's time loops with hand-written gradients (issue 17, goal 1): ``ReluRNN`` against
Keras' ``SimpleRNN`` and ``combiner_posterior_scan`` against the layer-by-layer loop, values
and gradients, and the whole DMM loss and gradient with and without them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import DeepMarkovModel
from zoo import deep_state_space
from zoo.layers.combiner import fused_posterior_supported
from zoo.layers.relu_rnn import ReluRNN


def _max_rel(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _pair(go_backwards, units=7, inputs=5, seed=0):
    rng = np.random.default_rng(seed)
    ref = keras.layers.SimpleRNN(units, activation="relu", return_sequences=True,
                                 go_backwards=go_backwards)
    fast = ReluRNN(units, return_sequences=True, go_backwards=go_backwards)
    for layer in (ref, fast):
        layer.build((None, None, inputs))
    # weights large enough that states grow and many units switch off
    weights = [rng.uniform(-0.6, 0.6, w.shape) for w in ref.get_weights()]
    ref.set_weights(weights)
    fast.set_weights(weights)
    return ref, fast


def _grads(layer, x, mask, cotangent):
    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, mask=mask)
            loss = tf.reduce_sum(out * cotangent)
        return out, tape.gradient(loss, [x] + layer.trainable_variables)
    return run(x)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "prefix", "gaps"])
def test_relu_rnn_equals_keras_simple_rnn_with_its_gradients(go_backwards, mask_kind):
    """Outputs and the gradients of inputs, kernel, recurrent kernel and bias equal Keras'
    SimpleRNN(relu) to float32 rounding (relative 1e-5), forward and backward, with no mask,
    right padding and gaps inside the sequences (a masked step keeps the state)."""
    rng = np.random.default_rng(1)
    batch, steps = 4, 9
    x = tf.constant(rng.normal(size=(batch, steps, 5)), tf.float32)
    cot = tf.constant(rng.normal(size=(batch, steps, 7)), tf.float32)
    if mask_kind == "none":
        mask = None
    elif mask_kind == "prefix":
        mask = tf.constant(np.arange(steps)[None] < np.array([9, 6, 3, 1])[:, None])
    else:
        mask = tf.constant(rng.uniform(size=(batch, steps)) < 0.6)
    ref, fast = _pair(go_backwards)
    out_ref, g_ref = _grads(ref, x, mask, cot)
    out_fast, g_fast = _grads(fast, x, mask, cot)
    assert np.count_nonzero(out_ref.numpy() == 0) > 10  # the ReLU switches units off
    assert _max_rel(out_fast, out_ref) < 1e-5
    for a, b in zip(g_fast, g_ref):
        assert np.max(np.abs(b.numpy())) > 0
        assert _max_rel(a, b) < 1e-5


def test_relu_rnn_falls_back_to_keras_loop_and_loads_simple_rnn_weights():
    """Dropout while training, return_sequences=False and an initial state run SimpleRNN's
    own loop; a ReluRNN is a SimpleRNN (relu by default) in a saved-and-loaded model."""
    ref, fast = _pair(False)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 4, 5)), tf.float32)
    assert fast.cell.activation is keras.activations.relu
    assert fast._fast(None, training=True)
    fast.cell.dropout = 0.5
    assert not fast._fast(None, training=True) and fast._fast(None, training=False)
    fast.cell.dropout = 0.0
    assert not fast._fast(tf.zeros([3, 7]), training=False)
    fast.zero_output_for_mask = True  # as Bidirectional sets it: Keras' loop
    assert not fast._fast(None, training=False)
    fast.zero_output_for_mask = False
    last = ReluRNN(7)
    last.build((None, None, 5))
    last.set_weights(ref.get_weights())
    assert not last._fast(None, training=False)
    np.testing.assert_allclose(last(x), ref(x)[:, -1], rtol=1e-6, atol=1e-6)
    restored = keras.layers.deserialize(keras.layers.serialize(fast))
    assert type(restored) is ReluRNN and restored.go_backwards is False


def _dmm(inference="st-r", scale_activation="softplus", seed=0):
    keras.utils.set_random_seed(seed)
    model = DeepMarkovModel(observation_shape=(6,), latent_dim=3, rnn_units=8,
                            emission_units=(8,), transition_units=8, seed=seed,
                            inference=inference, rnn_cell="rnn", filter_inference=None)
    model.posterior.scale_activation = scale_activation
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:  # away from the zero biases of the fan_in default
        v.assign(v + rng.normal(scale=0.3, size=v.shape))
    return model


def _inputs(seed=3, batch=4, steps=7):
    rng = np.random.default_rng(seed)
    lengths = np.array([7, 5, 3, 6])[:batch]
    mask = (np.arange(steps)[None] < lengths[:, None]).astype("float32")
    observed = mask * (rng.uniform(size=mask.shape) < 0.8)
    return {"observations": tf.constant(rng.uniform(size=(batch, steps, 6)) < 0.4, tf.float32),
            "mask": tf.constant(mask), "observed": tf.constant(observed.astype("float32"))}


def _trajectory_and_grads(model, inputs, noise, fused, monkeypatch):
    with monkeypatch.context() as m:
        if not fused:
            m.setattr(deep_state_space, "fused_posterior_supported", lambda *a: False)
            m.setattr(ReluRNN, "_fast", lambda *a: False)
        with tf.GradientTape() as tape:
            t = model.trajectory(inputs, noise=noise)
            loss = tf.reduce_sum(t["mask"] * (t["log_px"] - t["kl"] + 0.3 * t["log_q"]
                                              - 0.2 * t["log_prior"]))
        return t, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("inference,scale_activation",
                         [("st-r", "softplus"), ("st-lr", "exp"), ("st-l", "softplus")])
def test_fused_posterior_loop_equals_the_layer_loop_in_the_dmm(inference, scale_activation,
                                                                monkeypatch):
    """The DMM's trajectory (z, loc, scale, log q, KL, log p(x|z)) and the gradient of a loss
    using all of them, with the fused loops against the layer-by-layer loops: equal to
    relative 1e-5, for ST-R, ST-LR (two RNN states, exp scales) and ST-L."""
    model = _dmm(inference, scale_activation)
    assert fused_posterior_supported(model.combiner, model.posterior)
    inputs = _inputs()
    noise = tf.constant(np.random.default_rng(4).normal(size=(4, 7, 3)), tf.float32)
    fast, g_fast = _trajectory_and_grads(model, inputs, noise, True, monkeypatch)
    ref, g_ref = _trajectory_and_grads(model, inputs, noise, False, monkeypatch)
    for key in ("z", "loc", "scale", "log_q", "kl", "log_prior", "log_px"):
        assert _max_rel(fast[key], ref[key]) < 1e-5, key
    assert len(g_fast) == len(g_ref) == len(model.trainable_variables)
    for v, a, b in zip(model.trainable_variables, g_fast, g_ref):
        assert b is not None and np.max(np.abs(b.numpy())) > 0, v.path
        assert _max_rel(a, b) < 1e-4, v.path


def test_fused_loop_is_skipped_under_mixed_precision_and_checks_features():
    """Mixed precision keeps the layer loop; a NaN in the combiner's output still raises the
    posterior's check on its features."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = DeepMarkovModel(observation_shape=(6,), latent_dim=3, rnn_units=8,
                                emission_units=(8,), transition_units=8, seed=0,
                                rnn_cell="rnn", filter_inference=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not fused_posterior_supported(mixed.combiner, mixed.posterior)
    model = _dmm()
    model.combiner.dense.bias.assign(np.full(8, np.nan, "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="features"):
        model.trajectory(_inputs())


@pytest.mark.parametrize("batch", [1, 5])
def test_loops_cut_into_pieces_equal_one_loop(batch, monkeypatch):
    """The batch cut into 2 or 3 side-by-side loops (one piece empty for a batch of 1)
    gives the one loop's values and gradients, for both fused loops."""
    from zoo.layers.combiner import combiner_posterior_scan
    from zoo.layers.relu_rnn import relu_rnn_sequence

    rng = np.random.default_rng(5)
    steps = 6
    x = tf.constant(rng.normal(size=(steps, batch, 5)), tf.float32)
    m = tf.constant((rng.uniform(size=(steps, batch)) < 0.7).astype("float32"))
    w = [tf.Variable(rng.normal(scale=0.5, size=s).astype("float32"))
         for s in ((5, 8), (8, 8), (8,))]
    model = _dmm()
    noise = tf.constant(rng.normal(size=(steps, batch, 3)), tf.float32)
    z0 = tf.constant(rng.normal(size=(batch, 3)), tf.float32)
    variables = w + model.combiner.trainable_variables + model.posterior.trainable_variables

    def run(pieces):
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = relu_rnn_sequence(x, m, *w, pieces=pieces)
            z, loc, scale = combiner_posterior_scan(model.combiner, model.posterior, h,
                                                    noise, z0, pieces=pieces)
            loss = tf.reduce_sum(z * loc) + tf.reduce_sum(tf.math.log(scale))
        return [h, z, loc, scale], tape.gradient(loss, [x] + variables)

    ref_out, ref_grad = run(1)
    for pieces in (2, 3):
        out, grad = run(pieces)
        for a, b in zip(out + grad, ref_out + ref_grad):
            assert a.shape == b.shape
            assert _max_rel(a, b) < 1e-5


def test_loop_pieces_follows_threads_and_the_environment(monkeypatch):
    from zoo.layers.common import loop_pieces

    monkeypatch.setenv("ZOO_LOOP_PIECES", "3")
    assert loop_pieces() == 3
    monkeypatch.setenv("ZOO_LOOP_PIECES", "0")
    with pytest.raises(ValueError, match="ZOO_LOOP_PIECES"):
        loop_pieces()
    monkeypatch.delenv("ZOO_LOOP_PIECES")
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 1)
    assert loop_pieces() == 1
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 2)
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 6)
    assert loop_pieces() == 2
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["gpu:0"])
    assert loop_pieces() == 1


def test_relu_rnn_run_backward_equals_the_reversed_sequence_forward():
    """``reverse=True`` (the backward RNN without reversed copies) gives the forward loop
    over the reversed sequence, reversed back: states and gradients, with gaps in the mask
    and the batch in 2 pieces."""
    from zoo.layers.relu_rnn import relu_rnn_sequence

    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(7, 4, 5)), tf.float32)
    m = tf.constant((rng.uniform(size=(7, 4)) < 0.7).astype("float32"))
    w = [tf.Variable(rng.normal(scale=0.5, size=s).astype("float32"))
         for s in ((5, 6), (6, 6), (6,))]
    cot = tf.constant(rng.normal(size=(7, 4, 6)), tf.float32)

    def run(backward):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if backward:
                h = relu_rnn_sequence(x, m, *w, pieces=2, reverse=True)
            else:
                h = tf.reverse(relu_rnn_sequence(tf.reverse(x, [0]), tf.reverse(m, [0]), *w,
                                                 pieces=2), [0])
            loss = tf.reduce_sum(h * cot)
        return [h] + tape.gradient(loss, [x] + w)

    for a, b in zip(run(True), run(False)):
        assert np.max(np.abs(b.numpy())) > 0
        assert _max_rel(a, b) < 1e-5


def test_relu_rnn_saves_and_reloads_in_a_keras_file_and_names_bad_input(tmp_path):
    """A model holding a ReluRNN round-trips its config and a .keras file (same outputs
    after loading); an input of the wrong rank is refused with Keras' error."""
    rng = np.random.default_rng(7)
    inputs = keras.Input((None, 5))
    model = keras.Model(inputs, ReluRNN(4, return_sequences=True, go_backwards=True)(inputs))
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    path = tmp_path / "relu_rnn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = [lay for lay in loaded.layers if isinstance(lay, ReluRNN)]
    assert len(layer) == 1 and layer[0].go_backwards and layer[0].units == 4
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)
    rnn = ReluRNN(4, return_sequences=True)
    with pytest.raises(ValueError, match="expected ndim=3, found ndim=2"):
        rnn(np.ones((3, 5), "float32"))

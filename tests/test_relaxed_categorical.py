import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from zoo.layers import RelaxedCategorical, TemperatureAnnealing
from tests.test_case import assert_mc_mean, run_fit_test, run_layer_test, run_saving_test

LOGITS = np.log(np.array([0.05, 0.1, 0.15, 0.3, 0.4]))


def _fixed_logits_layer(n=20000, **kwargs):
    """A layer whose logits are LOGITS for every input (zero kernel, bias = logits)."""
    layer = RelaxedCategorical(num_variables=1, num_classes=5, **kwargs)
    layer(np.zeros((1, 2), "float32"))
    layer.logits_dense.set_weights([np.zeros((2, 5), "float32"), LOGITS.astype("float32")])
    return layer, np.zeros((n, 2), "float32")


@pytest.mark.parametrize("straight_through", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_layer_contract(straight_through, training):
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    noise = np.random.RandomState(1).rand(3, 2, 3).astype("float32")
    _, out = run_layer_test(
        RelaxedCategorical,
        dict(num_variables=2, num_classes=3, temperature=0.7, straight_through=straight_through,
             prior="learned", seed=4),
        x,
        call_kwargs=dict(noise=noise, training=training),
        expected_output_shapes={"sample": (3, 2, 3), "log_probs": (3, 2, 3), "kl": (3,)},
    )
    np.testing.assert_allclose(out["sample"].numpy().sum(-1), 1.0, rtol=1e-5)


def test_hard_samples_follow_softmax_chi_square():
    layer, x = _fixed_logits_layer(seed=7)
    sample = layer(x, training=False)["sample"].numpy()[:, 0]
    assert set(np.unique(sample)) == {0.0, 1.0} and np.all(sample.sum(-1) == 1)
    counts = sample.sum(0)
    expected = np.exp(LOGITS) * len(sample)
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > 1e-3, (counts, expected, p_value)


def test_relaxed_samples_concentrate_on_vertices_as_temperature_falls():
    largest = {}
    for tau in [10.0, 1.0, 0.1, 0.01]:
        layer, x = _fixed_logits_layer(n=5000, temperature=tau, seed=3)
        largest[tau] = layer(x, training=True)["sample"].numpy().max(-1).mean()
    assert largest[10.0] < 0.3  # near uniform (1/5) at high temperature
    assert largest[10.0] < largest[1.0] < largest[0.1] < largest[0.01]
    assert largest[0.01] > 0.99


def test_relaxed_argmax_is_exact_categorical():
    """argmax of a relaxed sample is the Gumbel-max sample: its frequencies are softmax(logits)."""
    layer, x = _fixed_logits_layer(temperature=2.0, seed=5)
    sample = layer(x, training=True)["sample"].numpy()[:, 0]
    one_hot = np.eye(5)[sample.argmax(-1)]
    assert_mc_mean(one_hot, np.exp(LOGITS), n_se=4)


def test_straight_through_is_hard_forward_with_finite_nonzero_gradients():
    layer = RelaxedCategorical(num_variables=4, num_classes=6, temperature=0.5,
                               straight_through=True, seed=0)
    x = tf.constant(np.random.RandomState(2).randn(8, 3).astype("float32"))
    weights = tf.constant(np.random.RandomState(3).randn(6).astype("float32"))
    layer(x)
    with tf.GradientTape() as tape:
        sample = layer(x, training=True)["sample"]
        objective = tf.reduce_sum(sample * weights)
    grads = tape.gradient(objective, layer.logits_dense.trainable_variables)
    assert set(np.unique(sample.numpy())) == {0.0, 1.0}
    for g in grads:
        assert np.all(np.isfinite(g.numpy())) and np.abs(g.numpy()).sum() > 0


@pytest.mark.parametrize("prior", ["uniform", "learned"])
def test_kl_is_discrete_kl_to_prior(prior):
    layer = RelaxedCategorical(num_variables=3, num_classes=4, prior=prior)
    x = np.random.RandomState(0).randn(5, 2).astype("float32")
    out = layer(x, training=True)
    if prior == "learned":
        layer.prior_logits.assign(np.random.RandomState(1).randn(3, 4).astype("float32"))
        out = layer(x, training=True)
        log_p = tf.nn.log_softmax(layer.prior_logits).numpy()
    else:
        log_p = np.full((3, 4), -np.log(4.0))
    q = np.exp(out["log_probs"].numpy())
    expected = (q * (np.log(q) - log_p)).sum((-2, -1))
    np.testing.assert_allclose(out["kl"].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(float(layer.losses[-1]), expected.mean(), rtol=1e-5)


def test_temperature_annealing_during_fit_follows_schedule():
    inputs = keras.Input((4,))
    latent = RelaxedCategorical(num_variables=2, num_classes=3, seed=0)(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.Flatten()(latent["sample"]))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.RandomState(0).randn(64, 4).astype("float32")
    schedule = TemperatureAnnealing(rate=0.05, minimum=0.5, initial=1.0, every=3)
    history = model.fit(x, x, batch_size=8, epochs=2, verbose=0, callbacks=[schedule])
    temperature = [v for v in model.non_trainable_variables if v.name == "temperature"][0]
    # 16 steps; the last batch ran at step 15 -> t = 15 -> max(0.5, exp(-0.75)) = 0.5.
    assert float(temperature.numpy()) == pytest.approx(max(0.5, np.exp(-0.05 * 15)), rel=1e-6)
    assert history.history["temperature"][0] == pytest.approx(np.exp(-0.05 * 6), rel=1e-6)
    assert schedule.value(4) == pytest.approx(np.exp(-0.05 * 3))
    assert TemperatureAnnealing.from_config(schedule.get_config()).get_config() == \
        schedule.get_config()


def test_fit_lowers_loss_and_saving_roundtrip(tmp_path):
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, size=(256, 2))
    x = np.eye(3)[labels].reshape(256, 6).astype("float32")
    inputs = keras.Input((6,))
    latent = RelaxedCategorical(num_variables=2, num_classes=3, temperature=0.5, seed=1)(inputs)
    outputs = keras.layers.Dense(6)(keras.layers.Flatten()(latent["sample"]))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    run_fit_test(model, tf.data.Dataset.from_tensor_slices((x, x)).batch(32), epochs=5)
    noise = rng.rand(4, 2, 3).astype("float32")
    layer_name = model.layers[1].name
    run_saving_test(model, lambda m: m.get_layer(layer_name)(x[:4], noise=noise), tmp_path)


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        RelaxedCategorical(2, 1)
    with pytest.raises(ValueError, match="temperature"):
        RelaxedCategorical(2, 3, temperature=0.0)
    with pytest.raises(ValueError, match="prior"):
        RelaxedCategorical(2, 3, prior="dirichlet")
    with pytest.raises(ValueError, match="features"):
        RelaxedCategorical(2, 3)(np.ones((4,), "float32"))
    with pytest.raises(ValueError, match="every"):
        TemperatureAnnealing(every=0)

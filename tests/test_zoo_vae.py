import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import DLGM, VAE, CategoricalVAE
from zoo.base import ActiveUnits
from zoo.bounds import active_units, chunked_importance_bound, iwae_bound
from zoo.datasets import load_arrays
from tests.test_case import assert_bound_grows_with_k, assert_mc_equal, run_model_test

SHAPE = (8, 8, 1)
SMALL = dict(input_shape=SHAPE, hidden_units=(32,))


@pytest.fixture(scope="module")
def digits_arrays():
    data = load_arrays("digits", split="train", binarize="static")
    index = np.sort(np.random.default_rng(0).choice(len(data["image"]), 512, replace=False))
    return {"image": data["image"][index].astype("float32"), "label": data["label"][index]}


@pytest.fixture(scope="module")
def digits(digits_arrays):
    return digits_arrays["image"]


MODELS = {
    "vae-diag-mlp": lambda: VAE(latent_dim=4, covariance="diag", seed=1, **SMALL),
    "vae-lowrank-mlp-mc": lambda: VAE(latent_dim=4, covariance="lowrank", kl_estimator="mc",
                                      seed=1, **SMALL),
    "vae-full-conv": lambda: VAE(latent_dim=3, covariance="full", architecture="conv",
                                 conv_filters=(8, 16), seed=1, **SMALL),
    "vae-gaussian-perpixel": lambda: VAE(latent_dim=4, likelihood="gaussian",
                                         gaussian_variance="per_pixel", seed=1, **SMALL),
    "dlgm": lambda: DLGM(latent_dims=(4, 3), weight_prior_variance=1.0, dataset_size=512,
                         seed=1, **SMALL),
    "categorical": lambda: CategoricalVAE(num_variables=4, num_classes=3, anneal_every=4,
                                          anneal_rate=1e-2, seed=1, **SMALL),
    "categorical-st": lambda: CategoricalVAE(num_variables=4, num_classes=3,
                                             straight_through=True, seed=1, **SMALL),
}


def _deterministic(model, x):
    """Seeded importance-weighted bound, reconstruction and prior samples."""
    return (model.log_likelihood(x[:6], num_samples=20, seed=3).log_likelihood,
            model.reconstruct(x[:3]), model.sample(2, seed=5))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name, digits_arrays, tmp_path):
    model, report = run_model_test(
        MODELS[name], digits_arrays, deterministic=_deterministic, tmp_path=tmp_path, epochs=4,
        batch_size=64, learning_rate=3e-3,
        bad_inputs=[(lambda m: m(np.zeros((2, 9, 8, 1), "float32")), ValueError, "8, 8, 1"),
                    (lambda m: m.log_likelihood(digits_arrays["image"][:2], num_samples=0),
                     ValueError, "num_samples")])
    # evaluate reports the ELBO and its parts; ELBO = reconstruction - KL.
    result = model.evaluate(digits_arrays["image"], verbose=0, return_dict=True)
    np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"], rtol=1e-4)
    assert result["kl"] >= 0
    # The contract's report: the K=4 importance-weighted bound on the 8 examples it was given,
    # with the settings' seed.
    assert report["likelihood_examples"] == 8
    direct = model.log_likelihood(digits_arrays["image"][:8], num_samples=4, seed=0)
    assert report["iwae_log_likelihood_k4"] == pytest.approx(np.mean(direct.log_likelihood),
                                                             rel=1e-6)


@pytest.mark.parametrize("name", ["vae-diag-mlp", "dlgm", "categorical"])
def test_iwae_bound_is_above_elbo_and_grows_with_k(name, digits):
    model = MODELS[name]()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(digits, batch_size=64, epochs=3, verbose=0)
    x = digits[:200]
    # K = 1 is the ELBO itself.
    one = model.log_likelihood(x, num_samples=1, seed=11)
    np.testing.assert_allclose(one.log_likelihood, one.elbo, rtol=1e-10)
    # E[L_K] grows with K. Split 1000 particles per example into groups of K, average the
    # K-sample bounds within each example, and test the per-example gains in standard errors.
    log_w = model.log_weights(tf.constant(x), 1000, tf.constant([11, 0])).numpy()
    assert_bound_grows_with_k(log_w)
    # Each example's K-sample bound is at least the ELBO from the same samples (Jensen).
    bound = model.log_likelihood(x, num_samples=100, chunk_size=16, seed=11)
    assert np.all(bound.log_likelihood >= bound.elbo - 1e-9)


def test_analytic_and_monte_carlo_kl_estimators_agree_in_expectation(digits):
    analytic = VAE(latent_dim=4, covariance="lowrank", kl_estimator="analytic", seed=2, **SMALL)
    mc = VAE.from_config({**analytic.get_config(), "kl_estimator": "mc", "seed": 3})
    mc.set_weights(analytic.get_weights())
    x = np.repeat(digits[:4], 4000, axis=0)
    elbo_a = analytic(x)["elbo"].numpy().reshape(4, 4000)
    elbo_b = mc(x)["elbo"].numpy().reshape(4, 4000)
    assert_mc_equal(elbo_a.T, elbo_b.T, n_se=4)
    # The analytic estimator has the lower variance (it integrates the KL exactly).
    assert np.all(elbo_a.var(1) < elbo_b.var(1))


def test_one_layer_dlgm_equals_vae_with_the_same_networks(digits):
    kwargs = dict(input_shape=SHAPE, hidden_units=(32,), activation="tanh", seed=4)
    vae = VAE(latent_dim=5, covariance="lowrank", **kwargs)
    dlgm = DLGM(latent_dims=(5,), covariance="lowrank", **kwargs)
    for source, target in [(vae.encoder, dlgm.encoder), (vae.posterior, dlgm.posteriors[0]),
                           (vae.decoder, dlgm.decoder)]:
        target.set_weights(source.get_weights())
    dlgm.noise_maps[0].set_weights([np.eye(5, dtype="float32")])
    x = tf.constant(digits[:16])
    seed = tf.constant([7, 0])
    # Same noise: DLGM layer 1 draws with seed + [0, 1000]; give the VAE that seed.
    np.testing.assert_allclose(dlgm.log_weights(x, 9, seed),
                               vae.log_weights(x, 9, seed + [0, 1000]), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dlgm.reconstruct(digits[:4]), vae.reconstruct(digits[:4]),
                               rtol=1e-5, atol=1e-6)


def test_categorical_vae_hard_samples_are_one_hot(digits):
    model = MODELS["categorical"]()
    z = model.encode(digits[:10])["sample"].numpy()
    assert set(np.unique(z)) == {0.0, 1.0}
    np.testing.assert_array_equal(z.sum(-1), 1.0)
    prior = model.prior_sample(50, seed=1).numpy()
    np.testing.assert_array_equal(prior.sum(-1), 1.0)
    # Training samples are relaxed (not one-hot) without straight-through.
    relaxed = model.latent(model.encoder(digits[:10]), training=True)["sample"].numpy()
    assert np.any((relaxed > 0.01) & (relaxed < 0.99))


def test_free_bits_floor_the_kl_term(digits):
    model = VAE(latent_dim=4, free_bits=2.0, seed=0, **SMALL)
    posterior = model.posterior(model.encoder(digits[:32]))
    term = model.kl_objective(posterior).numpy()
    assert np.all(term >= 4 * 2.0 - 1e-5) and np.all(term == term[0])
    with pytest.raises(ValueError, match="free_bits"):
        VAE(latent_dim=4, covariance="full", free_bits=1.0, **SMALL)


def test_bad_input_gives_clear_errors(digits):
    model = VAE(latent_dim=2, seed=0, **SMALL)
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8, 1\)"):
        model(np.zeros((2, 28, 28, 1), "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        model(digits[:2] * 16.0)
    bad = digits[:2].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        model(bad)
    with pytest.raises(ValueError, match="architecture"):
        VAE(architecture="transformer", **SMALL)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(likelihood="poisson", **SMALL)
    with pytest.raises(ValueError, match="divisible"):
        VAE(input_shape=(10, 10, 1), architecture="conv")
    with pytest.raises(ValueError, match="num_samples"):
        model.log_likelihood(digits[:2], num_samples=0)


def test_bounds_helpers_match_numpy():
    rng = np.random.RandomState(0)
    lw = rng.randn(3, 50) * 5
    expected = np.log(np.exp(lw - lw.max(1, keepdims=True)).mean(1)) + lw.max(1)
    np.testing.assert_allclose(iwae_bound(tf.constant(lw)).numpy(), expected, rtol=1e-12)

    def fn(x, k, seed):
        return tf.random.stateless_normal([3, k], seed, dtype=tf.float64) * 5

    chunked = chunked_importance_bound(fn, None, 50, 7, seed=9)
    pieces = [fn(None, min(7, 50 - 7 * i), tf.constant([9, i])) for i in range(8)]
    whole = tf.concat(pieces, -1)
    np.testing.assert_allclose(chunked.log_likelihood, iwae_bound(whole).numpy(), rtol=1e-12)
    np.testing.assert_allclose(chunked.elbo, whole.numpy().mean(-1), rtol=1e-12)
    means = rng.randn(400, 5) * np.array([1.0, 0.5, 0.2, 0.05, 0.001])
    metric = ActiveUnits(5)
    for chunk in np.split(means, 4):
        metric.update_state(chunk)
    assert int(metric.result()) == active_units(means) == 3


def test_sample_weight_is_a_weighted_mean_of_the_objective(digits):
    """``fit(x, sample_weight=w)`` is honoured: the loss is sum(w * objective) / sum(w)."""
    model = VAE(latent_dim=2, seed=4, **SMALL)
    terms = {"objective": tf.constant([3.0, 1, 1, 1, 1, 1, 1, 1]), "elbo": tf.zeros([8]),
             "kl": tf.zeros([8]), "reconstruction": tf.zeros([8])}
    weights = tf.constant([2.0, 1, 1, 1, 1, 1, 1, 1])
    value = model.compute_loss(x=digits[:8], y_pred=terms, sample_weight=weights)
    np.testing.assert_allclose(float(value), (2 * 3.0 + 7) / 9, rtol=1e-6)
    with pytest.raises(ValueError, match="one weight per example"):
        model.compute_loss(x=digits[:8], y_pred=terms, sample_weight=tf.ones([3]))
    # Through fit: zero weights leave the parameters where they are (plain SGD).
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model(digits[:2])
    before = [w.numpy().copy() for w in model.trainable_variables]
    model.fit(digits[:8], sample_weight=np.zeros(8, "float32"), batch_size=8, epochs=1,
              verbose=0)
    for a, b in zip(before, [w.numpy() for w in model.trainable_variables]):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_iwae_objective_is_the_k_sample_bound_and_trains(digits):
    """objective='iwae' with k samples: its expectation is the k-sample importance-weighted
    bound that log_likelihood(num_samples=k) estimates with other noise (equal within Monte
    Carlo error), above the k-sample ELBO; the multi-sample ELBO keeps the ELBO's mean."""
    reps = 400
    x = tf.constant(np.repeat(digits[:4], reps, axis=0))  # each row: independent noise
    iwae = VAE(latent_dim=3, objective="iwae", num_samples=5, seed=2, **SMALL)
    elbo = VAE(latent_dim=3, num_samples=5, seed=2, **SMALL)
    single = VAE(latent_dim=3, seed=2, **SMALL)
    elbo.set_weights(iwae.get_weights())
    single.set_weights(iwae.get_weights())

    def per_input(values):  # [4 * reps] -> [reps, 4]
        return np.asarray(values).reshape(4, reps).T

    draws = per_input(-iwae.elbo_terms(x)["objective"])
    log_w = iwae.log_weights(x, 5, tf.constant([7, 0]))
    reference = per_input(tf.reduce_logsumexp(log_w, 1) - np.log(5.0))
    assert_mc_equal(draws, reference)
    elbo_draws = per_input(elbo.elbo_terms(x)["elbo"])
    assert np.all(draws.mean(0) > elbo_draws.mean(0))
    assert_mc_equal(elbo_draws, per_input(single.elbo_terms(x)["elbo"]))
    # It trains, and saves its settings.
    model = VAE(latent_dim=3, objective="iwae", num_samples=4, seed=1, **SMALL)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(digits, batch_size=64, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    config = model.get_config()
    assert config["objective"] == "iwae" and config["num_samples"] == 4
    with pytest.raises(ValueError, match="objective"):
        VAE(latent_dim=3, objective="vimco", **SMALL)


def test_train_step_overheads_are_gone_without_changing_the_numbers(digits):
    """Issue 17: the VAE's log p(x|z) is x*l - softplus(l) (equal to TFP's Bernoulli log_prob
    and its gradient), fit does not track active units unless asked, evaluate still does."""
    from zoo.layers import BernoulliLikelihood
    from zoo.vae import BernoulliLogitsLikelihood

    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(scale=4.0, size=(5, 3, 8, 8, 1)).astype("float32"))
    x = np.where(rng.random((5, 8, 8, 1)) < 0.3, rng.random((5, 8, 8, 1)),
                 rng.random((5, 8, 8, 1)) > 0.5).astype("float32")  # binary and grey levels
    results = []
    for head in (BernoulliLogitsLikelihood(event_ndims=3), BernoulliLikelihood(event_ndims=3)):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = head(logits, x)["log_prob"]  # a particle axis: x broadcast over it
        results.append((value.numpy(), tape.gradient(value, logits).numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-6)
    model = VAE(latent_dim=2, seed=0, **SMALL)
    model.compile(optimizer="adam")
    assert "active_units" not in model.fit(digits[:64], batch_size=32, verbose=0).history
    assert "active_units" in model.evaluate(digits[:64], verbose=0, return_dict=True)
    model.active_units_in_fit = True
    model.compile(optimizer="adam")  # a new train function
    assert "active_units" in model.fit(digits[:64], batch_size=32, verbose=0).history
    # fit's per-batch value check (x in [0, 1]) can be left out of the training step only.
    bad = digits[:64] * 16.0
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        model.fit(bad, batch_size=32, verbose=0)
    model.input_checks_in_fit = False
    model.compile(optimizer="adam")
    model.fit(bad, batch_size=32, verbose=0)  # trains on it: the caller opted out
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        model.evaluate(bad, verbose=0)

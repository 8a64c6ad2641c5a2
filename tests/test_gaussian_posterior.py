import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import GaussianPosterior, KLAnnealing
from zoo.layers.gaussian_posterior import family_sample
from tests.test_case import (
    assert_mc_mean,
    check_gradients,
    run_fit_test,
    run_layer_test,
    run_saving_test,
)

tfd = tfp.distributions
FAMILIES = ["diag", "lowrank", "full"]


def _features(batch=3, width=5, dtype="float32", seed=0):
    return np.random.RandomState(seed).randn(batch, width).astype(dtype)


def _covariance(layer, features):
    """Dense covariance C of q(z|x) rebuilt from the family's parameters (float64 NumPy)."""
    p = {k: v.numpy().astype(np.float64) for k, v in layer.posterior_parameters(features).items()}
    if layer.covariance == "diag":
        return np.stack([np.diag(s**2) for s in p["scale"]])
    if layer.covariance == "full":
        return np.einsum("bij,bkj->bik", p["scale_tril"], p["scale_tril"])
    prec = np.stack([np.diag(d) + np.outer(u, u)
                     for d, u in zip(p["precision_diag"], p["precision_factor"])])
    return np.linalg.inv(prec)


@pytest.mark.parametrize("covariance", FAMILIES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_contract(covariance, dtype):
    x = _features(dtype=dtype)
    noise = np.random.RandomState(1).randn(3, 2, 4).astype(dtype)
    layer, out = run_layer_test(
        GaussianPosterior,
        dict(latent_dim=4, covariance=covariance, num_samples=2, kl="analytic", seed=3,
             dtype=dtype),
        x,
        call_kwargs=dict(noise=noise),
    )
    assert out["z"].shape == (3, 2, 4) and out["z"].dtype == dtype
    assert out["kl"].shape == (3,) and out["log_q"].shape == (3, 2)
    # The loss added is kl_weight * mean KL.
    np.testing.assert_allclose(float(layer.losses[-1]), out["kl"].numpy().mean(), rtol=1e-5)


@pytest.mark.parametrize("covariance", FAMILIES)
def test_factor_reproduces_covariance_and_log_det(covariance):
    """R e_k recovers the columns of R; R R^T must equal C, log det C must match slogdet."""
    d = 6
    layer = GaussianPosterior(d, covariance=covariance, num_samples=d, dtype="float64")
    x = _features(batch=4, width=7, dtype="float64", seed=2)
    eye = np.broadcast_to(np.eye(d), (4, d, d))  # particle k gets noise e_k
    out = layer(x, noise=eye)
    factor = np.swapaxes(out["z"].numpy() - out["loc"].numpy()[:, None, :], 1, 2)  # [b, d, k]
    cov = _covariance(layer, x)
    np.testing.assert_allclose(factor @ np.swapaxes(factor, 1, 2), cov, rtol=1e-10, atol=1e-12)
    params = layer.posterior_parameters(x)
    _, _, diag_cov, log_det = family_sample(covariance, params, eye, d)
    np.testing.assert_allclose(log_det.numpy(), np.linalg.slogdet(cov)[1], rtol=1e-10)
    np.testing.assert_allclose(diag_cov.numpy(), np.diagonal(cov, axis1=1, axis2=2), rtol=1e-10)
    # log q against TFP's dense multivariate normal.
    reference = tfd.MultivariateNormalFullCovariance(out["loc"][:, None, :], cov[:, None])
    np.testing.assert_allclose(out["log_q"].numpy(), reference.log_prob(out["z"]).numpy(),
                               rtol=1e-9)


def test_lowrank_sample_covariance_matches_inverse_precision():
    d, n = 5, 40000
    layer = GaussianPosterior(d, covariance="lowrank", num_samples=n, seed=11, dtype="float64")
    x = _features(batch=1, width=4, dtype="float64", seed=5)
    z = layer(x)["z"].numpy()[0]  # [n, d]
    cov = _covariance(layer, x)[0]
    centred = z - layer.posterior_parameters(x)["loc"].numpy()[0]
    # Each entry of the sample covariance is a mean of products: check it in standard errors.
    products = np.einsum("ni,nj->nij", centred, centred).reshape(n, -1)
    assert_mc_mean(products, cov.ravel(), n_se=4.5)


@pytest.mark.parametrize("covariance", FAMILIES)
@pytest.mark.parametrize("given_prior", [False, True])
def test_analytic_kl_matches_tfp_and_monte_carlo(covariance, given_prior):
    d, n = 4, 20000
    x = _features(batch=2, width=5, dtype="float64", seed=7)
    kwargs = {}
    if given_prior:
        rng = np.random.RandomState(8)
        kwargs = dict(prior_loc=rng.randn(2, d), prior_scale=np.exp(0.3 * rng.randn(2, d)))
    analytic = GaussianPosterior(d, covariance=covariance, num_samples=n, kl="analytic", seed=1,
                                 dtype="float64")
    out = analytic(x, **kwargs)
    mc = GaussianPosterior.from_config({**analytic.get_config(), "kl": "mc"})
    mc(x, **kwargs)
    mc.set_weights(analytic.get_weights())
    mc_out = mc(x, **kwargs)
    # Against TFP's KL between dense Gaussians.
    cov = _covariance(analytic, x)
    q = tfd.MultivariateNormalFullCovariance(out["loc"], cov)
    if given_prior:
        p = tfd.MultivariateNormalDiag(kwargs["prior_loc"], kwargs["prior_scale"])
    else:
        p = tfd.MultivariateNormalDiag(tf.zeros([2, d], tf.float64))
    np.testing.assert_allclose(out["kl"].numpy(), tfd.kl_divergence(q, p).numpy(), rtol=1e-9)
    # Estimator A (Monte Carlo) agrees with estimator B in standard errors.
    per_sample = (mc_out["log_q"] - mc_out["log_prior"]).numpy()  # [2, n]
    np.testing.assert_allclose(mc_out["kl"].numpy(), per_sample.mean(1), rtol=1e-12)
    assert_mc_mean(per_sample.T, out["kl"].numpy(), n_se=4)


@pytest.mark.parametrize("covariance", FAMILIES)
def test_gradients_match_finite_differences(covariance):
    layer = GaussianPosterior(3, covariance=covariance, num_samples=2, dtype="float64")
    x = _features(batch=2, width=4, dtype="float64", seed=3)
    noise = np.random.RandomState(4).randn(2, 2, 3)
    layer(x, noise=noise)

    def objective(features):
        out = layer(features, noise=noise)
        return tf.reduce_sum(out["kl"]) + tf.reduce_sum(out["log_q"]) + tf.reduce_sum(out["z"])

    check_gradients(objective, [x], eps=1e-6, rtol=1e-5)


@pytest.mark.parametrize("covariance", FAMILIES)
def test_xla_matches_eager(covariance):
    layer = GaussianPosterior(4, covariance=covariance, num_samples=3)
    x = _features()
    noise = np.random.RandomState(1).randn(3, 3, 4).astype("float32")
    eager = layer(x, noise=noise)
    compiled = tf.function(lambda f: layer(f, noise=noise), jit_compile=True)(x)
    for key in eager:
        np.testing.assert_allclose(eager[key], compiled[key], rtol=2e-5, atol=2e-5)


def test_mixed_precision_keeps_distribution_math_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = GaussianPosterior(4, covariance="lowrank", num_samples=2)
        out = layer(_features())
        assert layer.compute_dtype == "float16"
        assert all(v.dtype == "float32" for v in out.values())
        assert np.all(np.isfinite(out["kl"].numpy()))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="covariance"):
        GaussianPosterior(2, covariance="banded")
    with pytest.raises(ValueError, match="latent_dim"):
        GaussianPosterior(0)
    with pytest.raises(ValueError, match="num_samples"):
        GaussianPosterior(2, num_samples=0)
    with pytest.raises(ValueError, match="kl"):
        GaussianPosterior(2, kl="exact")
    with pytest.raises(ValueError, match="features"):
        GaussianPosterior(2)(np.ones((5,), "float32"))
    bad = _features()
    bad[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="features"):
        GaussianPosterior(2)(bad)
    with pytest.raises(ValueError, match="noise"):
        GaussianPosterior(2, num_samples=3)(_features(), noise=np.ones((3, 2), "float32"))


class TinyAutoencoder(keras.Model):
    def __init__(self, covariance="diag", **kwargs):
        super().__init__(**kwargs)
        self.covariance = covariance
        self.encoder = keras.layers.Dense(16, activation="tanh")
        self.posterior = GaussianPosterior(2, covariance=covariance, seed=0)
        self.decoder = keras.layers.Dense(6)

    def call(self, x, noise=None):
        z = self.posterior(self.encoder(x), noise=noise)["z"]
        recon = self.decoder(z)
        self.add_loss(tf.reduce_mean(tf.reduce_sum(tf.square(recon - x), -1)))
        return recon

    def get_config(self):
        return {**super().get_config(), "covariance": self.covariance}


keras.saving.register_keras_serializable(package="tests")(TinyAutoencoder)


@pytest.mark.parametrize("covariance", FAMILIES)
def test_fit_lowers_loss_and_kl_annealing_sets_weight(covariance):
    rng = np.random.RandomState(0)
    latent = rng.randn(256, 2)
    x = np.tanh(latent @ rng.randn(2, 6)).astype("float32")
    model = TinyAutoencoder(covariance)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = tf.data.Dataset.from_tensor_slices(x).batch(32)
    annealing = KLAnnealing(start=0.0, end=1.0, steps=16)
    run_fit_test(model, data, epochs=4, callbacks=[annealing])
    # 4 epochs x 8 batches: the weight is read at the start of the last batch (step 31).
    assert float(model.posterior.kl_weight.numpy()) == pytest.approx(1.0)


def test_saved_model_reloads_with_equal_outputs(tmp_path):
    model = TinyAutoencoder("lowrank")
    x = _features(batch=4, width=6)
    noise = np.random.RandomState(2).randn(4, 2).astype("float32")
    model(x, noise=noise)
    run_saving_test(model, lambda m: m.posterior(m.encoder(x), noise=noise), tmp_path)


def test_exp_scale_activation_is_the_log_variance_parametrization():
    """scale_activation='exp': the raw output is log sigma^2 (Kingma & Welling; Burda et al.),
    scale = exp(raw / 2) + min_scale; log q and the analytic KL follow TFP's diagonal normal;
    the option survives get_config; other families refuse it by name."""
    x = _features(batch=4, width=5, dtype="float64", seed=1)
    layer = GaussianPosterior(3, scale_activation="exp", min_scale=0.0, num_samples=2, seed=0,
                              dtype="float64")
    out = layer(x)
    raw = layer.param_denses[0](x).numpy()
    loc = layer.loc_dense(x).numpy()
    np.testing.assert_allclose(out["scale"].numpy(), np.exp(0.5 * raw), rtol=1e-12)
    q = tfd.Normal(loc[:, None, :], np.exp(0.5 * raw)[:, None, :])
    np.testing.assert_allclose(out["log_q"].numpy(),
                               q.log_prob(out["z"]).numpy().sum(-1), rtol=1e-10)
    kl = tfd.kl_divergence(tfd.Normal(loc, np.exp(0.5 * raw)),
                             tfd.Normal(np.float64(0.0), np.float64(1.0)))
    np.testing.assert_allclose(out["kl"].numpy(), kl.numpy().sum(-1), rtol=1e-10)
    # The default differs: softplus of the same raw output.
    soft = GaussianPosterior(3, num_samples=2, seed=0, dtype="float64")
    soft(x)
    soft.set_weights(layer.get_weights())
    np.testing.assert_allclose(soft(x)["scale"].numpy(), np.log1p(np.exp(raw)) + 1e-4,
                               rtol=1e-10)
    clone = GaussianPosterior.from_config(layer.get_config())
    assert clone.scale_activation == "exp"
    assert GaussianPosterior.from_config(
        {k: v for k, v in soft.get_config().items() if k != "scale_activation"}
    ).scale_activation == "softplus"
    with pytest.raises(ValueError, match="scale_activation"):
        GaussianPosterior(3, covariance="full", scale_activation="exp")
    with pytest.raises(ValueError, match="scale_activation"):
        GaussianPosterior(3, scale_activation="relu")


def test_lowrank_exp_precision_diagonal_against_tfp():
    """``scale_activation="exp"`` with the rank-one precision: D = exp(raw) (Rezende et al.'s
    log D), and q's density and KL are those of N(loc, (D + u u^T)^-1)."""
    x = np.random.RandomState(1).randn(4, 5)
    layer = GaussianPosterior(3, covariance="lowrank", scale_activation="exp", min_scale=0.0,
                              num_samples=2, seed=0, dtype="float64")
    out = layer(x)
    raw = layer.param_denses[0](x).numpy()
    u = layer.param_denses[1](x).numpy()
    loc = layer.loc_dense(x).numpy()
    np.testing.assert_allclose(layer.posterior_parameters(x)["precision_diag"].numpy(),
                               np.exp(raw), rtol=1e-12)
    precision = np.stack([np.diag(np.exp(r)) + np.outer(v, v) for r, v in zip(raw, u)])
    q = tfd.MultivariateNormalTriL(loc, np.linalg.cholesky(np.linalg.inv(precision)))
    z = out["z"].numpy()  # [4, 2, 3]
    np.testing.assert_allclose(out["log_q"].numpy(),
                               q.log_prob(np.swapaxes(z, 0, 1)).numpy().T, rtol=1e-9)
    kl = tfd.kl_divergence(q, tfd.MultivariateNormalDiag(np.zeros(3), np.ones(3)))
    np.testing.assert_allclose(out["kl"].numpy(), kl.numpy(), rtol=1e-9)


def test_dlgm_passes_scale_activation_and_min_scale_to_its_posteriors():
    from zoo import DLGM

    model = DLGM(input_shape=(6,), latent_dims=(3, 2), hidden_units=(8,),
                 scale_activation="exp", min_scale=0.0, seed=0)
    assert all(p.scale_activation == "exp" and p.min_scale == 0.0 for p in model.posteriors)
    clone = DLGM.from_config(model.get_config())
    assert all(p.scale_activation == "exp" and p.min_scale == 0.0 for p in clone.posteriors)
    assert all(p.scale_activation == "softplus" and p.min_scale == 1e-4
               for p in DLGM(input_shape=(6,), latent_dims=(3,), hidden_units=(8,)).posteriors)


def test_vae_scale_activation_reaches_its_posterior_and_config():
    from zoo import VAE

    model = VAE(input_shape=(6,), latent_dim=2, hidden_units=(8,), scale_activation="exp",
                seed=0)
    assert model.posterior.scale_activation == "exp"
    x = np.random.RandomState(0).rand(5, 6).astype("float32")
    params = model.encode(x)
    raw = model.posterior.param_denses[0](model.encoder(x)).numpy()
    np.testing.assert_allclose(params["scale"].numpy(), np.exp(0.5 * raw) + 1e-4, rtol=1e-5)
    clone = VAE.from_config(model.get_config())
    assert clone.posterior.scale_activation == "exp"
    # min_scale reaches the posterior (0: the paper's exp(raw / 2) with no floor) and the
    # config; older configs without it keep the 1e-4 floor.
    bare = VAE(input_shape=(6,), latent_dim=2, hidden_units=(8,), scale_activation="exp",
               min_scale=0.0, seed=0)
    bare(x)
    bare.set_weights(model.get_weights())
    np.testing.assert_allclose(bare.encode(x)["scale"].numpy(), np.exp(0.5 * raw), rtol=1e-5)
    assert VAE.from_config(bare.get_config()).posterior.min_scale == 0.0
    old = {k: v for k, v in model.get_config().items() if k != "min_scale"}
    assert VAE.from_config(old).posterior.min_scale == 1e-4
    with pytest.raises(ValueError, match="min_scale"):
        VAE(input_shape=(6,), latent_dim=2, hidden_units=(8,), min_scale=-1.0)

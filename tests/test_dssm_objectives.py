"""DKF/DMM objectives "elbo" | "iwae" | "fivo" (issue 15): the particle bounds against the
exact Kalman log-likelihood of a linear-Gaussian DKF (TFP's LinearGaussianStateSpaceModel),
with padding and missing frames; K = 1 against the sampled ELBO; fit, config and reload."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from zoo import DeepKalmanFilter, DeepMarkovModel
from tests.test_case import assert_mc_mean, run_fit_test, run_saving_test

tfd = tfp.distributions
TINY = dict(latent_dim=3, rnn_units=8, emission_units=(8,), transition_units=8,
            inference_units=(8,))
A = np.array([[0.95, 0.1], [-0.1, 0.9]])
H = np.array([[1.0, 0.0], [0.5, 1.0], [-0.3, 0.8]])
Q = np.array([0.3, 0.2])  # transition std
R = np.array([0.5, 0.4, 0.6])  # observation std
MU0, S0 = np.array([0.5, -0.5]), np.array([1.0, 0.7])  # p(z_1)


def _softplus_inv(s):
    return np.log(np.expm1(s)).astype("float32")


def _linear_dkf():
    """A DKF whose generative model is the linear-Gaussian system above and whose proposal
    q(z_t | z_{t-1}, x) = p(z_t | z_{t-1}) N(z_t; 0, 2^2) / const (the ST-R message form with
    the message fixed): a valid proposal that depends on each particle's z_{t-1}."""
    model = DeepKalmanFilter(observation_shape=(3,), latent_dim=2, transition="linear",
                             emission="linear", likelihood="gaussian",
                             gaussian_variance="per_pixel", rnn_units=4, filter_inference=None,
                             seed=0)
    t = model.transition
    t.linear.set_weights([A.T.astype("float32"), np.zeros(2, "float32")])
    t.raw_scale.assign(_softplus_inv(Q - t.min_scale))
    kernel = np.zeros((2, 6), "float32")
    kernel[:, :3] = H.T
    model.emission.layers[-1].set_weights(
        [kernel, np.concatenate([np.zeros(3, "float32"), _softplus_inv(R - model.head.min_scale)])])
    model.initial_loc.assign(MU0.astype("float32"))
    model.initial_raw_scale.assign(_softplus_inv(S0 - 1e-3))
    post = model.posterior
    post.loc_dense.set_weights([np.zeros((4, 2), "float32"), np.zeros(2, "float32")])
    post.param_denses[0].set_weights([np.zeros((4, 2), "float32"),
                                      np.full(2, _softplus_inv(2.0 - post.min_scale))])
    return model


@pytest.fixture(scope="module")
def linear():
    return _linear_data()


def _linear_data():
    """300 sequences of up to 10 steps from the system (lengths 6-10, 20% missing frames),
    the model's inputs and the exact log p(x) of each (TFP, float64, padding = missing)."""
    rng = np.random.RandomState(1)
    n, steps = 300, 10
    z = np.zeros((n, steps, 2))
    prev = MU0 + S0 * rng.randn(n, 2)
    for k in range(steps):
        if k:
            prev = prev @ A.T + Q * rng.randn(n, 2)
        z[:, k] = prev
    x = z @ H.T + R * rng.randn(n, steps, 3)
    missing = rng.rand(n, steps) < 0.2
    pad = np.arange(steps)[None] >= rng.randint(6, steps + 1, n)[:, None]
    lgssm = tfd.LinearGaussianStateSpaceModel(
        steps, tf.linalg.LinearOperatorFullMatrix(A), tfd.MultivariateNormalDiag(scale_diag=Q),
        tf.linalg.LinearOperatorFullMatrix(H), tfd.MultivariateNormalDiag(scale_diag=R),
        tfd.MultivariateNormalDiag(MU0, S0), mask=missing | pad)
    model = _linear_dkf()
    inputs = model.check_input({
        "observations": np.where(missing[..., None] | pad[..., None], np.nan, x)
        .astype("float32"), "observed": (~missing).astype("float32"),
        "mask": (~pad).astype("float32")})
    return model, inputs, lgssm.log_prob(x).numpy()


def _bound(model, inputs, k, resample, seed=0):
    """The particle bound (:class:`SMCBound`) with stateless noise from ``seed``
    (the same draws whichever tests ran before in this process)."""
    shape = tf.shape(inputs["observations"])
    noise = tf.random.stateless_normal([shape[0] * k, shape[1], model.latent_dim], [seed, k])
    uniforms = tf.random.stateless_uniform([shape[1], shape[0], k], [seed, k + 1])
    return model.particle_bound(inputs, k, resample, noise, uniforms)


def test_fivo_is_unbiased_for_the_likelihood_and_converges_to_it(linear):
    """Z-hat is unbiased: mean exp(log Z-hat - log Z) = 1 within Monte Carlo error at K = 8,
    where log Z-hat is still visibly below log Z (Jensen); at K = 512 it is within 0.2 nats
    per sequence of the exact log-likelihood. Missing frames and padding included."""
    model, inputs, exact = linear
    small = _bound(model, inputs, 8, True)
    gap = small.log_marginal.numpy() - exact
    assert_mc_mean(np.exp(gap), 1.0, n_se=4.0)
    assert gap.mean() + 3 * gap.std() / np.sqrt(len(gap)) < 0
    resampled = small.resampled.numpy()
    assert 0.05 < resampled.mean() < 0.95  # adaptive: some steps resample, not all
    assert not resampled[~inputs["mask"].numpy().astype(bool)].any()  # never on padding
    big = _bound(model, inputs, 512, True).log_marginal.numpy() - exact
    assert abs(big.mean()) < 0.2 and big.mean() < 3 * big.std() / np.sqrt(len(big))


def test_iwae_increases_with_k_stays_below_log_z_and_fivo_is_tighter(linear):
    model, inputs, exact = linear
    iwae = {k: _bound(model, inputs, k, False).log_marginal.numpy() - exact for k in (1, 8, 64)}
    for lo, hi in ((1, 8), (8, 64)):
        diff = iwae[hi] - iwae[lo]
        assert diff.mean() > 3 * diff.std() / np.sqrt(len(diff)), (lo, hi, diff.mean())
    se = iwae[64].std() / np.sqrt(len(exact))
    assert iwae[64].mean() < 3 * se  # a lower bound in expectation (here well below)
    fivo = _bound(model, inputs, 64, True).log_marginal.numpy() - exact
    diff = fivo - iwae[64]
    assert diff.mean() > 3 * diff.std() / np.sqrt(len(diff))


def _sampled_elbo(model, inputs, noise):
    t = model.trajectory(inputs, noise)
    per_step = t["observed"] * t["log_px"] + t["log_prior"] - t["log_q"]
    return tf.reduce_sum(t["mask"] * per_step, 1).numpy()


def test_one_particle_iwae_and_fivo_equal_the_sampled_elbo(linear):
    """Given the same noise, K = 1 IWAE = FIVO = the trajectory's sampled ELBO: the message
    posterior (linear model), the combiner with actions (DMM ST-LR) and q-INDEP."""
    rng = np.random.RandomState(0)
    binary = (rng.rand(4, 6, 5) > 0.5).astype("float32")
    actions = rng.randn(4, 6, 2).astype("float32")
    models = [
        (linear[0], {k: v[:20] for k, v in linear[1].items()}),
        (DeepMarkovModel(observation_shape=(5,), inference="st-lr", action_dim=2,
                         structured_posterior="combiner", seed=0, **TINY),
         {"observations": binary, "actions": actions}),
        (DeepKalmanFilter(observation_shape=(5,), inference="indep", seed=0, **TINY),
         {"observations": binary, "mask": np.array([[1] * 6] * 3 + [[1] * 4 + [0] * 2],
                                                   "float32")}),
    ]
    for model, inputs in models:
        inputs = model.check_input(inputs)
        shape = tf.shape(inputs["observations"])
        noise = tf.random.stateless_normal([shape[0], shape[1], model.latent_dim], [3, 4])
        elbo = _sampled_elbo(model, inputs, noise)
        for resample in (False, True):
            bound = model.particle_bound(inputs, 1, resample=resample, noise=noise)
            np.testing.assert_allclose(bound.log_marginal.numpy(), elbo, rtol=1e-5, atol=1e-4)


def test_padding_adds_nothing_and_never_resamples(linear):
    """Four padded steps (NaN frames) after six real ones: the same FIVO bound as the six
    steps alone given the same noise, increments 0 and no resampling there."""
    model = linear[0]
    x = np.asarray(linear[1]["observations"])[:8, :6]
    padded = np.concatenate([x, np.full((8, 4, 3), np.nan, "float32")], 1)
    mask = np.concatenate([np.ones((8, 6)), np.zeros((8, 4))], 1).astype("float32")
    k = 16
    noise = tf.random.stateless_normal([8 * k, 10, 2], [5, 6])
    uniforms = tf.random.stateless_uniform([10, 8, k], [7, 8])
    short = model.particle_bound(model.check_input(x), k, True, noise[:, :6], uniforms[:6])
    long = model.particle_bound(model.check_input({"observations": padded, "mask": mask}), k,
                                True, noise, uniforms)
    np.testing.assert_allclose(long.log_marginal.numpy(), short.log_marginal.numpy(),
                               rtol=1e-6)
    assert np.all(long.log_increments.numpy()[:, 6:] == 0)
    assert not long.resampled.numpy()[:, 6:].any() and short.resampled.numpy().any()


def test_fivo_fits_saves_reloads_and_is_reachable_from_the_config(tmp_path):
    from zoo.training.config import resolve_config

    x = (np.random.RandomState(0).rand(32, 7, 5) > 0.5).astype("float32")
    model = DeepMarkovModel(observation_shape=(5,), objective="fivo", num_particles=3,
                            resample="stratified", filter_inference=None, seed=0, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = run_fit_test(model, x, epochs=4, batch_size=16, shuffle=False)
    assert {"fivo_per_step", "elbo_per_step"} <= set(history.history)
    config = model.get_config()
    assert (config["objective"], config["num_particles"], config["resample"]) == (
        "fivo", 3, "stratified")
    old = {k: v for k, v in config.items() if k not in ("objective", "num_particles",
                                                        "resample")}
    assert DeepMarkovModel.from_config(old).objective == "elbo"  # files saved before

    def bound(m):
        inputs = m.check_input(x[:4])
        return m.particle_bound(inputs, noise=tf.random.stateless_normal([12, 7, 3], [1, 2]),
                                uniforms=tf.random.stateless_uniform([7, 4, 3], [3, 4]))[0]

    reloaded = run_saving_test(model, bound, tmp_path, rtol=1e-5)
    assert (reloaded.objective, reloaded.num_particles, reloaded.resample) == (
        "fivo", 3, "stratified")
    resolved = resolve_config("dmm", overrides={"model.objective": "iwae",
                                                "model.num_particles": 8})
    assert resolved["model"]["objective"] == "iwae" and resolved["model"]["num_particles"] == 8
    for bad in (dict(objective="vi"), dict(num_particles=0), dict(resample="residual")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DeepMarkovModel(observation_shape=(5,), **bad, **TINY)


@pytest.mark.parametrize("policy", ["float64", "mixed_float16"])
def test_particle_objectives_in_float64_and_mixed_precision(policy):
    """The bound is computed in float64 under a float64 policy and in float32 (not float16)
    under mixed precision; its gradient (the training loss's) is finite and reaches the
    inference network, the transition and the emission. IWAE and FIVO, both networks."""
    x = (np.random.RandomState(0).rand(8, 5, 4) > 0.5).astype("float32")
    try:
        keras.mixed_precision.set_global_policy(policy)
        for objective, inference in (("fivo", "st-r"), ("iwae", "rnn")):
            model = DeepKalmanFilter(observation_shape=(4,), inference=inference,
                                     objective=objective, filter_inference=None, seed=0,
                                     **TINY)
            with tf.GradientTape() as tape:
                terms = model(x)
                loss = tf.reduce_mean(terms["objective"])
            assert terms[objective].dtype == ("float64" if policy == "float64" else "float32")
            grads = tape.gradient(loss, model.trainable_variables)
            names = [v.path for v, g in zip(model.trainable_variables, grads)
                     if g is not None and np.any(np.asarray(g) != 0)]
            assert all(np.all(np.isfinite(np.asarray(g))) for g in grads if g is not None)
            for part in ("posterior", "transition", "emission", "rnn"):
                assert any(part in name for name in names), (part, names)
    finally:
        keras.mixed_precision.set_global_policy("float32")

"""KalmanFilterLayer and KalmanFilterModel: contract, exactness, maximum likelihood by fit,
known matrices, the one-frame step and the model contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.layers import kalman_inference as ki
from zoo.layers.kalman_filter import KalmanFilterLayer
from tests.test_case import run_fit_test, run_layer_test, run_saving_test
from zoo.kalman_filter import KalmanFilterModel

CONFIGS = [
    dict(state_dim=2),
    dict(state_dim=3, transition="stable", transition_cov="full", observation_cov="full",
         use_offsets=True, square_root=True),
    dict(state_dim=2, action_dim=1, method="parallel", min_scale=1e-3, initial_cov="full"),
    dict(state_dim=2, observation="identity", transition="identity", trainable_initial=False),
]


def _data(rng, b=3, t=9, p=2, k=1):
    return rng.normal(size=(b, t, p)), rng.normal(size=(b, t, k))


@pytest.mark.parametrize("config", CONFIGS)
def test_layer_contract_and_exact_filter(config):
    rng = np.random.default_rng(0)
    y, u = _data(rng)
    call_kwargs = {"actions": u} if config.get("action_dim") else {}
    config = dict(config, dtype="float64")
    n = config["state_dim"]
    layer, out = run_layer_test(
        KalmanFilterLayer, config, y, call_kwargs=call_kwargs,
        expected_output_shapes={"filtered_means": (3, 9, n), "filtered_covs": (3, 9, n, n),
                                "log_likelihood": (3,)})
    # The layer is the pure filter on its constrained parameters; the loss is -mean ll / T.
    params = layer.state_space_params()
    ref = ki.kalman_filter(params, y, actions=call_kwargs.get("actions"))
    np.testing.assert_allclose(out["log_likelihood"], ref.log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(out["filtered_means"], ref.filtered_means, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(layer.losses[-1], -np.mean(ref.log_likelihood) / 9, rtol=1e-10)


def test_constraints_hold_for_any_weights():
    rng = np.random.default_rng(1)
    layer = KalmanFilterLayer(3, transition="stable", transition_cov="full", observation_cov="diag",
                              dtype="float64")
    layer(np.zeros((1, 4, 2)))
    for _ in range(5):
        layer.set_weights([10.0 * rng.normal(size=w.shape) for w in layer.get_weights()])
        params = layer.state_space_params()
        assert np.max(np.abs(np.linalg.eigvals(params.transition_matrix))) < 1
        for cov in (params.transition_cov, params.observation_cov, params.initial_cov):
            assert np.min(np.linalg.eigvalsh(cov)) > 0


def test_keras_mask_skips_steps_exactly():
    rng = np.random.default_rng(2)
    y, _ = _data(rng)
    mask = rng.random((3, 9)) > 0.3
    layer = KalmanFilterLayer(2, dtype="float64")
    out = layer(y, mask=mask)
    ref = ki.kalman_filter(layer.state_space_params(), y, observed=mask)
    # ``observed`` (missing frames) skips the same steps; with a mask too, both are skipped.
    np.testing.assert_allclose(layer(y, observed=mask)["log_likelihood"], ref.log_likelihood,
                               rtol=1e-10)
    both = ki.kalman_filter(layer.state_space_params(), y, observed=mask & mask[:, ::-1])
    np.testing.assert_allclose(layer(y, observed=mask, mask=mask[:, ::-1])["log_likelihood"],
                               both.log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(out["log_likelihood"], ref.log_likelihood, rtol=1e-10)
    # Through a Masking layer inside a functional model, padded steps are skipped too.
    padded = np.where(mask[..., None], y, 0.0)
    inputs = keras.Input((9, 2), dtype="float64")
    masked = keras.layers.Masking(0.0, dtype="float64")(inputs)
    func = keras.Model(inputs, layer(masked))
    np.testing.assert_allclose(func(padded)["log_likelihood"], ref.log_likelihood, rtol=1e-10)


def test_layer_rejects_bad_input():
    with pytest.raises(ValueError, match="transition"):
        KalmanFilterLayer(2, transition="unstable")
    with pytest.raises(ValueError, match="state_dim"):
        KalmanFilterLayer(0)
    with pytest.raises(ValueError, match=r"\[batch, time, observation_dim\]"):
        KalmanFilterLayer(2)(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="observation_dim <= state_dim"):
        KalmanFilterLayer(1, observation="identity")(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="actions"):
        KalmanFilterLayer(2, action_dim=1)(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="initial_cov"):
        KalmanFilterLayer(2, initial_cov="dense")
    y = np.zeros((2, 5, 1))
    y[0] = np.nan
    with pytest.raises(ValueError, match="nan_as_missing"):
        KalmanFilterLayer(2)(y)


# ----------------------------------------------------------------------------- model
def _model(**kw):
    model = KalmanFilterModel(2, dtype="float64", seed=3, **kw)
    model.compile(keras.optimizers.Adam(0.05))
    return model


def test_model_save_reload_fit_and_inference_methods(tmp_path):
    rng = np.random.default_rng(4)
    y, u = _data(rng, b=4, t=12, p=1)
    model = _model(action_dim=1, use_offsets=True, transition="stable")
    data = {"observations": y, "actions": u}
    run_fit_test(model, data, epochs=3, batch_size=4)

    def stats(m):
        return (m.filter(y, actions=u).log_likelihood, m.smooth(y, actions=u).smoothed_means,
                m.forecast(y, 3, actions=u, future_actions=u[:, :3]).observation_means)

    reloaded = run_saving_test(model, stats, tmp_path, rtol=1e-10)
    assert reloaded.get_config() == model.get_config()
    draws = model.sample(y, num_samples=3, actions=u, seed=0)
    assert draws.shape == (3, 4, 12, 2) and np.all(np.isfinite(draws))
    np.testing.assert_allclose(draws, model.sample(y, num_samples=3, actions=u, seed=0))
    # The former argument names still work for one release, with the same numbers.
    with pytest.warns(DeprecationWarning, match="actions"):
        old = model.filter(y, controls=u).log_likelihood
    np.testing.assert_array_equal(old, stats(model)[0])


def fit_full_batch(model, y, steps):
    """``steps`` optimizer steps on the whole of ``y``: what ``fit(y, epochs=steps)`` does
    with one batch per epoch, without Keras' per-epoch overhead (about half the test's
    time)."""
    model.fit(tf.data.Dataset.from_tensors(y).repeat(), epochs=1, steps_per_epoch=steps,
              verbose=0)


def test_fit_recovers_simulated_parameters_within_standard_errors():
    """AR(1) state plus noise: ML by model.fit lands within 4 standard errors (observed
    Fisher information at the estimate) of the parameters that generated the data."""
    rng = np.random.default_rng(5)
    a, q, r = 0.8, 0.5, 1.0
    b, t = 32, 100
    x = np.zeros((b, t))
    x[:, 0] = rng.normal(size=b) * np.sqrt(q / (1 - a * a))
    for i in range(1, t):
        x[:, i] = a * x[:, i - 1] + np.sqrt(q) * rng.normal(size=b)
    y = (x + np.sqrt(r) * rng.normal(size=(b, t)))[..., None]
    model = KalmanFilterModel(1, observation="identity", transition_init=0.5,
                              initial_scale=float(np.sqrt(q / (1 - a * a))),
                              trainable_initial=False, min_scale=0.0, dtype="float64")
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.2, 150)),
                  jit_compile=True)
    fit_full_batch(model, y, steps=150)
    params = model.state_space_params()
    est = np.array([params.transition_matrix[0, 0], params.transition_cov[0, 0],
                    params.observation_cov[0, 0]])
    p0 = params.initial_cov

    def total_ll(theta):
        prm = ki.LGSSMParams(tf.zeros([1], tf.float64), p0, theta[0][None, None],
                             theta[1][None, None], tf.ones([1, 1], tf.float64),
                             theta[2][None, None])
        return tf.reduce_sum(ki.kalman_filter(prm, y, validate_args=False,
                                              steady_state=False).log_likelihood)

    @tf.function
    def score_and_hessian(theta):
        with tf.GradientTape() as outer:
            outer.watch(theta)
            with tf.GradientTape() as inner:
                inner.watch(theta)
                value = total_ll(theta)
            grad = inner.gradient(value, theta)
        return grad, outer.jacobian(grad, theta, experimental_use_pfor=False)

    grad, hessian = (x.numpy() for x in score_and_hessian(tf.constant(est)))
    se = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    # The fit reached the maximum: a Newton step from the estimate is a fraction of an SE.
    assert np.all(np.abs(np.linalg.solve(hessian, grad)) < 0.2 * se), (grad, se)
    assert np.all(np.abs(est - [a, q, r]) < 4 * se), (est, se)
    assert np.all(se < [0.05, 0.2, 0.2])  # the check is informative


def test_nile_local_level_matches_durbin_koopman_and_statsmodels():
    """Local level on the Nile flows: ML by model.fit against Durbin & Koopman (2012, ch. 2:
    sigma_eps^2 = 15099, sigma_eta^2 = 1469.1) and statsmodels' UnobservedComponents."""
    sm = pytest.importorskip("statsmodels.api")
    from zoo.datasets import load_nile

    flow = np.asarray(load_nile(), np.float64)
    y = flow[None, :, None]
    model = KalmanFilterModel(1, transition="identity", observation="identity",
                              observation_scale=100.0, transition_scale=30.0,
                              initial_scale=1e4, trainable_initial=False, dtype="float64")
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3.0, 200)),
                  jit_compile=True)
    fit_full_batch(model, y, steps=200)
    params = model.state_space_params()
    eps2, eta2 = float(params.observation_cov[0, 0]), float(params.transition_cov[0, 0])
    np.testing.assert_allclose(eps2, 15099.0, rtol=0.01)
    np.testing.assert_allclose(eta2, 1469.1, rtol=0.03)
    # statsmodels (exact diffuse start) reaches the same optimum; its llf leaves out the first
    # observation, ours includes it under the N(0, 1e8) prior, so compare maximized values on
    # our likelihood: ours is at least as high as at statsmodels' estimates.
    fit = sm.tsa.UnobservedComponents(flow, "local level").fit(disp=False)
    sm_eps2, sm_eta2 = fit.params
    np.testing.assert_allclose([eps2, eta2], [sm_eps2, sm_eta2], rtol=0.03)

    def ll_at(e2, n2):
        prm = params._replace(observation_cov=tf.constant([[e2]], tf.float64),
                              transition_cov=tf.constant([[n2]], tf.float64))
        return float(ki.kalman_filter(prm, y).log_likelihood[0])

    assert ll_at(eps2, eta2) >= ll_at(sm_eps2, sm_eta2) - 1e-6
    assert ll_at(eps2, eta2) >= ll_at(15099.0, 1469.1) - 1e-3


# ----------------------------------------------------------------------------- known matrices
def _known_system(rng, n=3, p=2, k=None):
    a = 0.4 * rng.normal(size=(n, n))
    h = rng.normal(size=(p, n))
    lq, lr, lp = (rng.normal(size=(d, d)) for d in (n, p, n))
    return dict(transition_matrix=a, observation_matrix=h,
                transition_cov=lq @ lq.T + 0.1 * np.eye(n),
                observation_cov=lr @ lr.T + 0.1 * np.eye(p), initial_mean=rng.normal(size=n),
                initial_cov=lp @ lp.T + np.eye(n), transition_offset=rng.normal(size=n),
                observation_offset=rng.normal(size=p),
                control_matrix=None if k is None else rng.normal(size=(n, k)))


def test_from_matrices_equals_tfp_linear_gaussian_state_space_model():
    """A model built from known A, H, Q, R, offsets, m_0, P_0 (no training) gives TFP's
    log-likelihood and filtered means; its parameters are the matrices given."""
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    rng = np.random.default_rng(7)
    system = _known_system(rng)
    model = KalmanFilterModel.from_matrices(**system)
    params = model.state_space_params()
    for name, value in system.items():
        if value is not None:
            np.testing.assert_allclose(getattr(params, name), value, rtol=1e-12, atol=1e-14,
                                       err_msg=name)
    y = rng.normal(size=(4, 25, 2))
    tri = np.linalg.cholesky
    lgssm = tfd.LinearGaussianStateSpaceModel(
        25, tf.linalg.LinearOperatorFullMatrix(system["transition_matrix"]),
        tfd.MultivariateNormalTriL(system["transition_offset"], tri(system["transition_cov"])),
        tf.linalg.LinearOperatorFullMatrix(system["observation_matrix"]),
        tfd.MultivariateNormalTriL(system["observation_offset"],
                                   tri(system["observation_cov"])),
        tfd.MultivariateNormalTriL(system["initial_mean"], tri(system["initial_cov"])))
    ours = model.filter(y)
    np.testing.assert_allclose(ours.log_likelihood, lgssm.log_prob(y), rtol=1e-10)
    _, means, covs, *_ = lgssm.forward_filter(y)
    np.testing.assert_allclose(ours.filtered_means, means, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours.filtered_covs[0], covs, rtol=1e-9, atol=1e-11)  # shared
    with pytest.raises(ValueError, match="observation_cov.*positive definite"):
        KalmanFilterModel.from_matrices(**{**system, "observation_cov": -np.eye(2)})
    with pytest.raises(ValueError, match=r"observation_matrix.*\[p, 3\]"):
        KalmanFilterModel.from_matrices(**{**system, "observation_matrix": np.ones((2, 2))})


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_initial_state_and_filter_step_looped_equal_filter(dtype):
    """The one-frame step (built-in ops, what zoo.export exports) looped over time equals the
    sequence filter, with actions, offsets and missing frames that hold NaN."""
    rng = np.random.default_rng(8)
    model = KalmanFilterModel.from_matrices(**_known_system(rng, k=2))
    y = rng.normal(size=(3, 15, 2))
    u = rng.normal(size=(3, 15, 2))
    observed = (rng.random((3, 15)) > 0.3).astype("float64")
    ref = model.filter(y, actions=u, observed=observed)
    y_nan = np.where(observed[..., None] > 0, y, np.nan)
    state = model.initial_state(3, dtype)
    means, covs, lls = [], [], []
    for t in range(15):
        state, out = model.filter_step(state, y_nan[:, t].astype(dtype),
                                       observed[:, t].astype(dtype), u[:, t].astype(dtype))
        means.append(out["filtered_mean"])
        covs.append(out["filtered_cov"])
        lls.append(out["log_likelihood"])
    tol = 1e-10 if dtype == "float64" else 2e-4
    scale = np.abs(ref.filtered_means).max()
    np.testing.assert_allclose(np.stack(means, 1), ref.filtered_means, atol=tol * scale)
    np.testing.assert_allclose(np.stack(covs, 1), ref.filtered_covs,
                               atol=tol * np.abs(ref.filtered_covs).max())
    np.testing.assert_allclose(np.stack(lls, 1), ref.log_likelihoods,
                               atol=tol * np.abs(ref.log_likelihoods).max())


def test_layers_saved_under_the_former_name_and_arguments_still_load():
    """A .keras file written before the rename holds the layer as ``zoo>KalmanFilter`` with
    ``control_dim``: it loads, and the model accepts ``control_dim`` and ``mask`` too."""
    layer = KalmanFilterLayer(2, action_dim=1, dtype="float64")
    saved = keras.saving.serialize_keras_object(layer)
    saved["registered_name"] = "zoo>KalmanFilter"
    saved["class_name"] = "KalmanFilter"
    config = dict(saved["config"])
    config["control_dim"] = config.pop("action_dim")
    config.pop("initial_cov")
    saved["config"] = config
    old = keras.saving.deserialize_keras_object(saved)
    assert isinstance(old, KalmanFilterLayer) and old.action_dim == 1
    assert old.initial_cov == "diag"
    model = KalmanFilterModel(2, control_dim=1, dtype="float64")
    assert model.get_config()["action_dim"] == 1 and "control_dim" not in model.get_config()
    with pytest.warns(DeprecationWarning, match="KalmanFilterLayer"):
        from zoo.layers.kalman_filter import KalmanFilter  # noqa: F401


# ----------------------------------------------------------------------------- contract
def test_model_contract_with_missing_frames_as_nan(tmp_path):
    """The trainer's path (tests/test_case.run_model_test): NaN observations become
    ``observed`` 0 on the host; the evaluation reports the exact log-likelihood."""
    from tests.test_case import run_model_test

    rng = np.random.default_rng(9)
    states = np.cumsum(rng.normal(size=(40, 20, 1)), 1)
    y = states + 0.5 * rng.normal(size=states.shape)
    y[rng.random((40, 20)) < 0.1] = np.nan
    arrays = {"observations": y, "states": states}
    x, _ = KalmanFilterModel.fit_inputs(arrays)
    assert not np.isnan(x["observations"]).any()
    np.testing.assert_array_equal(x["observed"], ~np.isnan(y[..., 0]))

    def build():
        return KalmanFilterModel(1, transition="identity", observation="identity",
                                 dtype="float64")

    model, report = run_model_test(
        build, arrays, deterministic=lambda m, x: m.filter(
            x["observations"], observed=x["observed"]).log_likelihood,
        tmp_path=tmp_path, learning_rate=0.1, batch_size=20, rtol=1e-10,
        bad_inputs=[(lambda m: m.validate_data({**arrays, "actions": np.full((40, 20, 1),
                                                                               np.nan)}),
                     ValueError, "'actions' array"),
                    (lambda m: m.filter(y), ValueError, "observed")])
    picked = {k: v[:8] for k, v in arrays.items()}
    px, _ = KalmanFilterModel.fit_inputs(picked)
    exact = model.filter(px["observations"], observed=px["observed"]).log_likelihood
    np.testing.assert_allclose(report["log_likelihood"], np.mean(exact), rtol=1e-12)
    np.testing.assert_allclose(report["nll_per_step"], -np.sum(exact) / (8 * 20), rtol=1e-12)
    assert report["parameters"]["transition_matrix"] == [[1.0]]


def test_eager_calls_read_current_weights_record_gradients_and_fall_back():
    """The eager model path calls its cached concrete function through ``_flat_caller``
    (``_call_flat``, skipping the signature binding): it equals the public call and the pure
    filter, sees weights assigned after the first call, records gradients for an outer tape
    (equal to the traced path's), and falls back to the public call where ``_call_flat`` is
    missing or takes other arguments."""
    from zoo import kalman_filter as kf_module

    rng = np.random.default_rng(11)
    model = KalmanFilterModel.from_matrices(**_known_system(rng))
    y = rng.normal(size=(3, 12, 2))
    observed = rng.random((3, 12)) > 0.3
    for kwargs in ({}, {"observed": observed}):
        first = model.log_likelihood(y, **kwargs).numpy()
        ref = ki.kalman_filter(model.state_space_params(), y, observed=kwargs.get("observed"))
        np.testing.assert_allclose(first, ref.log_likelihood, rtol=1e-12)
    kernel = model.kalman.transition_kernel
    kernel.assign(0.5 * kernel.numpy())
    after = model.log_likelihood(y).numpy()
    ref = ki.kalman_filter(model.state_space_params(), y).log_likelihood.numpy()
    np.testing.assert_allclose(after, ref, rtol=1e-12)
    assert np.all(np.abs(after - model.filter(y.astype("float32")).log_likelihood) < 1e-4)
    assert not np.allclose(after, first)

    weights = model.kalman.trainable_weights
    with tf.GradientTape() as tape:
        eager = tf.reduce_sum(model.log_likelihood(y))
    grads = tape.gradient(eager, weights)

    @tf.function
    def traced():
        with tf.GradientTape() as inner:
            total = tf.reduce_sum(model.log_likelihood(tf.constant(y)))
        return inner.gradient(total, weights)

    assert all(g is not None for g in grads)
    for g, h in zip(grads, traced()):
        np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-12)

    class NoFlat:  # a concrete function without the private entry point
        def __call__(self, *args):
            return ("public", args)

    class OtherFlat(NoFlat):
        def _call_flat(self, args):  # another signature than (tensor_inputs, captured_inputs)
            raise AssertionError("must not be called")

    for fake in (NoFlat(), OtherFlat()):
        assert kf_module._flat_caller(fake)([1, 2]) == ("public", (1, 2))
    concrete = model._compiled("log_likelihood", False, False).get_concrete_function(
        tf.constant(y))
    np.testing.assert_array_equal(kf_module._flat_caller(concrete)([tf.constant(y)]),
                                  concrete(tf.constant(y)))

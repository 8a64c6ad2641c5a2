import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import Combiner, StateTransition
from zoo import DeepKalmanFilter, DeepMarkovModel
from tests.test_case import run_fit_test, run_layer_test, run_saving_test

tfd = tfp.distributions
TINY = dict(latent_dim=3, rnn_units=8, emission_units=(8,), transition_units=8,
            inference_units=(8,))


def _binary_sequences(n=32, steps=7, dim=5, seed=0):
    rng = np.random.RandomState(seed)
    state = rng.rand(n, 1, dim) > 0.5
    flips = rng.rand(n, steps, dim) < 0.15
    return (np.logical_xor(state, np.cumsum(flips, 1) % 2)).astype("float32")


VARIANTS = [(DeepKalmanFilter, inf) for inf in ("indep", "lr", "rnn", "brnn")] + [
    (DeepMarkovModel, inf) for inf in ("st-l", "st-r", "st-lr")]


@pytest.mark.parametrize("cls, inference", VARIANTS, ids=[v[1] for v in VARIANTS])
def test_model_contract(cls, inference, tmp_path):
    x = _binary_sequences()
    mask = np.ones(x.shape[:2], "float32")
    mask[::3, 5:] = 0  # variable lengths
    data = {"observations": x, "mask": mask}
    model = cls(observation_shape=(5,), inference=inference, seed=1, **TINY)
    config = model.get_config()
    assert cls.from_config(config).get_config() == config
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    run_fit_test(model, tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=4,
                 callbacks=model.default_callbacks())
    result = model.evaluate(data, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"],
                               rtol=1e-4)
    # elbo_per_step = total ELBO / total valid steps.
    steps = mask.sum(1).mean()
    np.testing.assert_allclose(result["elbo_per_step"], result["elbo"] / steps, rtol=1e-3)
    run_saving_test(model, lambda m: (
        m.smooth(data).smoothed_means,
        m.log_likelihood({k: v[:4] for k, v in data.items()}, num_samples=8, seed=2)
        .log_likelihood), tmp_path, rtol=1e-5)


@pytest.mark.parametrize("inference", ["st-r", "st-lr"])
def test_padding_steps_do_not_count(inference):
    """Whatever the padded steps hold, the bound is the same: they carry no likelihood or KL
    and the RNNs (the backward one included) skip them."""
    x = _binary_sequences(n=4, steps=6)
    mask = np.concatenate([np.ones((4, 4)), np.zeros((4, 2))], 1).astype("float32")
    model = DeepMarkovModel(observation_shape=(5,), inference=inference, seed=0, **TINY)
    other = x.copy()
    other[:, 4:] = 1.0 - other[:, 4:]
    a = model.log_likelihood({"observations": x, "mask": mask}, num_samples=5, seed=3)
    b = model.log_likelihood({"observations": other, "mask": mask}, num_samples=5, seed=3)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-6)
    c = model.log_likelihood({"observations": other}, num_samples=5, seed=3)
    assert not np.allclose(a.log_likelihood, c.log_likelihood)


@pytest.mark.parametrize("cls, inference", [(DeepKalmanFilter, "rnn"),
                                            (DeepKalmanFilter, "indep"),
                                            (DeepMarkovModel, "st-l")])
def test_streaming_filter_step_reproduces_filter(cls, inference):
    x = _binary_sequences(n=3, steps=9)
    model = cls(observation_shape=(5,), inference=inference, seed=0, **TINY)
    full = model.filter(x)
    state = model.initial_state(3)
    for t in range(9):
        state, out = model.filter_step(state, x[:, t])
        np.testing.assert_allclose(out["filtered_mean"], full.filtered_means[:, t], atol=1e-5)
        np.testing.assert_allclose(out["observation_mean"], full.observation_means[:, t],
                                   atol=1e-5)


def test_non_causal_models_refuse_to_filter():
    model = DeepMarkovModel(observation_shape=(5,), inference="st-r", filter_inference=None,
                            **TINY)
    with pytest.raises(ValueError, match="causal"):
        model.filter(_binary_sequences(n=2))


def test_iwae_over_trajectories_is_above_elbo_and_grows_with_k():
    x = _binary_sequences(n=64, steps=6)
    model = DeepMarkovModel(observation_shape=(5,), seed=0, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, batch_size=16, epochs=3, verbose=0)
    one = model.log_likelihood(x, num_samples=1, seed=4)
    np.testing.assert_allclose(one.log_likelihood, one.elbo, rtol=1e-10)
    from zoo.bounds import iwae_bound
    log_w = model.log_weights(model.check_input(x), 400, tf.constant([5, 0])).numpy()
    bounds = {k: iwae_bound(tf.constant(log_w.reshape(64, -1, k))).numpy().mean(1)
              for k in (1, 20)}
    gain = bounds[20] - bounds[1]
    assert gain.mean() > 4 * gain.std(ddof=1) / 8


def _linear_gaussian_truth(rng, d=2, p=3):
    a = np.array([[0.95, 0.1], [-0.1, 0.9]])
    h = rng.randn(p, d)
    q = np.array([0.3, 0.2])  # transition std
    r = np.array([0.5, 0.4, 0.6])  # observation std
    z0, c = np.array([0.5, -0.5]), np.zeros(p)
    return a, h, q, r, z0, c


def _set_linear_truth(model, a, h, q, r, z0):
    softplus_inv = lambda s: np.log(np.expm1(s))  # noqa: E731
    model.z0.assign(z0.astype("float32"))
    t = model.transition
    t.linear.set_weights([a.T.astype("float32"), np.zeros(2, "float32")])
    t.raw_scale.assign(softplus_inv(q - t.min_scale).astype("float32"))
    dense = model.emission.layers[-1]
    kernel = np.zeros((2, 6), "float32")
    kernel[:, :3] = h.T
    bias = np.concatenate([np.zeros(3), softplus_inv(r - model.head.min_scale)]).astype("float32")
    dense.set_weights([kernel, bias])


def test_linear_gaussian_dkf_matches_the_exact_kalman_filter():
    """With the true linear-Gaussian generative model, (1) the trajectory IWAE bound never
    exceeds the exact log-likelihood from TFP's Kalman filter and approaches it, and (2) a
    q-RNN trained on the ELBO filters within a few percent of the exact filter's RMSE."""
    rng = np.random.RandomState(0)
    a, h, q, r, z0, _ = _linear_gaussian_truth(rng)
    n, steps = 600, 25
    z = np.zeros((n, steps, 2))
    prev = np.broadcast_to(z0, (n, 2))
    for t in range(steps):
        prev = prev @ a.T + q * rng.randn(n, 2)
        z[:, t] = prev
    x = (z @ h.T + r * rng.randn(n, steps, 3)).astype("float32")
    lgssm = tfd.LinearGaussianStateSpaceModel(
        num_timesteps=steps,
        transition_matrix=tf.linalg.LinearOperatorFullMatrix(a),
        transition_noise=tfd.MultivariateNormalDiag(scale_diag=q),
        observation_matrix=tf.linalg.LinearOperatorFullMatrix(h),
        observation_noise=tfd.MultivariateNormalDiag(scale_diag=r),
        initial_state_prior=tfd.MultivariateNormalDiag(a @ z0, q))
    exact = lgssm.log_prob(x.astype("float64")).numpy()
    _, kf_means, _, _, _, _, _ = lgssm.forward_filter(x.astype("float64"))

    model = DeepKalmanFilter(observation_shape=(3,), latent_dim=2, transition="linear",
                             emission="linear", likelihood="gaussian",
                             gaussian_variance="per_pixel", inference="rnn", rnn_units=32,
                             initial_state="transition", seed=0)
    _set_linear_truth(model, a, h, q, r, z0)
    for layer in [model.transition, model.emission, model.head]:
        layer.trainable = False
    model.z0.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x[:500], batch_size=50, epochs=40, verbose=0)

    test = slice(500, 600)
    bound = model.log_likelihood(x[test], num_samples=200, seed=1)
    gap = exact[test] - bound.log_likelihood
    se = gap.std(ddof=1) / np.sqrt(len(gap))
    assert gap.mean() > -3 * se  # IWAE <= log p(x) in expectation
    assert gap.mean() < 0.05 * np.abs(exact[test]).mean()  # and close to it
    dkf = model.filter(x[test]).filtered_means.numpy()
    rmse_dkf = np.sqrt(np.mean((dkf - z[test]) ** 2))
    rmse_kf = np.sqrt(np.mean((kf_means.numpy()[test] - z[test]) ** 2))
    assert rmse_dkf < 1.05 * rmse_kf, (rmse_dkf, rmse_kf)


def test_actions_and_time_gaps_condition_the_transition_and_forecast():
    rng = np.random.RandomState(0)
    x = _binary_sequences(n=8, steps=5)
    actions = np.eye(3)[rng.randint(0, 3, (8, 5))].astype("float32")
    gaps = rng.rand(8, 5).astype("float32") + 0.5
    model = DeepKalmanFilter(observation_shape=(5,), action_dim=3, use_time_gaps=True, seed=0,
                             **TINY)
    data = {"observations": x, "actions": actions, "time_gaps": gaps}
    base = model.log_likelihood(data, num_samples=4, seed=1).log_likelihood
    changed = model.log_likelihood({**data, "actions": actions[:, ::-1]}, num_samples=4,
                                   seed=1).log_likelihood
    assert np.all(np.isfinite(base)) and not np.allclose(base, changed)
    future = np.eye(3)[rng.randint(0, 3, (8, 4))].astype("float32")
    out = model.forecast(data, steps=4, actions=future, time_gaps=np.ones((8, 4)),
                         num_samples=10)
    other = model.forecast(data, steps=4, actions=future[..., ::-1], time_gaps=np.ones((8, 4)),
                           num_samples=10)
    assert out["observation_means"].shape == (8, 4, 5)
    assert not np.allclose(out["observation_means"], other["observation_means"])
    assert np.all((out["observation_means"].numpy() >= 0)
                  & (out["observation_means"].numpy() <= 1))
    with pytest.raises(ValueError, match="actions"):
        model.forecast(data, steps=2)


def test_impute_fills_only_missing_frames():
    x = _binary_sequences(n=4, steps=6)
    observed = np.ones((4, 6), "float32")
    observed[:, 2:4] = 0
    model = DeepKalmanFilter(observation_shape=(5,), inference="brnn", seed=0, **TINY)
    corrupted = x.copy()
    corrupted[:, 2:4] = np.nan  # missing frames may hold anything
    out = model.impute(corrupted, observed)["imputed"].numpy()
    np.testing.assert_array_equal(out[:, [0, 1, 4, 5]], x[:, [0, 1, 4, 5]])
    assert np.all(np.isfinite(out)) and np.all((out[:, 2:4] > 0) & (out[:, 2:4] < 1))


def test_bad_input_gives_clear_errors():
    model = DeepKalmanFilter(observation_shape=(5,), seed=0, **TINY)
    with pytest.raises(ValueError, match=r"observation_shape=\(5,\)"):
        model(np.zeros((2, 3, 4), "float32"))
    bad = _binary_sequences(n=2)
    bad[0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        model(bad)
    with pytest.raises(ValueError, match="action_dim=0"):
        model({"observations": _binary_sequences(n=2), "actions": np.zeros((2, 7, 1))})
    with pytest.raises(ValueError, match="unknown input keys"):
        model({"observations": _binary_sequences(n=2), "labels": np.zeros((2,))})
    with pytest.raises(ValueError, match="inference"):
        DeepKalmanFilter(inference="st-x")
    with pytest.raises(ValueError, match="filter_inference"):
        DeepKalmanFilter(filter_inference="brnn")  # a filter must be causal
    with pytest.raises(ValueError, match="initial_state"):
        DeepKalmanFilter(initial_state="zero")
    with pytest.raises(ValueError, match="inference"):
        DeepMarkovModel(inference="rnn")
    with pytest.raises(ValueError, match="transition"):
        DeepMarkovModel(transition="lstm")


def test_state_transition_layer():
    z = np.random.RandomState(0).randn(4, 3).astype("float32")
    c = np.random.RandomState(1).randn(4, 2).astype("float32")
    for kind in ["gated", "mlp", "linear"]:
        layer, out = run_layer_test(StateTransition, dict(latent_dim=3, kind=kind,
                                                          hidden_units=8), z,
                                    call_kwargs=dict(conditions=c))
        assert np.all(out["scale"].numpy() > 0)
    # Linear and gated transitions start at the identity on z (Krishnan et al. 2017).
    linear = StateTransition(3, kind="linear")
    np.testing.assert_allclose(linear(z, c)["loc"], z, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        StateTransition(3, kind="rnn")


def test_combiner_layer_is_the_papers_average():
    z = np.random.RandomState(0).randn(4, 3).astype("float32")
    h1 = np.random.RandomState(1).randn(4, 6).astype("float32")
    h2 = np.random.RandomState(2).randn(4, 6).astype("float32")
    layer, out = run_layer_test(Combiner, dict(units=6), z, call_kwargs=dict(rnn_states=[h1]))
    w, b = layer.dense.get_weights()
    np.testing.assert_allclose(out, 0.5 * (np.tanh(z @ w + b) + h1), rtol=1e-5, atol=1e-6)
    both = layer(z, [h1, h2])
    np.testing.assert_allclose(both, (np.tanh(z @ w + b) + h1 + h2) / 3, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="units"):
        layer(z, [np.zeros((4, 5), "float32")])


def test_zoo_contract_padding_missing_frames_and_pictures(tmp_path):
    """The trainer's path (tests/test_case.run_model_test) on padded sequences with NaN
    frames: NaN becomes ``observed`` 0 on the host, batches are cut to their longest sequence,
    the evaluation's nll_per_step divides by the real (unpadded) steps, and the pictures are
    chosen from the data: piano rolls for binary vectors, image rows for image frames,
    trajectories otherwise."""
    from zoo.contract import EvalSettings
    from tests.test_case import run_model_test

    x = _binary_sequences(n=24, steps=9)
    mask = np.ones(x.shape[:2], "float32")
    mask[::2, 6:] = 0.0
    x = x * mask[..., None]
    obs = x.copy()
    obs[1, 2] = np.nan
    arrays = {"observations": obs, "mask": mask}
    fx, _ = DeepKalmanFilter.fit_inputs(arrays)
    assert fx["observed"][1, 2] == 0 and fx["observed"].sum() == x.shape[0] * 9 - 1
    trimmed = DeepKalmanFilter.prepare_batch({k: tf.constant(v[::2]) for k, v in fx.items()})
    assert trimmed["observations"].shape[1] == 6
    assert DeepKalmanFilter.data_kwargs(arrays) == {"observation_shape": (5,)}

    def build():
        return DeepKalmanFilter(observation_shape=(5,), seed=0, **TINY)

    model, report = run_model_test(
        build, arrays, deterministic=lambda m, x: m.smooth(x).smoothed_means,
        tmp_path=tmp_path, batch_size=8, epochs=3, learning_rate=3e-2,
        bad_inputs=[(lambda m: m.validate_data({**arrays, "actions": np.full((24, 9, 1),
                                                                               np.nan)}),
                     ValueError, "'actions' array")])
    assert type(model).supports_jit and model.export_adapter == "deep_state_space"
    k = 4
    steps = mask[:8].sum()
    np.testing.assert_allclose(report["nll_per_step"],
                               -report[f"iwae_log_likelihood_k{k}"] * 8 / steps, rtol=1e-6)
    settings = EvalSettings(num_samples=2, seed=0)
    rolls = model.pictures(fx, arrays, str(tmp_path), settings)
    assert [p.rsplit("/", 1)[-1] for p in rolls] == ["piano_rolls.png"]
    images = DeepKalmanFilter(observation_shape=(4, 4, 1), seed=0, **TINY)
    frames = (np.random.RandomState(1).rand(2, 3, 4, 4, 1) > 0.5).astype("float32")
    drawn = images.pictures({"observations": frames}, {"clean": frames}, str(tmp_path),
                            settings)
    assert [p.rsplit("/", 1)[-1] for p in drawn] == ["healing.png"]
    series = DeepKalmanFilter(observation_shape=(2,), likelihood="gaussian", seed=0, **TINY)
    drawn = series.pictures({"observations": np.random.RandomState(2).randn(2, 6, 2)}, {},
                            str(tmp_path), settings)
    assert [p.rsplit("/", 1)[-1] for p in drawn] == ["trajectories.png"]

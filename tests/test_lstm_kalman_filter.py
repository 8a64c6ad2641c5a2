import numpy as np
import pytest
import tensorflow as tf

from zoo import LSTMKalmanFilter

H = [[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]]


def _data(n=64, steps=12, seed=0):
    rng = np.random.default_rng(seed)
    states = np.cumsum(0.3 * rng.normal(size=(n, steps, 3)), 1)
    obs = states @ np.asarray(H).T + 0.5 * rng.normal(size=(n, steps, 2))
    return obs.astype("float32"), states.astype("float32")


def test_step_is_the_extended_kalman_step_with_learned_f_q_r():
    """filter_step = predict with the Jacobian of f, then the Kalman update (built-in-op
    standard form), recomputed here in NumPy (Joseph form) from the step's own F, Q and R."""
    model = LSTMKalmanFilter(state_dim=3, observation_matrix=H, lstm_units=8)
    obs, _ = _data(n=4)
    state = model.initial_state(4)
    state, _ = model.filter_step(state, obs[:, 0])  # move away from the initial state
    cov0 = state["cov"].numpy()
    new, out = model.filter_step(state, obs[:, 1])
    f, q, r = out["jacobian"].numpy(), out["process_variance"].numpy(), \
        out["observation_variance"].numpy()
    h = np.asarray(H)
    for b in range(4):
        p_pred = f[b] @ cov0[b] @ f[b].T + np.diag(q[b])
        s = h @ p_pred @ h.T + np.diag(r[b])
        k = p_pred @ h.T @ np.linalg.inv(s)
        m_pred = out["predicted_mean"].numpy()[b]
        mean = m_pred + k @ (obs[b, 1] - h @ m_pred)
        ikh = np.eye(3) - k @ h
        cov = ikh @ p_pred @ ikh.T + k @ np.diag(r[b]) @ k.T
        np.testing.assert_allclose(new["mean"].numpy()[b], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(new["cov"].numpy()[b], cov, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out["filtered_mean"].numpy()[b], mean, rtol=1e-4, atol=1e-5)
    assert np.all(q > 0) and np.all(r > 0)


def test_jacobian_matches_finite_differences():
    model = LSTMKalmanFilter(state_dim=3, observation_matrix=H, lstm_units=8)
    model.out_a.set_weights([np.random.default_rng(0).normal(size=(8, 3)).astype("float32"),
                             np.zeros(3, "float32")])
    state = model.initial_state(1)
    state["mean"] = tf.constant([[0.3, -0.2, 0.1]])
    _, out = model.filter_step(state, np.zeros((1, 2), "float32"))

    def f(x):
        h, _ = model.lstm_a(tf.constant(x[None], tf.float32), state["lstm_a"])
        return (x + model.out_a(h).numpy()[0]).astype(np.float64)

    x0, eps = np.array([0.3, -0.2, 0.1]), 1e-2
    numeric = np.stack([(f(x0 + eps * e) - f(x0 - eps * e)) / (2 * eps) for e in np.eye(3)], 1)
    np.testing.assert_allclose(out["jacobian"].numpy()[0], numeric, atol=2e-3)
    assert np.abs(numeric - np.eye(3)).max() > 1e-2  # a non-trivial Jacobian was tested


def _perturbed_model(state_dim=3, observation_matrix=H, units=8, seed=0):
    model = LSTMKalmanFilter(state_dim=state_dim, observation_matrix=observation_matrix,
                             lstm_units=units)
    rng = np.random.default_rng(seed)
    for w in model.weights:  # away from the zero output layer and the initial biases
        w.assign(w.numpy() + 0.5 * rng.standard_normal(w.shape).astype("float32"))
    return model


def test_closed_form_jacobian_equals_the_tapes_and_the_cell_step():
    """F_t in closed form (issue 17 goal 4) = tape.batch_jacobian of f(x) = x + A(LSTM_A(x))
    through Keras' own LSTMCell, and the step's (h, c) and x^- are the cell's, on seeded
    random weights, states and means; an LSTM cell with other activations is refused."""
    import keras

    model = _perturbed_model()
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(6, 3)), tf.float32)
    lstm_state = [tf.constant(rng.uniform(-1, 1, (6, 8)), tf.float32) for _ in range(2)]
    pred_mean, jacobian, (h, c) = model._transition(x, lstm_state)
    with tf.GradientTape() as tape:
        tape.watch(x)
        h_cell, (_, c_cell) = model.lstm_a(x, lstm_state)
        f = x + model.out_a(h_cell)
    np.testing.assert_allclose(jacobian, tape.batch_jacobian(f, x), rtol=1e-5, atol=1e-6)
    assert np.abs(jacobian.numpy() - np.eye(3)).max() > 0.1  # a non-trivial Jacobian
    np.testing.assert_allclose(pred_mean, f, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, h_cell, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c, c_cell, rtol=1e-6, atol=1e-7)
    model.lstm_a.recurrent_activation = keras.activations.hard_sigmoid
    with pytest.raises(ValueError, match="recurrent_activation=hard_sigmoid"):
        model._transition(x, lstm_state)


def test_filter_loss_and_gradient_compile_under_xla():
    """Issue 17 goal 4: the filter's loss (MSE of the filtered means minus the mean
    log-likelihood) and its gradient under tf.function(jit_compile=True), the time length
    unknown at tracing, equal the same loss stepped eagerly with filter_step. One state and
    one observation dimension: the XLA compilation grows fast with them (about twice for
    n = 2), and the closed form itself is checked at n = 3 above."""
    model = _perturbed_model(state_dim=1, observation_matrix=[[1.0]], units=4)
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 4, 1)).astype("float32")
    x = np.cumsum(rng.normal(size=(3, 4, 1)), 1).astype("float32")
    loss_of = lambda means, log_lik: (  # noqa: E731
        tf.reduce_mean(tf.square(means - x)) - 1e-2 * tf.reduce_mean(log_lik))

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None, 1])])
    def compiled(z):
        with tf.GradientTape() as tape:
            out = model._filter(z, tf.ones(tf.shape(z)[:2]))
            loss = loss_of(out.filtered_means, out.log_likelihood)
        return loss, tape.gradient(loss, model.trainable_variables)

    xla_loss, xla_grads = compiled(z)
    with tf.GradientTape() as tape:
        state, means, log_lik = model.initial_state(3), [], 0.0
        for t in range(4):
            state, out = model.filter_step(state, z[:, t])
            means.append(out["filtered_mean"])
            log_lik += out["log_likelihood"]
        loss = loss_of(tf.stack(means, 1), log_lik)
    grads = tape.gradient(loss, model.trainable_variables)
    np.testing.assert_allclose(xla_loss, loss, rtol=1e-5)
    assert len(grads) == 17 and all(g is not None for g in grads)
    for g0, g1 in zip(grads, xla_grads):
        np.testing.assert_allclose(g1, g0, rtol=2e-4, atol=2e-5)


def test_config_round_trip_and_streaming_equals_filter():
    """filter_step, frame by frame, equals filter() (for any weights: these are the seeded
    initial ones); fitting, saving and reloading are test_zoo_contract's (run_model_test)."""
    obs, _ = _data()
    model = LSTMKalmanFilter(state_dim=3, observation_matrix=H, lstm_units=8)
    config = model.get_config()
    assert LSTMKalmanFilter.from_config(config).get_config() == config
    full = model.filter(obs[:3])
    state = model.initial_state(3)
    for t in range(obs.shape[1]):
        state, out = model.filter_step(state, obs[:3, t])
        np.testing.assert_allclose(out["filtered_mean"], full.filtered_means[:, t], atol=1e-5)
        np.testing.assert_allclose(out["filtered_cov"], full.filtered_covs[:, t], atol=1e-5)


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="observation_dim == state_dim"):
        LSTMKalmanFilter(state_dim=3, observation_dim=2)
    with pytest.raises(ValueError, match="observation_matrix must be"):
        LSTMKalmanFilter(state_dim=2, observation_matrix=H)
    model = LSTMKalmanFilter(state_dim=3, observation_matrix=H, lstm_units=4)
    with pytest.raises(ValueError, match=r"\[batch, time, 2\]"):
        model.filter(np.zeros((2, 5, 3), "float32"))
    bad = np.zeros((2, 5, 2), "float32")
    bad[0, 1, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        model.filter(bad)


def _random_walk_model():
    """f(x) = x exactly (the linear output starts at zero), so the LSTM-KF is a Kalman filter
    with A = I and the time-varying Q_t, R_t its LSTMs predict."""
    model = LSTMKalmanFilter(state_dim=3, observation_matrix=H, lstm_units=8)
    assert not np.any(model.out_a.get_weights()[0])
    return model


def _exact_params(model, out, steps):
    from zoo.layers import kalman_inference as ki

    q = out.process_variances.numpy().astype(np.float64)  # [b, T, n]
    r = out.observation_variances.numpy().astype(np.float64)
    p0 = np.diag(np.log1p(np.exp(model.initial_raw_variance.numpy().astype(np.float64))))
    # Our step 0 predicts from the prior before updating; the pure filter updates x_0 first.
    return ki.LGSSMParams(
        initial_mean=model.initial_mean.numpy().astype(np.float64),
        initial_cov=p0[None] + np.stack([np.diag(v) for v in q[:, 0]]),
        transition_matrix=np.eye(3), transition_cov=np.stack(
            [[np.diag(v) for v in qb] for qb in q]),
        observation_matrix=np.asarray(H), observation_cov=np.stack(
            [[np.diag(v) for v in rb] for rb in r]))


def test_smoother_and_missing_frames_match_the_exact_kalman_smoother():
    from zoo.layers import kalman_inference as ki

    obs, _ = _data(n=3, steps=8)
    observed = np.ones((3, 8), "float32")
    observed[:, 3:5] = 0
    model = _random_walk_model()
    out = model.filter(obs, observed)
    params = _exact_params(model, out, 8)
    exact = ki.kalman_filter(params, obs.astype(np.float64), observed=observed > 0)
    np.testing.assert_allclose(out.filtered_means, exact.filtered_means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.log_likelihood, exact.log_likelihood, rtol=1e-4)
    smoothed = ki.rts_smoother(params, exact)
    ours = model.smooth(obs, observed)
    np.testing.assert_allclose(ours.smoothed_means, smoothed.smoothed_means, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(ours.smoothed_covs, np.broadcast_to(
        smoothed.smoothed_covs, ours.smoothed_covs.shape), rtol=1e-3, atol=1e-5)
    imputed = model.impute(obs, observed)["imputed"].numpy()
    np.testing.assert_array_equal(imputed[:, [0, 1, 2, 5, 6, 7]], obs[:, [0, 1, 2, 5, 6, 7]])
    np.testing.assert_allclose(imputed[:, 3:5],
                               ours.smoothed_means.numpy()[:, 3:5] @ np.asarray(H).T,
                               rtol=1e-5, atol=1e-5)


def test_forecast_and_sample():
    obs, _ = _data(n=2, steps=6)
    model = _random_walk_model()
    out = model.forecast(obs, steps=3)
    last = model.filter(obs)
    # A random walk: the forecast mean stays at the last estimate, the covariance grows.
    np.testing.assert_allclose(out.state_means,
                               np.repeat(last.filtered_means[:, -1:], 3, 1), atol=1e-6)
    variances = np.diagonal(out.state_covs.numpy(), axis1=-2, axis2=-1)
    assert np.all(np.diff(variances, axis=1) > 0)
    np.testing.assert_allclose(out.observation_means,
                               out.state_means.numpy() @ np.asarray(H).T, atol=1e-6)
    a, b = model.sample(4, steps=5, seed=1), model.sample(4, steps=5, seed=1)
    np.testing.assert_array_equal(a["states"], b["states"])
    assert a["states"].shape == (4, 5, 3) and a["observations"].shape == (4, 5, 2)
    assert not np.allclose(a["states"], model.sample(4, steps=5, seed=2)["states"])


def test_zoo_contract(tmp_path):
    """The trainer's path (tests/test_case.run_model_test): supervised on states with the
    known H from the data, loss MSE; the evaluation's RMSE is the filter's against the
    states, and NaN in the data is an error naming the array."""
    from tests.test_case import run_model_test

    obs, states = _data(n=48, steps=8)
    arrays = {"observations": obs, "states": states, "H": np.asarray(H)}
    kwargs = LSTMKalmanFilter.data_kwargs(arrays)
    assert kwargs == {"state_dim": 3, "observation_dim": 2, "observation_matrix": H}
    bad = obs.copy()
    bad[0, 0, 0] = np.nan
    model, report = run_model_test(
        lambda: LSTMKalmanFilter(lstm_units=8, **kwargs), arrays,
        deterministic=lambda m, x: m.filter(x).filtered_means, tmp_path=tmp_path,
        batch_size=16, epochs=3,
        bad_inputs=[(lambda m: m.validate_data({**arrays, "observations": bad}), ValueError,
                     "'observations' array holds 1 NaN")])
    assert model.compile_kwargs() == {"loss": "mse"} and type(model).supports_jit
    want = model.filter(obs[:8]).filtered_means.numpy() - states[:8]
    np.testing.assert_allclose(report["rmse"], np.sqrt(np.mean(want ** 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="'H'"):
        LSTMKalmanFilter.data_kwargs({"observations": obs, "states": states})

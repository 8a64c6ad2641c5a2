"""Kalman inference functions against TFP's LinearGaussianStateSpaceModel and a NumPy loop."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import kalman_inference as ki
from zoo.layers import small_linalg
from tests.test_case import assert_mc_mean, check_gradients

tfd = tfp.distributions
RTOL = 1e-6


# ----------------------------------------------------------------------------- fixtures
def _spd(rng, d, floor=0.2):
    x = rng.normal(size=(d, d))
    return x @ x.T / d + floor * np.eye(d)


def random_system(rng, n=3, p=2, k=None, offsets=False):
    a = rng.normal(size=(n, n))
    a = 0.95 * a / np.max(np.abs(np.linalg.eigvals(a)))
    return ki.LGSSMParams(
        initial_mean=rng.normal(size=n), initial_cov=_spd(rng, n, 0.5),
        transition_matrix=a, transition_cov=_spd(rng, n),
        observation_matrix=rng.normal(size=(p, n)), observation_cov=_spd(rng, p),
        transition_offset=rng.normal(size=n) if offsets else None,
        observation_offset=rng.normal(size=p) if offsets else None,
        control_matrix=rng.normal(size=(n, k)) if k else None)


def numpy_filter(params, y, mask=None, u=None):
    """Textbook Kalman filter, one series at a time; parameters shared or [B, T, ...]."""
    bsz, steps, _ = y.shape

    def at(x, b, t, base):
        if x is None:
            return None
        x = np.asarray(x)
        if x.ndim == base:
            return x
        if x.ndim == base + 1:
            return x[b if x.shape[0] > 1 else 0]
        return x[b if x.shape[0] > 1 else 0, t]

    ll = np.zeros(bsz)
    fm = np.zeros(y.shape[:2] + (np.shape(params.initial_mean)[-1],))
    fc = np.zeros(fm.shape + fm.shape[-1:])
    for b in range(bsz):
        m, cov = at(params.initial_mean, b, 0, 1), at(params.initial_cov, b, 0, 2)
        for t in range(steps):
            if t > 0:
                a = at(params.transition_matrix, b, t, 2)
                m = a @ m
                if params.transition_offset is not None:
                    m = m + at(params.transition_offset, b, t, 1)
                if u is not None:
                    m = m + at(params.control_matrix, b, t, 2) @ u[b, t]
                cov = a @ cov @ a.T + at(params.transition_cov, b, t, 2)
            if mask is None or mask[b, t]:
                h, r = at(params.observation_matrix, b, t, 2), at(params.observation_cov, b, t, 2)
                pred_y = h @ m
                if params.observation_offset is not None:
                    pred_y = pred_y + at(params.observation_offset, b, t, 1)
                s = h @ cov @ h.T + r
                e = y[b, t] - pred_y
                ll[b] += -0.5 * (e @ np.linalg.solve(s, e) + np.linalg.slogdet(2 * np.pi * s)[1])
                gain = cov @ h.T @ np.linalg.inv(s)
                m = m + gain @ e
                cov = cov - gain @ s @ gain.T
            fm[b, t], fc[b, t] = m, cov
    return ll, fm, fc


def tfp_model(params, steps, u=None):
    """The same model as a TFP LinearGaussianStateSpaceModel (controls enter the noise mean)."""
    n = np.shape(params.initial_mean)[-1]
    p = np.shape(params.observation_matrix)[-2]
    b = np.zeros(n) if params.transition_offset is None else params.transition_offset

    def trans_noise(t):  # TFP's step t maps x_t to x_{t+1}
        loc = tf.constant(b)
        if u is not None:
            u_next = tf.gather(u, tf.minimum(t + 1, steps - 1), axis=1)
            loc = loc + tf.linalg.matvec(params.control_matrix, u_next)
        return tfd.MultivariateNormalTriL(loc, np.linalg.cholesky(params.transition_cov))

    d = np.zeros(p) if params.observation_offset is None else params.observation_offset
    return tfd.LinearGaussianStateSpaceModel(
        steps, tf.linalg.LinearOperatorFullMatrix(params.transition_matrix), trans_noise,
        tf.linalg.LinearOperatorFullMatrix(params.observation_matrix),
        tfd.MultivariateNormalTriL(d, np.linalg.cholesky(params.observation_cov)),
        tfd.MultivariateNormalTriL(params.initial_mean, np.linalg.cholesky(params.initial_cov)))


def _close(a, b, rtol=RTOL, atol=1e-9):
    """Equal after broadcasting (shared covariances come with a batch axis of 1)."""
    a, b = np.asarray(a), np.asarray(b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    np.testing.assert_allclose(np.broadcast_to(a, shape), np.broadcast_to(b, shape), rtol=rtol,
                               atol=atol)


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("masked,controls", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_matches_tfp_and_numpy(masked, controls):
    rng = np.random.default_rng(1 + 2 * masked + controls)
    bsz, steps, k = 3, 12, 2
    params = random_system(rng, k=k if controls else None, offsets=controls)
    y = rng.normal(size=(bsz, steps, 2))
    u = rng.normal(size=(bsz, steps, k)) if controls else None
    mask = rng.random((bsz, steps)) > 0.3 if masked else None
    res = ki.kalman_filter(params, y, observed=mask, actions=u)
    ll, fm, fc = numpy_filter(params, y, mask, u)
    _close(res.log_likelihood, ll)
    _close(res.filtered_means, fm)
    _close(res.filtered_covs, fc)
    lgssm = tfp_model(params, steps, u)
    tfp_mask = None if mask is None else ~mask  # TFP: True = missing
    _close(res.log_likelihood, lgssm.log_prob(y, mask=tfp_mask))
    _, f_means, f_covs, p_means, p_covs, _, _ = lgssm.forward_filter(y, mask=tfp_mask)
    _close(res.filtered_means, f_means)
    _close(res.filtered_covs, f_covs)
    _close(res.predicted_means[:, 1:], p_means[:, :-1])  # TFP's step t predicts t + 1
    _close(res.predicted_covs[:, 1:], p_covs[..., :-1, :, :])
    s_means, s_covs = lgssm.posterior_marginals(y, mask=tfp_mask)
    smooth = ki.rts_smoother(params, res)
    _close(smooth.smoothed_means, s_means)
    _close(smooth.smoothed_covs, s_covs)


def _all_methods(params, y, **kw):
    out = {"sequential": ki.kalman_filter(params, y, **kw),
           "no_steady_state": ki.kalman_filter(params, y, steady_state=False, **kw),
           "square_root": ki.kalman_filter(params, y, square_root=True, **kw),
           "parallel": ki.kalman_filter(params, y, method="parallel", **kw)}
    return out


def _assert_same(results, rtol=RTOL):
    ref = results["sequential"]
    for name, res in results.items():
        for field in ref._fields:
            try:
                _close(getattr(res, field), getattr(ref, field), rtol)
            except AssertionError as err:
                raise AssertionError(f"{name}.{field}") from err


def test_parallel_square_root_and_sequential_agree_on_time_varying_batched_system():
    rng = np.random.default_rng(7)
    bsz, steps, n, p, k = 3, 17, 3, 2, 1
    base = random_system(rng, n, p, k, offsets=True)
    tv = lambda x: x[None, None] + 0.1 * rng.normal(size=(bsz, steps) + x.shape)  # noqa: E731
    params = base._replace(
        transition_matrix=tv(base.transition_matrix),
        transition_cov=np.stack([_spd(rng, n) for _ in range(bsz)]),  # per series
        observation_matrix=tv(base.observation_matrix)[:1],  # per step, shared by series
        transition_offset=tv(base.transition_offset))
    y = rng.normal(size=(bsz, steps, p))
    u = rng.normal(size=(bsz, steps, k))
    mask = rng.random((bsz, steps)) > 0.25
    results = _all_methods(params, y, actions=u, observed=mask)
    _assert_same(results)
    ll, fm, fc = numpy_filter(params, y, mask, u)
    _close(results["parallel"].log_likelihood, ll)
    _close(results["parallel"].filtered_means, fm)
    # Rauch-Tung-Striebel by hand with the time-varying A_t, Q_t and controls.
    smooth = ki.rts_smoother(params, results["sequential"])
    a_t, q_t = params.transition_matrix, params.transition_cov
    for b in range(bsz):
        ms, ps = fm[b, -1], fc[b, -1]
        for t in range(steps - 2, -1, -1):
            a, q = a_t[b, t + 1], q_t[b]
            m_pred = a @ fm[b, t] + params.transition_offset[b, t + 1] + (
                params.control_matrix @ u[b, t + 1])
            p_pred = a @ fc[b, t] @ a.T + q
            g = fc[b, t] @ a.T @ np.linalg.inv(p_pred)
            ms, ps = fm[b, t] + g @ (ms - m_pred), fc[b, t] + g @ (ps - p_pred) @ g.T
            _close(smooth.smoothed_means[b, t], ms)
            _close(smooth.smoothed_covs[b, t], ps)


def test_shared_covariances_are_computed_once_and_steady_state_is_exact():
    rng = np.random.default_rng(3)
    params = random_system(rng, 4, 2)
    y = rng.normal(size=(5, 300, 2))
    results = _all_methods(params, y)
    assert results["sequential"].filtered_covs.shape == (1, 300, 4, 4)
    _assert_same(results)
    _close(results["sequential"].log_likelihood, numpy_filter(params, y)[0])


def test_filter_step_loop_equals_kalman_filter():
    """The exported step, run by hand, reproduces the filter (mask and controls included)."""
    rng = np.random.default_rng(4)
    params = random_system(rng, 3, 2, k=2, offsets=True)
    y = rng.normal(size=(2, 6, 2))
    u = rng.normal(size=(2, 6, 2))
    mask = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 0, 1, 1, 1]], bool)
    res = ki.kalman_filter(params, y, observed=mask, actions=u)
    mean, cov, lls = None, None, []
    for t in range(6):
        if t == 0:  # the prior, then an update
            mean = tf.constant(np.tile(params.initial_mean, (2, 1)))
            cov = tf.constant(np.tile(params.initial_cov, (2, 1, 1)))
            mean, cov, ll = ki.update_step(mean, cov, y[:, 0] - params.observation_offset,
                                           mask[:, 0], params.observation_matrix,
                                           params.observation_cov)
        else:
            shift = params.transition_offset + u[:, t] @ params.control_matrix.T
            step = ki.filter_step(mean, cov, y[:, t], mask[:, t], params.transition_matrix,
                                  params.transition_cov, params.observation_matrix,
                                  params.observation_cov, shift, params.observation_offset)
            mean, cov, ll = step.filtered_mean, step.filtered_cov, step.log_likelihood
        lls.append(ll)
        _close(mean, res.filtered_means[:, t])
        _close(cov, res.filtered_covs[:, t])
    _close(np.stack(lls, 1), res.log_likelihoods)


def test_compiled_with_xla_equals_eager():
    rng = np.random.default_rng(5)
    params = random_system(rng, 3, 2)
    y = rng.normal(size=(4, 20, 2))
    mask = rng.random((4, 20)) > 0.2
    for method in ki.METHODS:
        fn = tf.function(lambda y, m: ki.kalman_filter(params, y, observed=m, method=method,
                                                       validate_args=False).log_likelihood,
                         jit_compile=True)
        _close(fn(y, mask), ki.kalman_filter(params, y, observed=mask).log_likelihood)


# ----------------------------------------------------------------------------- missing data
def test_nan_as_missing_equals_mask_and_has_finite_gradients():
    rng = np.random.default_rng(6)
    params = random_system(rng)
    y = rng.normal(size=(2, 10, 2))
    mask = rng.random((2, 10)) > 0.3
    y_nan = np.where(mask[..., None], y, np.nan)
    by_mask = ki.kalman_filter(params, y, observed=mask)
    by_nan = ki.kalman_filter(params, y_nan, nan_as_missing=True)
    _close(by_nan.log_likelihood, by_mask.log_likelihood)
    _close(by_nan.filtered_means, by_mask.filtered_means)
    a = tf.Variable(params.transition_matrix)
    with tf.GradientTape() as tape:
        ll = ki.kalman_filter(params._replace(transition_matrix=a), y_nan,
                              nan_as_missing=True).log_likelihood
    grad = tape.gradient(ll, a)
    assert np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(8)
    base = random_system(rng, 2, 2, k=1, offsets=True)
    y = rng.normal(size=(2, 5, 2))
    u = rng.normal(size=(2, 5, 1))
    mask = np.array([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1]], bool)

    def make(method):
        def fn(m0, p0, a, q, h, r, b, d, bm):
            params = ki.LGSSMParams(m0, p0, a, q, h, r, b, d, bm)
            return tf.reduce_sum(ki.kalman_filter(params, y, observed=mask, actions=u,
                                                  method=method, validate_args=False)
                                 .log_likelihood)
        return fn

    values = list(base)
    check_gradients(make("sequential"), values, rtol=1e-5, atol=1e-6)
    check_gradients(make("parallel"), values, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- numerics
def test_badly_scaled_float32_stays_close_to_float64():
    """Observation noise std 1e-3, state scale 1e3: float32 must stay finite and accurate.

    The float64 reference filters the same float32-rounded observations, so what is compared
    is the filters' arithmetic. Measured: log-likelihood error 1e-2 (covariance form; TFP's
    float32 filter: 1.5e-2) and 5e-4 (square root), out of 137.
    """
    rng = np.random.default_rng(9)
    steps = 200
    a = np.array([[1.0, 1.0], [0.0, 1.0]])
    q = np.diag([1e-2, 1e-4])
    h = np.array([[1.0, 0.0]])
    r = np.array([[1e-6]])
    x = np.array([1e3, 2.0])
    ys = []
    for _ in range(steps):
        x = a @ x + rng.multivariate_normal(np.zeros(2), q)
        ys.append(h @ x + 1e-3 * rng.normal(size=1))
    y32 = np.stack(ys)[None].astype(np.float32)
    params = ki.LGSSMParams(np.array([1e3, 0.0]), np.diag([1e6, 1e2]), a, q, h, r)
    exact = ki.kalman_filter(params, y32.astype(np.float64))
    p32 = ki.LGSSMParams(*[tf.constant(v, tf.float32) for v in params[:6]])
    for square_root, ll_tol in ((False, 3e-2), (True, 3e-3)):
        res = ki.kalman_filter(p32, y32, square_root=square_root)
        for field in ("log_likelihood", "filtered_means", "filtered_covs"):
            assert np.all(np.isfinite(getattr(res, field).numpy())), field
        # The position is known to ~1e-3 out of 1e3; float32 spacing there is 6e-5 / 1.2e-4.
        np.testing.assert_allclose(res.filtered_means[0, :, 0], exact.filtered_means[0, :, 0],
                                   rtol=0, atol=2e-4)
        np.testing.assert_allclose(res.log_likelihood, exact.log_likelihood, rtol=0,
                                   atol=ll_tol)
        var = res.filtered_covs.numpy()[0, :, 0, 0]
        np.testing.assert_allclose(var[10:], exact.filtered_covs.numpy()[0, 10:, 0, 0],
                                   rtol=1e-2)


# ----------------------------------------------------------------------------- sample, forecast
def test_forecast_equals_filtering_with_missing_future():
    rng = np.random.default_rng(10)
    params = random_system(rng, 3, 2, k=1, offsets=True)
    y = rng.normal(size=(2, 8, 2))
    u = rng.normal(size=(2, 12, 1))
    res = ki.kalman_filter(params, y, actions=u[:, :8])
    fc = ki.forecast(params, res, 4, actions=u[:, 8:])
    y_ext = np.concatenate([y, np.zeros((2, 4, 2))], 1)
    mask = np.concatenate([np.ones((2, 8)), np.zeros((2, 4))], 1)
    ext = ki.kalman_filter(params, y_ext, observed=mask, actions=u)
    _close(fc.state_means, ext.predicted_means[:, 8:])
    _close(fc.state_covs, ext.predicted_covs[:, 8:])
    h, d, r = params.observation_matrix, params.observation_offset, params.observation_cov
    _close(fc.observation_means, ext.predicted_means[:, 8:] @ h.T + d)
    _close(fc.observation_covs[0], h @ ext.predicted_covs[0, 8:] @ h.T + r)


def test_posterior_samples_have_smoothed_moments():
    rng = np.random.default_rng(11)
    params = random_system(rng, 2, 1)
    y = rng.normal(size=(2, 6, 1))
    res = ki.kalman_filter(params, y)
    smooth = ki.rts_smoother(params, res)
    draws = ki.posterior_sample(params, res, rng.normal(size=(4000, 2, 6, 2))).numpy()
    assert draws.shape == (4000, 2, 6, 2)
    assert_mc_mean(draws, smooth.smoothed_means.numpy())
    # Second moments: E[(x - m)^2] equals the smoothed variance.
    sq = np.square(draws - smooth.smoothed_means.numpy())
    var = np.diagonal(np.broadcast_to(smooth.smoothed_covs, (2, 6, 2, 2)), 0, -2, -1)
    assert_mc_mean(sq, var)


# ----------------------------------------------------------------------------- errors
def test_bad_input_gives_clear_errors():
    rng = np.random.default_rng(12)
    params = random_system(rng, 3, 2)
    y = rng.normal(size=(2, 5, 2))
    with pytest.raises(ValueError, match="obs_dim"):
        ki.kalman_filter(params, rng.normal(size=(2, 5, 3)))
    with pytest.raises(ValueError, match="transition_matrix"):
        ki.kalman_filter(params._replace(transition_matrix=np.eye(2)), y)
    with pytest.raises(ValueError, match="batch size"):
        ki.kalman_filter(params._replace(transition_cov=np.stack([np.eye(3)] * 3)), y)
    with pytest.raises(ValueError, match="time steps"):
        ki.kalman_filter(params._replace(transition_matrix=np.zeros((2, 4, 3, 3))), y)
    with pytest.raises(ValueError, match="positive semi-definite"):
        ki.kalman_filter(params._replace(observation_cov=np.diag([1.0, -1.0])), y)
    with pytest.raises(ValueError, match="symmetric"):
        ki.kalman_filter(params._replace(transition_cov=np.triu(np.ones((3, 3)))), y)
    y_nan = y.copy()
    y_nan[1] = np.nan
    with pytest.raises(ValueError, match="all NaN.*nan_as_missing"):
        ki.kalman_filter(params, y_nan)
    with pytest.raises(ValueError, match="method"):
        ki.kalman_filter(params, y, method="fast")
    with pytest.raises(ValueError, match="control_matrix"):
        ki.kalman_filter(params, y, actions=np.zeros((2, 5, 1)))


# ----------------------------------------------------------------------------- fast loop path
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_unrolled_cholesky_and_solves_match_numpy(p):
    """The filter loop factors S_t (p <= 4) and solves with it by unrolled substitution."""
    rng = np.random.default_rng(20 + p)
    x = rng.normal(size=(5, p, p))
    s = x @ np.swapaxes(x, -1, -2) + 0.1 * np.eye(p)
    b = rng.normal(size=(5, p, 3))
    low = small_linalg.small_cholesky(tf.constant(s)).numpy()
    np.testing.assert_allclose(low, np.linalg.cholesky(s), rtol=1e-12, atol=1e-14)
    fwd = small_linalg.forward_substitution(tf.constant(low), tf.constant(b)).numpy()
    np.testing.assert_allclose(fwd, np.linalg.solve(low, b), rtol=1e-12, atol=1e-13)
    back = small_linalg.back_substitution(tf.constant(low), tf.constant(fwd)).numpy()
    np.testing.assert_allclose(back, np.linalg.solve(s, b), rtol=1e-10, atol=1e-12)
    seen = []  # the filter takes this path exactly when XLA compiles it
    tf.function(lambda: seen.append(ki._in_xla()) or tf.constant(0), jit_compile=True)()
    tf.function(lambda: seen.append(ki._in_xla()) or tf.constant(0))()
    assert seen == [True, False] and not ki._in_xla()
    a, c = rng.normal(size=(3, p, p)), rng.normal(size=(p, 2))
    np.testing.assert_allclose(ki._mm(tf.constant(a), tf.constant(c)).numpy(), a @ c,
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(ki._mm(tf.constant(a), tf.constant(a), transpose_b=True).numpy(),
                               a @ np.swapaxes(a, -1, -2), rtol=1e-13, atol=1e-14)


def _plain_filter(params, y, u=None):
    """The filter as a Python loop over the public steps (tf.matmul, tf.linalg.cholesky)."""
    mean = tf.constant(np.tile(params.initial_mean, (y.shape[0], 1)))
    cov = tf.constant(params.initial_cov)
    d = 0.0 if params.observation_offset is None else params.observation_offset
    lls, means, covs = [], [], []
    for t in range(y.shape[1]):
        if t == 0:
            mean, cov, ll = ki.update_step(mean, cov, y[:, 0] - d, None,
                                           params.observation_matrix, params.observation_cov)
        else:
            shift = 0.0 if params.transition_offset is None else params.transition_offset
            if u is not None:
                shift = shift + u[:, t] @ params.control_matrix.T
            step = ki.filter_step(mean, cov, y[:, t], None, params.transition_matrix,
                                  params.transition_cov, params.observation_matrix,
                                  params.observation_cov, shift + 0 * mean,
                                  params.observation_offset)
            mean, cov, ll = step.filtered_mean, step.filtered_cov, step.log_likelihood
        lls.append(ll.numpy())
        means.append(mean.numpy())
        covs.append(cov.numpy())
    return np.stack(lls, 1), np.stack(means, 1), np.stack(covs, 0)


@pytest.mark.parametrize("steps", [1, 2, 7, 101])
@pytest.mark.parametrize("n,p,controls", [(4, 2, False), (3, 3, True), (2, 5, False)])
def test_compiled_filter_loop_equals_plain_steps_to_rounding(steps, n, p, controls):
    """Under XLA the loop takes its fast path (fused small products, unrolled Cholesky of S_t
    for p <= 4; p = 5 keeps tf.linalg); it gives the plain step-by-step numbers to 1e-12,
    with and without the steady-state shortcut (taken by 101 steps, checked below)."""
    rng = np.random.default_rng(100 * n + steps)
    params = random_system(rng, n, p, k=2 if controls else None, offsets=controls)
    y = rng.normal(size=(3, steps, p))
    u = rng.normal(size=(3, steps, 2)) if controls else None
    lls, means, covs = _plain_filter(params, y, u)
    fn = tf.function(lambda y, ss: ki.kalman_filter(params, y, actions=u, steady_state=ss,
                                                    validate_args=False), jit_compile=True)
    for steady in (True, False):
        runs = [fn(tf.constant(y), steady)]
        if steps == 7:  # and eager (the plain arithmetic)
            runs.append(ki.kalman_filter(params, y, actions=u, steady_state=steady))
        for res in runs:
            np.testing.assert_allclose(res.log_likelihoods, lls, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(res.log_likelihood, lls.sum(1), rtol=1e-12)
            np.testing.assert_allclose(res.filtered_means, means, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(res.filtered_covs[0], covs, rtol=1e-12, atol=1e-13)
    if steps == 101:  # the shortcut was taken: the last covariances are reused exactly
        fc = fn(tf.constant(y), True).filtered_covs.numpy()[0]
        assert np.array_equal(fc[-1], fc[-2])


def test_compiled_filter_loop_gradients_equal_plain_steps():
    rng = np.random.default_rng(30)
    params = random_system(rng, 4, 2)
    y = tf.constant(rng.normal(size=(2, 9, 2)))
    a = tf.Variable(params.transition_matrix)
    r = tf.Variable(params.observation_cov)

    @tf.function(jit_compile=True)
    def fast():
        with tf.GradientTape() as tape:
            p = params._replace(transition_matrix=a, observation_cov=r)
            ll = tf.reduce_sum(ki.kalman_filter(p, y, steady_state=False,
                                                validate_args=False).log_likelihood)
        return tape.gradient(ll, [a, r])

    with tf.GradientTape() as tape:
        cov, mean, total = tf.constant(params.initial_cov), tf.constant(
            np.tile(params.initial_mean, (2, 1))), 0.0
        for t in range(9):
            if t:
                mean, cov = ki.predict_step(mean, cov, a, params.transition_cov)
            mean, cov, step_ll = ki.update_step(mean, cov, y[:, t], None,
                                                params.observation_matrix, r)
            total = total + tf.reduce_sum(step_ll)
    plain = tape.gradient(total, [a, r])
    for g_fast, g_plain in zip(fast(), plain):
        np.testing.assert_allclose(g_fast, g_plain, rtol=1e-10, atol=1e-12)

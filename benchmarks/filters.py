"""Reference filters for the deep state-space benchmark: an extended Kalman filter and a
bootstrap particle filter, in NumPy float64, batched over sequences.

Both take the system as plain functions on ``[..., state_dim]`` arrays (for the pendulum,
``zoo.datasets.pendulum_transition`` and ``pendulum_measurement``) and additive Gaussian
noise: x_t = f(x_{t-1}) + L eps_t with Q = L L^T (L may be tall and thin: a singular Q, as
the pendulum's velocity-only process noise), y_t = h(x_t) + nu_t, nu_t ~ N(0, R). The first
observation y_0 sees x_0 ~ p_0 (the convention of ``zoo.datasets`` and of TFP's
``LinearGaussianStateSpaceModel``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class FilterResult(NamedTuple):
    """Filtered means [B, T, d], covariances [B, T, d, d], log p(y_{0:T-1}) [B], and (PF
    only, when asked) filtered means of ``features(particles)`` [B, T, k]."""

    means: np.ndarray
    covariances: np.ndarray
    log_likelihood: np.ndarray
    feature_means: np.ndarray | None = None


def numerical_jacobian(fn: Callable, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of ``fn`` at x [B, d]: [B, out_dim, d]."""
    x = np.asarray(x, np.float64)
    cols = []
    for j in range(x.shape[-1]):
        e = np.zeros(x.shape[-1])
        e[j] = step
        cols.append((fn(x + e) - fn(x - e)) / (2 * step))
    return np.stack(cols, -1)


def extended_kalman_filter(observations, transition_fn: Callable, measurement_fn: Callable,
                           process_cov, observation_cov, initial_mean, initial_cov,
                           transition_jacobian: Callable | None = None,
                           measurement_jacobian: Callable | None = None) -> FilterResult:
    """EKF: predict m- = f(m), P- = F P F^T + Q; update with H = dh/dx at m-.

    observations: [B, T, p]; initial_mean [d] or [B, d]; initial_cov [d, d] or [B, d, d].
    Jacobians default to central differences of ``transition_fn`` / ``measurement_fn``.
    """
    y = np.asarray(observations, np.float64)
    batch, steps, p = y.shape
    q, r = np.asarray(process_cov, np.float64), np.asarray(observation_cov, np.float64)
    jac_f = transition_jacobian or (lambda x: numerical_jacobian(transition_fn, x))
    jac_h = measurement_jacobian or (lambda x: numerical_jacobian(measurement_fn, x))
    m = np.broadcast_to(np.asarray(initial_mean, np.float64), (batch, q.shape[0])).copy()
    cov = np.broadcast_to(np.asarray(initial_cov, np.float64), (batch, *q.shape)).copy()
    d = m.shape[-1]
    means, covs = np.empty((batch, steps, d)), np.empty((batch, steps, d, d))
    log_lik = np.zeros(batch)
    for t in range(steps):
        if t > 0:
            f = jac_f(m)
            m = transition_fn(m)
            cov = f @ cov @ np.swapaxes(f, -1, -2) + q
        h = jac_h(m)
        residual = y[:, t] - measurement_fn(m)
        s = h @ cov @ np.swapaxes(h, -1, -2) + r
        s = 0.5 * (s + np.swapaxes(s, -1, -2))
        chol = np.linalg.cholesky(s)
        gain = np.swapaxes(np.linalg.solve(s, h @ cov), -1, -2)  # P H^T S^-1 (S, P symmetric)
        m = m + (gain @ residual[..., None])[..., 0]
        # Joseph form keeps P symmetric positive definite.
        i_kh = np.eye(d) - gain @ h
        cov = i_kh @ cov @ np.swapaxes(i_kh, -1, -2) + gain @ r @ np.swapaxes(gain, -1, -2)
        white = np.linalg.solve(chol, residual[..., None])[..., 0]
        log_lik += -0.5 * (np.sum(white**2, -1) + p * np.log(2 * np.pi)) - np.sum(
            np.log(np.diagonal(chol, axis1=-2, axis2=-1)), -1)
        means[:, t], covs[:, t] = m, cov
    return FilterResult(means, covs, log_lik)


def bootstrap_particle_filter(observations, transition_fn: Callable, measurement_fn: Callable,
                              noise_factor, observation_cov, initial_sampler: Callable,
                              num_particles: int = 1000, seed: int = 0,
                              features: Callable | None = None) -> FilterResult:
    """Bootstrap particle filter (proposal = transition), systematic resampling every step.

    noise_factor: L [d, k] with process noise L eps, eps ~ N(0, I_k).
    initial_sampler(rng, shape) -> x_0 particles [*shape, d].
    features(particles [..., d]) -> [..., k], optional: its filtered mean is returned too (for
    the pendulum, (sin a, cos a) gives a circular mean of the angle).
    Returns weighted particle means and covariances before resampling.
    """
    y = np.asarray(observations, np.float64)
    batch, steps, p = y.shape
    rng = np.random.default_rng(seed)
    factor = np.asarray(noise_factor, np.float64)
    r = np.asarray(observation_cov, np.float64)
    chol_r = np.linalg.cholesky(r)
    log_det_r = 2 * np.sum(np.log(np.diag(chol_r)))
    x = np.asarray(initial_sampler(rng, (batch, num_particles)), np.float64)
    d = x.shape[-1]
    means, covs = np.empty((batch, steps, d)), np.empty((batch, steps, d, d))
    log_lik = np.zeros(batch)
    extra = []
    for t in range(steps):
        if t > 0:
            eps = rng.normal(size=(batch, num_particles, factor.shape[1]))
            x = transition_fn(x) + eps @ factor.T
        residual = y[:, t, None, :] - measurement_fn(x)
        white = np.linalg.solve(chol_r, residual[..., None])[..., 0]
        log_w = -0.5 * (np.sum(white**2, -1) + p * np.log(2 * np.pi) + log_det_r)
        top = log_w.max(1, keepdims=True)
        w = np.exp(log_w - top)
        total = w.sum(1, keepdims=True)
        log_lik += np.log(total[:, 0] / num_particles) + top[:, 0]
        w = w / total
        mean = np.einsum("bn,bnd->bd", w, x)
        centred = x - mean[:, None]
        means[:, t] = mean
        covs[:, t] = np.einsum("bn,bnd,bne->bde", w, centred, centred)
        if features is not None:
            extra.append(np.einsum("bn,bnk->bk", w, features(x)))
        # Systematic resampling.
        positions = (rng.random((batch, 1)) + np.arange(num_particles)) / num_particles
        index = np.minimum(np.array([np.searchsorted(c, u) for c, u in
                                     zip(np.cumsum(w, 1), positions)]), num_particles - 1)
        x = np.take_along_axis(x, index[..., None], 1)
    return FilterResult(means, covs, log_lik, np.stack(extra, 1) if extra else None)


def pendulum_system(constants: dict) -> dict:
    """Arguments of both filters for ``zoo.datasets.pendulum`` with its own constants.

    Process noise acts on the velocity before the angle update, so in state coordinates it is
    L eps with L = process_std sqrt(dt) [dt, 1]^T (rank one). The prior of x_0 is
    a_0 ~ U(-pi, pi), w_0 ~ N(0, 1); the EKF gets its moments, N(0, diag(pi^2/3, 1)).
    """
    from zoo.datasets import pendulum_measurement, pendulum_transition

    dt, g, c = (float(constants[k]) for k in ("dt", "g_over_l", "damping"))
    s = float(constants["process_std"]) * np.sqrt(dt)
    factor = s * np.array([[dt], [1.0]])
    r = float(constants["obs_std"]) ** 2 * np.eye(2)

    def transition(x):
        return pendulum_transition(x, dt=dt, g_over_l=g, damping=c)

    def transition_jacobian(x):
        # w' = w + dt (-g sin a - c w); a' = a + dt w'.
        dw_da = -dt * g * np.cos(x[..., 0])
        dw_dw = np.full_like(dw_da, 1.0 - dt * c)
        row_a = np.stack([1.0 + dt * dw_da, dt * dw_dw], -1)
        return np.stack([row_a, np.stack([dw_da, dw_dw], -1)], -2)

    def measurement_jacobian(x):
        zeros = np.zeros_like(x[..., 0])
        return np.stack([np.stack([np.cos(x[..., 0]), zeros], -1),
                         np.stack([-np.sin(x[..., 0]), zeros], -1)], -2)

    def initial_sampler(rng, shape):
        return np.stack([rng.uniform(-np.pi, np.pi, size=shape), rng.normal(size=shape)], -1)

    return dict(transition_fn=transition, measurement_fn=pendulum_measurement,
                transition_jacobian=transition_jacobian,
                measurement_jacobian=measurement_jacobian, noise_factor=factor,
                process_cov=factor @ factor.T, observation_cov=r,
                initial_mean=np.zeros(2), initial_cov=np.diag([np.pi**2 / 3, 1.0]),
                initial_sampler=initial_sampler)


def ekf_arguments(system: dict) -> dict:
    keys = ("transition_fn", "measurement_fn", "process_cov", "observation_cov",
            "initial_mean", "initial_cov", "transition_jacobian", "measurement_jacobian")
    return {k: system[k] for k in keys}


def ekf_from_first_angle(y, system: dict):
    """The pendulum EKF started at the angle of the first observation, atan2(y_0) (angle sd
    0.1, velocity 0 with sd 1): a common fix for the EKF's prior-moment start."""
    init = np.stack([np.arctan2(y[:, 0, 0], y[:, 0, 1]), np.zeros(len(y))], -1)
    return extended_kalman_filter(y, **{**ekf_arguments(system), "initial_mean": init,
                                        "initial_cov": np.diag([0.1**2, 1.0])})


def pf_arguments(system: dict) -> dict:
    keys = ("transition_fn", "measurement_fn", "noise_factor", "observation_cov",
            "initial_sampler")
    return {k: system[k] for k in keys}


def wrap_angle(a):
    """Angle differences mapped to (-pi, pi]."""
    return np.angle(np.exp(1j * np.asarray(a)))

"""The deep state-space benchmark: its reference EKF against the exact Kalman filter, and a
smoke run of ``bench_dssm.main(quick=True)``."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import filters  # noqa: E402

tfd = tfp.distributions


def test_ekf_equals_the_exact_kalman_filter_on_a_linear_system():
    """With linear f and h the EKF is the Kalman filter: means, covariances and the
    log-likelihood agree with TFP's LinearGaussianStateSpaceModel to 1e-6 in float64
    (numerical Jacobians included)."""
    rng = np.random.default_rng(0)
    d, p, steps, batch = 3, 2, 30, 4
    a = 0.9 * np.linalg.qr(rng.normal(size=(d, d)))[0]
    h = rng.normal(size=(p, d))
    lq = rng.normal(size=(d, d)) * 0.3
    q = lq @ lq.T + 0.01 * np.eye(d)
    r = np.diag(rng.uniform(0.1, 0.5, size=p))
    m0, p0 = rng.normal(size=d), np.eye(d) * 2.0
    y = rng.normal(size=(batch, steps, p)) * 2.0
    ours = filters.extended_kalman_filter(y, lambda x: x @ a.T, lambda x: x @ h.T, q, r, m0, p0)
    lgssm = tfd.LinearGaussianStateSpaceModel(
        num_timesteps=steps,
        transition_matrix=tf.linalg.LinearOperatorFullMatrix(a),
        transition_noise=tfd.MultivariateNormalTriL(scale_tril=np.linalg.cholesky(q)),
        observation_matrix=tf.linalg.LinearOperatorFullMatrix(h),
        observation_noise=tfd.MultivariateNormalTriL(scale_tril=np.linalg.cholesky(r)),
        initial_state_prior=tfd.MultivariateNormalTriL(m0, np.linalg.cholesky(p0)))
    log_liks, means, covs, *_ = lgssm.forward_filter(tf.constant(y))
    np.testing.assert_allclose(ours.means, means.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.covariances, np.broadcast_to(covs.numpy(), ours.covariances.shape),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.log_likelihood, log_liks.numpy().sum(1), atol=1e-6, rtol=0)
    assert not np.allclose(ours.means[:, 1:], ours.means[:, :-1])  # the filter moves


def test_particle_filter_approaches_the_kalman_filter_on_a_linear_system():
    """The bootstrap PF's log-likelihood estimate is unbiased for p(y): with 2000 particles,
    its mean over sequences is within 4 standard errors of the exact one."""
    rng = np.random.default_rng(1)
    a, h = np.array([[0.9, 0.2], [0.0, 0.8]]), np.array([[1.0, 0.5]])
    factor, r = np.diag([0.4, 0.3]), np.array([[0.25]])
    batch, steps = 40, 20
    x = rng.normal(size=(batch, 2))
    ys = []
    for t in range(steps):
        if t:
            x = x @ a.T + rng.normal(size=(batch, 2)) @ factor.T
        ys.append(x @ h.T + 0.5 * rng.normal(size=(batch, 1)))
    y = np.stack(ys, 1)
    exact = filters.extended_kalman_filter(y, lambda z: z @ a.T, lambda z: z @ h.T,
                                           factor @ factor.T, r, np.zeros(2), np.eye(2))
    pf = filters.bootstrap_particle_filter(
        y, lambda z: z @ a.T, lambda z: z @ h.T, factor, r,
        lambda g, shape: g.normal(size=(*shape, 2)), num_particles=2000, seed=3)
    ratio = np.exp(pf.log_likelihood - exact.log_likelihood)  # unbiased for 1
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / np.sqrt(batch) + 1e-3
    # Monte Carlo error of a weighted mean is about sd / sqrt(ESS); ESS >= 100 here.
    sd = np.sqrt(np.diagonal(exact.covariances, axis1=-2, axis2=-1))
    z = (pf.means - exact.means) / sd
    assert np.sqrt(np.mean(z**2)) < 0.1, np.sqrt(np.mean(z**2))


def test_quick_benchmark_gives_numeric_tables():
    from benchmarks import bench_dssm

    text = bench_dssm.main(quick=True)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}

    def numeric(cell):
        return re.match(r"^[-+]?[\d,]*\.?\d+", cell) is not None

    for name in bench_dssm.ROW_NAMES:
        assert name in rows, (name, sorted(rows))
        assert numeric(rows[name][0]), (name, rows[name])

r"""Backward-simulation particle smoothing, as pure functions.

Godsill, Doucet & West, "Monte Carlo smoothing for nonlinear time series" (JASA 2004): after a
particle filter has stored every frame's cloud $\{x_t^i, W_t^i\}$, draw $M$ trajectories
backwards,

$$\tilde x_{T-1} \sim \textstyle\sum_i W_{T-1}^i \delta_{x_{T-1}^i}, \qquad
  \tilde x_t \sim \textstyle\sum_i W_t^i f(\tilde x_{t+1} \mid x_t^i)\, \delta_{x_t^i}
  \Big/ \sum_j W_t^j f(\tilde x_{t+1} \mid x_t^j),$$

each an (approximate) draw from the joint smoothing distribution $p(x_{0:T-1} \mid y_{0:T-1})$;
their average converges to $E[x_t \mid y_{0:T-1}]$ (the Rauch-Tung-Striebel means on a
linear-Gaussian model) as $N$ and $M$ grow. Cost $O(T M N)$ evaluations of the transition
density, which the filter itself never needs.

Callables: ``transition_log_prob(next [batch, M, n], previous [batch, N, n]) -> [batch, M, N]``
($\log f(x_{t+1} = \text{next}_m \mid x_t = \text{previous}_i)$ for every pair);
:func:`linear_gaussian_transition_log_prob` builds it for a
:class:`layers.kalman_inference.LGSSMParams`. The filtering clouds come from
:func:`filter_clouds` (any transition and emission, as :mod:`layers.particle_filter`), or
from ``ParticleFilter.particle_cloud``. Like the filter, nothing here draws a random number
unless asked to: the backward draws take their uniforms as ``noise``, or draw them from
``seed``.

Example (the smoother's means against the exact RTS means of a random walk):

>>> import numpy as np
>>> from zoo.kalman_filter import KalmanFilterModel
>>> from zoo.particle_filter import linear_gaussian_functions
>>> lg = KalmanFilterModel.from_matrices([[1.0]], [[1.0]], [[1.0]], [[1.0]])
>>> y = np.cumsum(np.random.default_rng(0).normal(size=(1, 20, 1)), 1)
>>> params = lg.state_space_params()
>>> clouds = filter_clouds(y, *linear_gaussian_functions(params), num_particles=500, seed=0)
>>> paths = backward_simulation(clouds.particles, clouds.log_weights,
...                             linear_gaussian_transition_log_prob(params), 200, seed=1)
>>> from zoo.layers.kalman_inference import kalman_filter, rts_smoother
>>> exact = rts_smoother(params, kalman_filter(params, y)).smoothed_means.numpy()
>>> float(np.abs(smoothed_moments(paths)[0].numpy() - exact).max()) < 0.3
True
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import keras
import tensorflow as tf

from zoo.layers import particle_filter as pf
from zoo.layers import resampling


class FilterClouds(NamedTuple):
    """Every frame's filtering cloud, what backward simulation needs."""

    particles: tf.Tensor  # [batch, time, N, n]
    log_weights: tf.Tensor  # [batch, time, N]: normalized, after weighting by y_t
    log_likelihood: tf.Tensor  # [batch]: the filter's log Z-hat


def filter_clouds(observations, initial_sample: Callable, transition_sample: Callable,
                  emission_log_prob: Callable, noise_dim: int, num_particles: int,
                  observed=None, seed=None, scheme: str = "systematic",
                  threshold: float = 0.5, dtype="float64",
                  noise: Optional[tuple] = None) -> FilterClouds:
    """The bootstrap particle filter of :func:`layers.particle_filter.particle_filter` (the
    same steps, noise and arguments; the same numbers given the same noise), keeping every
    frame's particles and normalized log-weights. Compiled as one ``tf.function``."""
    pf.check_settings(num_particles, scheme, threshold)
    observations, observed, noise = pf.prepare_inputs(observations, observed, num_particles,
                                                      noise_dim, seed, dtype, noise)

    @tf.function(autograph=False)
    def run(y, seen, noise):
        init_eps, trans_eps, res_u = noise
        time = tf.shape(y)[1]
        state, _ = pf.initial_step(initial_sample(init_eps), y[:, 0], emission_log_prob,
                                   seen[:, 0])
        clouds = tf.TensorArray(state.particles.dtype, size=time).write(0, state.particles)
        weights = tf.TensorArray(state.log_weights.dtype, size=time).write(
            0, state.log_weights)

        def body(t, state, clouds, weights):
            state, _ = pf.particle_filter_step(state, y[:, t], transition_sample,
                                               emission_log_prob, trans_eps[t - 1],
                                               res_u[t - 1], seen[:, t], scheme, threshold,
                                               "search")
            return t + 1, state, clouds.write(t, state.particles), weights.write(
                t, state.log_weights)

        _, state, clouds, weights = tf.while_loop(
            lambda t, *_: t < time, body, (tf.constant(1), state, clouds, weights))
        return FilterClouds(tf.transpose(clouds.stack(), [1, 0, 2, 3]),
                            tf.transpose(weights.stack(), [1, 0, 2]),
                            state.log_marginal_likelihood)

    return run(observations, observed, noise)


def linear_gaussian_transition_log_prob(params, dtype="float64") -> Callable:
    r"""``transition_log_prob(next [b, M, n], previous [b, N, n]) -> [b, M, N]``: $\log
    N(\text{next}_m; A\,\text{previous}_i + b, Q)$ of a
    :class:`layers.kalman_inference.LGSSMParams` (no actions)."""
    a, q, b = (None if t is None else tf.cast(t, dtype)
               for t in (params.transition_matrix, params.transition_cov,
                         params.transition_offset))
    if params.control_matrix is not None:
        raise ValueError("a model with actions (control_matrix) is not supported")
    lq = tf.linalg.cholesky(q)
    lq_inv = tf.linalg.triangular_solve(lq, tf.eye(tf.shape(q)[0], dtype=q.dtype))
    n = int(q.shape[-1])
    log_norm = (-tf.reduce_sum(tf.math.log(tf.linalg.diag_part(lq)))
                - 0.5 * n * math.log(2.0 * math.pi))

    def transition_log_prob(next_, previous):
        mean = tf.einsum("bij,kj->bik", previous, a)  # [b, N, n]
        if b is not None:
            mean = mean + b
        diff = tf.cast(next_, dtype)[:, :, None, :] - mean[:, None, :, :]  # [b, M, N, n]
        z = tf.einsum("bmij,kj->bmik", diff, lq_inv)
        return log_norm - 0.5 * tf.reduce_sum(tf.square(z), -1)

    return transition_log_prob


def _draw(log_weights, uniforms):
    """One index per row of ``log_weights`` [B, N] at the inverse CDF of ``uniforms`` [B]."""
    cdf = tf.cumsum(tf.exp(resampling.normalize_log_weights(log_weights)), axis=-1)
    found = tf.searchsorted(cdf, uniforms[:, None], side="right", out_type=tf.int32)[:, 0]
    return tf.minimum(found, tf.shape(log_weights)[-1] - 1)


def backward_simulation(particles, log_weights, transition_log_prob: Callable,
                        num_paths: int, seed=None, noise=None):
    """``num_paths`` smoothing trajectories [batch, M, time, n] drawn backwards from the
    filtering clouds ``particles`` [batch, time, N, n] and ``log_weights`` [batch, time, N]
    (see the module docstring). ``noise``: uniforms [time, batch, M] (frame t's draws in
    ``noise[t]``), else drawn from ``seed`` (int or ``keras.random.SeedGenerator``)."""
    particles = tf.convert_to_tensor(particles)
    log_weights = tf.cast(log_weights, particles.dtype)
    if particles.shape.rank != 4 or log_weights.shape.rank != 3:
        raise ValueError(f"`particles` must be [batch, time, N, n] and `log_weights` [batch, "
                         f"time, N], got {particles.shape} and {log_weights.shape}")
    if not (isinstance(num_paths, int) and num_paths >= 1):
        raise ValueError(f"`num_paths` must be a positive int, got {num_paths!r}")
    batch, time = int(particles.shape[0]), int(particles.shape[1])
    if noise is None:
        if isinstance(seed, int) or seed is None:
            seed = keras.random.SeedGenerator(seed)
        noise = keras.random.uniform((time, batch, num_paths), seed=seed,
                                     dtype=particles.dtype)
    noise = tf.cast(noise, particles.dtype)
    return _backward(particles, log_weights, noise, transition_log_prob, num_paths)


def _backward(particles, log_weights, noise, transition_log_prob, m):
    batch, time = int(particles.shape[0]), int(particles.shape[1])
    n_part = int(particles.shape[2])

    @tf.function(autograph=False)
    def run(particles, log_weights, noise):
        last = tf.repeat(log_weights[:, -1], m, axis=0)  # [b*M, N]
        idx = tf.reshape(_draw(last, tf.reshape(noise[-1], [-1])), [batch, m])
        x = tf.gather(particles[:, -1], idx, batch_dims=1)  # [b, M, n]
        paths = tf.TensorArray(particles.dtype, size=time).write(time - 1, x)

        def body(t, x, paths):
            logits = log_weights[:, t][:, None, :] + transition_log_prob(x, particles[:, t])
            idx = tf.reshape(_draw(tf.reshape(logits, [batch * m, n_part]),
                                   tf.reshape(noise[t], [-1])), [batch, m])
            x = tf.gather(particles[:, t], idx, batch_dims=1)
            return t - 1, x, paths.write(t, x)

        _, _, paths = tf.while_loop(lambda t, *_: t >= 0, body,
                                    (tf.constant(time - 2), x, paths))
        return tf.transpose(paths.stack(), [1, 2, 0, 3])  # [b, M, time, n]

    return run(particles, log_weights, noise)


def smoothed_moments(paths):
    """Mean [batch, time, n] and covariance [batch, time, n, n] of smoothing trajectories
    [batch, M, time, n] (equally weighted)."""
    paths = tf.convert_to_tensor(paths)
    mean = tf.reduce_mean(paths, axis=1)
    centred = paths - mean[:, None]
    cov = tf.einsum("bmti,bmtj->btij", centred, centred) / tf.cast(tf.shape(paths)[1],
                                                                   paths.dtype)
    return mean, cov

"""Pure functions for variational bounds: importance-weighted bounds and active units."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf


class ImportanceWeightedBound(NamedTuple):
    """Per-example results of a K-sample importance-weighted evaluation."""

    log_likelihood: np.ndarray  # [n] log (1/K) sum_k w_k, the IWAE bound (Burda et al. 2016)
    elbo: np.ndarray  # [n] (1/K) sum_k log w_k, the ELBO estimated with the same K samples
    num_samples: int


def iwae_bound(log_weights, axis: int = -1):
    """log (1/K) sum_k exp(log_weights_k): Burda, Grosse & Salakhutdinov (2016)."""
    k = tf.cast(tf.shape(log_weights)[axis], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=axis) - tf.math.log(k)


def chunked_importance_bound(
    log_weights_fn: Callable, x, num_samples: int, chunk_size: int, seed: int
) -> ImportanceWeightedBound:
    """Accumulate the IWAE bound over particle chunks so K = 5000 fits in memory.

    ``log_weights_fn(x, k, seed_pair) -> [batch, k]`` returns log p(x, z_k) - log q(z_k | x)
    for k fresh particles drawn with a stateless seed pair. The running log-sum-exp over chunks
    equals the single-shot bound exactly.
    """
    running_lse, running_sum = None, None
    done, chunk_index = 0, 0
    while done < num_samples:
        k = min(chunk_size, num_samples - done)
        lw = tf.cast(log_weights_fn(x, k, tf.constant([seed, chunk_index], tf.int32)),
                     tf.float64)
        lse = tf.reduce_logsumexp(lw, -1)
        total = tf.reduce_sum(lw, -1)
        if running_lse is None:
            running_lse, running_sum = lse, total
        else:
            running_lse = tf.reduce_logsumexp(tf.stack([running_lse, lse]), 0)
            running_sum = running_sum + total
        done += k
        chunk_index += 1
    return ImportanceWeightedBound(
        log_likelihood=(running_lse - math.log(num_samples)).numpy(),
        elbo=(running_sum / num_samples).numpy(),
        num_samples=num_samples,
    )


def active_units(posterior_means: np.ndarray, threshold: float = 0.01) -> int:
    """Burda et al.'s count of latent units whose posterior mean varies over the data:
    A_u = Cov_x(E_q[u | x]) > threshold. ``posterior_means``: [n, latent_dim]."""
    return int(np.sum(np.var(np.asarray(posterior_means, np.float64), axis=0) > threshold))

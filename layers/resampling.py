r"""Resampling for sequential Monte Carlo, as pure functions that take their uniform noise.

Each scheme maps normalized weights $W_{1:N}$ and uniforms to ancestor indices $a_{1:N}$ with
$E[\#\{j: a_j = i\}] = N W_i$ (Douc, Cappé & Moulines, "Comparison of Resampling Schemes for
Particle Filtering", 2005). With $C_i = \sum_{k \le i} W_k$, particle $j$ takes the ancestor
$a_j = \#\{i: C_i \le u_j\}$, the inverse CDF at the position

- multinomial: $u_j = v_j$, i.i.d. uniforms;
- stratified: $u_j = (j + v_j) / N$, one uniform per stratum;
- systematic: $u_j = (j + v_1) / N$, one uniform shared by all strata.

The count is a comparison and a sum over an ``[batch, N, N]`` grid after a cumulative sum
(TFLite built-ins: CUMSUM, LESS_EQUAL, CAST, SUM), not a search. Every function takes
``log_weights`` [batch, N] (normalized or not) and ``noise`` [batch, N] of U(0, 1) draws (the
systematic scheme reads only ``noise[:, 0]``, so all schemes take the same input). Nothing here
draws a random number: the caller owns the noise, a test fixes it, an exported graph takes it.

Example:

>>> import numpy as np
>>> log_w = np.log([[0.5, 0.25, 0.25]])
>>> resample_indices(log_w, [[0.5, 0.0, 0.0]], "systematic").numpy().tolist()  # u = 1/6, 1/2, 5/6
[[0, 1, 2]]
>>> round(float(effective_sample_size(log_w)[0]), 4)  # 1 / (0.25 + 2 / 16)
2.6667
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

SCHEMES = ("multinomial", "stratified", "systematic")
METHODS = ("compare", "search", "linear")


def normalize_log_weights(log_weights):
    """log W_i = log w_i - logsumexp(log w) along the last axis."""
    return log_weights - tf.reduce_logsumexp(log_weights, axis=-1, keepdims=True)


def effective_sample_size(log_weights):
    """ESS = 1 / sum_i W_i^2 (Kong, Liu & Wong 1994): [batch] from log-weights [batch, N]."""
    log_w = normalize_log_weights(log_weights)
    return tf.exp(-tf.reduce_logsumexp(2.0 * log_w, axis=-1))


def _positions(noise, scheme: str):
    n = tf.shape(noise)[-1]
    if scheme == "multinomial":
        return noise
    strata = tf.cast(tf.range(n), noise.dtype)[None, :]
    if scheme == "stratified":
        return (strata + noise) / tf.cast(n, noise.dtype)
    if scheme == "systematic":
        return (strata + noise[:, :1]) / tf.cast(n, noise.dtype)
    raise ValueError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")


def resample_indices(log_weights, noise, scheme: str = "systematic",
                     method: str = "compare"):
    """Ancestor indices [batch, N] (int32) by ``scheme`` from ``log_weights`` [batch, N] and
    uniforms ``noise`` [batch, N] (see the module docstring).

    ``method``: "compare" counts over an [batch, N, N] grid with TFLite built-ins (what an
    exported step uses; O(N^2)); "search" gives the same indices by ``tf.searchsorted``
    (O(N log N), for compiled filtering with many particles; not a TFLite built-in);
    "linear" gives the compare method's indices in O(N) built-in ops for the sorted positions
    of the systematic and stratified schemes (:func:`linear_indices`)."""
    if scheme not in SCHEMES:
        raise ValueError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    log_weights = tf.convert_to_tensor(log_weights)
    noise = tf.cast(noise, log_weights.dtype)
    if log_weights.shape.rank != 2:
        raise ValueError(f"`log_weights` must be [batch, N], got shape {log_weights.shape}")
    cdf = tf.cumsum(tf.exp(normalize_log_weights(log_weights)), axis=-1)  # [batch, N]
    u = _positions(noise, scheme)  # [batch, N]
    n = tf.shape(log_weights)[-1]
    if method == "linear":
        return linear_indices(cdf, u, scheme)
    if method == "search":
        found = tf.searchsorted(cdf, u, side="right", out_type=tf.int32)
        return tf.minimum(found, n - 1)
    below = tf.cast(cdf[:, None, :] <= u[:, :, None], tf.int32)  # [batch, j, i]
    return tf.minimum(tf.reduce_sum(below, axis=-1), n - 1)  # rounding: C_N may be < 1


def offspring_counts(indices, num_particles: int):
    """How many children each particle has: [batch, N] from ancestor indices [batch, N]."""
    return tf.reduce_sum(tf.one_hot(indices, num_particles, dtype=tf.int32), axis=-2)


def gather_particles(particles, indices):
    """particles [batch, N, ...] taken at ancestor indices [batch, N]."""
    return tf.gather(particles, indices, batch_dims=1)


class Resampled(NamedTuple):
    """Result of :func:`adaptive_resample`."""

    indices: tf.Tensor  # [batch, N]: ancestors (0..N-1 in order where not resampled)
    log_weights: tf.Tensor  # [batch, N]: normalized; -log N where resampled
    resampled: tf.Tensor  # [batch]: bool, ESS < threshold * N
    ess: tf.Tensor  # [batch]: the effective sample size before resampling


def adaptive_resample(log_weights, noise, scheme: str = "systematic",
                      threshold: float = 0.5, method: str = "compare") -> Resampled:
    r"""Resample the rows whose effective sample size is below ``threshold`` * N.

    Rows that resample get their ancestors from :func:`resample_indices` and uniform weights
    $\log W = -\log N$; the others keep their indices $0..N-1$ and their normalized weights,
    so $\sum_i W_i g_i$ stays the right marginal-likelihood increment either way.
    ``threshold`` 1.0 (> ESS / N unless the weights are exactly uniform) resamples every step
    in practice, 0.0 never. ``method``: as in :func:`resample_indices`.
    """
    log_weights = normalize_log_weights(tf.convert_to_tensor(log_weights))
    n = tf.shape(log_weights)[-1]
    ess = effective_sample_size(log_weights)
    resampled = ess < threshold * tf.cast(n, log_weights.dtype)
    keep = tf.broadcast_to(tf.range(n)[None, :], tf.shape(log_weights))
    chosen = resample_indices(log_weights, noise, scheme, method)
    indices = tf.where(resampled[:, None], chosen, keep)
    uniform = tf.fill(tf.shape(log_weights), -tf.math.log(tf.cast(n, log_weights.dtype)))
    return Resampled(indices, tf.where(resampled[:, None], uniform, log_weights), resampled,
                     ess)


def linear_indices(cdf, positions, scheme: str):
    r"""The ancestors $a_j = \#\{i: C_i \le u_j\}$ (capped at N - 1) of the "compare" method in
    O(N) TFLite built-ins, for the sorted positions of the systematic and stratified schemes.

    With $u$ sorted, $a_j = \#\{i: K_i \le j\}$ for $K_i = \#\{j: u_j < C_i\}$, and
    $K_i$ lies within 2 of $\lfloor N C_i \rfloor$ (each stratum holds one position), so it is
    counted by comparing $C_i$ with three gathered positions; $a$ is then the cumulative
    histogram of $K$ (SCATTER_ND, which adds repeated indices, and CUMSUM; a static
    output shape, unlike UNSORTED_SEGMENT_SUM's). Same comparisons in the same dtype as
    "compare", so the same indices. ``cdf`` and ``positions`` [batch, N] (static shapes).
    """
    if scheme not in ("systematic", "stratified"):
        raise ValueError(f"the linear method needs sorted positions (systematic or stratified),"
                         f" got {scheme!r}")
    batch, n = int(cdf.shape[0]), int(cdf.shape[-1])
    k0 = tf.clip_by_value(tf.cast(tf.floor(cdf * n), tf.int32) - 1, 0, n)
    count = k0
    for m in range(3):
        j = k0 + m
        below = tf.gather(positions, tf.minimum(j, n - 1), batch_dims=1) < cdf
        count = count + tf.cast(tf.logical_and(j < n, below), tf.int32)
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, n])
    at = tf.reshape(tf.stack([rows, count], -1), [batch * n, 2])
    hist = tf.scatter_nd(at, tf.ones([batch * n], tf.int32), [batch, n + 1])  # sums repeats
    ancestors = tf.cumsum(hist, axis=-1)[:, :n]
    return tf.minimum(ancestors, n - 1)

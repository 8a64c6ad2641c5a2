r"""Energies, free energies and exact enumeration for Boltzmann machines (pure functions).

Bernoulli-Bernoulli RBM (Smolensky 1986; Hinton, "Training Products of Experts by Minimizing
Contrastive Divergence", 2002), visible $v \in \{0,1\}^V$, hidden $h \in \{0,1\}^H$:

$$E(v, h) = -v^\top W h - b^\top v - c^\top h,\qquad
F(v) = -\log \sum_h e^{-E(v,h)} = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}).$$

Gaussian-Bernoulli RBM with a learned variance per visible unit (Cho, Ilin & Raiko, "Improved
Learning of Gaussian-Bernoulli Restricted Boltzmann Machines", 2011), $\sigma_i^2 = e^{z_i}$:

$$E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_{ij} \frac{v_i}{\sigma_i^2} W_{ij} h_j
- c^\top h,\quad p(v \mid h) = N(b + W h, \operatorname{diag}\sigma^2),\quad
p(h_j{=}1 \mid v) = \operatorname{sigmoid}(c_j + \textstyle\sum_i W_{ij} v_i / \sigma_i^2).$$

Two-layer deep Boltzmann machine (Salakhutdinov & Hinton, "Deep Boltzmann Machines", 2009):

$$E(v, h^1, h^2) = -v^\top W^1 h^1 - {h^1}^\top W^2 h^2 - b^\top v - {c^1}^\top h^1
- {c^2}^\top h^2.$$

Hopfield network (Hopfield 1982) on $s \in \{-1, 1\}^d$:
$E(s) = -\tfrac12 s^\top W s - \theta^\top s$.

Every function takes tensors ``[batch, units]`` and parameter ``NamedTuple``s and holds no
Keras object, so models, AIS and export call the same code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class RBMParams(NamedTuple):
    """Parameters of a binary (or Gaussian-Bernoulli) RBM."""

    weights: tf.Tensor  # W: [V, H]
    visible_bias: tf.Tensor  # b: [V]
    hidden_bias: tf.Tensor  # c: [H]


class DBMParams(NamedTuple):
    """Parameters of a two-hidden-layer DBM (standard, uncentered coordinates)."""

    weights1: tf.Tensor  # W1: [V, H1]
    weights2: tf.Tensor  # W2: [H1, H2]
    visible_bias: tf.Tensor  # b: [V]
    hidden1_bias: tf.Tensor  # c1: [H1]
    hidden2_bias: tf.Tensor  # c2: [H2]


class ExactLogPartition(NamedTuple):
    """log Z by enumeration, and the marginal log-probabilities of the enumerated layer."""

    log_z: tf.Tensor  # []
    states: tf.Tensor  # [2^n, n] the enumerated configurations
    log_marginal: tf.Tensor  # [2^n] log p(states)


def rbm_energy(v, h, params: RBMParams):
    """E(v, h) per example: [batch]."""
    return -(tf.reduce_sum(tf.matmul(v, params.weights) * h, -1)
             + tf.linalg.matvec(v, params.visible_bias) + tf.linalg.matvec(h, params.hidden_bias))


def rbm_hidden_logits(v, params: RBMParams, scale=1.0):
    """Logits of p(h = 1 | v) [batch, H] (``scale`` multiplies every parameter: AIS's beta)."""
    return scale * (tf.matmul(v, params.weights) + params.hidden_bias)


def rbm_visible_logits(h, params: RBMParams, scale=1.0):
    """Logits of p(v = 1 | h) [batch, V]."""
    return scale * (tf.matmul(h, params.weights, transpose_b=True) + params.visible_bias)


def rbm_free_energy(v, params: RBMParams, scale=1.0):
    """F(v) = -log sum_h exp(-scale * E(v, h)) per example: [batch]."""
    return -(scale * tf.linalg.matvec(v, params.visible_bias)
             + tf.reduce_sum(tf.nn.softplus(rbm_hidden_logits(v, params, scale)), -1))


def gaussian_rbm_energy(v, h, params: RBMParams, log_variance):
    """E(v, h) of the Gaussian-Bernoulli RBM per example: [batch]."""
    precision = tf.exp(-log_variance)
    quadratic = 0.5 * tf.reduce_sum(tf.square(v - params.visible_bias) * precision, -1)
    return (quadratic - tf.reduce_sum(tf.matmul(v * precision, params.weights) * h, -1)
            - tf.linalg.matvec(h, params.hidden_bias))


def gaussian_rbm_hidden_logits(v, params: RBMParams, log_variance):
    """Logits of p(h = 1 | v) of the Gaussian-Bernoulli RBM: [batch, H]."""
    return tf.matmul(v * tf.exp(-log_variance), params.weights) + params.hidden_bias


def gaussian_rbm_free_energy(v, params: RBMParams, log_variance):
    """F(v) of the Gaussian-Bernoulli RBM per example: [batch]."""
    quadratic = 0.5 * tf.reduce_sum(tf.square(v - params.visible_bias) * tf.exp(-log_variance),
                                    -1)
    return quadratic - tf.reduce_sum(
        tf.nn.softplus(gaussian_rbm_hidden_logits(v, params, log_variance)), -1)


def dbm_energy(v, h1, h2, params: DBMParams):
    """E(v, h1, h2) per example: [batch]."""
    return -(tf.reduce_sum(tf.matmul(v, params.weights1) * h1, -1)
             + tf.reduce_sum(tf.matmul(h1, params.weights2) * h2, -1)
             + tf.linalg.matvec(v, params.visible_bias)
             + tf.linalg.matvec(h1, params.hidden1_bias)
             + tf.linalg.matvec(h2, params.hidden2_bias))


def dbm_free_energy(v, h2, params: DBMParams, scale=1.0):
    """-log sum_{h1} exp(-scale * E(v, h1, h2)) per example (h1 summed out): [batch]."""
    logits1 = scale * (tf.matmul(v, params.weights1)
                       + tf.matmul(h2, params.weights2, transpose_b=True) + params.hidden1_bias)
    return -(scale * (tf.linalg.matvec(v, params.visible_bias)
                      + tf.linalg.matvec(h2, params.hidden2_bias))
             + tf.reduce_sum(tf.nn.softplus(logits1), -1))


def _mode(logits):
    return tf.cast(logits > 0, logits.dtype)


def rbm_energy_descent(v, params: RBMParams, sweeps: int = 30):
    """Zero-temperature block updates from ``v``: h then v set to the mode of their
    conditionals each sweep, which never raises E(v, h); returns (v, h) near a local minimum
    of the energy (a mode of p)."""
    h = _mode(rbm_hidden_logits(v, params))
    for _ in range(int(sweeps)):
        v = _mode(rbm_visible_logits(h, params))
        h = _mode(rbm_hidden_logits(v, params))
    return v, h


def dbm_energy_descent(v, params: DBMParams, sweeps: int = 30):
    """The same for the DBM (h2 starting at 0): h1, then h2, then v set to the mode of their
    conditionals each sweep; returns (v, h1, h2)."""
    h2 = tf.zeros([tf.shape(v)[0], tf.shape(params.weights2)[1]], v.dtype)
    h1 = _mode(tf.matmul(v, params.weights1) + params.hidden1_bias)
    for _ in range(int(sweeps)):
        h1 = _mode(tf.matmul(v, params.weights1)
                   + tf.matmul(h2, params.weights2, transpose_b=True) + params.hidden1_bias)
        h2 = _mode(tf.matmul(h1, params.weights2) + params.hidden2_bias)
        v = _mode(tf.matmul(h1, params.weights1, transpose_b=True) + params.visible_bias)
    return v, h1, h2


def hopfield_energy(s, weights, bias=None):
    """E(s) = -s^T W s / 2 - bias^T s per state s in {-1, 1}^d: [batch]."""
    e = -0.5 * tf.reduce_sum(tf.matmul(s, weights) * s, -1)
    return e if bias is None else e - tf.linalg.matvec(s, bias)


def binary_states(n: int, dtype=tf.float32):
    """All 2^n binary vectors of length n, [2^n, n] (bit j of row k is bit j of k)."""
    if n > 24:
        raise ValueError(f"`n` must be at most 24 to enumerate 2^n states, got {n}.")
    k = np.arange(2 ** n)[:, None]
    return tf.constant((k >> np.arange(n)) & 1, dtype=dtype)


def rbm_exact_log_partition(params: RBMParams) -> ExactLogPartition:
    """log Z of a binary RBM by enumerating the visible layer (``log_marginal``: log p(v))."""
    v = binary_states(int(params.weights.shape[0]), params.weights.dtype)
    log_p_star = -rbm_free_energy(v, params)
    log_z = tf.reduce_logsumexp(log_p_star)
    return ExactLogPartition(log_z, v, log_p_star - log_z)


def rbm_exact_log_partition_hidden(params: RBMParams):
    """log Z of a binary RBM by enumerating the hidden layer (use when H is the smaller)."""
    flipped = RBMParams(tf.transpose(params.weights), params.hidden_bias, params.visible_bias)
    return rbm_exact_log_partition(flipped).log_z


def gaussian_rbm_hidden_marginal(params: RBMParams, log_variance) -> ExactLogPartition:
    """log Z of a Gaussian-Bernoulli RBM by enumerating h, with log p(h) (``log_marginal``).

    Z = sum_h exp(c^T h + sum_i ((b_i + (W h)_i)^2 - b_i^2) / (2 sigma_i^2))
        * prod_i (2 pi sigma_i^2)^(1/2).
    """
    h = binary_states(int(params.weights.shape[1]), params.weights.dtype)
    mean = params.visible_bias + tf.matmul(h, params.weights, transpose_b=True)
    precision = tf.exp(-log_variance)
    log_w = (tf.linalg.matvec(h, params.hidden_bias)
             + 0.5 * tf.reduce_sum((tf.square(mean) - tf.square(params.visible_bias))
                                   * precision, -1))
    log_norm = 0.5 * tf.reduce_sum(log_variance + math.log(2 * math.pi))
    log_z = tf.reduce_logsumexp(log_w) + log_norm
    return ExactLogPartition(log_z, h, log_w - tf.reduce_logsumexp(log_w))


def dbm_exact_log_partition(params: DBMParams) -> ExactLogPartition:
    """log Z of a DBM by enumerating v and h2 (h1 summed out); ``log_marginal`` is log p(v)."""
    n_v, n_h2 = int(params.weights1.shape[0]), int(params.weights2.shape[1])
    joint = binary_states(n_v + n_h2, params.weights1.dtype)
    v, h2 = joint[:, :n_v], joint[:, n_v:]
    log_p_star = -dbm_free_energy(v, h2, params)  # [2^(V+H2)], index = v_bits + 2^V * h2_bits
    log_z = tf.reduce_logsumexp(log_p_star)
    per_v = tf.reduce_logsumexp(tf.reshape(log_p_star, [2 ** n_h2, 2 ** n_v]), 0)
    return ExactLogPartition(log_z, v[: 2 ** n_v], per_v - log_z)


def dbm_exact_log_partition_hidden1(params: DBMParams):
    """log Z of a DBM by enumerating h1 only: given h1, v and h2 are independent, so
    log Z = logsumexp_{h1} [c1^T h1 + sum softplus(b + W1 h1) + sum softplus(c2 + h1 W2)]."""
    h1 = binary_states(int(params.weights1.shape[1]), params.weights1.dtype)
    return tf.reduce_logsumexp(
        tf.linalg.matvec(h1, params.hidden1_bias)
        + tf.reduce_sum(tf.nn.softplus(tf.matmul(h1, params.weights1, transpose_b=True)
                                       + params.visible_bias), -1)
        + tf.reduce_sum(tf.nn.softplus(tf.matmul(h1, params.weights2) + params.hidden2_bias),
                        -1))


def rbm_pseudo_log_likelihood(v, params: RBMParams):
    """sum_i log p(v_i | v_-i) per example [batch] (every bit, not sklearn's one random bit).

    Flipping bit i changes F(v) by the closed form below; cost O(batch * V * H).
    """
    flip = 1.0 - 2.0 * v  # +1 turns 0 -> 1, -1 turns 1 -> 0
    base = rbm_hidden_logits(v, params)  # [batch, H]
    flipped = base[:, None, :] + flip[:, :, None] * params.weights[None]  # [batch, V, H]
    delta = (tf.reduce_sum(tf.nn.softplus(flipped) - tf.nn.softplus(base)[:, None, :], -1)
             + flip * params.visible_bias)  # log p*(flip_i v) - log p*(v)
    return tf.reduce_sum(tf.math.log_sigmoid(-delta), -1)


def bernoulli_entropy(probs):
    """Entropy of independent Bernoulli units, summed over the last axis: [batch]."""
    return tf.reduce_sum(-tf.math.xlogy(probs, probs) - tf.math.xlogy(1.0 - probs, 1.0 - probs),
                         -1)


def dbm_mean_field_bound(v, hidden1, hidden2, params: DBMParams):
    """E_q[-E(v, h1, h2)] + H(q) per example [batch] for factorial q with means (hidden1,
    hidden2); log p(v) >= this - log Z (Salakhutdinov & Hinton 2009, eq. 6)."""
    return (-dbm_energy(v, hidden1, hidden2, params) + bernoulli_entropy(hidden1)
            + bernoulli_entropy(hidden2))

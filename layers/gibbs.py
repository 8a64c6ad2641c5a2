r"""Block Gibbs steps, mean-field inference and Hopfield updates (pure functions).

Every sampler takes its noise as arguments (uniform(0, 1) for a Bernoulli unit, standard normal
for a Gaussian one): a unit is on when its noise is below its probability. Exported graphs then
need no random op, tests can fix the noise, and a model draws the noise with its own seed.

Mean field for a two-layer DBM (Salakhutdinov & Hinton, "Deep Boltzmann Machines", 2009):
the factorial $q(h^1, h^2 \mid v) = \prod_j \mu^1_j{}^{h^1_j}(1-\mu^1_j)^{1-h^1_j}\prod_k \dots$
maximizing the bound satisfies the fixed-point equations

$$\mu^1 = \sigma(c^1 + v^\top W^1 + W^2 \mu^2),\qquad \mu^2 = \sigma(c^2 + {\mu^1}^\top W^2).$$
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from zoo.layers.boltzmann_energy import (
    DBMParams,
    RBMParams,
    gaussian_rbm_hidden_logits,
    rbm_hidden_logits,
    rbm_visible_logits,
)


class GibbsStep(NamedTuple):
    """One block Gibbs sweep h ~ p(h | v), v' ~ p(v | h) of an RBM."""

    visible: tf.Tensor  # v' [batch, V]
    hidden: tf.Tensor  # h [batch, H] (drawn from the input v)
    visible_probs: tf.Tensor  # E[v' | h] (the mean for a Gaussian visible layer)
    hidden_probs: tf.Tensor  # p(h = 1 | v)


class DBMState(NamedTuple):
    """A state of a two-layer DBM chain."""

    visible: tf.Tensor  # [batch, V]
    hidden1: tf.Tensor  # [batch, H1]
    hidden2: tf.Tensor  # [batch, H2]


class MeanField(NamedTuple):
    """Mean-field parameters of q(h1, h2 | v) and the largest change in the last sweep."""

    hidden1: tf.Tensor  # mu1 [batch, H1]
    hidden2: tf.Tensor  # mu2 [batch, H2]
    change: tf.Tensor  # [] max |mu_new - mu_old| of the last iteration
    visible: tf.Tensor | None = None  # v with its missing units' means (inpainting), else v


def bernoulli(probs, noise):
    """A Bernoulli draw from uniform noise: 1 where noise < probs (built-in ops only)."""
    return tf.cast(noise < probs, probs.dtype)


def rbm_gibbs_step(v, params: RBMParams, hidden_noise, visible_noise, scale=1.0) -> GibbsStep:
    """h ~ p(h | v), v' ~ p(v | h) with uniform noise [batch, H] and [batch, V].

    ``scale`` multiplies every parameter (the inverse temperature beta of AIS).
    """
    h_probs = tf.sigmoid(rbm_hidden_logits(v, params, scale))
    h = bernoulli(h_probs, hidden_noise)
    v_probs = tf.sigmoid(rbm_visible_logits(h, params, scale))
    return GibbsStep(bernoulli(v_probs, visible_noise), h, v_probs, h_probs)


def gaussian_rbm_gibbs_step(v, params: RBMParams, log_variance, hidden_noise,
                            visible_noise) -> GibbsStep:
    """Gibbs sweep of a Gaussian-Bernoulli RBM; ``visible_noise`` is standard normal [batch, V]."""
    h_probs = tf.sigmoid(gaussian_rbm_hidden_logits(v, params, log_variance))
    h = bernoulli(h_probs, hidden_noise)
    mean = tf.matmul(h, params.weights, transpose_b=True) + params.visible_bias
    return GibbsStep(mean + tf.exp(0.5 * log_variance) * visible_noise, h, mean, h_probs)


def rbm_mean_field(v, params: RBMParams, iterations: int, observed=None):
    """Deterministic reconstruction: v <- E[v | E[h | v]] ``iterations`` times.

    With ``observed`` [batch, V] (1 = known), known units stay clamped to ``v`` (inpainting).
    Returns the visible probabilities [batch, V].
    """
    probs = v
    for _ in range(int(iterations)):
        probs = tf.sigmoid(rbm_visible_logits(tf.sigmoid(rbm_hidden_logits(probs, params)),
                                              params))
        if observed is not None:
            probs = observed * v + (1.0 - observed) * probs
    return probs


def dbm_hidden1_probs(v, h2, params: DBMParams, scale=1.0):
    """p(h1 = 1 | v, h2) [batch, H1]."""
    return tf.sigmoid(scale * (tf.matmul(v, params.weights1)
                               + tf.matmul(h2, params.weights2, transpose_b=True)
                               + params.hidden1_bias))


def dbm_gibbs_step(state: DBMState, params: DBMParams, hidden1_noise, visible_noise,
                   hidden2_noise, scale=1.0, base_visible_bias=None) -> DBMState:
    """One sweep of the bipartite DBM: h1 ~ p(h1 | v, h2), then v and h2 given h1.

    With ``base_visible_bias`` the chain targets AIS's intermediate model
    p_beta ∝ exp((1 - beta) b_A^T v - beta E(v, h1, h2)), beta = ``scale``.
    """
    h1 = bernoulli(dbm_hidden1_probs(state.visible, state.hidden2, params, scale), hidden1_noise)
    v_logits = scale * (tf.matmul(h1, params.weights1, transpose_b=True) + params.visible_bias)
    if base_visible_bias is not None:
        v_logits = v_logits + (1.0 - scale) * base_visible_bias
    v = bernoulli(tf.sigmoid(v_logits), visible_noise)
    h2 = bernoulli(tf.sigmoid(scale * (tf.matmul(h1, params.weights2) + params.hidden2_bias)),
                   hidden2_noise)
    return DBMState(v, h1, h2)


def dbm_mean_field(v, params: DBMParams, iterations: int = 30, hidden1=None, hidden2=None,
                   damping: float = 0.0, observed=None) -> MeanField:
    """Iterate the mean-field equations ``iterations`` times from (hidden1, hidden2).

    The default start is the bottom-up pass with doubled input weights (Salakhutdinov & Hinton
    2009): mu1 = sigmoid(2 v W1 + c1), mu2 = sigmoid(mu1 W2 + c2). ``damping`` in [0, 1) keeps
    that fraction of the old value each update. With ``observed`` [batch, V] (1 = known), the
    missing visible units are mean-field variables too, updated to sigmoid(b + W1 mu1) after
    each sweep (inpainting); ``visible`` of the result holds them.
    """
    if observed is not None:
        v = observed * v  # the missing units start at 0
    if hidden1 is None:
        hidden1 = tf.sigmoid(2.0 * tf.matmul(v, params.weights1) + params.hidden1_bias)
    if hidden2 is None:
        hidden2 = tf.sigmoid(tf.matmul(hidden1, params.weights2) + params.hidden2_bias)

    def body(i, x, mu1, mu2, change):
        new1 = tf.sigmoid(tf.matmul(x, params.weights1) + params.hidden1_bias
                          + tf.matmul(mu2, params.weights2, transpose_b=True))
        new1 = damping * mu1 + (1.0 - damping) * new1
        new2 = tf.sigmoid(tf.matmul(new1, params.weights2) + params.hidden2_bias)
        new2 = damping * mu2 + (1.0 - damping) * new2
        change = tf.maximum(tf.reduce_max(tf.abs(new1 - mu1)), tf.reduce_max(tf.abs(new2 - mu2)))
        if observed is not None:
            filled = tf.sigmoid(tf.matmul(new1, params.weights1, transpose_b=True)
                                + params.visible_bias)
            x = observed * x + (1.0 - observed) * filled
        return i + 1, x, new1, new2, change

    zero = tf.zeros([], hidden1.dtype)
    _, x, mu1, mu2, change = tf.while_loop(
        lambda i, *_: i < iterations, body, (tf.constant(0), v, hidden1, hidden2, zero),
        maximum_iterations=max(int(iterations), 0))
    return MeanField(mu1, mu2, change, x)


def hopfield_update(s, weights, bias=None, order=None):
    """Zero-temperature update of s in {-1, 1}^d: s_i <- sign(W_i s + bias_i), ties keep s_i.

    ``order=None`` updates every unit at once (synchronous); an int tensor ``order`` [d] updates
    one unit at a time in that order (asynchronous, one sweep; never raises the energy).
    """
    def field(state):
        f = tf.matmul(state, weights)
        return f if bias is None else f + bias

    def sign(f, old):
        return tf.where(f > 0, tf.ones_like(f), tf.where(f < 0, -tf.ones_like(f), old))

    if order is None:
        return sign(field(s), s)
    weights_t = tf.transpose(weights)

    def body(k, state):
        i = order[k]
        f = tf.linalg.matvec(state, tf.gather(weights_t, i))
        if bias is not None:
            f = f + tf.gather(bias, i)
        new = sign(f, state[:, i])
        onehot = tf.one_hot(i, tf.shape(state)[1], dtype=state.dtype)
        return k + 1, state + onehot[None] * (new - state[:, i])[:, None]

    _, out = tf.while_loop(lambda k, _: k < tf.size(order), body, (tf.constant(0), s))
    return out

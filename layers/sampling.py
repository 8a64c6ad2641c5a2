"""Reparameterized samplers that take their noise as an argument (the seed table).

Each function maps uniform noise ``u ~ U(0, 1)`` (or standard normal ``eps``) to a sample,
so the caller owns the randomness: a test passes fixed noise, an exported graph takes the noise
as an input, and gradients flow to the distribution's parameters.
"""

from __future__ import annotations

import math

import tensorflow as tf

# Keeps -log(u) and log(1 - u) finite when u hits 0 or 1 in float32.
_TINY = 1e-20


def _clip_unit(u):
    eps = tf.constant(_TINY if u.dtype == tf.float64 else 1e-7, u.dtype)
    return tf.clip_by_value(u, eps, 1.0 - eps)


def gumbel(u):
    """Standard Gumbel noise g = -log(-log u)."""
    return -tf.math.log(-tf.math.log(_clip_unit(u)))


def gumbel_max(logits, u):
    """Index k = argmax(logits + g): an exact sample of Categorical(softmax(logits))."""
    return tf.argmax(logits + gumbel(tf.cast(u, logits.dtype)), axis=-1)


def gumbel_top_k(logits, u, k: int):
    """Indices of the k largest logits + g: k classes sampled without replacement.

    Kool, van Hoof & Welling, "Stochastic Beams and Where to Find Them" (2019).
    """
    return tf.math.top_k(logits + gumbel(tf.cast(u, logits.dtype)), k=k).indices


def exponential(u, rate=1.0):
    """Exponential(rate) by inversion: -log(u) / rate."""
    return -tf.math.log(_clip_unit(u)) / rate


def cauchy(u, loc=0.0, scale=1.0):
    """Cauchy(loc, scale) by inversion: loc + scale tan(pi (u - 1/2))."""
    return loc + scale * tf.math.tan(math.pi * (_clip_unit(u) - 0.5))


def laplace(u, loc=0.0, scale=1.0):
    """Laplace(loc, scale) from u ~ U(0, 1): loc - b sgn(u') log(1 - 2|u'|), u' = u - 1/2."""
    v = _clip_unit(u) - 0.5
    return loc - scale * tf.sign(v) * tf.math.log1p(-2.0 * tf.abs(v))


def log_normal(eps, loc=0.0, scale=1.0):
    """LogNormal(loc, scale) from eps ~ N(0, 1): exp(loc + scale eps)."""
    return tf.exp(loc + scale * eps)


def rademacher(u):
    """+1 or -1 with probability 1/2 each, from u ~ U(0, 1)."""
    return tf.where(u < 0.5, -tf.ones_like(u), tf.ones_like(u))

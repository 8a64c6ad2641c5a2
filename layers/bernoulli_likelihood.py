"""Bernoulli likelihood head for binary (or [0, 1]-valued) data."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers.common import register
from zoo.layers.likelihood_base import LikelihoodHead

tfd = tfp.distributions


@register
class BernoulliLikelihood(LikelihoodHead):
    r"""p(x | logits) = \prod_i Bern(x_i; sigmoid(logits_i)).

    ``call(logits, x=None)`` returns ``mean`` (the probabilities, for reconstructions) and, with
    ``x``, ``log_prob`` summed over the ``event_ndims`` rightmost axes. Grey levels in [0, 1]
    are accepted (the cross-entropy that Keras's VAE examples use); values outside raise.

    Args:
        event_ndims: int. Trailing axes that form one example (3 for ``[28, 28, 1]`` images).
        validate_args: bool. Check that x is finite and in [0, 1] (skipped under XLA).

    Example:

    >>> import numpy as np
    >>> head = BernoulliLikelihood(event_ndims=1)
    >>> out = head(np.zeros((1, 3), "float32"), np.array([[1.0, 0.0, 1.0]], "float32"))
    >>> round(float(out["log_prob"][0]), 4)  # 3 * log(1/2)
    -2.0794
    """

    def check_data(self, x):
        return super().check_data(x) + [
            tf.debugging.assert_greater_equal(x, tf.zeros([], x.dtype),
                                              "Bernoulli data `x` must be in [0, 1]."),
            tf.debugging.assert_less_equal(x, tf.ones([], x.dtype),
                                           "Bernoulli data `x` must be in [0, 1]."),
        ]

    def distribution(self, logits):
        return tfd.Bernoulli(logits=logits, dtype=logits.dtype)

"""Categorical likelihood head (one-hot or integer-coded data)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers.common import register
from zoo.layers.likelihood_base import LikelihoodHead

tfd = tfp.distributions


@register
class CategoricalLikelihood(LikelihoodHead):
    r"""p(x | logits) = \prod_i Cat(x_i; softmax(logits_i)), classes on the last axis of logits.

    ``x`` is one-hot as a float tensor (same shape as ``logits``) or integer class indices
    as an integer tensor (without the class axis). ``call(logits, x=None)`` returns ``mean`` (class probabilities) and, with ``x``,
    ``log_prob`` summed over the ``event_ndims`` rightmost axes of the index-coded data.

    Args:
        event_ndims: int. Trailing axes (not counting the class axis) that form one example.
        validate_args: bool. Check that x is finite (skipped under XLA).

    Example:

    >>> import numpy as np
    >>> head = CategoricalLikelihood(event_ndims=1)
    >>> out = head(np.zeros((1, 2, 4), "float32"), np.array([[0, 3]]))
    >>> round(float(out["log_prob"][0]), 4)  # 2 * log(1/4)
    -2.7726
    """

    param_rank_offset = 1

    def __init__(self, event_ndims: int = 0, validate_args: bool = True, **kwargs):
        super().__init__(event_ndims=event_ndims, validate_args=validate_args, **kwargs)

    def prepare_data(self, x, dtype):
        x = tf.convert_to_tensor(x)
        # Floating data is one-hot; integer data holds class indices.
        return tf.argmax(x, -1) if x.dtype.is_floating else tf.cast(x, tf.int64)

    def check_data(self, x):
        return []

    def distribution(self, logits):
        return tfd.Categorical(logits=logits)

    def mean(self, dist, params):
        return tf.nn.softmax(params)

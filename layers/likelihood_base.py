"""Shared call logic of the decoder likelihood heads (Bernoulli, Gaussian, categorical)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import assert_finite, math_dtype, sum_rightmost


class LikelihoodHead(keras.layers.Layer):
    """Base of the likelihood heads: ``call(params, x=None) -> {"mean", ["log_prob"]}``.

    ``params`` are ``[batch, ..., event...]`` (a particle axis after the batch axis is allowed:
    when ``params`` has one more axis than ``x``, ``x`` is broadcast over axis 1). ``log_prob``
    is log p(x | params) summed over the ``event_ndims`` rightmost axes of ``x``.
    Subclasses define ``distribution(params) -> tfd.Distribution`` (elementwise) and
    ``param_rank_offset`` (extra axes that params have beyond x, 0 or 1).
    """

    param_rank_offset = 0

    def __init__(self, event_ndims: int = 1, validate_args: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(event_ndims, int) or event_ndims < 0:
            raise ValueError(f"`event_ndims` must be a non-negative integer, got {event_ndims!r}.")
        self.event_ndims = event_ndims
        self.validate_args = validate_args

    def check_data(self, x):
        """Value checks on the data; returns the list of assertion ops (subclasses extend)."""
        return [assert_finite(x, "x")]

    def prepare_data(self, x, dtype):
        return tf.cast(x, dtype)

    def _broadcast_particles(self, params, x):
        data_rank = params.shape.rank - self.param_rank_offset
        if x.shape.rank is not None and data_rank is not None:
            if x.shape.rank == data_rank - 1:
                return tf.expand_dims(x, 1)
            if x.shape.rank != data_rank:
                raise ValueError(
                    f"`x` has shape {tuple(x.shape)} but the likelihood parameters have shape "
                    f"{tuple(params.shape)}; expected x of rank {data_rank} (or "
                    f"{data_rank - 1} without the particle axis)."
                )
        return x

    def call(self, params, x=None):
        md = math_dtype(self)
        params = tf.cast(params, md)
        dist = self.distribution(params)
        out = {"mean": self.mean(dist, params)}
        if x is not None:
            x = self.prepare_data(tf.convert_to_tensor(x), md)
            if self.validate_args:
                with tf.control_dependencies(self.check_data(x)):
                    x = tf.identity(x)
            x = self._broadcast_particles(params, x)
            out["log_prob"] = sum_rightmost(dist.log_prob(x), self.event_ndims)
        return out

    def mean(self, dist, params):
        return dist.mean()

    def get_config(self):
        config = super().get_config()
        config.update(event_ndims=self.event_ndims, validate_args=self.validate_args)
        return config


"""Gaussian likelihood head with fixed, learned global, or per-pixel variance."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers.common import check_choice, check_positive, register
from zoo.layers.likelihood_base import LikelihoodHead

tfd = tfp.distributions

VARIANCES = ("fixed", "learned", "per_pixel")


@register
class GaussianLikelihood(LikelihoodHead):
    r"""p(x | params) = \prod_i N(x_i; mu_i, sigma_i^2) for real-valued data.

    ``variance="fixed"``: params are the means, sigma = ``scale``. ``"learned"``: one trainable
    global sigma (initialized at ``scale``, kept above ``min_scale`` by softplus).
    ``"per_pixel"``: params carry means and raw scales concatenated on the last axis (the last
    axis has twice the data's size), sigma = softplus(raw) + ``min_scale``.

    ``call(params, x=None)`` returns ``mean``, ``scale`` and, with ``x``, ``log_prob`` summed over
    the ``event_ndims`` rightmost axes.

    Args:
        variance: str. ``"fixed"``, ``"learned"`` or ``"per_pixel"``.
        scale: float. The fixed sigma, or the initial learned one.
        min_scale: float. Floor of learned and per-pixel sigmas.
        event_ndims: int. Trailing axes that form one example.
        validate_args: bool. Check that x is finite (skipped under XLA).

    Example:

    >>> import numpy as np
    >>> head = GaussianLikelihood(variance="fixed", scale=1.0)
    >>> out = head(np.zeros((1, 2), "float32"), np.zeros((1, 2), "float32"))
    >>> round(float(out["log_prob"][0]), 4)  # -log(2 pi)
    -1.8379
    """

    def __init__(self, variance: str = "learned", scale: float = 1.0, min_scale: float = 1e-3,
                 event_ndims: int = 1, validate_args: bool = True, **kwargs):
        super().__init__(event_ndims=event_ndims, validate_args=validate_args, **kwargs)
        check_choice("variance", variance, VARIANCES)
        check_positive("scale", scale)
        check_positive("min_scale", min_scale, allow_zero=True)
        if variance == "learned" and scale <= min_scale:
            raise ValueError(f"`scale` ({scale}) must exceed `min_scale` ({min_scale}).")
        self.variance = variance
        self.scale = float(scale)
        self.min_scale = float(min_scale)

    def build(self, input_shape):
        if self.variance == "per_pixel" and input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(
                f"With variance='per_pixel' the parameters' last axis holds means and raw "
                f"scales, so it must be even; got shape {tuple(input_shape)}."
            )
        if self.variance == "learned":
            # softplus^-1(scale - min_scale), so sigma starts at `scale`.
            excess = self.scale - self.min_scale
            raw = excess + math.log(-math.expm1(-excess))
            self.raw_scale = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(raw), name="raw_scale",
                dtype="float32",
            )

    def _loc_scale(self, params):
        if self.variance == "per_pixel":
            loc, raw = tf.split(params, 2, axis=-1)
            return loc, tf.nn.softplus(raw) + self.min_scale
        if self.variance == "learned":
            sigma = tf.nn.softplus(tf.cast(self.raw_scale, params.dtype)) + self.min_scale
        else:
            sigma = tf.constant(self.scale, params.dtype)
        # Broadcast by arithmetic, not tf.broadcast_to: the gradient of BroadcastTo inside a
        # tf.scan needs the forward shape as a compile-time constant, which XLA cannot get.
        return params, sigma + tf.zeros_like(params)

    def distribution(self, params):
        loc, scale = self._loc_scale(params)
        return tfd.Normal(loc, scale)

    def call(self, params, x=None):
        out = super().call(params, x)
        out["scale"] = self._loc_scale(tf.cast(params, out["mean"].dtype))[1]
        return out

    def get_config(self):
        config = super().get_config()
        config.update(variance=self.variance, scale=self.scale, min_scale=self.min_scale)
        return config

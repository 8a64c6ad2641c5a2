"""Planar flow step (Rezende & Mohamed 2015)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import check_positive_int, math_dtype, register


def invertible_u(u, w):
    r"""$\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2$, $m(a) = -1 + \mathrm{softplus}(a)$:
    makes $w^\top \hat u > -1$, the condition for the tanh step to be invertible."""
    wu = tf.reduce_sum(w * u, -1, keepdims=True)
    m = -1.0 + tf.math.softplus(wu)
    return u + (m - wu) * w / tf.reduce_sum(tf.square(w), -1, keepdims=True)


@tf.function(reduce_retracing=True)
def _bisect(target, wu, b, steps):
    """Root of alpha + wu * tanh(alpha + b) = target (increasing in alpha when wu > -1)."""
    reach = tf.abs(wu) + 1.0
    lo, hi = target - reach, target + reach

    def body(k, lo, hi):
        mid = 0.5 * (lo + hi)
        above = mid + wu * tf.tanh(mid + b) > target
        return k + 1, tf.where(above, lo, mid), tf.where(above, mid, hi)

    _, lo, hi = tf.while_loop(lambda k, lo, hi: k < steps, body, [tf.constant(0), lo, hi])
    return 0.5 * (lo + hi)


@register
class PlanarFlow(keras.layers.Layer):
    r"""One planar flow step: Rezende & Mohamed, "Variational Inference with Normalizing
    Flows" (2015).

    $$y = z + \hat u\, \tanh(w^\top z + b), \qquad
      \log\left|\det \frac{\partial y}{\partial z}\right| = \log|1 + \hat u^\top \psi(z)|,
      \quad \psi(z) = (1 - \tanh^2(w^\top z + b))\, w$$

    with $\hat u$ from :func:`invertible_u` (so $w^\top \hat u > -1$ and the step is
    invertible). The parameters are the layer's own weights, or with ``context_size`` they
    are computed per example from a context (the encoder's features: an amortized flow).
    ``inverse`` solves the scalar equation $w^\top y = \alpha + w^\top\hat u \tanh(\alpha + b)$
    for $\alpha = w^\top z$ by bisection (monotone in $\alpha$), then
    $z = y - \hat u \tanh(\alpha + b)$.

    ``call(z, context=None)`` returns ``{"z": y, "log_det": ...}``; ``forward`` and
    ``inverse`` return ``(output, log_det)``.

    Args:
        event_size: int. Dimension D of z.
        context_size: int or None. Width of the context that gives (u, w, b) per example.
        bisection_steps: int. Iterations of the inverse's bisection.

    Example:

    >>> import numpy as np
    >>> flow = PlanarFlow(2)
    >>> z = np.array([[0.5, -1.0]], "float32")
    >>> y, log_det = flow.forward(z)
    >>> back, _ = flow.inverse(y)
    >>> bool(np.allclose(back, z, atol=1e-5))
    True
    """

    def __init__(self, event_size: int, context_size: int | None = None,
                 bisection_steps: int = 60, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("event_size", event_size)
        check_positive_int("context_size", context_size, allow_none=True)
        check_positive_int("bisection_steps", bisection_steps)
        self.event_size = event_size
        self.context_size = context_size
        self.bisection_steps = bisection_steps
        self.amortizer = None
        if context_size is not None:
            self.amortizer = keras.layers.Dense(
                2 * event_size + 1, kernel_initializer=keras.initializers.RandomNormal(0, 0.01),
                dtype=self.dtype_policy, name="amortizer")

    def build(self, input_shape):
        d = self.event_size
        init = keras.initializers.RandomNormal(0.0, 0.1)
        self.u = self.add_weight(name="u", shape=(d,), initializer=init)
        self.w = self.add_weight(name="w", shape=(d,), initializer=init)
        self.b = self.add_weight(name="b", shape=(), initializer="zeros")
        if self.amortizer is not None:
            self.amortizer.build((None, self.context_size))

    def _prepare(self, v):
        v = tf.convert_to_tensor(v)
        if v.shape.rank is not None and v.shape[-1] != self.event_size:
            raise ValueError(f"PlanarFlow(event_size={self.event_size}) got `z` with last "
                             f"axis {v.shape[-1]}.")
        if not self.built:
            self.build(v.shape)
            self.built = True
        return tf.cast(v, math_dtype(self))

    def parameters(self, context=None, dtype="float32"):
        """(u_hat, w, b) broadcastable against z [..., D]: the layer's weights, plus (with a
        context) a per-example offset computed from it."""
        u, w, b = (tf.cast(self.u, dtype), tf.cast(self.w, dtype), tf.cast(self.b, dtype))
        if self.amortizer is not None:
            if context is None:
                raise ValueError("This PlanarFlow has `context_size`; pass `context`.")
            out = tf.cast(self.amortizer(tf.cast(context, self.compute_dtype)), dtype)
            d = self.event_size
            u, w, b = u + out[..., :d], w + out[..., d:2 * d], b + out[..., 2 * d]
        elif context is not None:
            raise ValueError("`context` was passed but `context_size` is None.")
        return invertible_u(u, w), w, b

    def _parameters_for(self, z, context):
        """:meth:`parameters` against z: an amortized step's (u_hat, w, b) [batch, ...] get
        z's particle axes (those after the batch axis) inserted, so a context [batch, c]
        runs the amortizer once per example, not once per particle (K = 5000 importance
        samples would repeat it 5000 times)."""
        u, w, b = self.parameters(context, z.dtype)
        if context is not None:
            for _ in range(z.shape.rank - u.shape.rank):
                u, w, b = u[:, None], w[:, None], b[:, None]
        return u, w, b

    def forward(self, z, context=None):
        """z -> (y, log|det dy/dz|); ``context`` [batch..., c] with z's leading axes, or
        [batch, c] for z [batch, particles..., D]."""
        z = self._prepare(z)
        u, w, b = self._parameters_for(z, context)
        h = tf.tanh(tf.reduce_sum(w * z, -1) + b)
        y = z + u * h[..., None]
        det = 1.0 + (1.0 - tf.square(h)) * tf.reduce_sum(u * w, -1)
        return y, tf.math.log(tf.abs(det))

    def inverse(self, y, context=None):
        """y -> (z, log|det dz/dy|), by bisection on alpha = w.z (``context`` as in
        :meth:`forward`)."""
        y = self._prepare(y)
        u, w, b = self._parameters_for(y, context)
        wu = tf.broadcast_to(tf.reduce_sum(u * w, -1), tf.shape(y)[:-1])
        target = tf.reduce_sum(w * y, -1)
        b = tf.broadcast_to(b, tf.shape(target))
        start = _bisect(tf.stop_gradient(target), tf.stop_gradient(wu), tf.stop_gradient(b),
                        self.bisection_steps)
        # One Newton step from the (constant) bisection root: the same value, and the
        # implicit-function gradient d alpha = -(df - d target) / f'(alpha).
        h0 = tf.tanh(start + b)
        alpha = start - (start + wu * h0 - target) / (1.0 + wu * (1.0 - tf.square(h0)))
        h = tf.tanh(alpha + b)
        z = y - u * h[..., None]
        det = 1.0 + (1.0 - tf.square(h)) * wu
        return z, -tf.math.log(tf.abs(det))

    def call(self, z, context=None):
        y, log_det = self.forward(z, context)
        return {"z": y, "log_det": log_det}

    def get_config(self):
        config = super().get_config()
        config.update(event_size=self.event_size, context_size=self.context_size,
                      bisection_steps=self.bisection_steps)
        return config

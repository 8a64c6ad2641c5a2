"""Shared math of the affine autoregressive flow steps (IAF and MAF are its two directions)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.autoregressive_network import AutoregressiveNetwork
from zoo.layers.common import check_choice, check_positive_int, math_dtype

TRANSFORMS = ("gated", "affine")


def scale_and_shift(params, transform: str, forget_bias: float):
    r"""``params`` [..., D, 2] -> (scale, shift, log_scale), each [..., D].

    ``"gated"``: Kingma et al. (2016)'s update, $\sigma = \mathrm{sigmoid}(s + b_f)$,
    y = sigma * z + (1 - sigma) * m: scale sigma, shift (1 - sigma) m.
    ``"affine"``: y = z * exp(s) + m (Papamakarios et al. 2017).
    """
    m, s = params[..., 0], params[..., 1]
    if transform == "gated":
        s = s + tf.cast(forget_bias, s.dtype)
        scale = tf.sigmoid(s)
        return scale, (1.0 - scale) * m, tf.math.log_sigmoid(s)
    return tf.exp(s), m, s


class AffineAutoregressiveFlow(keras.layers.Layer):
    r"""y = scale * z + shift with (scale, shift) from a MADE, one of two arrangements.

    ``conditioned_on = "input"`` (IAF): the MADE reads z, so ``forward`` is one pass and
    ``inverse`` takes D passes. ``conditioned_on = "output"`` (MAF): the MADE reads y, so
    ``inverse`` (the density direction) is one pass and ``forward`` (sampling) takes D.
    Either way the Jacobian is triangular in the ordering with diagonal ``scale``:
    $\log|\det \partial y / \partial z| = \sum_d \log \mathrm{scale}_d$.

    ``call(z, context=None)`` is ``forward`` and returns ``{"z": y, "log_det": ...}``;
    ``forward(z, context)`` and ``inverse(y, context)`` return ``(output, log_det)`` with
    ``log_det`` the log|det| of that direction's Jacobian. The math runs in float32 under
    mixed precision (the MADE in the compute dtype).
    """

    conditioned_on = "input"

    def __init__(self, event_size: int, hidden_units=(64,), context_size: int | None = None,
                 transform: str = "gated", forget_bias: float = 1.0,
                 input_order="left-to-right", activation: str = "relu",
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("event_size", event_size)
        check_choice("transform", transform, TRANSFORMS)
        self.event_size = event_size
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.context_size = context_size
        self.transform = transform
        self.forget_bias = float(forget_bias)
        self.activation = activation
        self.seed = seed
        # A small last layer starts the step near the identity (gated: sigma ~ sigmoid(b_f)).
        self.network = AutoregressiveNetwork(
            event_size, params=2, hidden_units=self.hidden_units, input_order=input_order,
            activation=activation, conditional_size=context_size, seed=seed,
            dtype=self.dtype_policy, name="made")
        self.input_order = self.network.input_order
        self.network.masked[-1].kernel_initializer = keras.initializers.RandomUniform(
            -1e-3, 1e-3, seed=seed)

    def build(self, input_shape):
        self.network.build((None, self.event_size))

    def _params(self, v, context):
        out = self.network(tf.cast(v, self.compute_dtype), conditional=context)
        return scale_and_shift(tf.cast(out, v.dtype), self.transform, self.forget_bias)

    def _prepare(self, v):
        v = tf.convert_to_tensor(v)
        if v.shape.rank is not None and v.shape[-1] != self.event_size:
            raise ValueError(f"{type(self).__name__}(event_size={self.event_size}) got `z` "
                             f"with last axis {v.shape[-1]}.")
        if not self.built:
            self.build(v.shape)
            self.built = True
        return tf.cast(v, math_dtype(self))

    def _one_pass(self, v, context, direction):
        scale, shift, log_scale = self._params(v, context)
        log_det = tf.reduce_sum(log_scale, -1)
        if direction == "forward":
            return scale * v + shift, log_det
        return (v - shift) / scale, -log_det

    def _sequential(self, given, context, direction):
        """D passes, pass k solving the k-th dimension of the ordering from the ones before
        it (exact); dimensions not yet solved stay 0, so a wild guess never reaches the
        network (a masked weight times inf would still give NaN)."""
        order = tf.argsort(self.network.degrees[0])

        def body(k, v):
            scale, shift, _ = self._params(v, context)
            new = (scale * given + shift if direction == "forward"
                   else (given - shift) / scale)
            pick = tf.one_hot(order[k], self.event_size, dtype=v.dtype)
            return k + 1, v + pick * (new - v)

        _, v = tf.while_loop(lambda k, v: k < self.event_size, body,
                             [tf.constant(0), tf.zeros_like(given)])
        _, _, log_scale = self._params(v, context)
        log_det = tf.reduce_sum(log_scale, -1)
        return v, (log_det if direction == "forward" else -log_det)

    def forward(self, z, context=None):
        """z -> (y, log|det dy/dz|)."""
        z = self._prepare(z)
        if self.conditioned_on == "input":
            return self._one_pass(z, context, "forward")
        return self._sequential(z, context, "forward")

    def inverse(self, y, context=None):
        """y -> (z, log|det dz/dy|)."""
        y = self._prepare(y)
        if self.conditioned_on == "output":
            return self._one_pass(y, context, "inverse")
        return self._sequential(y, context, "inverse")

    def call(self, z, context=None):
        y, log_det = self.forward(z, context)
        return {"z": y, "log_det": log_det}

    def get_config(self):
        config = super().get_config()
        config.update(event_size=self.event_size, hidden_units=list(self.hidden_units),
                      context_size=self.context_size, transform=self.transform,
                      forget_bias=self.forget_bias, input_order=self.input_order,
                      activation=self.activation, seed=self.seed)
        return config

"""Transition networks p(z_t | z_{t-1}, u_{t-1}, Delta_t) of deep state-space models."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.common import check_choice, check_positive, check_positive_int, math_dtype, register

KINDS = ("gated", "mlp", "linear")


@register
class StateTransition(keras.layers.Layer):
    r"""Diagonal-Gaussian transition $p(z_t | z_{t-1}, c_t) = N(\mu, \mathrm{diag}(\sigma^2))$.

    ``c_t`` are optional conditioning inputs concatenated to $z_{t-1}$ (actions $u_{t-1}$, time
    gaps $\Delta_t$). Kinds:

    - ``"gated"``: Krishnan, Shalit & Sontag, "Structured Inference Networks for Nonlinear State
      Space Models" (2017): $g = \mathrm{sigmoid}(\mathrm{MLP}_g(z))$,
      $\tilde\mu = \mathrm{MLP}_\mu(z)$, $\mu = (1 - g) \odot Wz + g \odot \tilde\mu$ with $W$
      initialized to the identity, $\sigma = \mathrm{softplus}(V\,\mathrm{relu}(\tilde\mu))$.
    - ``"mlp"``: the Deep Kalman Filter's $G$ and $S$ (Krishnan et al. 2015): one MLP, two
      linear heads, $\sigma = \mathrm{softplus}(\cdot)$.
    - ``"linear"``: $\mu = W [z; c] + b$ ($W$ starts at the identity on $z$), $\sigma$ a learned
      vector: the linear-Gaussian special case.

    ``call(z_prev, conditions=None)`` returns ``{"loc", "scale"}`` of shape ``[..., latent_dim]``.

    Args:
        latent_dim: int. Dimension of z.
        kind: str. ``"gated"``, ``"mlp"`` or ``"linear"``.
        hidden_units: int. Width of the hidden layers (gated, mlp).
        min_scale: float. Floor added to sigma.

    Example:

    >>> import numpy as np
    >>> out = StateTransition(3, kind="linear")(np.zeros((2, 3), "float32"))
    >>> out["loc"].numpy().tolist(), out["scale"].shape
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], TensorShape([2, 3]))
    """

    def __init__(self, latent_dim: int, kind: str = "gated", hidden_units: int = 100,
                 min_scale: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("latent_dim", latent_dim)
        check_choice("kind", kind, KINDS)
        check_positive_int("hidden_units", hidden_units)
        check_positive("min_scale", min_scale, allow_zero=True)
        self.latent_dim = latent_dim
        self.kind = kind
        self.hidden_units = hidden_units
        self.min_scale = float(min_scale)
        d, h = latent_dim, hidden_units
        dense = lambda units, name, **kw: keras.layers.Dense(  # noqa: E731
            units, name=name, dtype=self.dtype_policy, **kw)
        self.linear = dense(d, "linear")
        if kind == "gated":
            self.gate_hidden = dense(h, "gate_hidden", activation="relu")
            self.gate = dense(d, "gate", activation="sigmoid")
            self.proposal_hidden = dense(h, "proposal_hidden", activation="relu")
            self.proposal = dense(d, "proposal")
            self.scale_head = dense(d, "scale")
        elif kind == "mlp":
            self.hidden = [dense(h, "hidden_0", activation="relu"),
                           dense(h, "hidden_1", activation="relu")]
            self.scale_head = dense(d, "scale")

    def build(self, z_prev_shape, conditions_shape=None):
        z_shape = z_prev_shape
        width = z_shape[-1] + (conditions_shape[-1] if conditions_shape else 0)
        if z_shape[-1] != self.latent_dim:
            raise ValueError(f"`z_prev` must have last axis {self.latent_dim}, got {z_shape}.")
        in_shape = (*z_shape[:-1], width)
        if self.kind == "mlp":
            self.linear.build((*z_shape[:-1], self.hidden_units))
        else:
            self.linear.build(in_shape)
            kernel = np.zeros((width, self.latent_dim), "float32")
            kernel[: self.latent_dim] = np.eye(self.latent_dim)
            self.linear.kernel.assign(kernel.astype(self.linear.kernel.dtype))
        if self.kind == "gated":
            self.gate_hidden.build(in_shape)
            self.gate.build((*z_shape[:-1], self.hidden_units))
            self.proposal_hidden.build(in_shape)
            self.proposal.build((*z_shape[:-1], self.hidden_units))
            self.scale_head.build((*z_shape[:-1], self.latent_dim))
        elif self.kind == "mlp":
            self.hidden[0].build(in_shape)
            self.hidden[1].build((*z_shape[:-1], self.hidden_units))
            self.scale_head.build((*z_shape[:-1], self.hidden_units))
        else:
            self.raw_scale = self.add_weight(shape=(self.latent_dim,), initializer="zeros",
                                             name="raw_scale")

    def call(self, z_prev, conditions=None):
        inputs = z_prev if conditions is None else tf.concat(
            [z_prev, tf.cast(conditions, z_prev.dtype)], -1)
        md = math_dtype(self)
        if self.kind == "gated":
            gate = tf.cast(self.gate(self.gate_hidden(inputs)), md)
            proposed = self.proposal(self.proposal_hidden(inputs))
            loc = (1.0 - gate) * tf.cast(self.linear(inputs), md) + gate * tf.cast(proposed, md)
            raw = self.scale_head(tf.nn.relu(proposed))
        elif self.kind == "mlp":
            hidden = self.hidden[1](self.hidden[0](inputs))
            loc, raw = self.linear(hidden), self.scale_head(hidden)
        else:
            loc = self.linear(inputs)
            raw = tf.broadcast_to(tf.cast(self.raw_scale, loc.dtype), tf.shape(loc))
        return {"loc": tf.cast(loc, md), "scale": tf.nn.softplus(tf.cast(raw, md)) + self.min_scale}

    def compute_output_spec(self, z_prev, conditions=None):
        spec = keras.KerasTensor(z_prev.shape, dtype=math_dtype(self))
        return {"loc": spec, "scale": spec}

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, kind=self.kind,
                      hidden_units=self.hidden_units, min_scale=self.min_scale)
        return config

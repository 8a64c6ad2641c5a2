"""A stack of flow steps that turns a Gaussian posterior sample into a richer one."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import check_choice, check_positive_int, math_dtype, register
from zoo.layers.iaf import IAF
from zoo.layers.planar_flow import PlanarFlow

FLOWS = ("iaf", "planar")


@register
class PosteriorFlow(keras.layers.Layer):
    r"""$z_K = f_K \circ \dots \circ f_1(z_0)$ with
    $\log q(z_K \mid x) = \log q_0(z_0 \mid x) - \sum_k \log|\det \partial f_k / \partial z_{k-1}|$.

    ``kind="iaf"``: Kingma et al. (2016)'s inverse autoregressive flow, each step a gated
    :class:`IAF` whose MADE also reads the context h (the encoder's features), orderings
    alternating between steps. ``kind="planar"``: Rezende & Mohamed (2015)'s planar flow,
    each :class:`PlanarFlow` step's (u, w, b) computed from h (amortized). Either way a
    sample and its density cost one pass per step.

    ``call(z0, context)`` takes ``z0`` [batch..., d] (e.g. [batch, K, d] particles) and
    ``context`` [batch, c] (broadcast over the particle axes) and returns ``{"z": z_K,
    "log_det": sum of log-determinants}`` [batch...]. ``inverse(z_K, context)`` maps back
    (D passes per IAF step, bisection for planar steps).

    Args:
        latent_dim: int. Dimension d of z.
        context_size: int. Width of the context h.
        kind: str. ``"iaf"`` or ``"planar"``.
        steps: int. Number of flow steps K.
        hidden_units: tuple of int. MADE widths of each IAF step.

    Example:

    >>> import numpy as np
    >>> flow = PosteriorFlow(2, context_size=3, kind="planar", steps=4)
    >>> out = flow(np.zeros((5, 7, 2), "float32"), np.ones((5, 3), "float32"))
    >>> tuple(out["z"].shape), tuple(out["log_det"].shape)
    ((5, 7, 2), (5, 7))
    """

    def __init__(self, latent_dim: int, context_size: int, kind: str = "iaf", steps: int = 2,
                 hidden_units=(64,), **kwargs):
        super().__init__(**kwargs)
        check_positive_int("latent_dim", latent_dim)
        check_positive_int("context_size", context_size)
        check_choice("posterior_flow", kind, FLOWS)
        check_positive_int("flow_steps", steps)
        self.latent_dim = latent_dim
        self.context_size = context_size
        self.kind = kind
        self.steps = steps
        self.hidden_units = tuple(int(u) for u in hidden_units)
        if kind == "iaf":
            self.flows = [IAF(latent_dim, hidden_units=self.hidden_units,
                              context_size=context_size,
                              input_order="left-to-right" if k % 2 == 0 else "right-to-left",
                              dtype=self.dtype_policy, name=f"iaf_{k}")
                          for k in range(steps)]
        else:
            self.flows = [PlanarFlow(latent_dim, context_size=context_size,
                                     dtype=self.dtype_policy, name=f"planar_{k}")
                          for k in range(steps)]

    def build(self, z0_shape, context_shape=None):
        for flow in self.flows:
            if not flow.built:
                flow.build((None, self.latent_dim))
                flow.built = True

    def _context(self, z, context):
        """The context repeated over z's particle axes: [batch..., c]."""
        context = tf.cast(context, self.compute_dtype)
        extra = z.shape.rank - context.shape.rank
        for _ in range(extra):
            context = context[:, None]
        shape = tf.concat([tf.shape(z)[:-1], [self.context_size]], 0)
        return tf.broadcast_to(context, shape)

    def _step_context(self, z, context):
        """The context each step reads: a planar step takes it as given ([batch, c], its
        amortizer then runs once per example), an IAF step repeated over z's particle axes."""
        if self.kind == "planar":
            return tf.cast(context, self.compute_dtype)
        return self._context(z, context)

    def call(self, z0, context):
        z = tf.cast(z0, math_dtype(self))
        context = self._step_context(z, context)
        log_det = tf.zeros(tf.shape(z)[:-1], z.dtype)
        for flow in self.flows:
            z, ld = flow.forward(z, context)
            log_det = log_det + tf.cast(ld, z.dtype)
        return {"z": z, "log_det": log_det}

    def inverse(self, z, context):
        """z_K -> (z_0, sum of log|det dz_{k-1}/dz_k|)."""
        z = tf.cast(z, math_dtype(self))
        context = self._step_context(z, context)
        log_det = tf.zeros(tf.shape(z)[:-1], z.dtype)
        for flow in reversed(self.flows):
            z, ld = flow.inverse(z, context)
            log_det = log_det + tf.cast(ld, z.dtype)
        return z, log_det

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, context_size=self.context_size,
                      kind=self.kind, steps=self.steps, hidden_units=list(self.hidden_units))
        return config

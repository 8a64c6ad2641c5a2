"""Export adapters of issue 14: the autoregressive models (FVSBN, NADE, MADE, order-agnostic
NADE), the flow-posterior VAE (``"latent_flow"``) and DLGM (``"dlgm_flow"``), at the end.

Signatures, built-in TFLite ops only, for images flattened to D = prod(input_shape) values:

- ``log_prob(x [b, D]) -> log_prob [b], probs [b, D]``: the exact log-likelihood (the ensemble
  over orderings / masks when the model has several) and member 0's conditionals
  p(x_i = 1 | x_<i).
- ``sample_step(x [b, D], position [b, D] one-hot, noise [b, D] uniform) -> x, probs``: sets
  x at ``position`` to 1 when noise < p(x_position = 1 | x_<position). An app samples an
  image by calling it D times, ``position`` following the ordering in the sidecar's
  ``ordering`` (member 0), noise fresh each call.
- ``inpaint(x [b, D], observed [b, D], noise [b, D]) -> x, log_weight [b]``: one sequential
  proposal for the missing pixels (observed ones held; for order-agnostic NADE the observed
  pixels come first in the ordering, so the draw is exact) and its importance log-weight:
  resample among several proposals in proportion to exp(log_weight) for exact conditional
  draws (sampling-importance-resampling, as ``model.inpaint`` does).

Parity examples pick the noise away from each drawn probability (u = p/2 for a 1, (1 + p)/2
for a 0): the comparison then checks the probabilities, not a coin flip that a 1e-6 change
of p would turn.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.export.adapters import (DLGMAdapter, ExportSpec, LatentModelAdapter, Signature,
                                 model_config, posterior_parameters, register_adapter, spec)


def _away_from(p, x):
    """Uniform noise that gives the same draws x with a margin: p/2 for 1, (1+p)/2 for 0."""
    return np.where(x > 0.5, 0.5 * p, 0.5 * (1.0 + p)).astype("float32")


@register_adapter("autoregressive")
class AutoregressiveAdapter:
    """``log_prob``, ``sample_step`` and ``inpaint`` of a binary autoregressive model."""

    def __init__(self, model):
        self.model = model

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        d = m.event_size
        degrees0 = tf.constant(np.asarray(m.member_degrees())[0], tf.float32)

        def log_prob(x):
            flat = m.as_flat(x)
            logits = tf.cast(m.conditional_logits(flat, 0), tf.float32)
            return {"log_prob": m.log_prob_flat(flat), "probs": tf.sigmoid(logits)}

        def sample_step(x, position, noise):
            flat = tf.cast(m.as_flat(x), tf.float32)
            p = tf.sigmoid(tf.cast(m.conditional_logits(m.as_flat(x), 0), tf.float32))
            draw = tf.cast(noise < p, tf.float32)
            return {"x": flat + position * (draw - flat), "probs": p}

        def inpaint(x, observed, noise):
            degrees = m.inpainting_degrees(observed, 0)
            filled, log_weight, _ = m.fill(x, observed, noise, degrees, 0,
                                           any_order=m.any_order)
            return {"x": filled, "log_weight": log_weight}

        def binary(rng):
            return (rng.uniform(size=(b, d)) < 0.3).astype("float32")

        def log_prob_example(rng):
            return {"x": binary(rng)}

        def step_example(rng):
            x = binary(rng)
            position = np.eye(d, dtype="float32")[rng.integers(0, d, size=b)]
            p = np.asarray(log_prob(tf.constant(x))["probs"])
            drawn = (rng.uniform(size=(b, d)) < p).astype("float32")
            return {"x": x, "position": position, "noise": _away_from(p, drawn)}

        def inpaint_example(rng):
            x = binary(rng)
            observed = np.zeros((b, d), "float32")
            observed[:, : d // 2] = 1.0
            u = rng.uniform(size=(b, d)).astype("float32")
            degrees = m.inpainting_degrees(tf.constant(observed), 0)
            filled, _, p = m.fill(x, observed, u, degrees, 0, any_order=m.any_order)
            return {"x": x, "observed": observed,
                    "noise": _away_from(np.asarray(p), np.asarray(filled))}

        flat = {"x": spec((b, d), "x")}
        signatures = {
            "log_prob": Signature(log_prob, flat, log_prob_example,
                                  "x -> exact log p(x) and the conditionals p(x_i=1|x_<i)"),
            "sample_step": Signature(
                sample_step, {**flat, "position": spec((b, d), "position"),
                              "noise": spec((b, d), "noise")}, step_example,
                "x, one-hot position, uniform noise -> x with that position drawn"),
            "inpaint": Signature(
                inpaint, {**flat, "observed": spec((b, d), "observed"),
                          "noise": spec((b, d), "noise")}, inpaint_example,
                "x, observed flags, uniform noise -> one proposal for the missing pixels and "
                "its importance log-weight"),
        }
        metadata = {"model": type(m).__name__, "config": model_config(m),
                    "data_shape": list(m.data_shape), "event_size": d,
                    "ordering": [int(i) for i in np.argsort(np.asarray(degrees0))],
                    "members": m.num_members}
        return ExportSpec(signatures, metadata)


@register_adapter("latent_flow")
class FlowPosteriorAdapter(LatentModelAdapter):
    """A VAE whose posterior ends in a flow (``posterior_flow="iaf"|"planar"``): the latent
    adapter's ``decode`` / ``sample`` / ``sample_random``, and an ``encode`` that takes the
    posterior's standard-normal ``noise`` [b, latent_dim] and returns the base Gaussian's
    parameters (``loc``, ``scale``...), the flowed sample ``z`` = z_K and its log-density
    ``log_q`` = log q_0(z_0|x) - sum_k log|det J_k|."""

    def encode_noise_shape(self):
        return (self.model.latent_dim,)

    def call_encode(self, x, noise=None):
        m = self.model
        features = m.encoder(x)
        params = posterior_parameters(m.posterior, features)
        post = m.sample_posterior(features, noise=noise)
        return {**params, "z": post["z"], "log_q": post["log_q"]}


@register_adapter("dlgm_flow")
class FlowPosteriorDLGMAdapter(DLGMAdapter):
    """A DLGM whose posterior ends in a flow over all layers' noise
    (``posterior_flow="iaf"|"planar"``): the DLGM adapter's ``decode`` / ``sample`` /
    ``sample_random`` (inputs ``xi_1`` ... ``xi_L``), and an ``encode`` that takes the
    posterior's standard-normal ``noise`` [b, sum(latent_dims)] (layer 1's dimensions first)
    and returns each layer's base Gaussian parameters (``loc_1``, ...), the flowed samples
    ``xi_1`` ... ``xi_L`` and their joint log-density ``log_q``."""

    def encode_noise_shape(self):
        return (sum(self.model.latent_dims),)

    def call_encode(self, x, noise=None):
        m = self.model
        features = m.encoder(x)
        out = {f"{k}_{l + 1}": v for l, layer in enumerate(m.posteriors)
               for k, v in posterior_parameters(layer, features).items()}
        post = m.sample_posterior(features, noises=tf.split(noise, list(m.latent_dims), -1))
        out.update({f"xi_{l + 1}": xi for l, xi in enumerate(post["xis"])})
        out["log_q"] = post["log_q"]
        return out

"""Export adapter of the hierarchical VAE (``zoo.hierarchical_vae.HierarchicalVAE``).

Signatures, built-in TFLite ops only:

- ``decode(xi_1, ..., xi_L) -> probs, logits`` (Gaussian likelihood: ``mean, scale``): the
  generative noise, standard normal, [batch, d_l] each: h_L = xi_L, h_l = mu_l(h_{l+1}) +
  sigma_l(h_{l+1}) xi_l down the chain, then p(x | h_1). An app draws from the prior by
  feeding fresh normals, and holds h_2 fixed while redrawing xi_1 to see what one top-level
  code leaves open.
- ``sample`` / ``sample_random``: the same, plus a draw x ~ p(x | h_1) (uniform noise given as
  an input, or the runtime's own random op), as every latent model's adapter does.
- ``encode(x, noise) -> loc_l, scale_l, h_l``: q(h_1 | x), then q(h_l | h_{l-1}) at the draw
  h_{l-1} = loc + scale * noise; ``noise`` [batch, d_1 + ... + d_L] standard normal, zeros
  for the mean path.
"""

from __future__ import annotations

import tensorflow as tf

from zoo.export.adapters import ENCODE, LatentModelAdapter, register_adapter


@register_adapter("hierarchical_vae")
class HierarchicalVAEAdapter(LatentModelAdapter):
    """Decoder inputs ``xi_1`` (nearest the data) ... ``xi_L``; encoder outputs per layer."""

    def latent_inputs(self):
        return {f"xi_{l + 1}": (d,) for l, d in enumerate(self.model.latent_dims)}

    def call_decode(self, latents):
        return self.model.decode([latents[f"xi_{l + 1}"]
                                  for l in range(len(self.model.latent_dims))])

    def encode_noise_shape(self):
        return (sum(self.model.latent_dims),)

    def call_encode(self, x, noise=None):
        noises = tf.split(noise, list(self.model.latent_dims), axis=-1)
        return {f"{key}_{l + 1}": layer[name]
                for l, layer in enumerate(self.model.encode(x, noises))
                for key, name in (("loc", "loc"), ("scale", "scale"), ("h", "z"))}

    def export_spec(self, batch_size: int = 1):
        spec = super().export_spec(batch_size)
        encode = spec.signatures[ENCODE]
        width = sum(self.model.latent_dims)

        def example(rng):  # standard-normal noise, as the model's own draws
            return {"x": self._data_example(rng, batch_size),
                    "noise": rng.standard_normal((batch_size, width)).astype("float32")}

        signatures = {**spec.signatures, ENCODE: encode._replace(
            example=example,
            doc="x + standard normal noise -> parameters of q(h_1|x), q(h_l|h_(l-1)) and "
                "the draws h_l")}
        return spec._replace(signatures=signatures)

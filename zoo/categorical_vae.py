"""Categorical VAE with Gumbel-softmax latents (Jang, Gu & Poole 2017)."""

from __future__ import annotations

import tensorflow as tf

from zoo.layers import RelaxedCategorical, TemperatureAnnealing
from zoo.layers.common import check_positive, check_positive_int, register
from zoo.base import ImageLatentModel
from zoo.vae import apply_with_particles, data_decoder, data_encoder, likelihood_head


@register
class CategoricalVAE(ImageLatentModel):
    r"""VAE whose latent is N categorical variables with K classes, relaxed by Gumbel-softmax.

    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax" (2017). Prior
    $p(z) = \prod_n \mathrm{Cat}(z_n; 1/K)$ (or learned), recognition model
    $q(z_n|x) = \mathrm{Cat}(\pi_n(x))$ from an MLP (the paper's MNIST setting: 784-512-256,
    N x K = 20 x 10). Training maximizes
    $E_{y \sim \mathrm{GS}(\pi, \tau)}[\log p(x|y)] - \mathrm{KL}(q(z|x) \| p(z))$ with relaxed
    samples y (or straight-through hard ones) and the KL of the discrete distributions; the
    temperature follows $\tau = \max(\tau_{min}, e^{-r t})$, updated every ``anneal_every``
    steps by the callback that ``default_callbacks()`` returns. Evaluation uses hard (one-hot)
    samples, for which ``log_likelihood`` is a proper importance-weighted bound.

    Args:
        input_shape: tuple. Shape of one example.
        num_variables: int. N.
        num_classes: int. K.
        hidden_units: tuple of int. Encoder widths (the decoder mirrors them).
        activation: str. Hidden activation.
        likelihood: str. ``"bernoulli"`` or ``"gaussian"``.
        temperature: float. Initial temperature tau_0.
        min_temperature: float. tau_min.
        anneal_rate: float. r.
        anneal_every: int. Steps between temperature updates (N = 500 in the paper).
        straight_through: bool. Hard samples forward, relaxed gradients backward.
        prior: str. ``"uniform"`` or ``"learned"``.
        kl_weight: float. Initial KL weight.
        seed: int or None. Seed of the Gumbel noise.

    Example:

    >>> import numpy as np
    >>> model = CategoricalVAE(input_shape=(8,), num_variables=3, num_classes=4,
    ...                        hidden_units=(16,), seed=0)
    >>> model.compile(optimizer="adam")
    >>> x = (np.random.RandomState(0).rand(64, 8) > 0.5).astype("float32")
    >>> _ = model.fit(x, batch_size=32, epochs=1, verbose=0, callbacks=model.default_callbacks())
    >>> z = model.encode(x[:2])["sample"]
    >>> sorted(set(z.numpy().ravel().tolist()))
    [0.0, 1.0]
    """

    def __init__(
        self,
        input_shape=(28, 28, 1),
        num_variables: int = 20,
        num_classes: int = 10,
        hidden_units=(512, 256),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        temperature: float = 1.0,
        min_temperature: float = 0.5,
        anneal_rate: float = 3e-5,
        anneal_every: int = 500,
        straight_through: bool = False,
        prior: str = "uniform",
        kl_weight: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        check_positive("min_temperature", min_temperature)
        check_positive("anneal_rate", anneal_rate, allow_zero=True)
        check_positive_int("anneal_every", anneal_every)
        self.num_variables = num_variables
        self.num_classes = num_classes
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.likelihood = likelihood
        self.temperature = temperature
        self.min_temperature = min_temperature
        self.anneal_rate = anneal_rate
        self.anneal_every = anneal_every
        self.straight_through = straight_through
        self.prior = prior
        self.kl_weight = kl_weight
        self.seed = seed
        self.head, per_value = likelihood_head(likelihood, self.data_shape, "learned", 1.0)
        self.encoder = data_encoder("mlp", self.hidden_units, (), activation)
        self.latent = RelaxedCategorical(
            num_variables, num_classes, temperature=temperature,
            straight_through=straight_through, prior=prior, kl_weight=kl_weight,
            add_kl_loss=False, seed=seed, name="latent",
        )
        self.decoder = data_decoder("mlp", self.hidden_units, (), activation, self.data_shape,
                                    per_value)
        self._build_by_calling(tf.zeros((1, *self.data_shape)))  # every weight, now

    def default_callbacks(self) -> list:
        return [TemperatureAnnealing(rate=self.anneal_rate, minimum=self.min_temperature,
                                     initial=self.temperature, every=self.anneal_every)]

    def _flat(self, sample):
        lead = tf.shape(sample)[:-2]
        return tf.reshape(sample, tf.concat([lead, [self.num_variables * self.num_classes]], 0))

    def encode(self, x, noise=None):
        """Hard posterior samples and q's normalized logits: ``sample`` [batch, N, K],
        ``log_probs`` [batch, N, K]."""
        return self.latent(self.encoder(x), noise=noise, training=False)

    def decode(self, z):
        """Likelihood from one-hot (or relaxed) z [batch..., N, K]: ``mean``, ``params``."""
        params = apply_with_particles(self.decoder, self._flat(tf.convert_to_tensor(z)))
        return {**self.head(params), "params": params}

    def posterior_mean_latent(self, x):
        """The mode of q(z|x), one-hot [batch, N, K] (used by ``reconstruct``)."""
        log_probs = self.encode(x)["log_probs"]
        return tf.one_hot(tf.argmax(log_probs, -1), self.num_classes, dtype=log_probs.dtype)

    def active_units(self, x, threshold: float = 0.01, batch_size: int = 500) -> int:
        raise TypeError("active_units counts Gaussian latent units; CategoricalVAE has none.")

    def prior_sample(self, n: int, seed=None):
        log_probs = self.latent.prior_log_probs()
        u = tf.random.stateless_uniform([n, self.num_variables, self.num_classes],
                                        self.stateless_seed(seed))
        gumbel = -tf.math.log(-tf.math.log(tf.clip_by_value(u, 1e-7, 1.0 - 1e-7)))
        return tf.one_hot(tf.argmax(log_probs + gumbel, -1), self.num_classes)

    def elbo_terms(self, x, training=None, noise=None):
        """ELBO, reconstruction and KL per example; ``noise``: the Gumbel draw's uniforms
        [batch, N, K] (drawn from the layer's seed generator when None)."""
        latent = self.latent(self.encoder(x), noise=noise, training=training)
        reconstruction = self.head(self.decoder(self._flat(latent["sample"])), x)["log_prob"]
        weight = tf.cast(self.latent.kl_weight, reconstruction.dtype)
        return {
            "elbo": reconstruction - latent["kl"],
            "reconstruction": reconstruction,
            "kl": latent["kl"],
            "objective": weight * latent["kl"] - reconstruction,
        }

    def log_weights(self, x, num_samples, seed):
        features = self.encoder(x)
        tiled = tf.repeat(tf.expand_dims(features, 1), num_samples, axis=1)  # [b, K, f]
        shape = [tf.shape(x)[0], num_samples, self.num_variables, self.num_classes]
        noise = tf.random.stateless_uniform(shape, seed, dtype=features.dtype)
        latent = self.latent(tiled, noise=noise, hard=True)
        z = latent["sample"]
        log_q = tf.reduce_sum(z * latent["log_probs"], [-2, -1])
        log_prior = tf.reduce_sum(z * self.latent.prior_log_probs(z.dtype), [-2, -1])
        log_px = self.head(apply_with_particles(self.decoder, self._flat(z)), x)["log_prob"]
        return log_px + log_prior - log_q

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.data_shape,
            num_variables=self.num_variables,
            num_classes=self.num_classes,
            hidden_units=self.hidden_units,
            activation=self.activation,
            likelihood=self.likelihood,
            temperature=self.temperature,
            min_temperature=self.min_temperature,
            anneal_rate=self.anneal_rate,
            anneal_every=self.anneal_every,
            straight_through=self.straight_through,
            prior=self.prior,
            kl_weight=self.kl_weight,
            seed=self.seed,
        )
        return config


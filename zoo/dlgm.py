"""Deep latent Gaussian model (Rezende, Mohamed & Wierstra 2014)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from zoo.layers import GaussianPosterior
from zoo.layers.common import check_choice, check_positive, check_positive_int, register
from zoo.layers.posterior_flow import FLOWS, PosteriorFlow
from zoo.base import ImageLatentModel
from zoo.networks import mlp
from zoo.vae import apply_with_particles, data_decoder, data_encoder, likelihood_head


@register
class DLGM(ImageLatentModel):
    r"""Deep latent Gaussian model with L stochastic layers.

    Rezende, Mohamed & Wierstra, "Stochastic Backpropagation and Approximate Inference in Deep
    Generative Models" (2014). Generative model, with $\xi_l \sim N(0, I)$:

    $$h_L = G_L \xi_L,\quad h_l = T_l(h_{l+1}) + G_l \xi_l,\quad v \sim p(v \mid T_0(h_1))$$

    ($G_l$ linear maps, $T_l$ MLPs). Recognition model
    $q(\xi|v) = \prod_l N(\xi_l \mid \mu_l(v), C_l(v))$ with each $C_l$ a rank-one precision
    $C_l^{-1} = D_l + u_l u_l^\top$ (``covariance="lowrank"``, O(d) sampling and KL), the
    $\mu_l, D_l, u_l$ computed from a shared MLP of v. ``fit`` maximizes the ELBO
    $E_q[\log p(v|\xi)] - \sum_l \mathrm{KL}(q(\xi_l|v) \| N(0, I))$; with
    ``weight_prior_variance`` = $\kappa$ the generative weights get the Gaussian prior
    $N(0, \kappa I)$, i.e. the penalty $\|\theta_g\|^2 / (2 \kappa N)$ per example for a data set of
    ``dataset_size`` N. The paper trained with RMSprop.

    ``posterior_flow="iaf"`` (Kingma et al., "Improved Variational Inference with Inverse
    Autoregressive Flow", 2016) or ``"planar"`` (Rezende & Mohamed, "Variational Inference
    with Normalizing Flows", 2015) pushes the concatenated noise $\xi^{(0)} = (\xi_1, \dots,
    \xi_L) \sim \prod_l q(\xi_l|v)$ through $K$ = ``flow_steps`` flow steps conditioned on the
    recognition features, $\xi^{(K)} = f_K \circ \dots \circ f_1(\xi^{(0)})$, so the layers'
    noise becomes dependent under q; $\log q(\xi^{(K)}|v) = \sum_l \log q(\xi_l|v) -
    \sum_k \log|\det \partial f_k|$, the KL is its single-sample difference with
    $\log N(\xi^{(K)}; 0, I)$ and the importance weights of ``log_likelihood`` use it.

    Args:
        input_shape: tuple. Shape of one example.
        latent_dims: tuple of int. Sizes of xi_1 (nearest the data) ... xi_L; L >= 1 (the
            paper's model has L >= 2; L = 1 is the VAE).
        hidden_units: tuple of int. Widths of the recognition MLP, of each T_l and of T_0.
        activation: str. Hidden activation.
        likelihood: str. ``"bernoulli"`` or ``"gaussian"``.
        covariance: str. Posterior family of each layer (``"lowrank"`` as in the paper).
        weight_prior_variance: float or None. kappa of the generative weight prior.
        dataset_size: int. N used to scale the weight prior per example.
        kl_weight: float. Initial KL weight of every layer.
        scale_activation, min_scale: of every layer's posterior (``GaussianPosterior``): with
            ``covariance="lowrank"``, the precision diagonal D is softplus(raw) + min_scale
            (default) or exp(raw) + min_scale (``"exp"``: raw = log D, as
            ``benchmarks/references.py``'s ReferenceDLGM has it; ``min_scale=0.0`` then adds
            no floor).
        gaussian_variance: str. For ``likelihood="gaussian"``.
        posterior_flow: str or None. ``"iaf"`` or ``"planar"`` (None: the factorial
            Gaussian posterior of the paper).
        flow_steps: int. Number K of flow steps (with ``posterior_flow``).
        seed: int or None. Seed of the posterior samplers.

    Example:

    >>> import numpy as np
    >>> model = DLGM(input_shape=(8,), latent_dims=(3, 2), hidden_units=(16,), seed=0)
    >>> model.compile(optimizer="rmsprop")
    >>> x = (np.random.RandomState(0).rand(64, 8) > 0.5).astype("float32")
    >>> _ = model.fit(x, batch_size=32, epochs=1, verbose=0)
    >>> model.log_likelihood(x[:4], num_samples=10).log_likelihood.shape
    (4,)
    """

    def __init__(
        self,
        input_shape=(28, 28, 1),
        latent_dims=(50, 50),
        hidden_units=(200,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        covariance: str = "lowrank",
        weight_prior_variance: float | None = None,
        dataset_size: int = 60000,
        kl_weight: float = 1.0,
        scale_activation: str = "softplus",
        min_scale: float = 1e-4,
        gaussian_variance: str = "learned",
        posterior_flow: str | None = None,
        flow_steps: int = 2,
        seed: int | None = None,
        **kwargs,
    ):
        latent_dims = tuple(int(d) for d in latent_dims)
        super().__init__(input_shape, active_units_dim=sum(latent_dims) if latent_dims else None,
                         **kwargs)
        if not latent_dims:
            raise ValueError("`latent_dims` must name at least one stochastic layer.")
        for d in latent_dims:
            check_positive_int("latent_dims", d)
        check_positive_int("dataset_size", dataset_size)
        if weight_prior_variance is not None:
            check_positive("weight_prior_variance", weight_prior_variance)
        if posterior_flow is not None:
            check_choice("posterior_flow", posterior_flow, FLOWS)
            check_positive_int("flow_steps", flow_steps)
        self.latent_dims = latent_dims
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.likelihood = likelihood
        self.covariance = covariance
        self.scale_activation = scale_activation
        self.min_scale = float(min_scale)
        self.weight_prior_variance = weight_prior_variance
        self.dataset_size = dataset_size
        self.kl_weight = kl_weight
        self.gaussian_variance = gaussian_variance
        self.posterior_flow = posterior_flow
        self.flow_steps = int(flow_steps)
        self.seed = seed
        self.head, per_value = likelihood_head(likelihood, self.data_shape, gaussian_variance, 1.0)
        self.encoder = data_encoder("mlp", self.hidden_units, (), activation)
        self.posteriors = [
            GaussianPosterior(d, covariance=covariance, kl_weight=kl_weight, add_kl_loss=False,
                              scale_activation=scale_activation, min_scale=min_scale,
                              seed=None if seed is None else seed + l, name=f"posterior_{l + 1}")
            for l, d in enumerate(latent_dims)
        ]
        self.flow = None
        if posterior_flow is not None:
            width = int(self.encoder(tf.zeros((1, *self.data_shape))).shape[-1])
            self.flow = PosteriorFlow(sum(latent_dims), context_size=width, kind=posterior_flow,
                                      steps=self.flow_steps, name="posterior_flow")
            self.export_adapter = "dlgm_flow"  # its encode runs the flow
        # G_l: linear maps of the noise; T_l (l >= 1): MLPs h_{l+1} -> h_l; T_0: the decoder.
        # G_l start at the identity: a Glorot start has singular values near 0 that switch
        # latent directions off (measured on mnist5k: test ELBO -134.8 vs -132.0, 1 layer).
        self.noise_maps = [keras.layers.Dense(d, use_bias=False, kernel_initializer="identity",
                                              name=f"G_{l + 1}")
                           for l, d in enumerate(latent_dims)]
        self.transitions = [mlp(self.hidden_units, activation, f"T_{l + 1}", latent_dims[l])
                            for l in range(len(latent_dims) - 1)]
        self.decoder = data_decoder("mlp", self.hidden_units, (), activation, self.data_shape,
                                    per_value, name="T_0")
        self._build_by_calling(tf.zeros((1, *self.data_shape)))  # every weight, now

    def weight_prior_penalty(self):
        """-log N(theta_g; 0, kappa I) / N (up to a constant) on every generative kernel."""
        if self.weight_prior_variance is None:
            return 0.0
        kernels = [w for net in [*self.noise_maps, *self.transitions, self.decoder]
                   for w in net.trainable_weights if "kernel" in w.name]
        coefficient = 1.0 / (2.0 * self.weight_prior_variance * self.dataset_size)
        return coefficient * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels])

    # ------------------------------------------------------------------ generative pass
    def generate(self, xis):
        """Likelihood parameters from the noise of every layer, [xi_1, ..., xi_L]."""
        h = apply_with_particles(self.noise_maps[-1], xis[-1])
        for l in reversed(range(len(self.latent_dims) - 1)):
            h = apply_with_particles(self.transitions[l], h) + apply_with_particles(
                self.noise_maps[l], xis[l])
        return apply_with_particles(self.decoder, h)

    def encode(self, x):
        """Per-layer posterior parameters, a list of dicts (``loc`` plus precision factors)."""
        features = self.encoder(x)
        return [p.posterior_parameters(features) for p in self.posteriors]

    def decode(self, xis):
        """Likelihood from the noise of every layer: ``mean`` and raw ``params``."""
        params = self.generate([tf.convert_to_tensor(xi) for xi in xis])
        return {**self.head(params), "params": params}

    def posterior_mean_latent(self, x):
        return tf.concat([p["loc"] for p in self.encode(x)], -1)

    def reconstruct(self, x):
        return self.decode([p["loc"] for p in self.encode(self.check_input(x))])["mean"]

    def prior_sample(self, n: int, seed=None):
        seed = self.stateless_seed(seed)
        return [tf.random.stateless_normal([n, d], seed + [0, l])
                for l, d in enumerate(self.latent_dims)]

    # ------------------------------------------------------------------ posterior
    def sample_posterior(self, features, noises=None, num_samples=None):
        """Samples of every layer's noise from q(xi | v): ``{"xis": [xi_1, ..., xi_L],
        "log_q", "log_prior", "kl"}`` (per example, or per particle with ``num_samples``),
        with ``noises`` (one standard-normal tensor per layer) or the layers' own draws.
        Without a flow ``kl`` is the sum of the analytic KLs; with one, the xi_l are the
        flow's output and ``kl`` = log q - log p of that sample."""
        kwargs = {} if num_samples is None else {"num_samples": num_samples}
        posteriors = [layer(features, **kwargs) if noises is None
                      else layer(features, noise=noise, **kwargs)
                      for layer, noise in zip(self.posteriors,
                                              noises or [None] * len(self.posteriors))]
        xis = [p["z"] for p in posteriors]
        log_q = tf.add_n([p["log_q"] for p in posteriors])
        log_prior = tf.add_n([p["log_prior"] for p in posteriors])
        if self.flow is None:
            return {"xis": xis, "log_q": log_q, "log_prior": log_prior,
                    "kl": tf.add_n([p["kl"] for p in posteriors]), "layers": posteriors}
        out = self.flow(tf.concat(xis, -1), features)
        z = tf.cast(out["z"], xis[0].dtype)
        log_q = log_q - tf.cast(out["log_det"], log_q.dtype)
        log_prior = (-0.5 * tf.reduce_sum(tf.square(z), -1)
                     - 0.5 * sum(self.latent_dims) * math.log(2.0 * math.pi))
        xis = tf.split(z, list(self.latent_dims), axis=-1)
        return {"xis": xis, "log_q": log_q, "log_prior": log_prior, "kl": log_q - log_prior,
                "layers": posteriors}

    # ------------------------------------------------------------------ bounds
    def elbo_terms(self, x, training=None):
        features = self.encoder(x)
        sample = self.sample_posterior(features)
        posteriors = sample["layers"]
        reconstruction = self.head(self.generate(sample["xis"]), x)["log_prob"]
        kl = sample["kl"]
        if self.flow is None:
            weighted_kl = tf.add_n([tf.cast(layer.kl_weight, kl.dtype) * p["kl"]
                                    for layer, p in zip(self.posteriors, posteriors)])
        else:  # one joint KL: the first layer's weight (KL annealing moves them together)
            weighted_kl = tf.cast(self.posteriors[0].kl_weight, kl.dtype) * kl
        return {
            "elbo": reconstruction - kl,
            "reconstruction": reconstruction,
            "kl": kl,
            "objective": weighted_kl - reconstruction + self.weight_prior_penalty(),
            "posterior_loc": tf.concat([p["loc"] for p in posteriors], -1),
        }

    def log_weights(self, x, num_samples, seed):
        features = self.encoder(x)
        batch = tf.shape(x)[0]
        noises = [tf.random.stateless_normal([batch, num_samples, d], seed + [0, 1000 * (l + 1)],
                                             dtype=features.dtype)
                  for l, d in enumerate(self.latent_dims)]
        sample = self.sample_posterior(features, noises=noises, num_samples=num_samples)
        log_px = self.head(self.generate(sample["xis"]), x)["log_prob"]
        return log_px + sample["log_prior"] - sample["log_q"]

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.data_shape,
            latent_dims=self.latent_dims,
            hidden_units=self.hidden_units,
            activation=self.activation,
            likelihood=self.likelihood,
            covariance=self.covariance,
            weight_prior_variance=self.weight_prior_variance,
            dataset_size=self.dataset_size,
            kl_weight=self.kl_weight,
            scale_activation=self.scale_activation,
            min_scale=self.min_scale,
            gaussian_variance=self.gaussian_variance,
            posterior_flow=self.posterior_flow,
            flow_steps=self.flow_steps,
            seed=self.seed,
        )
        return config


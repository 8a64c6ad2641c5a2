"""Variational autoencoder (Kingma & Welling 2014) with any Gaussian posterior family."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers import BernoulliLikelihood, GaussianLikelihood, GaussianPosterior
from zoo.layers.posterior_flow import FLOWS, PosteriorFlow
from zoo.layers.common import (check_choice, check_positive, check_positive_int, math_dtype,
                               register, sum_rightmost)
from zoo.base import ImageLatentModel
from zoo.networks import ARCHITECTURES, conv_decoder, conv_encoder, flat_size, mlp

OBJECTIVES = ("elbo", "iwae")

LIKELIHOODS = ("bernoulli", "gaussian")
GAUSSIAN_VARIANCES = ("fixed", "learned", "per_pixel")


@register
class BernoulliLogitsLikelihood(BernoulliLikelihood):
    r"""``BernoulliLikelihood`` (the name starts with "Bernoulli": the exporter's latent adapter
    reads it so) whose log-probability is $x l - \mathrm{softplus}(l)$: the same
    value as TFP's $x \log p + (1 - x) \log(1 - p)$ for finite logits $l$ (since
    softplus(l) - softplus(-l) = l), with gradient $x - \sigma(l)$, in three elementwise ops
    where ``tfd.Bernoulli.log_prob`` takes seven (about 0.3 ms of a 10 ms VAE step on MNIST,
    measured). For |l| > 17 the float32 difference rounds p(x) = 1 - 4e-8 to 1.

    >>> import numpy as np
    >>> l = np.array([[-3.0, 0.5, 2.0]], "float32")
    >>> x = np.array([[0.0, 1.0, 0.25]], "float32")
    >>> fast = BernoulliLogitsLikelihood(event_ndims=1)(l, x)["log_prob"]
    >>> slow = BernoulliLikelihood(event_ndims=1)(l, x)["log_prob"]
    >>> bool(abs(float(fast[0] - slow[0])) < 1e-6)
    True
    """

    def call(self, params, x=None):
        if x is None:
            return super().call(params)
        md = math_dtype(self)
        logits = tf.cast(params, md)
        x = self.prepare_data(tf.convert_to_tensor(x), md)
        if self.validate_args:
            with tf.control_dependencies(self.check_data(x)):
                x = tf.identity(x)
        x = self._broadcast_particles(logits, x)
        return {"mean": tf.sigmoid(logits),
                "log_prob": sum_rightmost(x * logits - tf.nn.softplus(logits), self.event_ndims)}


def likelihood_head(likelihood: str, data_shape, gaussian_variance: str, gaussian_scale: float):
    """The decoder's likelihood layer and how many parameters it takes per data value.

    The head does not check its data: the model's ``check_input`` (``ImageLatentModel``)
    checks every batch once, in one pass, before the head sees it."""
    check_choice("likelihood", likelihood, LIKELIHOODS)
    if likelihood == "bernoulli":
        return BernoulliLogitsLikelihood(event_ndims=len(data_shape), validate_args=False,
                                        name="likelihood"), 1
    check_choice("gaussian_variance", gaussian_variance, GAUSSIAN_VARIANCES)
    head = GaussianLikelihood(variance=gaussian_variance, scale=gaussian_scale,
                              event_ndims=len(data_shape), validate_args=False,
                              name="likelihood")
    return head, 2 if gaussian_variance == "per_pixel" else 1


def data_decoder(architecture, hidden_units, conv_filters, activation, data_shape, per_value,
                 name="decoder"):
    """Network from a latent vector to the likelihood parameters of one example."""
    if architecture == "conv":
        return conv_decoder(conv_filters, activation, data_shape, data_shape[-1] * per_value,
                            name=name)
    out_shape = (*data_shape[:-1], data_shape[-1] * per_value)
    net = mlp(list(reversed(hidden_units)), activation, name, flat_size(out_shape))
    net.add(keras.layers.Reshape(out_shape))
    return net


def data_encoder(architecture, hidden_units, conv_filters, activation, name="encoder"):
    """Network from one example to the features of the posterior layer."""
    if architecture == "conv":
        return conv_encoder(conv_filters, activation, name=name)
    return keras.Sequential([keras.layers.Flatten(), *mlp(hidden_units, activation, name).layers],
                            name=name)


def apply_with_particles(network, z):
    """Apply a per-example network to z of shape [batch..., d] with any leading axes."""
    if z.shape.rank == 2:  # [batch, d]: no reshapes (they cost a few ops per training step)
        return network(z)
    lead = tf.shape(z)[:-1]
    out = network(tf.reshape(z, [-1, z.shape[-1]]))
    return tf.reshape(out, tf.concat([lead, tf.shape(out)[1:]], 0))


@register
class VAE(ImageLatentModel):
    r"""Variational autoencoder: Kingma & Welling, "Auto-Encoding Variational Bayes" (2014).

    Generative model $p(z) = N(0, I)$, $p_\theta(x|z)$ Bernoulli (binary or grey-level data in
    [0, 1]) or Gaussian; recognition model $q_\phi(z|x) = N(\mu(x), C(x))$ with C diagonal,
    rank-one precision (Rezende et al. 2014) or full Cholesky. ``fit`` maximizes

    $$\mathcal{L}(x) = E_{q}[\log p_\theta(x|z)] - \beta\, \mathrm{KL}(q_\phi(z|x) \| p(z))$$

    with ``num_samples`` samples per input (one by default); with ``objective="iwae"`` it
    maximizes the importance-weighted bound $\log \frac1k \sum_i p(x, z_i) / q(z_i|x)$ over
    $k$ = ``num_samples`` samples instead (Burda et al. 2016's IWAE); the KL is analytic (estimator B, ``kl_estimator="analytic"``) or
    the Monte Carlo $\log q - \log p$ (estimator A, ``"mc"``); $\beta$ is the posterior layer's
    ``kl_weight`` (``KLAnnealing`` schedules it). ``free_bits`` > 0 (diagonal posterior only)
    replaces each dimension's batch-mean KL by max(free_bits, KL_j) (Kingma et al. 2016).
    ``log_likelihood(x, num_samples=K)`` gives the K-sample importance-weighted bound (Burda
    et al. 2016); ``evaluate`` reports the ELBO, its KL and reconstruction parts and the
    number of active units (posterior collapse shows as few active units).

    Args:
        input_shape: tuple. Shape of one example, e.g. ``(28, 28, 1)``.
        latent_dim: int. Dimension of z.
        covariance: str. ``"diag"``, ``"lowrank"`` or ``"full"``.
        likelihood: str. ``"bernoulli"`` or ``"gaussian"``.
        architecture: str. ``"mlp"`` or ``"conv"`` (images with sides divisible by 4).
        hidden_units: tuple of int. MLP encoder widths (the decoder mirrors them).
        conv_filters: tuple of int. Convolutional encoder filters (the decoder mirrors them).
        activation: str. Hidden activation.
        kl_estimator: str. ``"analytic"`` (estimator B) or ``"mc"`` (estimator A).
        kl_weight: float. Initial KL weight beta.
        free_bits: float. Free-bits floor per latent dimension in nats (0 disables).
        gaussian_variance: str. ``"fixed"``, ``"learned"`` or ``"per_pixel"``.
        gaussian_scale: float. Fixed or initial Gaussian standard deviation.
        objective: str. ``"elbo"`` or ``"iwae"`` (the training bound).
        num_samples: int. Samples of z per input in training (Burda et al.'s k).
        posterior_flow: str or None. ``"iaf"`` (Kingma et al. 2016) or ``"planar"``
            (Rezende & Mohamed 2015): z_0 ~ q_0 passes through ``flow_steps`` flow steps
            conditioned on the encoder's features; log q(z_K|x) = log q_0(z_0|x) - sum_k
            log|det J_k| (the IWAE weights use it), and the KL term becomes the single-sample
            Monte Carlo log q(z_K|x) - log p(z_K) whatever ``kl_estimator`` says.
        flow_steps: int. Number K of flow steps (with ``posterior_flow``).
        scale_activation: str. ``"softplus"`` (default) or ``"exp"``: the diagonal posterior's
            scale as exp(raw / 2), raw the predicted log-variance, as Kingma & Welling 2014 and
            Burda et al. 2016 parametrize it (``GaussianPosterior``).
        min_scale: float. Floor added to the posterior's scales (precision diagonals) after
            the activation, a guard against collapse (default 1e-4); 0 leaves the paper's
            exp(raw / 2) as it is.
        seed: int or None. Seed of the posterior's sampler.

    Example:

    >>> import numpy as np
    >>> model = VAE(input_shape=(8,), latent_dim=2, hidden_units=(16,), seed=0)
    >>> model.compile(optimizer="adam")
    >>> x = (np.random.RandomState(0).rand(64, 8) > 0.5).astype("float32")
    >>> _ = model.fit(x, batch_size=32, epochs=1, verbose=0)
    >>> sorted(model.evaluate(x, verbose=0, return_dict=True))
    ['active_units', 'elbo', 'kl', 'loss', 'reconstruction']
    """

    def __init__(
        self,
        input_shape=(28, 28, 1),
        latent_dim: int = 20,
        covariance: str = "diag",
        likelihood: str = "bernoulli",
        architecture: str = "mlp",
        hidden_units=(500,),
        conv_filters=(32, 64),
        activation: str = "relu",
        kl_estimator: str = "analytic",
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        gaussian_variance: str = "learned",
        gaussian_scale: float = 1.0,
        objective: str = "elbo",
        num_samples: int = 1,
        posterior_flow: str | None = None,
        flow_steps: int = 2,
        seed: int | None = None,
        scale_activation: str = "softplus",
        min_scale: float = 1e-4,
        **kwargs,
    ):
        super().__init__(input_shape, active_units_dim=latent_dim, **kwargs)
        check_positive_int("latent_dim", latent_dim)
        check_choice("architecture", architecture, ARCHITECTURES)
        check_positive("free_bits", free_bits, allow_zero=True)
        check_choice("objective", objective, OBJECTIVES)
        check_positive_int("num_samples", num_samples)
        if posterior_flow is not None:
            check_choice("posterior_flow", posterior_flow, FLOWS)
            check_positive_int("flow_steps", flow_steps)
            if free_bits > 0:
                raise ValueError("`free_bits` needs the analytic per-dimension KL of a Gaussian "
                                 "posterior; with `posterior_flow` the KL is a Monte Carlo "
                                 "estimate.")
        if free_bits > 0 and objective == "iwae":
            raise ValueError("`free_bits` applies to the ELBO's KL term; objective='iwae' has "
                             "none.")
        if free_bits > 0 and covariance != "diag":
            raise ValueError(
                f"`free_bits` needs a KL that splits over dimensions: covariance='diag', got "
                f"covariance={covariance!r}."
            )
        self.latent_dim = latent_dim
        self.covariance = covariance
        self.likelihood = likelihood
        self.architecture = architecture
        self.hidden_units = tuple(hidden_units)
        self.conv_filters = tuple(conv_filters)
        self.activation = activation
        self.kl_estimator = kl_estimator
        self.kl_weight = kl_weight
        self.free_bits = float(free_bits)
        self.gaussian_variance = gaussian_variance
        self.gaussian_scale = gaussian_scale
        self.objective = objective
        self.num_samples = int(num_samples)
        self.seed = seed
        self.head, per_value = likelihood_head(likelihood, self.data_shape, gaussian_variance,
                                               gaussian_scale)
        self.encoder = data_encoder(architecture, self.hidden_units, self.conv_filters,
                                    activation)
        self.posterior = GaussianPosterior(
            latent_dim, covariance=covariance, kl=kl_estimator, kl_weight=kl_weight,
            add_kl_loss=False, seed=seed, scale_activation=scale_activation,
            min_scale=min_scale, name="posterior",
        )
        self.scale_activation = scale_activation
        self.min_scale = float(min_scale)
        self.posterior_flow = posterior_flow
        self.flow_steps = int(flow_steps)
        self.flow = None
        if posterior_flow is not None:
            width = int(self.encoder(tf.zeros((1, *self.data_shape))).shape[-1])
            self.flow = PosteriorFlow(latent_dim, context_size=width, kind=posterior_flow,
                                      steps=self.flow_steps, name="posterior_flow")
            self.export_adapter = "latent_flow"  # its encode runs the flow
        self.decoder = data_decoder(architecture, self.hidden_units, self.conv_filters,
                                    activation, self.data_shape, per_value)
        self._build_by_calling(tf.zeros((1, *self.data_shape)))  # every weight, now

    # ------------------------------------------------------------------ pieces
    def encode(self, x):
        """Posterior parameters of q(z|x): ``loc`` and the family's scale parameters."""
        return self.posterior.posterior_parameters(self.encoder(x))

    def decode(self, z):
        """Likelihood of x given z ([batch..., latent_dim]): ``mean`` (and ``scale``) and
        the raw decoder output ``params`` (Bernoulli logits or Gaussian means/scales)."""
        params = apply_with_particles(self.decoder, tf.convert_to_tensor(z))
        return {**self.head(params), "params": params}

    def posterior_mean_latent(self, x):
        return self.encode(x)["loc"]

    def prior_sample(self, n: int, seed=None):
        return tf.random.stateless_normal([n, self.latent_dim], self.stateless_seed(seed))

    def sample_posterior(self, features, **kwargs):
        """The posterior layer's sample (``kwargs``: ``noise``, ``num_samples``), pushed
        through the posterior flow when there is one: then ``z`` is z_K, ``log_q`` includes
        the flow's log-determinant, ``log_prior`` is log N(z_K; 0, I) and ``kl`` is their
        single-sample difference (per particle)."""
        posterior = self.posterior(features, **kwargs)
        if self.flow is None:
            return posterior
        out = self.flow(posterior["z"], features)
        z = tf.cast(out["z"], posterior["z"].dtype)
        log_q = posterior["log_q"] - tf.cast(out["log_det"], posterior["log_q"].dtype)
        log_prior = (-0.5 * tf.reduce_sum(tf.square(z), -1)
                     - 0.5 * self.latent_dim * tf.math.log(tf.constant(2.0 * 3.141592653589793,
                                                                       z.dtype)))
        return {**posterior, "z": z, "log_q": log_q, "log_prior": log_prior,
                "kl": log_q - log_prior}

    # ------------------------------------------------------------------ bounds
    def kl_objective(self, posterior):
        """The KL term of the training objective, with free bits when asked."""
        if self.free_bits == 0:
            return posterior["kl"]
        loc, scale = posterior["loc"], posterior["scale"]
        per_dim = 0.5 * (tf.square(scale) + tf.square(loc) - 1.0) - tf.math.log(scale)
        floored = tf.maximum(tf.reduce_mean(per_dim, 0), self.free_bits)
        return tf.fill(tf.shape(per_dim)[:1], tf.reduce_sum(floored))

    def elbo_terms(self, x, training=None):
        k = self.num_samples
        features = self.encoder(x)
        if k == 1 and self.objective == "elbo":
            posterior = self.sample_posterior(features)
            reconstruction = self.head(apply_with_particles(self.decoder, posterior["z"]),
                                       x)["log_prob"]
            kl = posterior["kl"]
            weight = tf.cast(self.posterior.kl_weight, reconstruction.dtype)
            objective = weight * self.kl_objective(posterior) - reconstruction
        else:  # k samples per input: [batch, k] terms
            posterior = self.sample_posterior(features, num_samples=k)
            log_px = self.head(apply_with_particles(self.decoder, posterior["z"]),
                               x)["log_prob"]
            reconstruction = tf.reduce_mean(log_px, 1)
            kl = posterior["kl"]
            if kl.shape.rank == 2:  # Monte Carlo KL: one per sample
                kl = tf.reduce_mean(kl, 1)
            if self.objective == "iwae":
                log_w = log_px + tf.cast(posterior["log_prior"] - posterior["log_q"],
                                         log_px.dtype)
                objective = -(tf.reduce_logsumexp(log_w, 1)
                              - tf.math.log(tf.cast(k, log_w.dtype)))
            else:
                weight = tf.cast(self.posterior.kl_weight, reconstruction.dtype)
                objective = weight * self.kl_objective({**posterior, "kl": kl}) - reconstruction
        return {
            "elbo": reconstruction - kl,
            "reconstruction": reconstruction,
            "kl": kl,
            "objective": objective,
            "posterior_loc": posterior["loc"],
        }

    def log_weights(self, x, num_samples, seed):
        features = self.encoder(x)
        noise = tf.random.stateless_normal(
            [tf.shape(x)[0], num_samples, self.latent_dim], seed, dtype=features.dtype)
        posterior = self.sample_posterior(features, noise=noise, num_samples=num_samples)
        log_px = self.head(apply_with_particles(self.decoder, posterior["z"]), x)["log_prob"]
        return log_px + posterior["log_prior"] - posterior["log_q"]

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.data_shape,
            latent_dim=self.latent_dim,
            covariance=self.covariance,
            likelihood=self.likelihood,
            architecture=self.architecture,
            hidden_units=self.hidden_units,
            conv_filters=self.conv_filters,
            activation=self.activation,
            kl_estimator=self.kl_estimator,
            kl_weight=self.kl_weight,
            free_bits=self.free_bits,
            gaussian_variance=self.gaussian_variance,
            gaussian_scale=self.gaussian_scale,
            objective=self.objective,
            num_samples=self.num_samples,
            posterior_flow=self.posterior_flow,
            flow_steps=self.flow_steps,
            seed=self.seed,
            scale_activation=self.scale_activation,
            min_scale=self.min_scale,
        )
        return config


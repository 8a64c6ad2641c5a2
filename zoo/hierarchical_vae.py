"""VAE and IWAE with a chain of Gaussian stochastic layers (Burda et al. 2016's two-layer model)."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from zoo.base import ImageLatentModel
from zoo.bounds import active_units
from zoo.layers import GaussianPosterior
from zoo.layers.common import check_choice, check_positive_int, register, standard_normal
from zoo.networks import mlp
from zoo.vae import OBJECTIVES, apply_with_particles, data_decoder, data_encoder, likelihood_head

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(h, loc, scale):
    """log N(h; loc, diag(scale^2)) summed over the last axis."""
    return (-0.5 * tf.reduce_sum(tf.square((h - loc) / scale), -1)
            - tf.reduce_sum(tf.math.log(scale), -1) - 0.5 * h.shape[-1] * LOG_2PI)


def _widths(hidden_units, layers: int) -> tuple:
    """``hidden_units`` as one tuple of positive widths per stochastic layer."""
    example = "e.g. [[200, 200], [100, 100]] for two layers"
    try:
        widths = tuple(tuple(u) for u in hidden_units)
    except TypeError:
        raise ValueError(f"`hidden_units` must hold one list of widths per stochastic layer "
                         f"({layers}), {example}; got {hidden_units!r}.") from None
    if len(widths) != layers:
        raise ValueError(f"`hidden_units` must hold one list of widths per stochastic layer: "
                         f"{layers} for latent_dims of length {layers}, got {len(widths)} "
                         f"({hidden_units!r}; {example}).")
    for layer in widths:
        for u in layer:
            check_positive_int("hidden_units", u)
    return widths


@register
class HierarchicalVAE(ImageLatentModel):
    r"""VAE / IWAE with L Gaussian stochastic layers in a chain: Burda, Grosse & Salakhutdinov,
    "Importance Weighted Autoencoders" (2016), Section 5.1 and Appendix C.

    Generative model, $h_0 = x$:

    $$p(h_L) = N(0, I),\quad p(h_l \mid h_{l+1}) = N(\mu_l(h_{l+1}),
    \mathrm{diag}\,\sigma_l^2(h_{l+1})),\quad p(x \mid h_1)\ \text{Bernoulli (or Gaussian)};$$

    recognition model $q(h_1, \dots, h_L \mid x) = \prod_l q(h_l \mid h_{l-1})$, each a diagonal
    Gaussian whose mean and variance an MLP of $h_{l-1}$ predicts. With $k$ = ``num_samples``
    draws $h^{(i)} \sim q$ and $\log w_i = \log p(x, h^{(i)}) - \log q(h^{(i)} \mid x)$, ``fit``
    maximizes the ELBO $\frac1k \sum_i \log w_i$ (``objective="elbo"``, Burda's VAE: the Monte
    Carlo form of their Eqn. 7, no analytic KL) or the IWAE bound
    $\log \frac1k \sum_i w_i$ (``objective="iwae"``, Eqn. 14). ``log_likelihood(x, K)`` is the
    K-sample bound the paper reports with K = 5000; ``evaluate`` reports the ELBO, its
    reconstruction term $E_q \log p(x|h_1)$, the rest as ``kl`` ($E_q[\log q(h|x) - \log
    p(h)]$) and the active units of every layer together (``evaluation`` adds them per layer,
    as the paper's "16+5").

    The MLP of $q(h_l \mid h_{l-1})$ has the widths ``hidden_units[l-1]``; the generative MLP of
    $p(h_{l-1} \mid h_l)$ (of $p(x \mid h_1)$ for l = 1) mirrors them. Burda's two-layer MNIST
    model is ``latent_dims=(100, 50), hidden_units=((200, 200), (100, 100)),
    activation="tanh"``: q(h1|x) 784-200-200-(100), q(h2|h1) 100-100-100-(50), p(h1|h2)
    50-100-100-(100), p(x|h1) 100-200-200-784.

    ``decode`` takes the generative noise, ``[xi_1, ..., xi_L]`` standard normal:
    $h_L = \xi_L$, $h_l = \mu_l(h_{l+1}) + \sigma_l(h_{l+1}) \xi_l$, the likelihood of x given
    $h_1$ (what the exporter's ``decode`` and ``sample`` signatures run); ``decode_h1`` the
    likelihood given $h_1$ itself; ``reconstruct`` decodes the mean path
    $h_1 = E_q[h_1|x]$.

    Args:
        input_shape: tuple. Shape of one example, e.g. ``(28, 28, 1)``.
        latent_dims: tuple of int. Sizes of h_1 (nearest the data) ... h_L.
        hidden_units: tuple of tuples of int. The widths of q(h_l | h_{l-1})'s MLP, one tuple
            per stochastic layer; the generative MLPs mirror them.
        activation: str. Hidden activation.
        likelihood: str. ``"bernoulli"`` or ``"gaussian"``.
        gaussian_variance: str. For ``likelihood="gaussian"``: ``"fixed"``, ``"learned"`` or
            ``"per_pixel"``.
        scale_activation: str. ``"exp"`` (the paper's: every network's raw scale output is a
            log-variance, sigma = exp(raw / 2)) or ``"softplus"``; for q and p(h_l|h_{l+1}).
        min_scale: float. Floor added to every Gaussian's scale (q and p(h_l|h_{l+1})) after
            the activation, a guard against collapse (default 1e-4); 0 leaves the paper's
            exp(raw / 2) as it is (Burda et al.'s code has no floor).
        objective: str. ``"elbo"`` or ``"iwae"`` (the training bound).
        num_samples: int. Samples k per input in training (Burda et al.'s k).
        seed: int or None. Seed of the samplers (layer l draws with seed + l).

    Example:

    >>> import numpy as np
    >>> model = HierarchicalVAE(input_shape=(8,), latent_dims=(4, 2),
    ...                         hidden_units=((16,), (8,)), objective="iwae", num_samples=5,
    ...                         seed=0)
    >>> model.compile(optimizer="adam")
    >>> x = (np.random.RandomState(0).rand(64, 8) > 0.5).astype("float32")
    >>> _ = model.fit(x, batch_size=32, epochs=1, verbose=0)
    >>> model.log_likelihood(x[:4], num_samples=10).log_likelihood.shape
    (4,)
    """

    export_adapter = "hierarchical_vae"

    def __init__(
        self,
        input_shape=(28, 28, 1),
        latent_dims=(100, 50),
        hidden_units=((200, 200), (100, 100)),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        gaussian_variance: str = "learned",
        scale_activation: str = "exp",
        min_scale: float = 1e-4,
        objective: str = "elbo",
        num_samples: int = 1,
        seed: int | None = None,
        **kwargs,
    ):
        try:
            latent_dims = tuple(latent_dims)
        except TypeError:
            raise ValueError(f"`latent_dims` must be a list of layer sizes, e.g. [100, 50]; "
                             f"got {latent_dims!r}.") from None
        if not latent_dims:
            raise ValueError("`latent_dims` must name at least one stochastic layer.")
        for d in latent_dims:
            check_positive_int("latent_dims", d)
        super().__init__(input_shape, active_units_dim=sum(latent_dims), **kwargs)
        check_choice("objective", objective, OBJECTIVES)
        check_positive_int("num_samples", num_samples)
        self.latent_dims = latent_dims
        self.hidden_units = _widths(hidden_units, len(latent_dims))
        self.activation = activation
        self.likelihood = likelihood
        self.gaussian_variance = gaussian_variance
        self.scale_activation = scale_activation
        self.min_scale = float(min_scale)
        self.objective = objective
        self.num_samples = int(num_samples)
        self.seed = seed
        self.head, per_value = likelihood_head(likelihood, self.data_shape, gaussian_variance,
                                               1.0)
        layers = range(len(latent_dims))

        def gaussian(d, name, l):
            return GaussianPosterior(d, kl="mc", add_kl_loss=False,
                                     scale_activation=scale_activation,
                                     min_scale=self.min_scale,
                                     seed=None if seed is None else seed + l, name=name)

        # Recognition: q(h_1 | x) from an MLP of x, q(h_l | h_{l-1}) from an MLP of h_{l-1}.
        self.encoders = [data_encoder("mlp", self.hidden_units[0], (), activation, name="q_1")]
        self.encoders += [mlp(self.hidden_units[l], activation, f"q_{l + 1}")
                          for l in layers if l > 0]
        self.posteriors = [gaussian(d, f"posterior_{l + 1}", l)
                           for l, d in enumerate(latent_dims)]
        # Generative: p(h_l | h_{l+1}) for l < L (networks mirror q(h_{l+1} | h_l)), p(x | h_1).
        self.prior_networks = [mlp(tuple(reversed(self.hidden_units[l + 1])), activation,
                                   f"p_{l + 1}") for l in layers if l < len(latent_dims) - 1]
        self.conditional_priors = [gaussian(latent_dims[l], f"prior_{l + 1}", l)
                                   for l in layers if l < len(latent_dims) - 1]
        for l, layer in enumerate(self.conditional_priors):  # built here: called piecewise
            width = self.prior_networks[l](tf.zeros((1, latent_dims[l + 1]))).shape[-1]
            layer.build((None, width))
        self.decoder = data_decoder("mlp", self.hidden_units[0], (), activation, self.data_shape,
                                    per_value, name="p_x")
        self._build_by_calling(tf.zeros((1, *self.data_shape)))  # every weight, now

    # ------------------------------------------------------------------ generative pieces
    def conditional_prior(self, l: int, h_above):
        """``loc`` and ``scale`` of p(h_{l+1} | h_{l+2}) (0-based l) given h_{l+2}."""
        features = apply_with_particles(self.prior_networks[l], h_above)
        return self.conditional_priors[l].posterior_parameters(features)

    def generate(self, xis):
        """[h_1, ..., h_L] from the generative noise [xi_1, ..., xi_L] (standard normal)."""
        h = tf.convert_to_tensor(xis[-1])
        hs = [h]
        for l in reversed(range(len(self.latent_dims) - 1)):
            p = self.conditional_prior(l, h)
            h = p["loc"] + p["scale"] * tf.cast(xis[l], p["loc"].dtype)
            hs.insert(0, h)
        return hs

    def decode_h1(self, h1):
        """Likelihood of x given h_1 ([batch..., latent_dims[0]]): ``mean`` (and ``scale``)
        and the raw decoder output ``params``."""
        params = apply_with_particles(self.decoder, tf.convert_to_tensor(h1))
        return {**self.head(params), "params": params}

    def decode(self, xis):
        """Likelihood of x from the generative noise of every layer, [xi_1, ..., xi_L]."""
        return self.decode_h1(self.generate(xis)[0])

    def prior_sample(self, n: int, seed=None):
        seed = self.stateless_seed(seed)
        return [tf.random.stateless_normal([n, d], seed + [0, l])
                for l, d in enumerate(self.latent_dims)]

    # ------------------------------------------------------------------ recognition
    def encode(self, x, noises=None):
        """Per layer, ``loc`` and ``scale`` of q(h_l | h_{l-1}) and the draw ``z`` = h_l,
        down the chain from x; ``noises`` (one [batch, d_l] standard normal each) fixes the
        draws, None takes the mean path (h_l = loc_l)."""
        h, out = x, []
        for l in range(len(self.latent_dims)):
            p = self.posteriors[l].posterior_parameters(self.encoders[l](h))
            h = p["loc"] if noises is None else p["loc"] + p["scale"] * noises[l]
            out.append({**p, "z": h})
        return out

    def posterior_mean_latent(self, x):
        return tf.concat([p["loc"] for p in self.encode(x)], -1)

    def reconstruct(self, x):
        return self.decode_h1(self.encode(self.check_input(x))[0]["loc"])["mean"]

    # ------------------------------------------------------------------ bounds
    def draw_noise(self, x, num_samples=None):
        """Standard-normal noise of every layer's posterior, [batch, (k,) d_l], from the
        layers' seed generators."""
        lead = [tf.shape(x)[0]] + ([] if num_samples is None else [num_samples])
        return [standard_normal(tf.concat([lead, [d]], 0), layer.seed_generator)
                for layer, d in zip(self.posteriors, self.latent_dims)]

    def sample_posterior(self, x, noises):
        """h_l ~ q(h_l | h_{l-1}) down the chain with the given noise ([batch, d_l] each, or
        [batch, k, d_l] for k particles): ``hs``, ``log_q`` and ``log_prior`` = log p(h_1, ...,
        h_L) per example (or particle), and the posterior means ``locs``."""
        noises = [tf.convert_to_tensor(n) for n in noises]
        k = None if noises[0].shape.rank == 2 else noises[0].shape[1]
        h, hs, locs, log_q = x, [], [], 0.0
        for l, layer in enumerate(self.posteriors):
            features = self.encoders[l](h) if l == 0 else apply_with_particles(self.encoders[l], h)
            kwargs = {"num_samples": k} if l == 0 and k is not None else {}
            out = layer(features, noise=noises[l], **kwargs)
            h = out["z"]
            hs.append(h)
            locs.append(out["loc"])
            log_q = log_q + out["log_q"]
        log_prior = out["log_prior"]  # log N(h_L; 0, I)
        for l in range(len(self.latent_dims) - 1):
            p = self.conditional_prior(l, hs[l + 1])
            log_prior = log_prior + gaussian_log_prob(hs[l], p["loc"], p["scale"])
        return {"hs": hs, "log_q": log_q, "log_prior": log_prior, "locs": locs}

    def terms_from_noise(self, x, noises):
        """The training terms of ``call`` for the given posterior noise: one sample per
        example with [batch, d_l] noise, k with [batch, k, d_l]."""
        sample = self.sample_posterior(x, noises)
        log_px = self.head(apply_with_particles(self.decoder, sample["hs"][0]), x)["log_prob"]
        kl = sample["log_q"] - sample["log_prior"]
        log_w = log_px - kl
        locs = sample["locs"]
        if log_w.shape.rank == 2:  # k particles: [batch, k]
            k = tf.cast(tf.shape(log_w)[1], log_w.dtype)
            objective = -(tf.reduce_logsumexp(log_w, 1) - tf.math.log(k)
                          if self.objective == "iwae" else tf.reduce_mean(log_w, 1))
            log_px, kl = tf.reduce_mean(log_px, 1), tf.reduce_mean(kl, 1)
            locs = [locs[0]] + [tf.reduce_mean(loc, 1) for loc in locs[1:]]  # E_q[h_l | x]
        else:
            objective = -log_w
        return {"elbo": log_px - kl, "reconstruction": log_px, "kl": kl,
                "objective": objective, "posterior_loc": tf.concat(locs, -1)}

    def elbo_terms(self, x, training=None):
        k = self.num_samples
        one = k == 1 and self.objective == "elbo"
        return self.terms_from_noise(x, self.draw_noise(x, None if one else k))

    def log_weights_from_noise(self, x, noises):
        """[batch, k] log p(x, h) - log q(h | x) for the noise [batch, k, d_l] of every layer."""
        sample = self.sample_posterior(x, noises)
        log_px = self.head(apply_with_particles(self.decoder, sample["hs"][0]), x)["log_prob"]
        return log_px + sample["log_prior"] - sample["log_q"]

    def log_weights(self, x, num_samples, seed):
        dtype = self.posteriors[0].compute_dtype
        noises = [tf.random.stateless_normal([tf.shape(x)[0], num_samples, d],
                                             seed + [0, 1000 * (l + 1)], dtype=dtype)
                  for l, d in enumerate(self.latent_dims)]
        return self.log_weights_from_noise(x, noises)

    # ------------------------------------------------------------------ evaluation
    def active_units_per_layer(self, x, seed: int = 0, batch_size: int = 500,
                               threshold: float = 0.01) -> list:
        """Burda et al.'s active units of each layer: Cov_x(E_q[h_l | h_{l-1}]) > threshold,
        with h_{l-1} drawn from q (one seeded draw per example, as the authors' code does)."""
        means = [[] for _ in self.latent_dims]
        for b, start in enumerate(range(0, len(x), batch_size)):
            xb = self.check_input(x[start:start + batch_size])
            noises = [tf.random.stateless_normal([tf.shape(xb)[0], d], [seed, 1000 * b + l])
                      for l, d in enumerate(self.latent_dims)]
            for l, loc in enumerate(self.sample_posterior(xb, noises)["locs"]):
                means[l].append(np.asarray(loc))
        return [active_units(np.concatenate(m), threshold) for m in means]

    def evaluation(self, x, y, arrays: dict, settings) -> dict:
        report = super().evaluation(x, y, arrays, settings)
        report["active_units_per_layer"] = self.active_units_per_layer(x, seed=settings.seed)
        return report

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=self.data_shape,
            latent_dims=self.latent_dims,
            hidden_units=self.hidden_units,
            activation=self.activation,
            likelihood=self.likelihood,
            gaussian_variance=self.gaussian_variance,
            scale_activation=self.scale_activation,
            min_scale=self.min_scale,
            objective=self.objective,
            num_samples=self.num_samples,
            seed=self.seed,
        )
        return config

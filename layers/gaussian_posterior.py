"""Reparameterized Gaussian posterior q(z|x) with diagonal, rank-one-precision or full covariance."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers.common import (
    assert_finite,
    check_choice,
    check_min_rank,
    check_positive,
    check_positive_int,
    math_dtype,
    register,
    standard_normal,
)

tfd = tfp.distributions

COVARIANCES = ("diag", "lowrank", "full")
KL_ESTIMATORS = ("analytic", "mc")
SCALE_ACTIVATIONS = ("softplus", "exp")


@register
class GaussianPosterior(keras.layers.Layer):
    r"""Maps features to a Gaussian q(z|x) = N(mu, C) and draws z = mu + R eps, C = R R^T.

    Kingma & Welling, "Auto-Encoding Variational Bayes" (2014); Rezende, Mohamed & Wierstra,
    "Stochastic Backpropagation and Approximate Inference in Deep Generative Models" (2014).

    Covariance families:

    - ``"diag"``: $C = \mathrm{diag}(\sigma^2)$.
    - ``"lowrank"``: Rezende's rank-one precision $C^{-1} = D + u u^\top$ with the O(d) factor
      $R = D^{-1/2} - \frac{1 - \sqrt{\eta}}{u^\top D^{-1} u} D^{-1} u u^\top D^{-1/2}$,
      $\eta = 1 / (u^\top D^{-1} u + 1)$ and $\log\det C = \log\eta - \log\det D$.
    - ``"full"``: $C = L L^\top$ with $L$ lower triangular, positive diagonal.

    The KL to the prior $N(m, \mathrm{diag}(s^2))$ (standard normal unless ``prior_loc`` /
    ``prior_scale`` are passed to ``call``) is analytic (estimator B) or the Monte Carlo
    average of $\log q(z) - \log p(z)$ over the drawn particles (estimator A), and is added as a
    loss times ``kl_weight``, a non-trainable variable that ``KLAnnealing`` can schedule.

    ``call`` returns a dict of tensors: ``z`` (``[batch..., d]``, or ``[batch..., K, d]`` with
    ``K = num_samples``), ``loc``, the family's parameters (``scale``; ``precision_diag`` and
    ``precision_factor``; or ``scale_tril``), ``log_q`` and ``log_prior`` of each sample (for
    importance-weighted bounds) and the per-example ``kl``.

    Args:
        latent_dim: int. Dimension d of z.
        covariance: str. ``"diag"``, ``"lowrank"`` or ``"full"``.
        num_samples: int or None. Particles K per input; None draws one and omits the K axis.
        kl: str. ``"analytic"`` or ``"mc"``.
        kl_weight: float. Initial multiplier of the KL loss.
        add_kl_loss: bool. Whether ``call`` adds ``kl_weight * mean(kl)`` with ``add_loss``.
        min_scale: float. Floor added to scales (and precision diagonals) after the activation.
        scale_activation: str. How the diagonal family's scale comes from its raw output:
            ``"softplus"`` (scale = softplus(raw) + min_scale, the default) or ``"exp"`` (raw is
            the log-variance, scale = exp(raw / 2) + min_scale, as Kingma & Welling 2014 and
            Burda et al. 2016 write it). For ``covariance="lowrank"`` it makes the precision
            diagonal D: softplus(raw) + min_scale, or exp(raw) + min_scale (raw = log D).
            ``"exp"`` is not defined for ``covariance="full"``.
        validate_args: bool. Check features for NaN/Inf (skipped under XLA).
        seed: int or None. Seed of the layer's ``SeedGenerator``.

    Example:

    >>> import numpy as np
    >>> layer = GaussianPosterior(2, covariance="lowrank", num_samples=3, seed=0)
    >>> out = layer(np.ones((4, 5), "float32"))
    >>> tuple(out["z"].shape), tuple(out["kl"].shape)
    ((4, 3, 2), (4,))
    """

    def __init__(
        self,
        latent_dim: int,
        covariance: str = "diag",
        num_samples: int | None = None,
        kl: str = "analytic",
        kl_weight: float = 1.0,
        add_kl_loss: bool = True,
        min_scale: float = 1e-4,
        validate_args: bool = True,
        seed: int | None = None,
        scale_activation: str = "softplus",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("latent_dim", latent_dim)
        check_choice("covariance", covariance, COVARIANCES)
        check_positive_int("num_samples", num_samples, allow_none=True)
        check_choice("kl", kl, KL_ESTIMATORS)
        check_positive("kl_weight", kl_weight, allow_zero=True)
        check_positive("min_scale", min_scale, allow_zero=True)
        check_choice("scale_activation", scale_activation, SCALE_ACTIVATIONS)
        if scale_activation != "softplus" and covariance == "full":
            raise ValueError(
                f"scale_activation={scale_activation!r} is defined for covariance='diag' (raw = "
                f"log-variance) and 'lowrank' (raw = log of the precision diagonal); "
                f"covariance='full' takes 'softplus'.")
        self.scale_activation = scale_activation
        self.latent_dim = latent_dim
        self.covariance = covariance
        self.num_samples = num_samples
        self.kl = kl
        self.initial_kl_weight = float(kl_weight)
        self.add_kl_loss = add_kl_loss
        self.min_scale = float(min_scale)
        self.validate_args = validate_args
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        d = latent_dim
        dense = dict(dtype=self.dtype_policy)
        self.loc_dense = keras.layers.Dense(d, name="loc", **dense)
        if covariance == "diag":
            self.param_denses = [keras.layers.Dense(d, name="raw_scale", **dense)]
        elif covariance == "lowrank":
            self.param_denses = [
                keras.layers.Dense(d, name="raw_precision_diag", **dense),
                keras.layers.Dense(d, name="precision_factor", **dense),
            ]
        else:
            self.param_denses = [keras.layers.Dense(d * (d + 1) // 2, name="raw_tril", **dense)]

    def build(self, input_shape):
        check_min_rank("features", input_shape, 2)
        for layer in [self.loc_dense, *self.param_denses]:
            layer.build(input_shape)
        self.kl_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_kl_weight),
            trainable=False,
            name="kl_weight",
            dtype="float32",
        )

    # ----------------------------------------------------------------------------- params
    def posterior_parameters(self, features):
        """The family's parameters as a dict (``loc`` plus ``scale`` / precision / tril)."""
        md = math_dtype(self)
        loc = tf.cast(self.loc_dense(features), md)
        raws = [tf.cast(layer(features), md) for layer in self.param_denses]
        if self.covariance == "diag":
            positive = (tf.exp(0.5 * raws[0]) if self.scale_activation == "exp"
                        else tf.nn.softplus(raws[0]))
            return {"loc": loc, "scale": positive + self.min_scale}
        if self.covariance == "lowrank":
            return {
                "loc": loc,
                "precision_diag": (tf.exp(raws[0]) if self.scale_activation == "exp"
                                   else tf.nn.softplus(raws[0])) + self.min_scale,
                "precision_factor": raws[1],
            }
        # Diagonal by a masked sum, not diag_part/set_diag: those are Flex ops in TFLite, and
        # export/ traces this method into encoders.
        tril = tfp.math.fill_triangular(raws[0])
        eye = tf.eye(self.latent_dim, dtype=tril.dtype)
        diag = tf.nn.softplus(tf.reduce_sum(tril * eye, -1)) + self.min_scale
        return {"loc": loc, "scale_tril": tril * (1.0 - eye) + eye * diag[..., None, :]}

    # ----------------------------------------------------------------------------- call
    def call(self, features, noise=None, prior_loc=None, prior_scale=None, num_samples=None):
        if self.validate_args:
            with tf.control_dependencies([assert_finite(features, "features")]):
                features = tf.identity(features)
        md = math_dtype(self)
        params = self.posterior_parameters(features)
        k = self.num_samples if num_samples is None else num_samples
        batch_shape = tf.shape(params["loc"])[:-1]
        d = self.latent_dim
        if noise is None:
            sample_shape = tf.concat([batch_shape, [k, d] if k is not None else [d]], 0)
            noise = standard_normal(sample_shape, self.seed_generator, md)
        else:
            noise = tf.cast(noise, md)
            want = 2 if k is None else 3
            if noise.shape.rank is not None and noise.shape.rank < want:
                raise ValueError(
                    f"`noise` must have shape [batch..., {'K, ' if k else ''}{d}], got "
                    f"{tuple(noise.shape)}."
                )
        z, log_q, diag_cov, log_det_cov = family_sample(self.covariance, params, noise, k)
        prior = _standard_prior(prior_loc, prior_scale, params["loc"], md, k is not None)
        log_prior = tf.reduce_sum(prior.log_prob(z), -1)
        if self.kl == "analytic":
            kl = gaussian_kl_to_diag(params["loc"], diag_cov, log_det_cov, prior_loc, prior_scale)
        else:
            diff = log_q - log_prior
            kl = tf.reduce_mean(diff, -1) if k is not None else diff
        if self.add_kl_loss:
            self.add_loss(tf.cast(self.kl_weight, md) * tf.reduce_mean(kl))
        return {**params, "z": z, "log_q": log_q, "log_prior": log_prior, "kl": kl}

    def compute_output_spec(self, features, noise=None, prior_loc=None, prior_scale=None,
                            num_samples=None):
        batch = tuple(features.shape[:-1])
        d = self.latent_dim
        k = self.num_samples if num_samples is None else num_samples
        md = math_dtype(self)
        spec = lambda shape: keras.KerasTensor(shape, dtype=md)  # noqa: E731
        sample_batch = batch + ((k,) if k is not None else ())
        out = {
            "loc": spec(batch + (d,)),
            "z": spec(sample_batch + (d,)),
            "log_q": spec(sample_batch),
            "log_prior": spec(sample_batch),
            "kl": spec(batch),
        }
        if self.covariance == "diag":
            out["scale"] = spec(batch + (d,))
        elif self.covariance == "lowrank":
            out["precision_diag"] = spec(batch + (d,))
            out["precision_factor"] = spec(batch + (d,))
        else:
            out["scale_tril"] = spec(batch + (d, d))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim,
            covariance=self.covariance,
            num_samples=self.num_samples,
            kl=self.kl,
            kl_weight=self.initial_kl_weight,
            add_kl_loss=self.add_kl_loss,
            min_scale=self.min_scale,
            validate_args=self.validate_args,
            seed=self.seed,
            scale_activation=self.scale_activation,
        )
        return config


# --------------------------------------------------------------------------------- math
def diag_log_q(noise, scale):
    """log N(z; mu, diag s^2) at z = mu + s eps from eps (``noise``) and s (``scale``),
    summed over the last axis, in closed form: the same value and total derivatives as
    TFP's MultivariateNormalDiag(...).log_prob(z), whose broadcast_to has a gradient that
    XLA cannot compile inside a tf.scan (the DKF/DMM time loop)."""
    d = noise.shape[-1]
    return (-0.5 * tf.reduce_sum(tf.square(noise), -1)
            - tf.reduce_sum(tf.math.log(scale), -1)
            - 0.5 * (d if d is not None else tf.cast(tf.shape(noise)[-1], noise.dtype))
            * math.log(2.0 * math.pi))


def family_sample(covariance: str, params: dict, noise, k):
    """z = mu + R eps for a family; returns (z, log q(z), diag(C), log det C).

    ``noise`` is ``[batch..., d]`` or, when ``k`` is not None, ``[batch..., K, d]``.
    """
    expand = (lambda t: tf.expand_dims(t, -2)) if k is not None else (lambda t: t)
    loc = params["loc"]
    if covariance == "diag":
        scale = params["scale"]
        z = expand(loc) + expand(scale) * noise
        return (z, diag_log_q(noise, expand(scale)), tf.square(scale),
                2.0 * tf.reduce_sum(tf.math.log(scale), -1))
    if covariance == "full":
        tril = params["scale_tril"]
        tril_k = tf.expand_dims(tril, -3) if k is not None else tril
        z = expand(loc) + tf.linalg.matvec(tril_k, noise)
        log_q = tfd.MultivariateNormalTriL(expand(loc), tril_k).log_prob(z)
        diag_cov = tf.reduce_sum(tf.square(tril), -1)
        log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(tril)), -1)
        return z, log_q, diag_cov, log_det
    # Rank-one precision C^-1 = D + u u^T, all O(d).
    prec, u = params["precision_diag"], params["precision_factor"]
    inv_d = 1.0 / prec
    s = tf.reduce_sum(tf.square(u) * inv_d, -1, keepdims=True)  # u^T D^-1 u
    eta = 1.0 / (1.0 + s)
    # (1 - sqrt(eta)) / s written without the 0/0 at u = 0.
    coef = 1.0 / ((1.0 + s) * (1.0 + tf.sqrt(eta)))
    inv_sqrt_d = tf.sqrt(inv_d)
    proj = tf.reduce_sum(expand(u * inv_sqrt_d) * noise, -1, keepdims=True)
    z = expand(loc) + expand(inv_sqrt_d) * noise - expand(coef * inv_d * u) * proj
    log_det = tf.squeeze(tf.math.log(eta), -1) - tf.reduce_sum(tf.math.log(prec), -1)
    diag_cov = inv_d - tf.square(inv_d * u) / (1.0 + s)
    log_q = lowrank_log_prob(z, expand(loc), expand(prec), expand(u), expand(log_det[..., None]))
    return z, log_q, diag_cov, log_det


def lowrank_log_prob(z, loc, precision_diag, precision_factor, log_det_cov):
    """log N(z; loc, (D + u u^T)^-1) in O(d); ``log_det_cov`` keeps a trailing axis of 1."""
    diff = z - loc
    d = tf.cast(tf.shape(z)[-1], z.dtype)
    quad = tf.reduce_sum(precision_diag * tf.square(diff), -1) + tf.square(
        tf.reduce_sum(precision_factor * diff, -1)
    )
    return -0.5 * (d * math.log(2.0 * math.pi) + tf.squeeze(log_det_cov, -1) + quad)


def gaussian_kl_to_diag(loc, diag_cov, log_det_cov, prior_loc=None, prior_scale=None):
    """KL(N(loc, C) || N(m, diag(s^2))) from diag(C) and log det C; standard normal by default."""
    d = tf.cast(tf.shape(loc)[-1], loc.dtype)
    if prior_loc is None and prior_scale is None:
        return 0.5 * (tf.reduce_sum(diag_cov + tf.square(loc), -1) - d - log_det_cov)
    m = tf.zeros_like(loc) if prior_loc is None else tf.cast(prior_loc, loc.dtype)
    s = tf.ones_like(loc) if prior_scale is None else tf.cast(prior_scale, loc.dtype)
    inv_var = 1.0 / tf.square(s)
    return 0.5 * (
        tf.reduce_sum(diag_cov * inv_var + tf.square(loc - m) * inv_var + 2.0 * tf.math.log(s), -1)
        - d
        - log_det_cov
    )


def _standard_prior(prior_loc, prior_scale, loc, dtype, has_k):
    expand = (lambda t: tf.expand_dims(t, -2)) if has_k else (lambda t: t)
    m = tf.zeros_like(loc) if prior_loc is None else tf.cast(prior_loc, dtype)
    s = tf.ones_like(loc) if prior_scale is None else tf.cast(prior_scale, dtype)
    return tfd.Normal(expand(m), expand(s))

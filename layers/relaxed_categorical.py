"""Relaxed one-hot categorical (Gumbel-softmax / Concrete) latent layer."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import (
    assert_finite,
    check_choice,
    check_min_rank,
    check_positive,
    check_positive_int,
    math_dtype,
    register,
    standard_uniform,
)
from zoo.layers.sampling import gumbel

PRIORS = ("uniform", "learned")


@register
class RelaxedCategorical(keras.layers.Layer):
    r"""N categorical latents with K classes, sampled with the Gumbel-softmax relaxation.

    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax" (2017); Maddison,
    Mnih & Teh, "The Concrete Distribution" (2017).

    Features map to logits $\mu$ of shape ``[batch..., N, K]``. With $g_i = -\log(-\log u_i)$,
    $u_i \sim U(0, 1)$, a relaxed sample is $y = \mathrm{softmax}((\log\pi + g) / \tau)$; a hard
    sample is $\mathrm{one\_hot}(\arg\max_i(\log\pi_i + g_i))$, an exact draw from
    $\mathrm{Cat}(\pi)$. During training (``training=True``) samples are relaxed, or with
    ``straight_through=True`` hard in the forward pass with the relaxed gradient; at inference
    they are hard when ``hard_at_inference``. The temperature $\tau$ is a non-trainable variable
    named ``temperature`` that ``TemperatureAnnealing`` updates during ``fit``. The KL is that of
    the discrete distributions, $\sum_n \sum_k \pi_{nk} (\log\pi_{nk} - \log p_{nk})$, to a
    uniform prior or a learned one (trainable prior logits), added as a loss times
    ``kl_weight``.

    ``call`` returns a dict: ``sample`` ``[batch..., N, K]``, ``log_probs`` (normalized logits
    of q) and the per-example ``kl``.

    Args:
        num_variables: int. Number N of categorical variables.
        num_classes: int. Number K of classes of each.
        temperature: float. Initial temperature tau > 0.
        straight_through: bool. Hard forward pass, relaxed backward pass during training.
        hard_at_inference: bool. One-hot samples when ``training`` is falsy.
        prior: str. ``"uniform"`` or ``"learned"``.
        kl_weight: float. Initial multiplier of the KL loss.
        add_kl_loss: bool. Whether ``call`` adds ``kl_weight * mean(kl)`` with ``add_loss``.
        validate_args: bool. Check features for NaN/Inf (skipped under XLA).
        seed: int or None. Seed of the layer's ``SeedGenerator``.

    Example:

    >>> import numpy as np
    >>> layer = RelaxedCategorical(num_variables=3, num_classes=4, seed=0)
    >>> out = layer(np.ones((2, 5), "float32"), training=True)
    >>> tuple(out["sample"].shape), float(np.round(out["sample"].numpy().sum(-1).mean(), 5))
    ((2, 3, 4), 1.0)
    """

    def __init__(
        self,
        num_variables: int,
        num_classes: int,
        temperature: float = 1.0,
        straight_through: bool = False,
        hard_at_inference: bool = True,
        prior: str = "uniform",
        kl_weight: float = 1.0,
        add_kl_loss: bool = True,
        validate_args: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_variables", num_variables)
        check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes}.")
        check_positive("temperature", temperature)
        check_choice("prior", prior, PRIORS)
        check_positive("kl_weight", kl_weight, allow_zero=True)
        self.num_variables = num_variables
        self.num_classes = num_classes
        self.initial_temperature = float(temperature)
        self.straight_through = straight_through
        self.hard_at_inference = hard_at_inference
        self.prior = prior
        self.initial_kl_weight = float(kl_weight)
        self.add_kl_loss = add_kl_loss
        self.validate_args = validate_args
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.logits_dense = keras.layers.Dense(
            num_variables * num_classes, name="logits", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        check_min_rank("features", input_shape, 2)
        self.logits_dense.build(input_shape)
        scalar = dict(shape=(), trainable=False, dtype="float32")
        self.temperature = self.add_weight(
            initializer=keras.initializers.Constant(self.initial_temperature),
            name="temperature",
            **scalar,
        )
        self.kl_weight = self.add_weight(
            initializer=keras.initializers.Constant(self.initial_kl_weight),
            name="kl_weight",
            **scalar,
        )
        if self.prior == "learned":
            self.prior_logits = self.add_weight(
                shape=(self.num_variables, self.num_classes),
                initializer="zeros",
                name="prior_logits",
                dtype="float32",
            )

    def prior_log_probs(self, dtype="float32"):
        """Normalized log-probabilities of the prior, ``[N, K]``."""
        if self.prior == "uniform":
            return tf.fill([self.num_variables, self.num_classes],
                           tf.cast(-tf.math.log(float(self.num_classes)), dtype))
        return tf.nn.log_softmax(tf.cast(self.prior_logits, dtype))

    def call(self, features, noise=None, training=None, hard=None):
        if self.validate_args:
            with tf.control_dependencies([assert_finite(features, "features")]):
                features = tf.identity(features)
        md = math_dtype(self)
        logits = tf.cast(self.logits_dense(features), md)
        shape = tf.concat([tf.shape(logits)[:-1], [self.num_variables, self.num_classes]], 0)
        log_probs = tf.nn.log_softmax(tf.reshape(logits, shape))
        if noise is None:
            noise = standard_uniform(tf.shape(log_probs), self.seed_generator, md)
        perturbed = log_probs + gumbel(tf.cast(noise, md))
        if hard is None:
            hard = (not training) and self.hard_at_inference
        one_hot = lambda t: tf.one_hot(tf.argmax(t, -1), self.num_classes, dtype=md)  # noqa
        if hard:
            sample = one_hot(perturbed)
        else:
            relaxed = tf.nn.softmax(perturbed / tf.cast(self.temperature, md))
            sample = relaxed
            if self.straight_through:
                sample = tf.stop_gradient(one_hot(relaxed) - relaxed) + relaxed
        kl = tf.reduce_sum(tf.exp(log_probs) * (log_probs - self.prior_log_probs(md)), [-2, -1])
        if self.add_kl_loss:
            self.add_loss(tf.cast(self.kl_weight, md) * tf.reduce_mean(kl))
        return {"sample": sample, "log_probs": log_probs, "kl": kl}

    def compute_output_spec(self, features, noise=None, training=None, hard=None):
        batch = tuple(features.shape[:-1])
        md = math_dtype(self)
        event = batch + (self.num_variables, self.num_classes)
        return {
            "sample": keras.KerasTensor(event, dtype=md),
            "log_probs": keras.KerasTensor(event, dtype=md),
            "kl": keras.KerasTensor(batch, dtype=md),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_variables=self.num_variables,
            num_classes=self.num_classes,
            temperature=self.initial_temperature,
            straight_through=self.straight_through,
            hard_at_inference=self.hard_at_inference,
            prior=self.prior,
            kl_weight=self.initial_kl_weight,
            add_kl_loss=self.add_kl_loss,
            validate_args=self.validate_args,
            seed=self.seed,
        )
        return config

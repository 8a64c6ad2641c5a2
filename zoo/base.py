"""Base class of the zoo's latent-variable models: ELBO training with `fit`, honest evaluation."""

from __future__ import annotations

import threading

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.common import assert_finite, register
from zoo.bounds import ImportanceWeightedBound, active_units, chunked_importance_bound
from zoo.contract import EvalSettings, ImageInputs, ZooModel


def scale_loss_for_distribution(loss):
    """Divide by the replicas in sync: `tf.distribute` sums the replicas' gradients."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss / tf.cast(replicas, loss.dtype)


@register
class ActiveUnits(keras.metrics.Metric):
    """Streaming count of latent units with Var_x(E_q[z_u | x]) > threshold (Burda et al. 2016).

    ``update_state(posterior_means)`` takes ``[batch, latent_dim]``; the variance over all
    examples seen since the last reset is accumulated in float64 sums.
    """

    def __init__(self, latent_dim: int, threshold: float = 0.01, name="active_units", **kwargs):
        super().__init__(name=name, **kwargs)
        self.latent_dim = latent_dim
        self.threshold = threshold
        zeros = dict(initializer="zeros", dtype="float64")
        self.count = self.add_variable(shape=(), name="count", **zeros)
        self.total = self.add_variable(shape=(latent_dim,), name="total", **zeros)
        self.total_sq = self.add_variable(shape=(latent_dim,), name="total_sq", **zeros)

    def update_state(self, posterior_means, sample_weight=None):
        m = tf.cast(tf.reshape(posterior_means, [-1, self.latent_dim]), tf.float64)
        self.count.assign_add(tf.cast(tf.shape(m)[0], tf.float64))
        self.total.assign_add(tf.reduce_sum(m, 0))
        self.total_sq.assign_add(tf.reduce_sum(tf.square(m), 0))

    def result(self):
        n = tf.maximum(self.count, 1.0)
        var = self.total_sq / n - tf.square(self.total / n)
        return tf.reduce_sum(tf.cast(var > self.threshold, tf.float32))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "threshold": self.threshold}


def _batches(x, batch_size: int):
    """(start, slice) pairs over the examples of an array or a dict of arrays."""
    n = len(tf.nest.flatten(x)[0])
    for start in range(0, n, batch_size):
        yield start, tf.nest.map_structure(lambda a: a[start:start + batch_size], x)

class _Tracing(threading.local):
    """Per thread, the ids of the models whose ``train_step`` is being traced (see
    ``LatentVariableModel.train_step``: MirroredStrategy traces each replica in a thread)."""

    def __init__(self):
        self.models = set()


_TRAIN_STEP_TRACING = _Tracing()


class LatentVariableModel(ZooModel, keras.Model):
    """A model trained by maximizing an ELBO with ``model.fit(x)``.

    ``call(x)`` returns per-example terms: ``elbo``, ``reconstruction`` (E_q log p(x|z)),
    ``kl`` and the training ``objective`` (the negative ELBO with KL weight / free bits), and
    for Gaussian latents ``posterior_loc``. ``compute_loss`` averages the objective, adds the
    layers' losses (weight priors), and tracks ``elbo``, ``kl`` and ``reconstruction`` so
    that ``fit`` and ``evaluate`` report them, and ``active_units`` for ``evaluate`` (for
    ``fit`` too with ``model.active_units_in_fit = True``).

    Subclasses implement ``elbo_terms(x, training)``, ``log_weights(x, num_samples, seed)``
    ([batch, K] of log p(x, z_k) - log q(z_k|x) with stateless noise from ``seed``),
    ``encode``, ``decode``, ``posterior_mean_latent`` and ``prior_sample(n, seed)``.
    """

    supports_sample_weight = True  # compute_loss takes the weighted mean of the objective
    #: Whether ``fit`` also tracks active units at every training step. Off by default: the
    #: float64 update and its result cost about 3% of a small VAE's step, and the count over
    #: an epoch of changing weights is not the number anyone reports. ``evaluate`` always
    #: counts them (over the evaluated examples, with the final weights).
    active_units_in_fit = False
    #: Whether ``fit``'s step checks the values of each batch (``input_checks``: NaN, Inf,
    #: x outside [0, 1] for a Bernoulli likelihood stop training with a message). On by
    #: default; ``model.input_checks_in_fit = False`` (before the first ``fit``, which traces
    #: the step) drops the check from the training step only, about 4% of a small VAE's step
    #: on CPU. ``evaluate``, ``predict`` and calls keep it; shapes are always checked.
    input_checks_in_fit = True

    def __init__(self, input_shape, active_units_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or any(s < 1 for s in input_shape):
            raise ValueError(f"`input_shape` must be positive sizes, got {input_shape}.")
        self.data_shape = input_shape
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.active_units_metric = (
            ActiveUnits(active_units_dim) if active_units_dim is not None else None
        )

    def _build_by_calling(self, example):
        """Build every weight now, with one eager call on ``example``. The model is marked
        built first, so Keras does not trace ``call`` symbolically before that call (its
        default build-by-run for a model without ``build``: a second pass through the whole
        model, most of a construction's CPU: 0.93 s -> 0.18 s for a default DKF); the call
        builds each sublayer as it reaches it, in the same order, with the same draws."""
        self.built = True
        self(example)

    # ------------------------------------------------------------------ input checks
    def check_input(self, x):
        """Static shape check and the value checks of ``input_checks`` (no-ops under XLA);
        returns x as a tensor."""
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        if x.shape.rank is not None and tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, "
                f"{', '.join(map(str, self.data_shape))}] (input_shape={self.data_shape}), "
                f"got {tuple(x.shape)}."
            )
        if not self.input_checks_in_fit and id(self) in _TRAIN_STEP_TRACING.models:
            return x
        with tf.control_dependencies(self.input_checks(x)):
            return tf.identity(x)

    def input_checks(self, x) -> list:
        """Assertion ops on the values of a batch: NaN/Inf here; a model whose likelihood
        needs more (data in [0, 1]) folds it into one pass over x."""
        return [assert_finite(x, "x")]

    # ------------------------------------------------------------------ training
    def call(self, x, training=None):
        return self.elbo_terms(self.check_input(x), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        objective = y_pred["objective"]
        weight = None
        if sample_weight is not None:  # a weighted mean over the examples of the batch
            weight = tf.cast(tf.reshape(sample_weight, [-1]), objective.dtype)
            if weight.shape.rank is not None and objective.shape.rank is not None and \
                    weight.shape[0] is not None and objective.shape[0] is not None and \
                    weight.shape[0] != objective.shape[0]:
                raise ValueError(f"`sample_weight` needs one weight per example "
                                 f"({objective.shape[0]}), got shape {tuple(weight.shape)}.")
            loss = tf.math.divide_no_nan(tf.reduce_sum(weight * objective),
                                         tf.reduce_sum(weight))
        else:
            loss = tf.reduce_mean(objective)
        if self.losses:
            loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in self.losses])
        self.elbo_tracker.update_state(y_pred["elbo"], sample_weight=weight)
        self.kl_tracker.update_state(y_pred["kl"], sample_weight=weight)
        self.reconstruction_tracker.update_state(y_pred["reconstruction"], sample_weight=weight)
        if (self.active_units_metric is not None and "posterior_loc" in y_pred
                and (not training or self.active_units_in_fit)):
            self.active_units_metric.update_state(y_pred["posterior_loc"])
        return scale_loss_for_distribution(loss)

    def train_step(self, data):
        # Keras' own step; the flag (read while tracing) leaves active units out of fit's
        # results unless ``active_units_in_fit``: an unused result is pruned from the graph.
        _TRAIN_STEP_TRACING.models.add(id(self))
        try:
            return super().train_step(data)
        finally:
            _TRAIN_STEP_TRACING.models.discard(id(self))

    def get_metrics_result(self):
        results = super().get_metrics_result()
        if id(self) in _TRAIN_STEP_TRACING.models \
                and not self.active_units_in_fit \
                and self.active_units_metric is not None:
            results.pop(self.active_units_metric.name, None)
        return results

    @classmethod
    def from_config(cls, config):
        # JSON turns the tuples of shapes and widths into lists.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})

    def default_callbacks(self) -> list:
        """Callbacks that training needs by default (annealing schedules); none here."""
        return []

    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """The K-sample importance-weighted log-likelihood (mean over the examples ``x``)."""
        k = settings.num_samples
        # K = 5000 over a whole test split takes minutes: show progress.
        bound = self.log_likelihood(x, num_samples=k, seed=settings.seed,
                                    progress=k * len(tf.nest.flatten(x)[0]) >= 1_000_000)
        return {f"iwae_log_likelihood_k{k}": float(np.mean(bound.log_likelihood)),
                "likelihood_examples": int(len(bound.log_likelihood))}

    # ------------------------------------------------------------------ evaluation
    def log_likelihood(self, x, num_samples: int = 5000, batch_size: int = 100,
                       chunk_size: int = 500, seed: int = 0,
                       progress: bool = False) -> ImportanceWeightedBound:
        """K-sample importance-weighted bound per example (Burda et al. 2016).

        With K = 5000 it is how published tables estimate log p(x). Runs in batches of
        examples and chunks of particles, so memory is O(batch_size * chunk_size * data size).
        The same ``seed`` gives the same numbers (stateless noise).
        """
        x = tf.nest.map_structure(np.asarray, x)
        if num_samples < 1 or batch_size < 1 or chunk_size < 1:
            raise ValueError("`num_samples`, `batch_size` and `chunk_size` must be >= 1.")
        fn = tf.function(self.log_weights, reduce_retracing=True)
        results = []
        count = len(tf.nest.flatten(x)[0])
        bar = keras.utils.Progbar(count, unit_name="example") if progress else None
        for start, batch in _batches(x, batch_size):
            results.append(chunked_importance_bound(
                fn, self.check_input(batch), num_samples, chunk_size,
                seed + 7919 * (start // batch_size)))
            if bar is not None:
                bar.update(min(start + batch_size, count))
        return ImportanceWeightedBound(
            log_likelihood=np.concatenate([r.log_likelihood for r in results]),
            elbo=np.concatenate([r.elbo for r in results]),
            num_samples=num_samples,
        )

    def active_units(self, x, threshold: float = 0.01, batch_size: int = 500) -> int:
        """Number of latent units whose posterior mean varies over ``x`` by > threshold."""
        means = np.concatenate([
            np.asarray(self.posterior_mean_latent(self.check_input(x[i:i + batch_size])))
            for i in range(0, len(x), batch_size)
        ])
        return active_units(means, threshold)

    def reconstruct(self, x):
        """Likelihood mean of x decoded from the posterior mean (deterministic)."""
        return self.decode(self.posterior_mean_latent(self.check_input(x)))["mean"]

    def sample(self, n: int, seed: int | None = None):
        """Likelihood means of n draws from the prior (``seed`` fixes them)."""
        return self.decode(self.prior_sample(n, seed))["mean"]

    @staticmethod
    def stateless_seed(seed):
        """A stateless seed pair from an int (None draws one)."""
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        return tf.constant([seed, 0], tf.int32) if isinstance(seed, int) else seed


class ImageLatentModel(ImageInputs, LatentVariableModel):
    """A latent-variable model of images: fed ``arrays["image"]``, pictured by samples from the
    prior and reconstructions, exported by the ``latent`` adapter (decode, encode, sample)."""

    export_adapter = "latent"
    binarizes_inputs = True

    def input_checks(self, x) -> list:
        """A Bernoulli likelihood needs x in [0, 1]: one comparison pass that NaN and Inf
        fail too (the heads of ``zoo.vae.likelihood_head`` leave the checks to this)."""
        if getattr(self, "likelihood", "bernoulli") != "bernoulli":
            return super().input_checks(x)
        return [tf.debugging.Assert(
            tf.reduce_all((x >= 0) & (x <= 1)),
            ["`x` contains NaN or Inf values or values outside [0, 1]; a Bernoulli "
             "likelihood needs binary or grey-level data in [0, 1]."])]

    @classmethod
    def data_defaults(cls, model_config: dict, data_config: dict, user_data: dict) -> dict:
        """A Gaussian likelihood models grey levels: no binarization unless the user asks."""
        data = dict(data_config)
        if model_config.get("likelihood", "bernoulli") != "bernoulli":
            if "binarize" not in user_data:
                data["binarize"] = None
        return data

    def tensorboard_images(self, x, settings: EvalSettings) -> dict:
        def images(batch):
            batch = np.asarray(batch, np.float32)
            if batch.ndim == 2:  # flat vectors: no picture unless square
                side = int(round(np.sqrt(batch.shape[1])))
                if side * side != batch.shape[1]:
                    return None
                batch = batch.reshape(-1, side, side)
            return batch[..., None] if batch.ndim == 3 else batch

        out = {"samples": images(self.sample(8, seed=settings.seed)),
               "reconstructions": images(np.concatenate(
                   [np.asarray(x[:8]), np.asarray(self.reconstruct(x[:8]))]))}
        return {k: np.clip(v, 0, 1) for k, v in out.items() if v is not None}

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        import os

        from zoo import plots

        path = lambda name: os.path.join(out_dir, name)  # noqa: E731
        return [
            plots.image_grid(np.asarray(self.sample(16, seed=settings.seed)),
                             path("samples.png"), title="Samples from the prior"),
            plots.image_rows([x, np.asarray(self.reconstruct(x))], ["data", "reconstruction"],
                             path("reconstructions.png")),
        ]

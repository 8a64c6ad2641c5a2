"""What the Boltzmann machines share: image data in, a custom ``train_step``, trackers."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from zoo.contract import ZooModel
from zoo.layers.common import assert_finite


def flat_visible(x, visible_dim: int, dtype="float32"):
    """Images [batch, H, W, C] (or vectors [batch, V]) -> [batch, V] floats."""
    x = tf.convert_to_tensor(x)
    x = tf.cast(x, dtype)
    return tf.reshape(x, [-1, visible_dim])


def check_visible_shape(x, visible_dim: int, owner: str):
    """Raise ValueError naming ``x`` when the examples do not hold ``visible_dim`` values."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"{owner} expects `x` with a batch axis ([batch, ...] holding "
                         f"{visible_dim} values), got shape {shape}.")
    if None not in shape[1:] and int(np.prod(shape[1:])) != visible_dim:
        raise ValueError(f"{owner} expects `x` examples of {visible_dim} values "
                         f"(visible_dim={visible_dim}), got shape {shape}.")


def mean_and_error(values) -> tuple[float, float]:
    """Mean over examples and its standard error."""
    values = np.asarray(values, np.float64)
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(np.mean(values)), se


def effective_chains(log_weights) -> float:
    """The effective sample size of AIS's importance weights (the particle filters'
    :func:`zoo.layers.resampling.effective_sample_size`, (sum w)^2 / sum w^2): near the
    number of chains when the weights are even, near 1 when one chain carries the estimate
    (then the delta-method standard error of log Z understates its spread over seeds)."""
    from zoo.layers.resampling import effective_sample_size

    lw = np.asarray(log_weights, np.float64).reshape(-1)
    lw = lw[np.isfinite(lw)]
    if not lw.size:  # no chain with a finite weight: none is effective
        return 0.0
    return float(effective_sample_size(tf.constant(lw[None]))[0])


def ais_report(name: str, unnormalized, ais, num_betas: int) -> dict:
    """Test numbers from per-example unnormalized log-probabilities (or bounds) and an AIS
    estimate of log Z: ``name`` = mean(unnormalized) - log Z, its standard error (the
    examples' spread and AIS's error on log Z, independent), and the AIS run's own numbers."""
    value, value_se = mean_and_error(np.asarray(unnormalized) - float(ais.log_z))
    return {
        name: value,
        f"{name}_se": float(np.hypot(value_se, float(ais.log_z_std_err))),
        "ais_log_z": float(ais.log_z),
        "ais_log_z_se": float(ais.log_z_std_err),
        "ais_chains": int(ais.log_weights.shape[0]),
        "ais_effective_chains": effective_chains(ais.log_weights),
        "ais_betas": int(num_betas),
    }


def log_partition_floor(states, log_prob_lower) -> float:
    """A certified lower bound on log Z: for any set of distinct configurations s, Z >= sum_s
    p*(s), so log Z >= logsumexp over the distinct rows of ``states`` [n, ...] of lower bounds
    ``log_prob_lower`` [n] on their unnormalized log-probabilities (exact ones, or a
    variational bound). An AIS estimate below it has certainly lost mass (AIS's log Z errs
    low when its chains miss modes, and its reported error does not show it)."""
    states = np.asarray(states).reshape(len(states), -1)
    values = np.asarray(log_prob_lower, np.float64).reshape(-1)
    if len(states) != len(values) or not len(values):
        raise ValueError(f"`states` ({len(states)} rows) and `log_prob_lower` ({len(values)}) "
                         "must be non-empty and of one length.")
    if not np.all((states == 0) | (states == 1)):
        raise ValueError("`states` must be binary configurations (0 or 1): the probability of "
                         "a grey-valued vector bounds nothing.")
    _, first = np.unique(states, axis=0, return_index=True)
    picked = values[first]
    top = float(np.max(picked))
    return top + math.log(float(np.sum(np.exp(picked - top))))


def examples_floor(x, log_prob_lower) -> float | None:
    """``log_partition_floor`` over the distinct examples of ``x`` [n, ...], or None when they
    are not binary (a grey-valued example is no configuration, so it bounds nothing).
    ``log_prob_lower``: their lower bounds on log p*, or a function of the flat [n, V] examples
    that computes them (called only when the examples count)."""
    x = np.asarray(x).reshape(len(x), -1)
    if not np.all((x == 0) | (x == 1)):
        return None
    return log_partition_floor(x, log_prob_lower(x) if callable(log_prob_lower)
                               else log_prob_lower)


def floor_report(floor: float, ais) -> dict:
    """The certified floor on log Z beside AIS's estimate, and whether AIS fell below it
    (then also a warning: the AIS-based test numbers are void)."""
    below = bool(float(ais.log_z) < floor)
    if below:
        warnings.warn(f"AIS's log Z {float(ais.log_z):.2f} is {floor - float(ais.log_z):.2f} "
                      f"nats below the certified floor {floor:.2f}: AIS lost the model's modes "
                      "and the AIS test numbers are void (its reported error does not show "
                      "it); raise ais_betas and ais_chains.", RuntimeWarning, stacklevel=2)
    return {"log_z_floor": float(floor), "ais_below_floor": below}


REVERSE_BURN_IN = 2000  # Gibbs sweeps from the start states before the evaluations' reverse AIS


def sandwich_gap(forward, reverse) -> tuple[float, float]:
    """Reverse minus forward AIS log Z (``AISResult``s) and their combined standard error.
    From exact samples the reverse estimate errs high and the forward one low (bidirectional
    Monte Carlo, Grosse et al. 2015), so log Z lies between them once both converge: a gap
    wider than three errors says at least one has not."""
    return (float(reverse.log_z) - float(forward.log_z),
            math.hypot(float(forward.log_z_std_err), float(reverse.log_z_std_err)))


def sandwich_report(forward, reverse) -> dict:
    """Reverse AIS beside forward AIS (``sandwich_gap``) and whether the sandwich is open (gap
    above three errors; then also a warning: the forward AIS test numbers are not results)."""
    gap, se = sandwich_gap(forward, reverse)
    gap_open = bool(gap > 3.0 * se)
    if gap_open:
        warnings.warn(f"Reverse AIS's log Z {float(reverse.log_z):.2f} is {gap:.2f} nats above "
                      f"forward AIS's {float(forward.log_z):.2f} (combined error {se:.2f}): "
                      "AIS has not converged and the AIS test numbers are not yet results; "
                      "raise ais_betas.", RuntimeWarning, stacklevel=2)
    return {"ais_reverse_log_z": float(reverse.log_z),
            "ais_reverse_log_z_se": float(reverse.log_z_std_err),
            "ais_sandwich_gap": gap, "ais_sandwich_open": gap_open}


def batched(fn, x, batch_size: int = 100):
    """Apply ``fn`` to row blocks of ``x`` and concatenate the NumPy results."""
    return np.concatenate([np.asarray(fn(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def filter_images(weights, image_shape, count: int = 64):
    """The first ``count`` hidden units' incoming weights as images in [0, 1] (each unit
    scaled to its own range)."""
    w = np.asarray(weights)[:, :count].T  # [count, V]
    low, high = w.min(1, keepdims=True), w.max(1, keepdims=True)
    w = (w - low) / np.maximum(high - low, 1e-12)
    return w.reshape(-1, *image_shape)


class BoltzmannModel(ZooModel, keras.Model):
    """Base of the zoo's energy-based models: images in, ``fit`` through ``train_step``.

    Subclasses implement ``train_step`` and ``test_step`` on flattened visible vectors and
    report ``loss`` (the one-step reconstruction error, which falls as the model learns)
    beside their own trackers.
    """

    binarizes_inputs = True

    def __init__(self, visible_dim: int, image_shape=None, seed: int | None = None, **kwargs):
        # Energies, free energies and AIS need float32 at least: under a mixed-precision
        # policy the model keeps float32 (the sampling noise and the parameters alike).
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        visible_dim = int(visible_dim)
        if visible_dim < 1:
            raise ValueError(f"`visible_dim` must be >= 1, got {visible_dim}.")
        if image_shape is not None:
            image_shape = [int(s) for s in image_shape]
            if int(np.prod(image_shape)) != visible_dim:
                raise ValueError(f"`image_shape` {image_shape} must hold visible_dim="
                                 f"{visible_dim} values.")
        self.visible_dim = visible_dim
        self.image_shape = image_shape
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    # ------------------------------------------------------------------ data statistics
    def add_data_statistics(self):
        """The running sum and count of the training data seen by ``fit`` (non-trainable,
        saved): AIS's base-rate model is built from their mean."""
        self.data_sum = self.add_weight(shape=(self.visible_dim,), initializer="zeros",
                                        trainable=False, name="data_sum", dtype="float64")
        self.data_count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                          name="data_count", dtype="float64")

    def track_data(self, x):
        """Add a training batch [batch, V] to the data statistics (inside ``train_step``)."""
        self.data_sum.assign_add(tf.reduce_sum(tf.cast(x, tf.float64), 0))
        self.data_count.assign_add(tf.cast(tf.shape(x)[0], tf.float64))

    def data_mean(self):
        """Mean of the training data seen by ``fit`` (1/2 before any training)."""
        count = float(self.data_count.numpy())
        if count == 0:
            return np.full(self.visible_dim, 0.5)
        return np.asarray(self.data_sum.numpy()) / count

    # ------------------------------------------------------------------ data
    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        shape = [int(s) for s in arrays["image"].shape[1:]]
        return {"visible_dim": int(np.prod(shape)), "image_shape": shape}

    @classmethod
    def fit_inputs(cls, arrays: dict):
        return arrays["image"], None

    def visible(self, data):
        """The visible vectors [batch, V] of a ``fit`` batch (x, or (x, y[, w]))."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        check_visible_shape(x, self.visible_dim, type(self).__name__)
        x = flat_visible(x, self.visible_dim, self.compute_dtype)
        with tf.control_dependencies([assert_finite(x, "x")]):
            return tf.identity(x)

    def uniform(self, shape):
        """Uniform(0, 1) noise from the model's seed generator."""
        return keras.random.uniform(shape, dtype=self.compute_dtype, seed=self.seed_generator)

    def normal(self, shape):
        return keras.random.normal(shape, dtype=self.compute_dtype, seed=self.seed_generator)

    def as_images(self, v):
        v = np.asarray(v)
        return v.reshape(-1, *self.image_shape) if self.image_shape else v

    def validate_data(self, arrays: dict) -> None:
        super().validate_data(arrays)
        image = np.asarray(arrays["image"])
        if image.min() < 0 or image.max() > 1:
            raise ValueError(f"{type(self).__name__} needs `image` values in [0, 1], got "
                             f"[{image.min():.3g}, {image.max():.3g}].")

    @property
    def metrics(self):
        return [self.loss_tracker] + self.extra_trackers()

    def extra_trackers(self) -> list:
        return []

    def get_config(self):
        return {**super().get_config(), "visible_dim": self.visible_dim,
                "image_shape": self.image_shape, "seed": self.seed}

"""Particle filter over the zoo's state-space models (or user functions): an unbiased
estimate of the log-likelihood and filtered moments from a weighted cloud of states."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from zoo import sequences
from zoo.contract import EvalSettings, ZooModel
from zoo.layers import particle_filter as pf
from zoo.layers import resampling
from zoo.layers.common import register


def linear_gaussian_functions(params, dtype="float64"):
    r"""``(initial_sample, transition_sample, emission_log_prob, noise_dim)`` of the
    linear-Gaussian model ``params`` (:class:`layers.kalman_inference.LGSSMParams`):
    $x_0 = m_0 + L_0 \epsilon$, $x_t = A x_{t-1} + b + L_Q \epsilon$ and
    $\log N(y; H x + d, R)$, with $L$ the Cholesky factors."""
    par = [None if t is None else tf.cast(t, dtype) for t in params]
    m0, p0, a, q, h, r, b, d, control = par
    if control is not None:
        raise ValueError("a model with actions (control_matrix) is not supported by the "
                         "particle filter yet")
    l0, lq, lr = (tf.linalg.cholesky(m) for m in (p0, q, r))
    lr_inv = tf.linalg.triangular_solve(lr, tf.eye(tf.shape(r)[0], dtype=r.dtype))
    p = int(r.shape[0])
    log_norm = -tf.reduce_sum(tf.math.log(tf.linalg.diag_part(lr))) - 0.5 * p * math.log(
        2.0 * math.pi)

    def initial_sample(noise):
        return m0 + tf.einsum("bkj,ij->bki", noise, l0)

    def transition_sample(particles, noise):
        out = tf.einsum("bkj,ij->bki", particles, a) + tf.einsum("bkj,ij->bki", noise, lq)
        return out if b is None else out + b

    def emission_log_prob(particles, observation):
        mean = tf.einsum("bkj,ij->bki", particles, h)
        if d is not None:
            mean = mean + d
        z = tf.einsum("bkj,ij->bki", observation[:, None, :] - mean, lr_inv)
        return log_norm - 0.5 * tf.reduce_sum(tf.square(z), axis=-1)

    return initial_sample, transition_sample, emission_log_prob, int(m0.shape[-1])


@register
class ParticleFilter(ZooModel, keras.Model):
    r"""Bootstrap particle filter (sequential Monte Carlo) over a state-space model.

    Gordon, Salmond & Smith, "Novel approach to nonlinear/non-Gaussian Bayesian state
    estimation" (1993). For $x_0 \sim p(x_0)$, $x_t \sim f(x_t \mid x_{t-1})$,
    $y_t \sim g(y_t \mid x_t)$ the filter carries $N$ particles with normalized weights $W$;
    each frame resamples when $\mathrm{ESS} < \tau N$, propagates through $f$ and reweights by
    $g$, and $\log \hat Z = \sum_t \log \sum_i W_{t-1}^i g(y_t \mid x_t^i)$ is an unbiased
    estimate (in $\hat Z$) of the likelihood $p(y_{0:T-1})$; the filtered moments converge to
    $E[x_t \mid y_{0:t}]$ as $N$ grows. The math lives in :mod:`layers.particle_filter` and
    :mod:`layers.resampling`.

    The model is either a :class:`zoo.kalman_filter.KalmanFilterModel` (``state_model``: its
    matrices are read when filtering, so the PF follows a trained or known linear-Gaussian
    model), or user callables (``functions`` = ``(initial_sample, transition_sample,
    emission_log_prob, noise_dim)`` with the signatures of :mod:`layers.particle_filter`; such
    a model filters but its config cannot be saved, since functions are never pickled).

    Args:
        state_model: KalmanFilterModel or None. The linear-Gaussian model to filter.
        num_particles: int. N, the default of :meth:`filter`.
        resample: str. "systematic", "stratified" or "multinomial".
        threshold: float. τ in [0, 1]: resample when ESS < τ N (1: every frame, 0: never).
        seed: int or None. Seed of the filter's noise when ``filter`` gets none.
        functions: tuple or None. User callables in place of ``state_model``.

    Example:

    >>> import numpy as np
    >>> from zoo.kalman_filter import KalmanFilterModel
    >>> lg = KalmanFilterModel.from_matrices([[1.0]], [[1.0]], [[1.0]], [[4.0]])
    >>> model = ParticleFilter(lg, num_particles=2000, seed=0)
    >>> y = np.cumsum(np.random.default_rng(0).normal(size=(1, 30, 1)), 1)
    >>> exact = float(lg.filter(y).log_likelihood[0])
    >>> estimate = float(model.log_likelihood(y)[0])
    >>> abs(estimate - exact) < 0.2
    True
    """

    export_adapter = "particle_filter"  # zoo.export.adapters_particle_filter

    def __init__(self, state_model=None, num_particles: int = 100,
                 resample: str = "systematic", threshold: float = 0.5,
                 seed: int | None = None, functions=None, **kwargs):
        super().__init__(**kwargs)
        if (state_model is None) == (functions is None):
            raise ValueError("give exactly one of `state_model` (a KalmanFilterModel) and "
                             "`functions` (initial_sample, transition_sample, "
                             "emission_log_prob, noise_dim)")
        if state_model is not None and not hasattr(state_model, "state_space_params"):
            raise ValueError(f"`state_model` must be a KalmanFilterModel (with "
                             f"state_space_params), got {type(state_model).__name__}")
        if functions is not None and len(functions) != 4:
            raise ValueError("`functions` must be (initial_sample, transition_sample, "
                             "emission_log_prob, noise_dim)")
        if resample not in resampling.SCHEMES:
            raise ValueError(f"`resample` must be one of {resampling.SCHEMES}, got "
                             f"{resample!r}")
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"`num_particles` must be a positive int, got {num_particles!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"`threshold` must be in [0, 1], got {threshold!r}")
        self.state_model = state_model
        self.functions = functions
        self.num_particles = num_particles
        self.resample = resample
        self.threshold = float(threshold)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._compiled = {}  # dtype -> tf.function (retraces per input shape only)

    def _functions(self, dtype):
        if self.functions is not None:
            return self.functions
        return linear_gaussian_functions(self.state_model.state_space_params(), dtype)

    def call(self, inputs):
        observations = inputs["observations"] if isinstance(inputs, dict) else inputs
        return self.filter(observations).filtered_means

    def filter(self, observations, observed=None, *, mask=None, num_particles=None,
               seed=None, dtype="float64") -> pf.ParticleFilterResult:
        """The particle filter on ``observations`` [batch, time, p]; ``observed`` [batch,
        time] (0: missing frame) and ``mask`` (0: padding) both skip the weighting. Returns
        :class:`layers.particle_filter.ParticleFilterResult` (``log_likelihood``,
        ``log_likelihoods``, ``filtered_means``, ``filtered_covs``, ``predicted_means``,
        ``predicted_covs`` as the Kalman filter's, plus ``ess``, ``resampled``, the final
        ``particles`` and ``log_weights``). ``seed``: int or SeedGenerator (default the
        model's generator)."""
        observations = tf.convert_to_tensor(observations)
        if self.state_model is not None:
            self.state_model._ensure_built(observations)
        num_particles = num_particles or self.num_particles
        noise_dim = self._functions(dtype)[3]
        if dtype not in self._compiled:
            def run(y, seen, noise):  # the model's matrices are read inside: traced once
                initial, transition, emission, _ = self._functions(dtype)
                return pf.scan_filter(y, seen, noise, initial, transition, emission,
                                      self.resample, self.threshold)

            self._compiled[dtype] = tf.function(run)
        pf.check_settings(num_particles, self.resample, self.threshold)
        inputs = pf.prepare_inputs(observations, _both(observed, mask), num_particles,
                                   noise_dim, self.seed_generator if seed is None else seed,
                                   dtype)
        return self._compiled[dtype](*inputs)

    def log_likelihood(self, observations, observed=None, *, mask=None, num_particles=None,
                       seed=None):
        """log Z-hat [batch], the PF's estimate of log p(y_{0:T-1})."""
        return self.filter(observations, observed, mask=mask, num_particles=num_particles,
                           seed=seed).log_likelihood

    # ------------------------------------------------------------------------------ contract
    @classmethod
    def fit_inputs(cls, arrays: dict):
        return sequences.sequence_inputs(arrays, ("observations", "mask", "observed")), None

    @classmethod
    def prepare_batch(cls, x):
        return sequences.trim_to_longest(x)

    def validate_data(self, arrays: dict) -> None:
        sequences.check_finite(arrays, type(self).__name__)

    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """The estimated log-likelihood (mean per sequence and per real step)."""
        log_lik = np.asarray(self.log_likelihood(x["observations"], x.get("observed"),
                                                 mask=x.get("mask"), seed=settings.seed))
        steps = sequences.sequence_steps(x)
        return {"log_likelihood": float(np.mean(log_lik)),
                "nll_per_step": float(-np.sum(log_lik) / np.sum(steps)),
                "likelihood_examples": int(len(log_lik)),
                "num_particles": self.num_particles}

    def get_config(self):
        if self.functions is not None:
            raise NotImplementedError("a ParticleFilter over user `functions` has no config: "
                                      "functions are never pickled")
        config = super().get_config()
        config.update(state_model=keras.saving.serialize_keras_object(self.state_model),
                      num_particles=self.num_particles, resample=self.resample,
                      threshold=self.threshold, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["state_model"] = keras.saving.deserialize_keras_object(config["state_model"])
        return cls(**config)


def _both(observed, mask):
    """Frames to weight on: observed and not padding (None: all)."""
    if observed is None:
        return mask
    if mask is None:
        return observed
    return tf.cast(tf.logical_and(tf.cast(observed, tf.bool), tf.cast(mask, tf.bool)),
                   tf.float64)

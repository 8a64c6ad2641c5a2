"""Kalman filter layer: a linear-Gaussian state-space model with learnable parameters."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import kalman_inference as ki
from zoo.layers.common import (
    check_choice,
    check_positive,
    check_positive_int,
    math_dtype,
    register,
)

TRANSITIONS = ("free", "stable", "identity")
OBSERVATIONS = ("free", "identity")
COVARIANCES = ("diag", "full")


def _inverse_softplus(x):
    x = np.asarray(x, np.float64)
    return x + np.log(-np.expm1(-x))


@register
class KalmanFilter(keras.layers.Layer):
    r"""Kalman filter over ``[batch, time, obs_dim]`` observations with learnable parameters.

    Kalman, "A New Approach to Linear Filtering and Prediction Problems" (1960). The model is

    $$x_0 \sim N(m_0, P_0),\quad x_t = A x_{t-1} + B u_t + b + w_t,\ w_t \sim N(0, Q),\quad
    y_t = H x_t + d + v_t,\ v_t \sim N(0, R),$$

    and ``call`` runs the exact forward filter (:func:`layers.kalman_inference.kalman_filter`),
    returns the filtered moments and adds the negative log-likelihood per time step,
    $-\frac{1}{T}\,\mathrm{mean}_{\text{batch}} \log p(y_{0:T-1})$, as a loss, so that
    ``model.fit`` is maximum likelihood.

    Constraints (each declared where its weight is made):

    - ``A``: ``"free"`` (unconstrained, starts at ``transition_init * I``); ``"stable"``
      ($A = W \tanh(\lVert W\rVert_F)/\lVert W\rVert_F$, so $\lVert A\rVert_F < 1$ and the
      spectral radius is below 1; it starts at ``transition_init * I`` scaled to
      $\lVert A\rVert_F \le 0.95$);
      ``"identity"`` (fixed $A = I$, e.g. a local-level or random-walk model).
    - ``H``: ``"free"`` or ``"identity"`` (fixed $H = [I_p\ 0]$, needs obs_dim <= state_dim).
    - ``Q``, ``R``: ``"diag"`` ($\mathrm{diag}(\mathrm{softplus}(\cdot)^2)$) or ``"full"``
      ($L L^\top$ with $L$ from ``fill_triangular`` and a softplus diagonal), plus
      ``min_scale``$^2 I$ so they stay positive definite.
    - $m_0$ free; $P_0 = \mathrm{diag}(\mathrm{softplus}(\cdot)^2)$; both frozen when
      ``trainable_initial=False``.

    ``call(observations, controls=None, mask=None)`` returns a dict: ``filtered_means``
    ``[batch, time, n]``, ``filtered_covs`` ``[batch, time, n, n]`` and ``log_likelihood``
    ``[batch]``. A Keras mask (or ``mask=``; True = observed) skips missing steps.

    Args:
        state_dim: int. n.
        control_dim: int or None. Size of the inputs u_t; None means no control term.
        transition: str. ``"free"``, ``"stable"`` or ``"identity"``.
        observation: str. ``"free"`` or ``"identity"``.
        transition_cov: str. ``"diag"`` or ``"full"`` parameterization of Q.
        observation_cov: str. ``"diag"`` or ``"full"`` parameterization of R.
        use_offsets: bool. Learn the offsets b and d.
        transition_init: float. Initial A = transition_init * I (``"free"``/``"stable"``).
        transition_scale: float. Initial standard deviation of w (Q = scale^2 I).
        observation_scale: float. Initial standard deviation of v.
        initial_scale: float. Initial standard deviation of x_0 (P_0 = scale^2 I).
        trainable_initial: bool. Learn m_0 and P_0.
        min_scale: float. Floor on the noise standard deviations.
        method: str. ``"sequential"`` or ``"parallel"`` (associative scan).
        square_root: bool. Propagate Cholesky factors (sequential method).
        nan_as_missing: bool. Treat NaN observations as missing.
        add_nll_loss: bool. Add the per-step negative log-likelihood with ``add_loss``.
        validate_args: bool. Eager checks of the data (NaN without a mask).

    Example:

    >>> import numpy as np
    >>> layer = KalmanFilter(2, dtype="float64")
    >>> out = layer(np.zeros((3, 10, 1)))
    >>> tuple(out["filtered_means"].shape), tuple(out["log_likelihood"].shape)
    ((3, 10, 2), (3,))
    """

    def __init__(
        self,
        state_dim: int,
        control_dim: int | None = None,
        transition: str = "free",
        observation: str = "free",
        transition_cov: str = "diag",
        observation_cov: str = "diag",
        use_offsets: bool = False,
        transition_init: float = 0.9,
        transition_scale: float = 0.1,
        observation_scale: float = 1.0,
        initial_scale: float = 1.0,
        trainable_initial: bool = True,
        min_scale: float = 1e-4,
        method: str = "sequential",
        square_root: bool = False,
        nan_as_missing: bool = False,
        add_nll_loss: bool = True,
        validate_args: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("state_dim", state_dim)
        check_positive_int("control_dim", control_dim, allow_none=True)
        check_choice("transition", transition, TRANSITIONS)
        check_choice("observation", observation, OBSERVATIONS)
        check_choice("transition_cov", transition_cov, COVARIANCES)
        check_choice("observation_cov", observation_cov, COVARIANCES)
        check_choice("method", method, ki.METHODS)
        for name, value in (("transition_scale", transition_scale),
                            ("observation_scale", observation_scale),
                            ("initial_scale", initial_scale)):
            check_positive(name, value)
        check_positive("min_scale", min_scale, allow_zero=True)
        if square_root and method == "parallel":
            raise ValueError("`square_root=True` needs method='sequential'.")
        self.state_dim = state_dim
        self.control_dim = control_dim
        self.transition = transition
        self.observation = observation
        self.transition_cov = transition_cov
        self.observation_cov = observation_cov
        self.use_offsets = use_offsets
        self.transition_init = float(transition_init)
        self.transition_scale = float(transition_scale)
        self.observation_scale = float(observation_scale)
        self.initial_scale = float(initial_scale)
        self.trainable_initial = trainable_initial
        self.min_scale = float(min_scale)
        self.method = method
        self.square_root = square_root
        self.nan_as_missing = nan_as_missing
        self.add_nll_loss = add_nll_loss
        self.validate_args = validate_args
        self.supports_masking = True

    # ------------------------------------------------------------------------------ weights
    def _scale_weight(self, name, dim, kind, scale):
        """Unconstrained weight of a covariance: softplus(raw) is the scale (diag) or the
        diagonal of the Cholesky factor (full, off-diagonal entries free)."""
        raw = _inverse_softplus(max(scale - self.min_scale, 1e-6 * scale))
        if kind == "diag":
            init = np.full([dim], raw)
        else:
            init = np.zeros([dim * (dim + 1) // 2])
            tril = np.zeros([dim, dim])
            np.fill_diagonal(tril, raw)
            init = tfp.math.fill_triangular_inverse(tril).numpy()
        return self.add_weight(shape=init.shape, name=name,
                               initializer=keras.initializers.Constant(init))

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"`observations` must be [batch, time, obs_dim], got shape "
                             f"{tuple(input_shape)}.")
        n, p = self.state_dim, input_shape[-1]
        if p is None:
            raise ValueError("The last axis (obs_dim) of the observations must be known.")
        if self.observation == "identity" and p > n:
            raise ValueError(f"observation='identity' needs obs_dim <= state_dim, got "
                             f"obs_dim={p}, state_dim={n}.")
        self.obs_dim = p
        const = keras.initializers.Constant
        if self.transition != "identity":
            init = self.transition_init * np.eye(n)
            if self.transition == "stable":  # invert A = W tanh(|W|) / |W|, |A| capped at 0.95
                norm = min(np.linalg.norm(init), 0.95)
                init = init / max(np.linalg.norm(init), 1e-12) * np.arctanh(norm)
            self.transition_kernel = self.add_weight(
                shape=(n, n), name="transition_kernel", initializer=const(init))
        if self.observation == "free":
            self.observation_kernel = self.add_weight(
                shape=(p, n), name="observation_kernel",
                initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(n), seed=0))
        self.raw_transition_scale = self._scale_weight(
            "raw_transition_scale", n, self.transition_cov, self.transition_scale)
        self.raw_observation_scale = self._scale_weight(
            "raw_observation_scale", p, self.observation_cov, self.observation_scale)
        self.initial_mean = self.add_weight(shape=(n,), name="initial_mean",
                                            initializer="zeros",
                                            trainable=self.trainable_initial)
        self.raw_initial_scale = self.add_weight(
            shape=(n,), name="raw_initial_scale", trainable=self.trainable_initial,
            initializer=const(np.full([n], _inverse_softplus(self.initial_scale))))
        if self.control_dim:
            self.control_kernel = self.add_weight(shape=(n, self.control_dim),
                                                  name="control_kernel", initializer="zeros")
        if self.use_offsets:
            self.transition_bias = self.add_weight(shape=(n,), name="transition_bias",
                                                   initializer="zeros")
            self.observation_bias = self.add_weight(shape=(p,), name="observation_bias",
                                                    initializer="zeros")

    # ------------------------------------------------------------------------------ params
    def _cov(self, raw, kind, dtype):
        raw = tf.cast(raw, dtype)
        if kind == "diag":
            scale = tf.nn.softplus(raw) + self.min_scale
            return tf.linalg.diag(tf.square(scale))
        tril = tfp.math.fill_triangular(raw)
        tril = tf.linalg.set_diag(tril, tf.nn.softplus(tf.linalg.diag_part(tril)))
        dim = tril.shape[-1]
        return (tf.matmul(tril, tril, transpose_b=True)
                + self.min_scale ** 2 * tf.eye(dim, dtype=dtype))

    def state_space_params(self, dtype=None) -> ki.LGSSMParams:
        """The constrained parameters as :class:`layers.kalman_inference.LGSSMParams`."""
        dtype = dtype or math_dtype(self)
        n, p = self.state_dim, self.obs_dim
        if self.transition == "identity":
            a = tf.eye(n, dtype=dtype)
        else:
            a = tf.cast(self.transition_kernel, dtype)
            if self.transition == "stable":
                norm = tf.sqrt(tf.reduce_sum(tf.square(a)) + 1e-12)
                a = a * (tf.tanh(norm) / norm)
        if self.observation == "identity":
            h = tf.eye(p, n, dtype=dtype)
        else:
            h = tf.cast(self.observation_kernel, dtype)
        init_scale = tf.nn.softplus(tf.cast(self.raw_initial_scale, dtype))
        return ki.LGSSMParams(
            initial_mean=tf.cast(self.initial_mean, dtype),
            initial_cov=tf.linalg.diag(tf.square(init_scale)),
            transition_matrix=a,
            transition_cov=self._cov(self.raw_transition_scale, self.transition_cov, dtype),
            observation_matrix=h,
            observation_cov=self._cov(self.raw_observation_scale, self.observation_cov, dtype),
            transition_offset=(tf.cast(self.transition_bias, dtype) if self.use_offsets
                               else None),
            observation_offset=(tf.cast(self.observation_bias, dtype) if self.use_offsets
                                else None),
            control_matrix=tf.cast(self.control_kernel, dtype) if self.control_dim else None,
        )

    def run_filter(self, observations, controls=None, mask=None) -> ki.FilterResult:
        """The full :class:`layers.kalman_inference.FilterResult` for these observations."""
        dtype = math_dtype(self)
        observations = tf.cast(observations, dtype)
        if controls is not None:
            if not self.control_dim:
                raise ValueError("`controls` were given but the layer has control_dim=None.")
            controls = tf.cast(controls, dtype)
        elif self.control_dim:
            raise ValueError(f"The layer has control_dim={self.control_dim}; pass `controls` "
                             f"[batch, time, {self.control_dim}].")
        return ki.kalman_filter(self.state_space_params(dtype), observations, mask=mask,
                                controls=controls, nan_as_missing=self.nan_as_missing,
                                method=self.method, square_root=self.square_root,
                                validate_args=self.validate_args)

    # ------------------------------------------------------------------------------ call
    def call(self, observations, controls=None, mask=None):
        result = self.run_filter(observations, controls, mask)
        if self.add_nll_loss:
            steps = tf.cast(tf.shape(observations)[1], result.log_likelihood.dtype)
            self.add_loss(-tf.reduce_mean(result.log_likelihood) / steps)
        covs = result.filtered_covs
        covs = tf.broadcast_to(covs, tf.concat([tf.shape(result.filtered_means)[:1],
                                                tf.shape(covs)[1:]], 0))
        return {"filtered_means": result.filtered_means, "filtered_covs": covs,
                "log_likelihood": result.log_likelihood}

    def compute_mask(self, observations, mask=None):
        return None

    def compute_output_spec(self, observations, controls=None, mask=None):
        b, t = observations.shape[0], observations.shape[1]
        n = self.state_dim
        dtype = math_dtype(self)
        return {"filtered_means": keras.KerasTensor((b, t, n), dtype=dtype),
                "filtered_covs": keras.KerasTensor((b, t, n, n), dtype=dtype),
                "log_likelihood": keras.KerasTensor((b,), dtype=dtype)}

    def get_config(self):
        config = super().get_config()
        config.update(
            state_dim=self.state_dim,
            control_dim=self.control_dim,
            transition=self.transition,
            observation=self.observation,
            transition_cov=self.transition_cov,
            observation_cov=self.observation_cov,
            use_offsets=self.use_offsets,
            transition_init=self.transition_init,
            transition_scale=self.transition_scale,
            observation_scale=self.observation_scale,
            initial_scale=self.initial_scale,
            trainable_initial=self.trainable_initial,
            min_scale=self.min_scale,
            method=self.method,
            square_root=self.square_root,
            nan_as_missing=self.nan_as_missing,
            add_nll_loss=self.add_nll_loss,
            validate_args=self.validate_args,
        )
        return config

"""Kalman filter layer: a linear-Gaussian state-space model with learnable parameters.

The layer is :class:`KalmanFilterLayer`; the model ``zoo.KalmanFilter`` (= ``KalmanFilterModel``)
wraps it. Layers saved under the former name ``KalmanFilter`` still load.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import kalman_inference as ki
from zoo.layers.common import (
    PACKAGE,
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
class KalmanFilterLayer(keras.layers.Layer):
    r"""Kalman filter over ``[batch, time, observation_dim]`` observations, learnable parameters.

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
    - ``H``: ``"free"`` or ``"identity"`` (fixed $H = [I_p\ 0]$, needs
      observation_dim <= state_dim).
    - ``Q``, ``R``: ``"diag"`` ($\mathrm{diag}(\mathrm{softplus}(\cdot)^2)$) or ``"full"``
      ($L L^\top$ with $L$ from ``fill_triangular`` and a softplus diagonal), plus
      ``min_scale``$^2 I$ so they stay positive definite.
    - $m_0$ free; $P_0$ ``"diag"`` ($\mathrm{diag}(\mathrm{softplus}(\cdot)^2)$) or ``"full"``
      ($L L^\top$, softplus diagonal); both frozen when ``trainable_initial=False``.

    ``call(observations, actions=None, observed=None)`` returns a dict: ``filtered_means``
    ``[batch, time, n]``, ``filtered_covs`` ``[batch, time, n, n]`` and ``log_likelihood``
    ``[batch]``. ``observed`` ``[batch, time]`` (1 = frame seen, 0 = missing) and a Keras
    padding mask both skip the update at a step (a step after the end of a shorter series then
    adds nothing to the log-likelihood).

    Args:
        state_dim: int. n.
        action_dim: int or None. Size of the actions u_t; None means no action term
            (``control_dim``: its former name, still accepted).
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
        initial_cov: str. ``"diag"`` or ``"full"`` parameterization of P_0.
        min_scale: float. Floor on the noise standard deviations.
        method: str. ``"sequential"`` or ``"parallel"`` (associative scan).
        square_root: bool. Propagate Cholesky factors (sequential method).
        nan_as_missing: bool. Treat NaN observations as missing.
        add_nll_loss: bool. Add the per-step negative log-likelihood with ``add_loss``.
        validate_args: bool. Eager checks of the data (NaN without a mask).

    Example:

    >>> import numpy as np
    >>> layer = KalmanFilterLayer(2, dtype="float64")
    >>> out = layer(np.zeros((3, 10, 1)))
    >>> tuple(out["filtered_means"].shape), tuple(out["log_likelihood"].shape)
    ((3, 10, 2), (3,))
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int | None = None,
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
        initial_cov: str = "diag",
        **kwargs,
    ):
        if "control_dim" in kwargs:  # the former name (configs saved before 0.3)
            control_dim = kwargs.pop("control_dim")
            if action_dim is None:
                action_dim = control_dim
        super().__init__(**kwargs)
        check_positive_int("state_dim", state_dim)
        check_positive_int("action_dim", action_dim, allow_none=True)
        check_choice("initial_cov", initial_cov, COVARIANCES)
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
        self.action_dim = action_dim
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
        self.initial_cov = initial_cov
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
            init = _fill_triangular_inverse(tril)
        return self.add_weight(shape=init.shape, name=name,
                               initializer=keras.initializers.Constant(init))

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"`observations` must be [batch, time, observation_dim], got shape "
                             f"{tuple(input_shape)}.")
        n, p = self.state_dim, input_shape[-1]
        if p is None:
            raise ValueError("The last axis (observation_dim) of the observations must be known.")
        if input_shape[1] == 0:
            raise ValueError(f"`observations` have 0 time steps (shape {tuple(input_shape)}): "
                             f"a sequence needs at least one step.")
        if self.built:  # built before (a second build, or a load): the sizes must agree
            if p != self.observation_dim:
                raise ValueError(f"the layer was built for observation_dim="
                                 f"{self.observation_dim}, got observations of shape "
                                 f"{tuple(input_shape)}")
            return
        if self.observation == "identity" and p > n:
            raise ValueError(f"observation='identity' needs observation_dim <= state_dim, got "
                             f"observation_dim={p}, state_dim={n}.")
        self.observation_dim = p
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
        raw0 = _inverse_softplus(self.initial_scale)
        init = (np.full([n], raw0) if self.initial_cov == "diag" else
                _fill_triangular_inverse(np.diag(np.full([n], raw0))))
        self.raw_initial_scale = self.add_weight(
            shape=init.shape, name="raw_initial_scale", trainable=self.trainable_initial,
            initializer=const(init))
        if self.action_dim:
            self.control_kernel = self.add_weight(shape=(n, self.action_dim),
                                                  name="control_kernel", initializer="zeros")
        if self.use_offsets:
            self.transition_bias = self.add_weight(shape=(n,), name="transition_bias",
                                                   initializer="zeros")
            self.observation_bias = self.add_weight(shape=(p,), name="observation_bias",
                                                    initializer="zeros")

    # ------------------------------------------------------------------------------ params
    def _cov(self, raw, kind, dtype, floor=None):
        floor = self.min_scale if floor is None else floor
        raw = tf.cast(raw, dtype)
        if kind == "diag":
            scale = tf.nn.softplus(raw) + floor
            return tf.linalg.diag(tf.square(scale))
        tril = tfp.math.fill_triangular(raw)
        tril = tf.linalg.set_diag(tril, tf.nn.softplus(tf.linalg.diag_part(tril)))
        dim = tril.shape[-1]
        cov = tf.matmul(tril, tril, transpose_b=True)
        return cov + floor ** 2 * tf.eye(dim, dtype=dtype) if floor else cov

    @property
    def obs_dim(self) -> int:
        """Former name of ``observation_dim``."""
        return self.observation_dim

    def __getattr__(self, name):
        # Only reached when normal lookup fails: a never-built layer has no observation_dim
        # (nor weights) yet; say so instead of a bare AttributeError.
        if name == "observation_dim":
            raise _unbuilt_error(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def state_space_params(self, dtype=None) -> ki.LGSSMParams:
        """The constrained parameters as :class:`layers.kalman_inference.LGSSMParams`."""
        dtype = dtype or math_dtype(self)
        n, p = self.state_dim, self.observation_dim
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
        return ki.LGSSMParams(
            initial_mean=tf.cast(self.initial_mean, dtype),
            initial_cov=self._cov(self.raw_initial_scale, self.initial_cov, dtype, floor=0.0),
            transition_matrix=a,
            transition_cov=self._cov(self.raw_transition_scale, self.transition_cov, dtype),
            observation_matrix=h,
            observation_cov=self._cov(self.raw_observation_scale, self.observation_cov, dtype),
            transition_offset=(tf.cast(self.transition_bias, dtype) if self.use_offsets
                               else None),
            observation_offset=(tf.cast(self.observation_bias, dtype) if self.use_offsets
                                else None),
            control_matrix=tf.cast(self.control_kernel, dtype) if self.action_dim else None,
        )

    def set_state_space_params(self, params: ki.LGSSMParams) -> None:
        """Set the weights so that :meth:`state_space_params` returns ``params`` (NumPy or
        tensors, shared over series and time; needs ``transition="free"``,
        ``observation="free"``, ``transition_cov`` / ``observation_cov`` ``"full"`` (or a
        diagonal Q / R with ``"diag"``), ``initial_cov="full"`` (or a diagonal P_0),
        ``min_scale=0`` and ``use_offsets`` / ``action_dim`` matching the offsets and B).
        Covariances must be positive definite (ValueError naming the one that is not)."""
        if not self.built:
            raise ValueError("build the layer (call it once) before setting its parameters")
        get = lambda x: None if x is None else np.asarray(x, np.float64)  # noqa: E731
        par = ki.LGSSMParams(*[get(x) for x in params])
        if self.transition != "free" or self.observation != "free":
            raise ValueError("known matrices need transition='free' and observation='free'")
        self.transition_kernel.assign(par.transition_matrix)
        self.observation_kernel.assign(par.observation_matrix)
        for name, weight, kind, cov, floor in (
                ("transition_cov", self.raw_transition_scale, self.transition_cov,
                 par.transition_cov, self.min_scale),
                ("observation_cov", self.raw_observation_scale, self.observation_cov,
                 par.observation_cov, self.min_scale),
                ("initial_cov", self.raw_initial_scale, self.initial_cov, par.initial_cov, 0.0)):
            weight.assign(_raw_cov(name, cov, kind, floor))
        self.initial_mean.assign(par.initial_mean)
        for name, weight, value in (("transition_offset", "transition_bias",
                                     par.transition_offset),
                                    ("observation_offset", "observation_bias",
                                     par.observation_offset),
                                    ("control_matrix", "control_kernel", par.control_matrix)):
            if hasattr(self, weight):
                getattr(self, weight).assign(np.zeros(getattr(self, weight).shape)
                                             if value is None else value)
            elif value is not None:
                raise ValueError(f"`{name}` given but the layer has no such parameter "
                                 f"(use_offsets={self.use_offsets}, "
                                 f"action_dim={self.action_dim})")

    def run_filter(self, observations, actions=None, observed=None) -> ki.FilterResult:
        """The full :class:`layers.kalman_inference.FilterResult` for these observations;
        ``observed`` [batch, time]: 1 = frame seen, 0 = missing (or padding)."""
        dtype = math_dtype(self)
        observations = tf.cast(observations, dtype)
        if actions is not None:
            if not self.action_dim:
                raise ValueError("`actions` were given but the layer has action_dim=None.")
            actions = tf.cast(actions, dtype)
        elif self.action_dim:
            raise ValueError(f"The layer has action_dim={self.action_dim}; pass `actions` "
                             f"[batch, time, {self.action_dim}].")
        return ki.kalman_filter(self.state_space_params(dtype), observations, observed,
                                actions, nan_as_missing=self.nan_as_missing,
                                method=self.method, square_root=self.square_root,
                                validate_args=self.validate_args, validate_params=False)

    # ------------------------------------------------------------------------------ call
    def call(self, observations, actions=None, observed=None, mask=None, controls=None):
        actions = ki.renamed_argument(actions, controls, "actions", "controls")
        if mask is not None:  # Keras padding mask: a padded step is skipped like a missing one
            mask = tf.cast(mask, tf.bool)
            observed = mask if observed is None else tf.logical_and(
                tf.cast(observed, tf.bool), mask)
        result = self.run_filter(observations, actions, observed)
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

    def compute_output_spec(self, observations, actions=None, observed=None, mask=None,
                            controls=None):
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
            action_dim=self.action_dim,
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
            initial_cov=self.initial_cov,
        )
        return config


class UnbuiltError(ValueError, AttributeError):
    """A never-called Kalman filter asked for something that needs its sizes (a ValueError,
    and an AttributeError so that ``hasattr`` stays False)."""


def _unbuilt_error(what: str) -> UnbuiltError:
    return UnbuiltError(
        f"the Kalman filter has no {what} yet: it has never seen observations. Call it (or "
        f"`filter`, `fit`) on observations [batch, time, observation_dim] first, or build it "
        f"with `model.build((None, None, observation_dim))`")


def _raw_cov(name, cov, kind, floor):
    """Unconstrained weight for which ``KalmanFilterLayer._cov`` gives ``cov``."""
    cov = np.asarray(cov, np.float64)
    target = cov - floor ** 2 * np.eye(len(cov))
    if kind == "diag":
        if np.any(np.abs(target - np.diag(np.diag(target))) > 0):
            raise ValueError(f"`{name}` is not diagonal: build with {name}='full'")
        return _inverse_softplus(np.sqrt(np.diag(cov)) - floor)
    try:
        tril = np.linalg.cholesky(target)
    except np.linalg.LinAlgError:
        raise ValueError(f"`{name}` must be symmetric positive definite (minus "
                         f"min_scale^2 I), got {cov.tolist()}") from None
    tril[np.diag_indices_from(tril)] = _inverse_softplus(np.diag(tril))
    return _fill_triangular_inverse(tril)


def _fill_triangular_inverse(tril) -> np.ndarray:
    """``tfp.math.fill_triangular_inverse`` of a NumPy matrix, as NumPy, in any context (the
    layer is built inside ``fit``'s graph, where ``.numpy()`` of a graph tensor fails)."""
    with tf.init_scope():
        return tfp.math.fill_triangular_inverse(np.asarray(tril, np.float64)).numpy()


@keras.saving.register_keras_serializable(package=PACKAGE, name="KalmanFilter")
class _KalmanFilterSavedBefore03(KalmanFilterLayer):
    """Loads ``.keras`` files that hold the layer under its former name ``KalmanFilter``."""


def __getattr__(name):
    if name == "KalmanFilter":  # the former name of the layer (one release)
        warnings.warn("zoo.layers.kalman_filter.KalmanFilter is now KalmanFilterLayer "
                      "(zoo.KalmanFilter is the model)", DeprecationWarning, stacklevel=2)
        return KalmanFilterLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

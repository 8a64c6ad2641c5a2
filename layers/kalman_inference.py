r"""Exact inference in linear-Gaussian state-space models (Kalman filter, RTS smoother, FFBS).

Model (Kalman, "A New Approach to Linear Filtering and Prediction Problems", 1960):

$$x_0 \sim N(m_0, P_0),\quad x_t = A_t x_{t-1} + B_t u_t + b_t + w_t,\ w_t \sim N(0, Q_t),$$
$$y_t = H_t x_t + d_t + v_t,\ v_t \sim N(0, R_t).$$

The first observation ``y_0`` sees ``x_0`` directly (as in TFP's ``LinearGaussianStateSpaceModel``),
so ``A_0, B_0 u_0, b_0, Q_0`` are never used. Every function here takes and returns tensors
(``NamedTuple``s of tensors), holds no state and no Keras object, and compiles under
``tf.function(jit_compile=True)``.

Shapes. ``observations`` are ``[batch, time, observation_dim]`` (batch first, as in Keras),
``actions`` ``[batch, time, action_dim]`` (known inputs u_t, "controls" in the control literature;
``control_matrix`` is B) and ``observed`` ``[batch, time]`` (True or 1 = the frame was seen, 0 =
missing; TFP's ``mask`` means the opposite). A padding step after the end of a shorter series is
passed as not observed: it then adds nothing to the log-likelihood. A matrix parameter of base
shape ``[r, c]`` may be given as

- ``[r, c]``: shared by every series and time step;
- ``[batch, r, c]``: one per series (``batch`` may be 1);
- ``[batch, time, r, c]``: one per series and time step (``batch`` may be 1 to share).

Vector parameters (offsets, initial mean) follow the same rule with base shape ``[r]``.

Covariances that are the same for every series (all parameters shared and no mask) are
computed once, not once per series: the returned covariances then have a batch axis of size 1
(``[1, time, n, n]``), which broadcasts against the ``[batch, time, n]`` means.

Numerics: Joseph-form covariance update, symmetrization after each step, and every solve goes
through a Cholesky factor of the innovation covariance $S$ (no explicit inverse).
``square_root=True`` propagates Cholesky factors of the covariances instead, with QR-based
"array" updates (Kailath, Sayed & Hassibi, "Linear Estimation", 2000, ch. 12), which keeps them
positive definite in float32 even when the noise scales differ by many orders of magnitude.
``method="parallel"`` runs the same filter as an associative scan of depth O(log T) (Sarkka &
Garcia-Fernandez, "Temporal Parallelization of Bayesian Smoothers", 2021) for long sequences on
accelerators.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import small_linalg

METHODS = ("sequential", "parallel")
_SMALL = 8  # contraction sizes up to this use broadcast-and-sum instead of matmul
_SMALL_CHOL = 4  # inside the filter loop, S_t of at most this size is factored unrolled


def renamed_argument(value, old_value, name: str, old_name: str, stacklevel: int = 3):
    """``value``, or ``old_value`` passed under an argument's former name (with a
    DeprecationWarning; kept for one release). Both given is an error naming them."""
    if old_value is None:
        return value
    if value is not None:
        raise ValueError(f"pass `{name}` only (`{old_name}` is its deprecated name)")
    warnings.warn(f"`{old_name}=` is deprecated: pass `{name}=` (removed in the next release)",
                  DeprecationWarning, stacklevel=stacklevel)
    return old_value


class LGSSMParams(NamedTuple):
    """Parameters of a linear-Gaussian state-space model (see module docstring for shapes).

    n = state_dim, p = obs_dim, k = control_dim.
    """

    initial_mean: tf.Tensor  # m_0: [n] or [batch, n]
    initial_cov: tf.Tensor  # P_0: [n, n] or [batch, n, n]
    transition_matrix: tf.Tensor  # A: [n, n] (+ batch / batch, time axes)
    transition_cov: tf.Tensor  # Q: [n, n] (...)
    observation_matrix: tf.Tensor  # H: [p, n] (...)
    observation_cov: tf.Tensor  # R: [p, p] (...)
    transition_offset: Optional[tf.Tensor] = None  # b: [n] (...)
    observation_offset: Optional[tf.Tensor] = None  # d: [p] (...)
    control_matrix: Optional[tf.Tensor] = None  # B: [n, k] (...)


class StepResult(NamedTuple):
    """One filter step: filtered moments of x_t, the log-likelihood term, predicted moments."""

    filtered_mean: tf.Tensor  # [batch, n]
    filtered_cov: tf.Tensor  # [batch or none, n, n] (a Cholesky factor when square_root)
    log_likelihood: tf.Tensor  # [batch]: log N(y_t; H m-_t + d, S_t), 0 where masked
    predicted_mean: tf.Tensor  # [batch, n]
    predicted_cov: tf.Tensor  # [batch or none, n, n]


class FilterResult(NamedTuple):
    """Output of :func:`kalman_filter`. Covariance batch axis is 1 when shared by all series."""

    log_likelihood: tf.Tensor  # [batch]: total
    log_likelihoods: tf.Tensor  # [batch, time]: per step, 0 where masked
    filtered_means: tf.Tensor  # [batch, time, n]: E[x_t | y_{0:t}]
    filtered_covs: tf.Tensor  # [batch | 1, time, n, n]
    predicted_means: tf.Tensor  # [batch, time, n]: E[x_t | y_{0:t-1}] (m_0 at t = 0)
    predicted_covs: tf.Tensor  # [batch | 1, time, n, n]


class SmootherResult(NamedTuple):
    smoothed_means: tf.Tensor  # [batch, time, n]: E[x_t | y_{0:T-1}]
    smoothed_covs: tf.Tensor  # [batch | 1, time, n, n]


class ForecastResult(NamedTuple):
    state_means: tf.Tensor  # [batch, steps, n]: E[x_{T-1+h} | y_{0:T-1}], h = 1..steps
    state_covs: tf.Tensor  # [batch | 1, steps, n, n]
    observation_means: tf.Tensor  # [batch, steps, p]
    observation_covs: tf.Tensor  # [batch | 1, steps, p, p]


# ------------------------------------------------------------------------------ linear algebra
def _t(x):
    return tf.linalg.matrix_transpose(x)


def _sym(x):
    return 0.5 * (x + _t(x))


def _mv(a, v):
    """Matrix-vector products a v.

    ``a`` [..., r, c] with one batch axis more than ``v`` [..., c] is a batched matvec;
    ``a`` with as many axes as ``v`` (or a plain [r, c]) lacks ``v``'s last batch axis
    (a matrix shared by the series) and becomes one GEMM ``v a^T``.
    """
    small = a.shape[-1] is not None and a.shape[-1] <= _SMALL
    if a.shape.rank == v.shape.rank + 1:
        if small:
            return tf.reduce_sum(a * v[..., None, :], -1)
        return tf.squeeze(tf.matmul(a, v[..., None]), -1)
    if small:  # an elementwise product and a sum fuse into one loop; a tiny GEMM does not
        return tf.reduce_sum(a[..., None, :, :] * v[..., :, None, :], -1)
    return tf.matmul(v, a, transpose_b=True)


def _in_xla() -> bool:
    """Whether the ops being built will be compiled by XLA (``jit_compile=True``)."""
    get = getattr(getattr(tf, "__internal__", None), "get_enclosing_xla_context", None)
    return get is not None and get() is not None


def _mm(a, b, transpose_b=False):
    """``tf.matmul`` for small contractions, as a broadcast product and a sum.

    Inside an XLA while loop on CPU these fuse into plain loops, while each of a chain of tiny
    ``tf.matmul``s becomes a separate runtime call (about 0.4 us apiece, measured on the
    benchmark's 4x4 Riccati step). Same broadcasting of batch axes as ``tf.matmul``. Without
    XLA every op is dispatched on its own, so there one ``tf.matmul`` is cheaper.
    """
    k = a.shape[-1]
    if k is None or k > _SMALL:
        return tf.matmul(a, b, transpose_b=transpose_b)
    if transpose_b:
        return tf.reduce_sum(a[..., :, None, :] * b[..., None, :, :], -1)
    return tf.reduce_sum(a[..., :, :, None] * b[..., None, :, :], -2)


def _gaussian_log_lik(chol_s, innovation):
    """log N(e; 0, S) from chol(S) [..., p, p] and e [..., p] (same layout rule as ``_mv``)."""
    p = innovation.shape[-1]
    if chol_s.shape.rank == innovation.shape.rank + 1:
        z = tf.linalg.triangular_solve(chol_s, innovation[..., None], lower=True)[..., 0]
    else:  # shared S: solve all series at once with the series as right-hand sides
        z = _t(tf.linalg.triangular_solve(chol_s, _t(innovation), lower=True))
    diag = tf.abs(tf.linalg.diag_part(chol_s))
    log_det = 2.0 * tf.reduce_sum(tf.math.log(diag), -1)
    if chol_s.shape.rank == innovation.shape.rank:
        log_det = log_det[..., None]
    return -0.5 * (tf.reduce_sum(tf.square(z), -1) + log_det + p * math.log(2.0 * math.pi))


def _tril_from_wide(m):
    """Lower-triangular L with L L^T = M M^T for M [..., r, c], c >= r, via QR of M^T."""
    _, r = tf.linalg.qr(_t(m))  # M^T = Q R, so M M^T = R^T R
    lower = _t(r)
    sign = tf.where(tf.linalg.diag_part(lower) < 0, -tf.ones_like(lower[..., 0, :]),
                    tf.ones_like(lower[..., 0, :]))
    return lower * sign[..., None, :]


def _bcast_batch(*mats):
    """Broadcast the batch axes (all but the last two) of matrices to a common shape."""
    shape = tf.shape(mats[0])[:-2]
    for m in mats[1:]:
        shape = tf.broadcast_dynamic_shape(shape, tf.shape(m)[:-2])
    return [tf.broadcast_to(m, tf.concat([shape, tf.shape(m)[-2:]], 0)) for m in mats]


def _where(mask, new, old):
    """Per-series select; ``mask`` is None (all observed) or a bool [batch]."""
    if mask is None:
        return new
    m = tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones([new.shape.rank - 1], tf.int32)], 0))
    return tf.where(m, new, old)


# ------------------------------------------------------------------------------ one step
def predict_covariance(cov, transition_matrix, transition_cov, square_root: bool = False):
    """P- = A P A^T + Q (symmetrized); with ``square_root``, chol(P-) from chol(P), chol(Q)."""
    return _predict_covariance(cov, transition_matrix, transition_cov, square_root)


def _predict_covariance(cov, transition_matrix, transition_cov, square_root, matmul=tf.matmul):
    if square_root:
        a_u, lq = _bcast_batch(tf.matmul(transition_matrix, cov), transition_cov)
        return _tril_from_wide(tf.concat([a_u, lq], -1))
    return _sym(matmul(matmul(transition_matrix, cov), transition_matrix, transpose_b=True)
                + transition_cov)


def predict_step(mean, cov, transition_matrix, transition_cov, transition_shift=None,
                 square_root: bool = False):
    """p(x_t | y_{<t}) from p(x_{t-1} | y_{<t}): m- = A m + shift, P- = A P A^T + Q.

    With ``square_root`` the covariance arguments and result are lower Cholesky factors
    (``transition_cov`` is then chol(Q)). Returns (m-, P-).
    """
    mean, cov, transition_matrix, transition_cov, transition_shift = _tensors(
        mean, cov, transition_matrix, transition_cov, transition_shift)
    pred_mean = _mv(transition_matrix, mean)
    if transition_shift is not None:
        pred_mean = pred_mean + transition_shift
    return pred_mean, predict_covariance(cov, transition_matrix, transition_cov, square_root)


def _tensors(first, *rest):
    """Convert arguments to tensors of ``first``'s float dtype (None stays None)."""
    first = tf.convert_to_tensor(first)
    if not first.dtype.is_floating:
        first = tf.cast(first, tf.float32)
    return [first] + [None if x is None else tf.convert_to_tensor(x, first.dtype) for x in rest]


def covariance_update(cov, observation_matrix, observation_cov, square_root: bool = False):
    """Data-free half of the update: (P, chol(S), K) from the predicted covariance P-.

    Joseph form P = (I - K H) P- (I - K H)^T + K R K^T with K^T = S^-1 H P- by a Cholesky
    solve. With ``square_root``, ``cov`` and the returned P are lower Cholesky factors,
    ``observation_cov`` is chol(R), and the QR "array" update
    [[chol R, H U], [0, U]] -> [[chol S, 0], [G, U+]] gives K = G chol(S)^-1.
    """
    return _covariance_update(cov, observation_matrix, observation_cov, square_root)


def _covariance_update(cov, observation_matrix, observation_cov, square_root, small=False):
    """:func:`covariance_update`; ``small``: small products by :func:`_mm` and, for a small
    S, an unrolled Cholesky factorization and solves (the filter loop's fast path)."""
    h, r = observation_matrix, observation_cov
    p = h.shape[-2]
    if square_root:
        hu = tf.matmul(h, cov)  # H U  [.., p, n]
        r, hu, u = _bcast_batch(r, hu, cov)
        top = tf.concat([r, hu], -1)
        bottom = tf.concat([tf.zeros_like(_t(hu)), u], -1)
        post = _tril_from_wide(tf.concat([top, bottom], -2))
        chol_s = post[..., :p, :p]
        gain_t = tf.linalg.triangular_solve(chol_s, _t(post[..., p:, :p]), lower=True,
                                            adjoint=True)
        return post[..., p:, p:], chol_s, _t(gain_t)
    n = cov.shape[-1]
    matmul = _mm if small else tf.matmul
    hp = matmul(h, cov)  # [.., p, n]
    s = _sym(matmul(hp, h, transpose_b=True) + r)
    if small and p is not None and p <= _SMALL_CHOL:
        chol_s = small_linalg.small_cholesky(s)
        gain = _t(small_linalg.cholesky_solve(chol_s, hp))
    else:
        chol_s = tf.linalg.cholesky(s)
        gain = _t(tf.linalg.cholesky_solve(chol_s, hp))  # K = P- H^T S^-1
    ikh = tf.eye(n, dtype=cov.dtype) - matmul(gain, h)
    new_cov = _sym(matmul(matmul(ikh, cov), ikh, transpose_b=True)
                   + matmul(matmul(gain, r), gain, transpose_b=True))
    return new_cov, chol_s, gain


def update_step(mean, cov, y, mask, observation_matrix, observation_cov,
                square_root: bool = False):
    """Condition N(mean, cov) on y = H x + v, v ~ N(0, R); returns (mean, cov, log_lik).

    ``y`` is ``[batch, p]`` with any observation offset already subtracted; ``mask`` None or
    bool ``[batch]`` (False skips the update and gives a log-likelihood term of 0). See
    :func:`covariance_update` for the covariance arithmetic.
    """
    mean, cov, y, observation_matrix, observation_cov = _tensors(
        mean, cov, y, observation_matrix, observation_cov)
    if mask is not None:
        mask = tf.cast(mask, tf.bool)
    new_cov, chol_s, gain = covariance_update(cov, observation_matrix, observation_cov,
                                              square_root)
    innovation = y - _mv(observation_matrix, mean)
    new_mean = mean + _mv(gain, innovation)
    log_lik = _gaussian_log_lik(chol_s, innovation)
    if mask is not None:
        log_lik = tf.where(mask, log_lik, tf.zeros_like(log_lik))
        new_mean = _where(mask, new_mean, mean)
        new_cov = _where(mask, new_cov, cov)
    return new_mean, new_cov, log_lik


def filter_step(mean, cov, y, mask, transition_matrix, transition_cov, observation_matrix,
                observation_cov, transition_shift=None, observation_offset=None,
                square_root: bool = False) -> StepResult:
    """One Kalman step: predict x_t from the filtered x_{t-1}, then update on y_t.

    Args:
        mean: [batch, n]. Filtered mean of x_{t-1}.
        cov: [n, n] or [batch, n, n]. Filtered covariance (Cholesky factor if square_root).
        y: [batch, p]. Observation y_t.
        mask: None or bool [batch]. False marks y_t missing (update and log-lik skipped).
        transition_matrix, transition_cov: A_t [.., n, n], Q_t (chol(Q_t) if square_root).
        observation_matrix, observation_cov: H_t [.., p, n], R_t (chol(R_t) if square_root).
        transition_shift: None or [batch, n]. B_t u_t + b_t.
        observation_offset: None or [.., p]. d_t.
    """
    pred_mean, pred_cov = predict_step(mean, cov, transition_matrix, transition_cov,
                                       transition_shift, square_root)
    if observation_offset is not None:
        y = tf.convert_to_tensor(y, pred_mean.dtype) - tf.cast(observation_offset,
                                                              pred_mean.dtype)
    new_mean, new_cov, log_lik = update_step(pred_mean, pred_cov, y, mask, observation_matrix,
                                             observation_cov, square_root)
    return StepResult(new_mean, new_cov, log_lik, pred_mean, pred_cov)


# ------------------------------------------------------------------------------ built-in-op step
# The step that the models' public ``filter_step`` methods use and that ``zoo.export`` traces
# into TFLite graphs: TFLite has no Cholesky or triangular-solve built-in, so every solve goes
# through the unrolled factorization of :mod:`layers.small_linalg` (elementwise ops only).
class GaussianStep(NamedTuple):
    """A linear-Gaussian update: filtered moments, predicted observation, log-likelihood."""

    mean: tf.Tensor  # [batch, n]: E[x_t | y_{0:t}]
    cov: tf.Tensor  # [batch, n, n]
    predicted_observation: tf.Tensor  # [batch, p]: E[y_t | y_{<t}]
    log_likelihood: tf.Tensor  # [batch]: log N(y_t; H m- + d, S)


def _bmv(matrix, v):
    """v [batch, c] times matrix^T, matrix [r, c] shared or [batch, r, c]."""
    if matrix.shape.rank == 2:
        return tf.matmul(v, matrix, transpose_b=True)
    return tf.reduce_sum(matrix * v[:, None, :], -1)


def linear_gaussian_update(pred_mean, pred_cov, y, observation_matrix, observation_cov,
                           observation_offset=None) -> GaussianStep:
    r"""Condition N(m-, P-) on y = H x + d + v, v ~ N(0, R), with TFLite built-in ops only.

    With $L = \mathrm{chol}(H P^- H^\top + R)$, $Z = L^{-1} H P^-$ and $w = L^{-1} e$ for the
    innovation $e = y - H m^- - d$: $m = m^- + Z^\top w$, $P = P^- - Z^\top Z$ and
    $\log p(y) = -\frac12(\|w\|^2 + \log\det S + p \log 2\pi)$ -- one unrolled Cholesky and one
    forward substitution on $[H P^- \mid e]$, no back substitution. The same posterior as
    :func:`update_step` (Joseph form, ``tf.linalg`` solves) up to rounding.

    Shapes: ``pred_mean`` [batch, n], ``pred_cov`` [batch, n, n], ``y`` [batch, p], ``H``
    [p, n] or [batch, p, n], ``R`` [p, p] or [batch, p, p], ``d`` [p] / [batch, p] or None.
    """
    h, r = observation_matrix, observation_cov
    n, p = small_linalg.static_size(pred_cov), small_linalg.static_size(y)
    predicted_y = _bmv(h, pred_mean)
    if observation_offset is not None:
        predicted_y = predicted_y + observation_offset
    hp = tf.matmul(h, pred_cov)  # a shared [p, n] broadcasts over the batch
    s = tf.matmul(hp, h, transpose_b=True) + r  # only its lower triangle is read
    chol = small_linalg.small_cholesky(s)
    innovation = y - predicted_y
    zw = small_linalg.forward_substitution(
        chol, tf.concat([hp, innovation[..., None]], -1))  # [b, p, n+1]
    z, w = zw[..., :n], zw[..., n]
    mean = pred_mean + tf.reduce_sum(z * w[..., None], -2)
    cov = pred_cov - tf.matmul(z, z, transpose_a=True)
    cov = 0.5 * (cov + tf.linalg.matrix_transpose(cov))
    log_lik = -0.5 * (tf.reduce_sum(tf.square(w), -1) + small_linalg.log_det_from_cholesky(chol)
                      + p * math.log(2.0 * math.pi))
    return GaussianStep(mean, cov, predicted_y, log_lik)


def linear_gaussian_predict(mean, cov, transition_matrix, transition_cov, shift=None):
    """m- = A m + shift, P- = A P A^T + Q for A, Q [n, n] shared or [batch, n, n], built-in ops.

    P- is symmetric up to rounding; :func:`linear_gaussian_update` symmetrizes its result.
    """
    a = transition_matrix
    pred_mean = _bmv(a, mean)
    if shift is not None:
        pred_mean = pred_mean + shift
    return pred_mean, tf.matmul(tf.matmul(a, cov), a, transpose_b=True) + transition_cov


# ------------------------------------------------------------------------------ inputs
class _Param(NamedTuple):
    value: tf.Tensor  # base, [B, base], [T, base] or [T, B, base]
    time_varying: bool
    batched: bool


def _canon(x, base_rank, name, batch, steps, dtype, base_shape=None):
    """Bring a parameter to (value, time_varying, batched) with time first when time-varying."""
    x = tf.convert_to_tensor(x, dtype=dtype)
    rank = x.shape.rank
    if rank is None:
        raise ValueError(f"`{name}` must have a known rank.")
    if base_shape is not None:
        got = tuple(x.shape[rank - base_rank:]) if rank >= base_rank else tuple(x.shape)
        for g, w in zip(got, base_shape):
            if g is not None and w is not None and g != w:
                raise ValueError(f"`{name}` must have trailing shape {tuple(base_shape)}, got "
                                 f"shape {tuple(x.shape)}.")
    if rank == base_rank:
        return _Param(x, False, False)
    lead = x.shape[0]
    if lead is not None and batch is not None and lead not in (1, batch):
        raise ValueError(f"`{name}` has batch size {lead} but the observations have {batch}.")
    if rank == base_rank + 1:
        if lead == 1:
            return _Param(x[0], False, False)
        return _Param(x, False, True)
    if rank == base_rank + 2:
        if x.shape[1] is not None and steps is not None and x.shape[1] != steps:
            raise ValueError(f"`{name}` has {x.shape[1]} time steps but the observations have "
                             f"{steps}.")
        if lead == 1:
            return _Param(x[0], True, False)
        return _Param(tf.experimental.numpy.swapaxes(x, 0, 1), True, True)
    raise ValueError(f"`{name}` must have rank {base_rank} (shared), {base_rank + 1} ([batch, "
                     f"...]) or {base_rank + 2} ([batch, time, ...]), got shape "
                     f"{tuple(x.shape)}.")


def _host_value(x):
    """``x`` as a NumPy array when its value is known while the graph is built (eager, a
    constant, or an eager tensor captured by a ``tf.function``), else None."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple, float, int)):
        return np.asarray(x)
    if tf.executing_eagerly():
        try:
            return np.asarray(x)
        except (NotImplementedError, ValueError, TypeError):
            return None
    if not tf.is_tensor(x) or isinstance(x, tf.Variable):
        return None
    try:
        value = tf.get_static_value(x)
    except (TypeError, ValueError):
        value = None
    if value is not None:
        return value
    graph = getattr(x, "graph", None)
    try:
        captures = list(getattr(graph, "captures", ()))
    except (TypeError, AttributeError):
        captures = []
    for outer, inner in captures:  # an eager tensor captured by the function being traced
        if inner is x:
            if getattr(outer, "dtype", tf.resource) == tf.resource:
                return None
            try:
                return outer.numpy()
            except (AttributeError, NotImplementedError, ValueError, TypeError):
                return None
    return None


def _psd_message(name, v):
    """Why the covariance ``v`` (NumPy, [..., n, n]) is not a covariance, or None."""
    v = np.asarray(v, np.float64)
    if not np.all(np.isfinite(v)):
        return f"`{name}` contains NaN or Inf."
    scale = max(np.max(np.abs(v)), 1e-300)
    if np.max(np.abs(v - np.swapaxes(v, -1, -2))) > 1e-6 * scale:
        return f"`{name}` must be symmetric."
    low = np.min(np.linalg.eigvalsh(v))
    if low < -1e-8 * scale:
        return (f"`{name}` must be positive semi-definite; its smallest eigenvalue is "
                f"{low:.3g}.")
    return None


def _check_psd(x, name):
    """Check that a user-given covariance is a finite symmetric positive semi-definite matrix.

    When its value is known on the host (eager, or a constant / captured eager tensor while a
    ``tf.function`` is traced, with or without ``jit_compile``): ValueError now. Otherwise (a
    tensor computed in the graph, e.g. a ``tf.function`` argument): in a plain graph an assert
    that raises ``InvalidArgumentError`` with the same message when run; under XLA, where
    asserts are dropped, the returned bool tensor (False = invalid) with which the caller
    turns the log-likelihood into NaN. Returns None when nothing is left to check at run time.
    """
    value = _host_value(x)
    if value is not None:
        msg = _psd_message(name, value)
        if msg:
            raise ValueError(msg)
        return None
    x = tf.convert_to_tensor(x)
    scale = tf.maximum(tf.reduce_max(tf.abs(x)), tf.constant(1e-300, x.dtype)
                       if x.dtype == tf.float64 else tf.constant(1e-30, x.dtype))
    finite = tf.reduce_all(tf.math.is_finite(x))
    safe = tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))
    symmetric = tf.reduce_max(tf.abs(safe - _t(safe))) <= 1e-6 * scale
    psd = tf.reduce_min(tf.linalg.eigvalsh(_sym(safe))) >= -1e-8 * scale
    ok = tf.logical_and(finite, tf.logical_and(symmetric, psd))
    if _in_xla():
        return ok
    return tf.debugging.Assert(ok, [f"`{name}` must be a finite symmetric positive "
                                    f"semi-definite matrix"], name=f"check_{name}")


def _check_flags(mask, steps, batch, values=True):
    """``observed`` must be [batch, time] of 0/1 (bool too): ValueError on the host; a graph
    assert, or under XLA a bool tensor for the NaN guard, when its value is not known."""
    if mask.shape.rank != 2:
        raise ValueError(f"`observed` must be [batch, time], got shape {tuple(mask.shape)}.")
    if mask.shape[1] is not None and steps is not None and mask.shape[1] != steps:
        raise ValueError(f"`observed` (or `mask`) has {mask.shape[1]} time steps but the "
                         f"observations have {steps}.")
    if mask.shape[0] is not None and batch is not None and mask.shape[0] not in (batch,):
        raise ValueError(f"`observed` (or `mask`) has {mask.shape[0]} sequences but the "
                         f"observations have {batch}.")
    if mask.dtype == tf.bool or not values:
        return None
    value = _host_value(mask)
    if value is not None:
        bad = ~((value == 0) | (value == 1))
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"`observed` (or `mask`) must hold only 0 and 1, got "
                             f"{value[at].item()!r} at (batch, time) = {at}.")
        return None
    ok = tf.reduce_all(tf.logical_or(tf.equal(mask, 0), tf.equal(mask, 1)))
    if _in_xla():
        return ok
    return tf.debugging.Assert(ok, ["`observed` (or `mask`) must hold only 0 and 1"],
                               name="check_observed")


class _Model(NamedTuple):
    """Time-major step inputs for t = 0..T-1 with the t = 0 step made uniform.

    Step 0 uses A_0 = 0, shift_0 = m_0 and Q_0 = P_0, so that predicting from (0, 0) gives the
    prior; every step is then the same predict-update.
    """

    y: tf.Tensor  # [T, B, p], offsets removed, zeros where missing
    mask: Optional[tf.Tensor]  # [T, B] bool or None
    shift: tf.Tensor  # [T, B | 1, n]
    a: _Param
    q: _Param
    h: _Param
    r: _Param
    m0: tf.Tensor  # [n] or [B, n]
    p0: tf.Tensor  # [n, n] or [B, n, n]
    cov_batched: bool
    batch: tf.Tensor  # scalar int
    steps: int
    valid: Optional[tf.Tensor] = None  # under XLA: False when a run-time check failed


def _prepare(params: LGSSMParams, observations, mask=None, controls=None,
             nan_as_missing=False, validate_args=True, validate_params=None) -> _Model:
    y = tf.convert_to_tensor(observations)
    if not y.dtype.is_floating:
        y = tf.cast(y, tf.float32)
    dtype = y.dtype
    if y.shape.rank != 3:
        raise ValueError(f"`observations` must be [batch, time, obs_dim], got shape "
                         f"{tuple(y.shape)}.")
    batch, steps, p = y.shape
    if steps == 0:
        raise ValueError("`observations` have 0 time steps (shape "
                         f"{tuple(y.shape)}): a sequence needs at least one step.")
    h_raw = tf.convert_to_tensor(params.observation_matrix, dtype)
    n = h_raw.shape[-1]
    if h_raw.shape[-2] is not None and p is not None and h_raw.shape[-2] != p:
        raise ValueError(f"`observation_matrix` maps to {h_raw.shape[-2]} observation dims but "
                         f"the observations have obs_dim={p}.")
    canon = lambda x, r, name, base: _canon(x, r, name, batch, steps, dtype, base)  # noqa: E731
    a = canon(params.transition_matrix, 2, "transition_matrix", (n, n))
    q = canon(params.transition_cov, 2, "transition_cov", (n, n))
    h = canon(h_raw, 2, "observation_matrix", (p, n))
    r = canon(params.observation_cov, 2, "observation_cov", (p, p))
    m0 = canon(params.initial_mean, 1, "initial_mean", (n,))
    p0 = canon(params.initial_cov, 2, "initial_cov", (n, n))
    if m0.time_varying or p0.time_varying:
        raise ValueError("`initial_mean` / `initial_cov` cannot have a time axis.")
    checks = []  # run-time checks: graph asserts, or under XLA bools for the NaN guard
    if validate_params is None:
        validate_params = validate_args
    if validate_params:
        for name, par in (("transition_cov", params.transition_cov),
                          ("observation_cov", params.observation_cov),
                          ("initial_cov", params.initial_cov)):
            checks.append(_check_psd(par, name))
    nb = tf.shape(y)[0]
    # Missing data.
    finite = tf.reduce_all(tf.math.is_finite(y), -1)
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        checks.append(_check_flags(mask, steps, batch, validate_args))
        mask = tf.cast(mask, tf.bool)
    if nan_as_missing:
        mask = finite if mask is None else tf.logical_and(mask, finite)
    if tf.executing_eagerly() and validate_args:
        raise_if_nonfinite_observed(finite.numpy(), None if mask is None else mask.numpy())
    if mask is not None:
        y = tf.where(mask[..., None], y, tf.zeros_like(y))
    # Offsets, controls.
    if params.observation_offset is not None:
        d = canon(params.observation_offset, 1, "observation_offset", (p,))
        dv = d.value
        if d.time_varying and d.batched:
            dv = tf.experimental.numpy.swapaxes(dv, 0, 1)
        elif d.time_varying:
            dv = dv[None]
        y = y - dv
    shift = tf.zeros([1, 1, n], dtype)
    if params.transition_offset is not None:
        b = canon(params.transition_offset, 1, "transition_offset", (n,))
        bv = b.value
        if not b.time_varying:
            bv = bv[None] if b.batched else bv[None, None]
        elif not b.batched:
            bv = bv[:, None]
        shift = shift + bv
    if controls is not None:
        if params.control_matrix is None:
            raise ValueError("`actions` were given but `control_matrix` is None.")
        u = tf.convert_to_tensor(controls, dtype)
        if u.shape.rank != 3:
            raise ValueError(f"`actions` must be [batch, time, action_dim], got shape "
                             f"{tuple(u.shape)}.")
        if u.shape[1] is not None and steps is not None and u.shape[1] != steps:
            raise ValueError(f"`actions` have {u.shape[1]} time steps but the observations "
                             f"have {steps}.")
        bm = canon(params.control_matrix, 2, "control_matrix", (n, u.shape[-1]))
        ut = tf.experimental.numpy.swapaxes(u, 0, 1)  # [T, B, k]
        bmat = bm.value if not (bm.batched and not bm.time_varying) else bm.value[None]
        shift = shift + _mv(bmat, ut)
    yt = tf.experimental.numpy.swapaxes(y, 0, 1)
    mt = None if mask is None else tf.transpose(mask)
    cov_batched = (mask is not None) or any(x.batched for x in (a, q, h, r, p0))
    checks = [c for c in checks if c is not None]
    valid = None
    if checks and _in_xla():
        valid = tf.reduce_all(tf.stack(checks))
    elif checks:  # graph asserts: the observations wait for them
        with tf.control_dependencies(checks):
            yt = tf.identity(yt)
    return _Model(yt, mt, shift, a, q, h, r, m0.value, p0.value, cov_batched, nb, steps,
                  valid)


def _at(par: _Param, t):
    return tf.gather(par.value, t) if par.time_varying else par.value


def _time_major(par: _Param, steps):
    """[T, ...] version of a parameter (broadcast along time when it is not time-varying)."""
    if par.time_varying:
        return par.value
    return tf.broadcast_to(par.value[None], tf.concat([[steps], tf.shape(par.value)], 0))


def _cov_out(cov_tm, batched):
    """[T, (B,) n, n] -> [B | 1, T, n, n]."""
    if batched:
        return tf.experimental.numpy.swapaxes(cov_tm, 0, 1)
    return cov_tm[None]


def _chol_param(par: _Param) -> _Param:
    return _Param(tf.linalg.cholesky(par.value), par.time_varying, par.batched)


# ------------------------------------------------------------------------------ filters
def kalman_filter(params: LGSSMParams, observations, observed=None, actions=None,
                  nan_as_missing: bool = False, method: str = "sequential",
                  square_root: bool = False, validate_args: bool = True,
                  steady_state: bool = True, *, mask=None, controls=None,
                  validate_params: bool | None = None) -> FilterResult:
    """Forward Kalman filter: filtered and predicted moments and the log-likelihood.

    Args:
        params: LGSSMParams. Shapes in the module docstring.
        observations: [batch, time, observation_dim].
        observed: None or [batch, time] bool/0-1. 0 = missing or padding (no update, no
            log-likelihood term).
        actions: None or [batch, time, action_dim]. Inputs u_t (u_0 is unused).
        nan_as_missing: bool. Treat a step with any NaN observation as missing.
        method: str. ``"sequential"`` (a scan) or ``"parallel"`` (associative scan).
        square_root: bool. Propagate Cholesky factors (sequential method only).
        validate_args: bool. Check the inputs: covariances finite, symmetric and positive
            semi-definite, ``observed`` only 0/1, no NaN at observed steps (this last one
            eagerly only). A value known while the function is built (eager, or a constant /
            captured eager tensor under ``tf.function``, ``jit_compile`` or not) is checked
            on the host: ValueError naming it. A value computed in a graph is checked when
            run: by an assert in a plain ``tf.function`` (``InvalidArgumentError`` naming
            it); under ``jit_compile=True``, which drops asserts, an invalid input makes
            ``log_likelihood``, ``log_likelihoods`` and ``filtered_means`` NaN instead of a
            finite meaningless number.
        steady_state: bool. With time-invariant shared parameters and no mask, stop
            recomputing the covariances once they have converged to machine precision.
        mask, controls: deprecated names of ``observed`` and ``actions`` (one release).
        validate_params: bool or None. The covariance checks alone (None: as
            ``validate_args``); off for covariances valid by construction (the model's).
    """
    observed = renamed_argument(observed, mask, "observed", "mask")
    actions = renamed_argument(actions, controls, "actions", "controls")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
    if square_root and method == "parallel":
        raise ValueError("`square_root=True` is only available with method='sequential'.")
    mdl = _prepare(params, observations, observed, actions, nan_as_missing, validate_args,
                   validate_params)
    dtype = mdl.y.dtype
    n = mdl.m0.shape[-1]
    if method == "parallel":
        result = _parallel_filter(mdl, dtype, n)
    else:
        result = _sequential_filter(mdl, dtype, n, square_root, steady_state)
    if mdl.valid is not None:  # under XLA: an invalid input gives NaN, not a finite number
        nan = tf.where(mdl.valid, tf.zeros([], dtype), tf.constant(np.nan, dtype))
        result = result._replace(log_likelihood=result.log_likelihood + nan,
                                 log_likelihoods=result.log_likelihoods + nan,
                                 filtered_means=result.filtered_means + nan)
    return result


def _sequential_filter(mdl: _Model, dtype, n, square_root, steady_state=True) -> FilterResult:
    """Two loops over time. The first runs the data-free covariance recursion (once for all
    series when they share it) and yields P-_t, P_t, chol(S_t), K_t; the second runs the
    means, innovations and log-likelihood terms for every series.

    With time-invariant shared parameters and no mask, the covariances stop changing after a
    few dozen steps (the Riccati recursion converges); once an update leaves them unchanged
    to within a few ulps, later steps reuse them instead of recomputing (statsmodels does the
    same). ``steady_state=False`` always recomputes.
    """
    steps = tf.shape(mdl.y)[0]
    q, r, p0 = mdl.q, mdl.r, mdl.p0
    if square_root:
        q, r = _chol_param(q), _chol_param(r)
        p0 = tf.linalg.cholesky(p0)
    if mdl.cov_batched:
        p0 = tf.broadcast_to(p0, tf.stack([mdl.batch, n, n]))
    mask = mdl.mask
    invariant = not any(par.time_varying for par in (mdl.a, q, mdl.h, r))
    steady_state = steady_state and invariant and mask is None
    tol = 8.0 * np.finfo(dtype.as_numpy_dtype).eps
    # Under XLA the loop bodies use fused small products, an unrolled Cholesky factorization
    # of S_t and batch-major reads of y_t (see _mm); the same arithmetic up to rounding.
    fast = _in_xla()

    def cov_update(pred, t):
        new, chol_s, gain = _covariance_update(pred, _at(mdl.h, t), _at(r, t), square_root,
                                               small=fast)
        if mask is not None:
            new = _where(mask[t], new, pred)
        return pred, new, chol_s, gain

    def cov_step(t, carry):
        prev, done = carry

        def compute():
            pred = _predict_covariance(prev[1], _at(mdl.a, t), _at(q, t), square_root,
                                       _mm if fast else tf.matmul)
            new = cov_update(pred, t)
            scale = tf.reduce_max(tf.abs(new[1]))
            same = tf.logical_and(
                tf.reduce_max(tf.abs(new[1] - prev[1])) <= tol * scale,
                tf.reduce_max(tf.abs(new[0] - prev[0])) <= tol * tf.reduce_max(tf.abs(new[0])))
            return new, same

        if steady_state:
            new, done = tf.cond(done, lambda: (prev, done), compute)
        else:
            new, done = compute()
        return (new, done), new

    first = cov_update(p0, 0)
    _, rest = _loop(cov_step, (first, tf.constant(False)), 1, steps, first)
    pred_cov, filt_cov, chol_s, gain = (tf.concat([f[None], x], 0) for f, x in zip(first, rest))
    if square_root:
        pred_cov = tf.matmul(pred_cov, pred_cov, transpose_b=True)
        filt_cov = tf.matmul(filt_cov, filt_cov, transpose_b=True)
    if mask is not None:
        gain = tf.where(mask[:, :, None, None], gain, tf.zeros_like(gain))
    # Means, innovations and log-likelihood terms in one loop over time that keeps the running
    # total in its carry: when only the total is used, XLA drops the stacked outputs. The
    # data-free parts (chol(S_t)^-1 by a triangular solve, log det S_t) are done beforehand.
    h, k_gain, a_par = mdl.h, gain, mdl.a
    shift = mdl.shift  # [T | 1, B | 1, n]
    y = mdl.y
    p = y.shape[-1]
    eye_p = tf.eye(p, dtype=dtype) + tf.zeros_like(chol_s)
    whiten = tf.linalg.triangular_solve(chol_s, eye_p, lower=True)  # chol(S_t)^-1
    log_norm = -(tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(chol_s))), -1)
                 + 0.5 * p * math.log(2.0 * math.pi))  # [T] or [T, B]
    if not mdl.cov_batched:
        log_norm = log_norm[:, None]
    log_norm_total = tf.reduce_sum(log_norm, 0)  # [1 | B] (sum before broadcasting to [T, B])
    log_norm = log_norm + tf.zeros_like(y[..., 0])  # [T, B]
    if mask is not None:
        log_norm = tf.where(mask, log_norm, tf.zeros_like(log_norm))
        log_norm_total = tf.reduce_sum(log_norm, 0)
    # Under XLA the loop reads y_t from the batch-major observations (XLA cancels the two
    # transposes), which saves copying all of them to time-major order first.
    y_bm = tf.experimental.numpy.swapaxes(y, 0, 1) if fast else None  # [B, T, p]

    def mean_step(t, mean_pred):
        e = (y_bm[:, t] if fast else y[t]) - _mv(_at(h, t), mean_pred)
        quad = -0.5 * tf.reduce_sum(tf.square(_mv(whiten[t], e)), -1)
        if mask is not None:
            quad = tf.where(mask[t], quad, tf.zeros_like(quad))
        return mean_pred + _mv(k_gain[t], e), quad

    m0 = mdl.m0 + tf.zeros_like(y[0, :, :1])  # [B, n]
    filt0, quad0 = mean_step(0, m0)
    time_varying_shift = shift.shape[0] != 1

    def body(t, carry):
        mean, total = carry
        c = shift[t] if time_varying_shift else shift[0]
        mean_pred = _mv(_at(a_par, t), mean) + c
        filt, quad = mean_step(t, mean_pred)
        return (filt, total + quad), (filt, mean_pred, quad)

    (_, total), (filt_mean, pred_mean, quad) = _loop(body, (filt0, quad0), 1, steps,
                                                      (filt0, filt0, quad0))
    filt_mean = tf.concat([filt0[None], filt_mean], 0)
    pred_mean = tf.concat([m0[None], pred_mean], 0)
    lls = tf.transpose(tf.concat([quad0[None], quad], 0) + log_norm)
    total = total + log_norm_total
    swap = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)  # noqa: E731
    return FilterResult(total, lls, swap(filt_mean), _cov_out(filt_cov, mdl.cov_batched),
                        swap(pred_mean), _cov_out(pred_cov, mdl.cov_batched))


def _loop(body, init, start, stop, out_like):
    """Run ``carry, out = body(t, carry)`` for t in [start, stop); returns the final carry and
    the outputs stacked along a new leading axis. ``out_like``: tensors shaped like ``out``."""
    tas = tf.nest.map_structure(
        lambda o: tf.TensorArray(o.dtype, size=stop - start, element_shape=o.shape), out_like)

    def step(t, carry, tas):
        carry, out = body(t, carry)
        tas = tf.nest.map_structure(lambda ta, o: ta.write(t - start, o), tas, out)
        return t + 1, carry, tas

    _, carry, tas = tf.while_loop(lambda t, c, a: t < stop, step, (start, init, tas),
                                  maximum_iterations=stop - start)
    return carry, tf.nest.map_structure(lambda ta: ta.stack(), tas)


def _parallel_filter(mdl: _Model, dtype, n) -> FilterResult:
    """Associative-scan filter (Sarkka & Garcia-Fernandez 2021, Lemmas 7-8).

    Matrices are laid out [T, B | 1, ., .] and vectors [T, B, .] so that they broadcast.
    """
    steps = tf.shape(mdl.y)[0]
    eye = tf.eye(n, dtype=dtype)
    first = tf.range(steps) == 0
    four = lambda x: x if x.shape.rank == 4 else x[:, None]  # noqa: E731
    a, q, h, r = (four(_time_major(par, steps)) for par in (mdl.a, mdl.q, mdl.h, mdl.r))
    p0 = mdl.p0 if mdl.p0.shape.rank == 3 else mdl.p0[None]
    first4, first3 = first[:, None, None, None], first[:, None, None]
    a = tf.where(first4, tf.zeros_like(a), a)
    q = q + tf.zeros_like(p0)[None]
    q = tf.where(first4, p0[None] + tf.zeros_like(q), q)
    shift = tf.broadcast_to(mdl.shift, tf.concat([[steps], tf.shape(mdl.shift)[1:]], 0))
    shift = shift + tf.zeros_like(mdl.m0)
    shift = tf.where(first3, mdl.m0 + tf.zeros_like(shift), shift)
    cov_b = mdl.batch if mdl.cov_batched else 1
    cov_shape = tf.stack([steps, cov_b, n, n])
    vec_shape = tf.stack([steps, mdl.batch, n])
    # Elements (A, b, C, eta, J) of each step (Lemma 7; step 0 has A = 0, so it is the prior).
    hq = tf.matmul(h, q)
    chol_s = tf.linalg.cholesky(_sym(tf.matmul(hq, h, transpose_b=True) + r))
    gain = _t(tf.linalg.cholesky_solve(chol_s, hq))  # K = Q H^T S^-1
    ikh = eye - tf.matmul(gain, h)
    resid = mdl.y - _mv(h, shift)  # y - H c, [T, B, p]
    el_a = tf.matmul(ikh, a)
    el_b = shift + _mv(gain, resid)
    el_c = _sym(tf.matmul(tf.matmul(ikh, q), ikh, transpose_b=True)
                + tf.matmul(tf.matmul(gain, r), gain, transpose_b=True))
    hf = tf.matmul(h, a)  # H A
    sinv_hf = tf.linalg.cholesky_solve(chol_s, hf)  # S^-1 H A
    el_eta = _mv(_t(sinv_hf), resid)
    el_j = _sym(tf.matmul(hf, sinv_hf, transpose_a=True))
    if mdl.mask is not None:  # a missing step is a pure prediction: (A, c, Q, 0, 0)
        m4, m3 = mdl.mask[:, :, None, None], mdl.mask[:, :, None]
        el_a = tf.where(m4, el_a, a + tf.zeros_like(el_a))
        el_b = tf.where(m3, el_b, shift + tf.zeros_like(el_b))
        el_c = tf.where(m4, el_c, q + tf.zeros_like(el_c))
        el_eta = tf.where(m3, el_eta, tf.zeros_like(el_eta))
        el_j = tf.where(m4, el_j, tf.zeros_like(el_j))
    elems = (tf.broadcast_to(el_a, cov_shape), tf.broadcast_to(el_b, vec_shape),
             tf.broadcast_to(el_c, cov_shape), tf.broadcast_to(el_eta, vec_shape),
             tf.broadcast_to(el_j, cov_shape))

    def combine(ei, ej):
        a_i, b_i, c_i, eta_i, j_i = ei
        a_j, b_j, c_j, eta_j, j_j = ej
        i_cj = eye + tf.matmul(c_i, j_j)  # I + C_i J_j
        a_j_m = _t(tf.linalg.solve(_t(i_cj), _t(a_j)))  # A_j (I + C_i J_j)^-1
        a_i_n = _t(tf.linalg.solve(i_cj, a_i))  # A_i^T (I + J_j C_i)^-1
        return (tf.matmul(a_j_m, a_i),
                _mv(a_j_m, b_i + _mv(c_i, eta_j)) + b_j,
                _sym(tf.matmul(tf.matmul(a_j_m, c_i), a_j, transpose_b=True) + c_j),
                _mv(a_i_n, eta_j - _mv(j_j, b_i)) + eta_i,
                _sym(tf.matmul(tf.matmul(a_i_n, j_j), a_i) + j_i))

    _, filt_mean, filt_cov, _, _ = tfp.math.scan_associative(combine, elems)
    # Predicted moments and log-likelihood, vectorized over time.
    prev_mean = tf.concat([tf.zeros_like(filt_mean[:1]), filt_mean[:-1]], 0)
    prev_cov = tf.concat([tf.zeros_like(filt_cov[:1]), filt_cov[:-1]], 0)
    pred_mean = _mv(a, prev_mean) + shift
    pred_cov = _sym(tf.matmul(tf.matmul(a, prev_cov), a, transpose_b=True) + q)
    hp = tf.matmul(h, pred_cov)
    chol_s = tf.linalg.cholesky(_sym(tf.matmul(hp, h, transpose_b=True) + r))
    innov = mdl.y - _mv(h, pred_mean)
    z = tf.squeeze(tf.linalg.triangular_solve(
        chol_s + tf.zeros_like(innov[..., None, :1]), innov[..., None], lower=True), -1)
    p = mdl.y.shape[-1]
    log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol_s)), -1)
    ll = -0.5 * (tf.reduce_sum(tf.square(z), -1) + log_det + p * math.log(2.0 * math.pi))
    if mdl.mask is not None:
        ll = tf.where(mdl.mask, ll, tf.zeros_like(ll))
    lls = tf.transpose(ll)
    swap = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)  # noqa: E731
    pred_cov = tf.broadcast_to(pred_cov, cov_shape)
    return FilterResult(tf.reduce_sum(lls, -1), lls, swap(filt_mean), swap(filt_cov),
                        swap(pred_mean), swap(pred_cov))


def parallel_filter(params: LGSSMParams, observations, observed=None, actions=None,
                    nan_as_missing: bool = False, validate_args: bool = True, *, mask=None,
                    controls=None) -> FilterResult:
    """:func:`kalman_filter` with ``method="parallel"`` (associative scan in time)."""
    return kalman_filter(params, observations, observed, actions, nan_as_missing, "parallel",
                         False, validate_args, mask=mask, controls=controls)


def log_likelihood(params: LGSSMParams, observations, observed=None, actions=None,
                   nan_as_missing: bool = False, method: str = "sequential",
                   square_root: bool = False, validate_args: bool = True, *, mask=None,
                   controls=None):
    """Total log p(y_{0:T-1}) per series: [batch]."""
    return kalman_filter(params, observations, observed, actions, nan_as_missing, method,
                         square_root, validate_args, mask=mask, controls=controls).log_likelihood


# ------------------------------------------------------------------------------ smoothing
def _backward_terms(params: LGSSMParams, filtered: FilterResult, dtype):
    """Smoother gains G_t = P_t A_{t+1}^T (P-_{t+1})^-1 for t = 0..T-2, time-major."""
    steps = filtered.filtered_means.shape[1]
    a = _canon(params.transition_matrix, 2, "transition_matrix", None, steps, dtype)
    p_f = tf.experimental.numpy.swapaxes(filtered.filtered_covs, 0, 1)[:-1]  # [T-1, B|1, n, n]
    p_p = tf.experimental.numpy.swapaxes(filtered.predicted_covs, 0, 1)[1:]
    a_next = a.value[1:] if a.time_varying else a.value[None]  # A_{t+1}: [T-1 | 1, (B,) n, n]
    if not a.batched:
        a_next = a_next[:, None]
    ap = tf.matmul(a_next, p_f)  # A P_t  [T-1, B|1, n, n]
    gain_t = tf.linalg.cholesky_solve(tf.linalg.cholesky(p_p), ap)  # G^T
    return _t(gain_t), p_f, p_p


def rts_smoother(params: LGSSMParams, filtered: FilterResult) -> SmootherResult:
    """Rauch-Tung-Striebel smoother from a :class:`FilterResult` of the same parameters.

    m^s_t = m_t + G_t (m^s_{t+1} - m-_{t+1}),
    P^s_t = P_t + G_t (P^s_{t+1} - P-_{t+1}) G_t^T, G_t = P_t A_{t+1}^T (P-_{t+1})^{-1}.
    """
    dtype = filtered.filtered_means.dtype
    gain, p_f, p_p = _backward_terms(params, filtered, dtype)
    swap = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)  # noqa: E731
    m_f = swap(filtered.filtered_means)
    m_p = swap(filtered.predicted_means)
    last = (m_f[-1], swap(filtered.filtered_covs)[-1])

    def body(carry, elems):
        m_next, p_next = carry
        g, mf, pf, mp, pp = elems
        m = mf + _mv(g, m_next - mp)
        p = _sym(pf + tf.matmul(tf.matmul(g, p_next - pp), g, transpose_b=True))
        return m, p

    if filtered.filtered_means.shape[1] == 1:
        return SmootherResult(filtered.filtered_means, filtered.filtered_covs)
    ms, ps = tf.scan(body, (gain, m_f[:-1], p_f, m_p[1:], p_p), initializer=last,
                     reverse=True)
    ms = tf.concat([ms, last[0][None]], 0)
    ps = tf.concat([ps, last[1][None]], 0)
    return SmootherResult(swap(ms), swap(ps))


def posterior_sample(params: LGSSMParams, filtered: FilterResult, noise) -> tf.Tensor:
    """Forward-filtering backward-sampling draws of x_{0:T-1} | y.

    Args:
        params: LGSSMParams used for ``filtered``.
        filtered: FilterResult.
        noise: [..., batch, time, n] standard normal draws (one set per sample).

    Returns ``[..., batch, time, n]``.
    """
    dtype = filtered.filtered_means.dtype
    noise = tf.convert_to_tensor(noise, dtype)
    gain, p_f, p_p = _backward_terms(params, filtered, dtype)
    swap = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)  # noqa: E731
    m_f = swap(filtered.filtered_means)  # [T, B, n]
    m_p = swap(filtered.predicted_means)
    nz = tf.experimental.numpy.moveaxis(noise, -2, 0)  # [T, ..., B, n]
    p_last = swap(filtered.filtered_covs)[-1]
    x_last = m_f[-1] + _mv(tf.linalg.cholesky(p_last), nz[-1])
    if noise.shape[-2] == 1:
        return tf.experimental.numpy.moveaxis(x_last[None], 0, -2)
    cond_cov = _sym(p_f - tf.matmul(tf.matmul(gain, p_p), gain, transpose_b=True))
    jitter = 1e-12 if dtype == tf.float64 else 1e-6
    scale = _cond_chol(cond_cov, jitter)

    def body(x_next, elems):
        g, mf, mp, sc, e = elems
        return mf + _mv(g, x_next - mp) + _mv(sc, e)

    xs = tf.scan(body, (gain, m_f[:-1], m_p[1:], scale, nz[:-1]), initializer=x_last,
                 reverse=True)
    xs = tf.concat([xs, x_last[None]], 0)
    return tf.experimental.numpy.moveaxis(xs, 0, -2)


def _cond_chol(cov, jitter):
    n = cov.shape[-1]
    scale = tf.reduce_max(tf.abs(tf.linalg.diag_part(cov)), -1)[..., None, None]
    return tf.linalg.cholesky(cov + jitter * scale * tf.eye(n, dtype=cov.dtype))


# ------------------------------------------------------------------------------ forecasting
def forecast(params: LGSSMParams, filtered: FilterResult, steps: int, actions=None, *,
             controls=None) -> ForecastResult:
    """Predictive moments of x and y for 1..``steps`` steps after the last observation.

    Time-varying parameters use their last time slice. ``actions``: None or
    ``[batch, steps, action_dim]`` future inputs (``controls``: its deprecated name).
    """
    controls = renamed_argument(actions, controls, "actions", "controls")
    dtype = filtered.filtered_means.dtype
    last = lambda par: par.value[-1] if par.time_varying else par.value  # noqa: E731
    canon = lambda x, r, name: _canon(x, r, name, None, None, dtype)  # noqa: E731
    a = last(canon(params.transition_matrix, 2, "transition_matrix"))
    q = last(canon(params.transition_cov, 2, "transition_cov"))
    h = last(canon(params.observation_matrix, 2, "observation_matrix"))
    r = last(canon(params.observation_cov, 2, "observation_cov"))
    mean = filtered.filtered_means[:, -1]
    cov = filtered.filtered_covs[:, -1]
    if cov.shape[0] == 1:
        cov = cov[0]
    shift = tf.zeros_like(mean)[None] + tf.zeros([steps, 1, 1], dtype)
    if params.transition_offset is not None:
        shift = shift + last(canon(params.transition_offset, 1, "transition_offset"))
    if controls is not None:
        bm = last(canon(params.control_matrix, 2, "control_matrix"))
        ut = tf.experimental.numpy.swapaxes(tf.convert_to_tensor(controls, dtype), 0, 1)
        shift = shift + _mv(bm if bm.shape.rank == 2 else bm[None], ut)

    def body(carry, s):
        m, p = carry
        return predict_step(m, p, a, q, s)

    ms, ps = tf.scan(body, shift, initializer=(mean, cov))
    ym = _mv(h, ms)
    if params.observation_offset is not None:
        ym = ym + last(canon(params.observation_offset, 1, "observation_offset"))
    yc = _sym(tf.matmul(tf.matmul(h, ps), h, transpose_b=True) + r)
    swap = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)  # noqa: E731
    batched = ps.shape.rank == 4
    return ForecastResult(swap(ms), _cov_out(ps, batched), swap(ym), _cov_out(yc, batched))


def raise_if_nonfinite_observed(finite, observed=None) -> None:
    """ValueError naming the first (series, step) that is NaN / Inf at a frame marked observed.

    ``finite`` and ``observed`` are host boolean arrays ``[batch, time]`` (``observed`` None:
    every frame is observed)."""
    finite = np.asarray(finite, bool)
    observed = np.ones_like(finite) if observed is None else np.asarray(observed, bool)
    if not np.all(finite[observed]):
        bad = np.argwhere(~finite & observed)[0]
        all_nan = ~np.any(finite, axis=1)
        hint = (f" (series {int(np.argmax(all_nan))} is all NaN)" if np.any(all_nan) else "")
        raise ValueError(
            f"`observations` contain NaN or Inf at observed position (batch, time) = "
            f"{tuple(int(i) for i in bad)}{hint}; pass `observed` (0 = missing) or "
            f"`nan_as_missing=True`.")

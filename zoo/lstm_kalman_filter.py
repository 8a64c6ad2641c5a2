"""LSTM Kalman filter (Coskun et al. 2017) on the Kalman update of `layers.kalman_inference`."""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from zoo import sequences
from zoo.contract import EvalSettings, ZooModel
from zoo.layers import kalman_inference as ki
from zoo.layers.common import check_positive, check_positive_int, register


class LSTMFilterResult(NamedTuple):
    """:meth:`LSTMKalmanFilter.filter`: the fields of ``kalman_inference.FilterResult`` (same
    names and order) and the learned pieces of each step."""

    log_likelihood: tf.Tensor  # [batch]: sum over the observed steps
    log_likelihoods: tf.Tensor  # [batch, time]: log p(z_t | z_<t), 0 where missing
    filtered_means: tf.Tensor  # [batch, time, n]
    filtered_covs: tf.Tensor  # [batch, time, n, n]
    predicted_means: tf.Tensor  # [batch, time, n]
    predicted_covs: tf.Tensor  # [batch, time, n, n]
    jacobians: tf.Tensor  # [batch, time, n, n]: F_t
    process_variances: tf.Tensor  # [batch, time, n]: diag Q_t
    observation_variances: tf.Tensor  # [batch, time, p]: diag R_t


@register
class LSTMKalmanFilter(ZooModel, keras.Model):
    r"""Kalman filter with learned dynamics and noise: Coskun, Achilles, DiPietro, Navab &
    Tombari, "Long Short-Term Memory Kalman Filters: Recurrent Neural Estimators for Pose
    Regularization" (2017).

    With a fixed observation matrix H and, at every step,

    $$\hat x^-_t = f(\hat x_{t-1}),\quad F_t = \partial f / \partial x |_{\hat x_{t-1}},\quad
    P^-_t = F_t P_{t-1} F_t^\top + \hat Q_t,$$
    $$K_t = P^-_t H^\top (H P^-_t H^\top + \hat R_t)^{-1},\quad
    \hat x_t = \hat x^-_t + K_t (z_t - H \hat x^-_t),\quad P_t = (I - K_t H) P^-_t (\cdot)^\top
    + K_t \hat R_t K_t^\top,$$

    where $f$ is an LSTM followed by a linear layer (``lstm_A``; we add the skip connection
    $f(x) = x + \mathrm{Linear}(\mathrm{LSTM}(x))$ so that an untrained filter starts as a
    random walk), $\hat Q_t = \mathrm{diag}\,\mathrm{softplus}(\mathrm{LSTM}_Q(\hat x^-_t))$ and
    $\hat R_t = \mathrm{diag}\,\mathrm{softplus}(\mathrm{LSTM}_R(z_t))$. The update is
    ``layers.kalman_inference.linear_gaussian_update`` (TFLite built-in ops, so the exported
    step is this method). The model is
    trained end to end, supervised on ground-truth states: ``call`` returns the filtered means
    and ``compile(loss="mse")`` + ``fit(observations, states)`` is the paper's objective.

    Args:
        state_dim: int. n.
        observation_dim: int or None. p (default n).
        observation_matrix: None or nested list [p][n]. The fixed H (default the identity,
            which needs p = n).
        lstm_units: int. Width of each of the three LSTMs.
        min_variance: float. Floor of the predicted Q and R diagonals.
        initial_variance: float. Initial P_0 = initial_variance * I (learned diagonal).

    Example:

    >>> import numpy as np
    >>> model = LSTMKalmanFilter(state_dim=2, lstm_units=8)
    >>> model.compile(optimizer="adam", loss="mse")
    >>> states = np.cumsum(np.random.default_rng(0).normal(size=(16, 10, 2)), 1)
    >>> z = states + np.random.default_rng(1).normal(size=states.shape)
    >>> _ = model.fit(z.astype("float32"), states.astype("float32"), epochs=1, verbose=0)
    >>> model.filter(z[:2].astype("float32")).filtered_means.shape
    TensorShape([2, 10, 2])
    """

    export_adapter = "lstm_kalman_filter"
    supports_jit = True  # the Jacobian is closed-form (see _transition)
    supports_sample_weight = True  # the compiled "mse" loss weights the sequences

    def __init__(self, state_dim: int, observation_dim: int | None = None,
                 observation_matrix=None, lstm_units: int = 64, min_variance: float = 1e-4,
                 initial_variance: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # see below: no mixed precision for the filter
        super().__init__(**kwargs)
        check_positive_int("state_dim", state_dim)
        check_positive_int("lstm_units", lstm_units)
        check_positive("min_variance", min_variance)
        check_positive("initial_variance", initial_variance)
        observation_dim = observation_dim or (
            len(observation_matrix) if observation_matrix is not None else state_dim)
        if observation_matrix is None:
            if observation_dim != state_dim:
                raise ValueError(f"observation_matrix=None means H = I, which needs "
                                 f"observation_dim == state_dim; got {observation_dim} and "
                                 f"{state_dim}. Pass observation_matrix ([p][n]).")
            h = np.eye(state_dim)
        else:
            h = np.asarray(observation_matrix, np.float64)
            if h.shape != (observation_dim, state_dim):
                raise ValueError(f"observation_matrix must be [{observation_dim}][{state_dim}], "
                                 f"got shape {h.shape}.")
        self.state_dim = state_dim
        self.observation_dim = observation_dim
        self.observation_matrix = None if observation_matrix is None else h.tolist()
        self.lstm_units = lstm_units
        self.min_variance = float(min_variance)
        self.initial_variance = float(initial_variance)
        self._h = tf.constant(h, tf.float32)
        n, p, u = state_dim, observation_dim, lstm_units
        # float32 whatever the global policy: the covariance recursion needs it (tiny nets).
        f32 = dict(dtype="float32")
        self.lstm_a = keras.layers.LSTMCell(u, name="lstm_A", **f32)
        self.out_a = keras.layers.Dense(n, kernel_initializer="zeros", name="A_out", **f32)
        self.lstm_q = keras.layers.LSTMCell(u, name="lstm_Q", **f32)
        self.out_q = keras.layers.Dense(n, name="Q_out", **f32)
        self.lstm_r = keras.layers.LSTMCell(u, name="lstm_R", **f32)
        self.out_r = keras.layers.Dense(p, name="R_out", **f32)
        self.lstm_a.build((None, n))
        self.out_a.build((None, u))
        self.lstm_q.build((None, n))
        self.out_q.build((None, u))
        self.lstm_r.build((None, p))
        self.out_r.build((None, u))
        self.initial_mean = self.add_weight(shape=(n,), initializer="zeros", name="initial_mean")
        raw = math.log(math.expm1(initial_variance))
        self.initial_raw_variance = self.add_weight(
            shape=(n,), initializer=keras.initializers.Constant(raw), name="initial_variance")
        # Every weight exists now (sizes come from the arguments): a fresh model can load
        # weights, be exported or filter without being called first.
        self.built = True

    def build(self, input_shape=None):
        """Nothing to create (every weight is made in ``__init__``); checks the observation
        size."""
        shape = input_shape.get("observations") if isinstance(input_shape, dict) else input_shape
        if shape is not None and len(shape) and shape[-1] not in (None, self.observation_dim):
            raise ValueError(f"LSTMKalmanFilter expects observations [batch, time, "
                             f"{self.observation_dim}], got shape {tuple(shape)}")
        self.built = True

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int = 1) -> dict:
        """Filter state before the first observation: mean, covariance, three LSTM states."""
        n, u = self.state_dim, self.lstm_units
        zeros = tf.zeros([batch_size, u])
        cov = tf.linalg.diag(tf.nn.softplus(self.initial_raw_variance))
        return {"mean": tf.broadcast_to(self.initial_mean, [batch_size, n]),
                "cov": tf.broadcast_to(cov, [batch_size, n, n]),
                "lstm_a": [zeros, zeros], "lstm_q": [zeros, zeros], "lstm_r": [zeros, zeros]}

    def _diag_variance(self, raw):
        return tf.nn.softplus(raw) + self.min_variance

    def _transition(self, x, lstm_state):
        r"""x^- = f(x) = x + A_out(LSTM_A(x)), its Jacobian F = df/dx in closed form, and the
        LSTM's new (h, c).

        The cell's step is computed here from its own weights (Keras' layout: kernel
        [n, 4u] and recurrent kernel [u, 4u] with the gates i, f, g, o in that order):
        z = x W + h U + b, c = sigma(z_f) c' + sigma(z_i) tanh(z_g), h = sigma(z_o) tanh(c),
        so that F = I + A^T dh/dx with dh/dx = sum over the gates of dh/dz_gate W_gate^T:

            dh/dz_i = o (1 - tanh^2 c) g sigma'(z_i),   dh/dz_f = o (1 - tanh^2 c) c' sigma'(z_f),
            dh/dz_g = o (1 - tanh^2 c) i (1 - g^2),     dh/dz_o = tanh(c) sigma'(z_o).

        Matmuls and elementwise ops only: the gradient compiles under XLA (the
        ``tape.batch_jacobian`` this replaces put a ``pfor`` in the time loop whose gradient
        XLA cannot compile) and the exported step keeps TFLite built-in ops.
        """
        cell, u = self.lstm_a, self.lstm_units
        if (cell.activation is not keras.activations.tanh
                or cell.recurrent_activation is not keras.activations.sigmoid
                or not cell.use_bias or cell.dropout or cell.recurrent_dropout):
            raise ValueError(
                "LSTMKalmanFilter's closed-form Jacobian needs lstm_A with Keras' default "
                "LSTMCell options (activation tanh, recurrent_activation sigmoid, a bias, no "
                f"dropout); got activation={cell.activation.__name__}, recurrent_activation="
                f"{cell.recurrent_activation.__name__}, use_bias={cell.use_bias}, "
                f"dropout={cell.dropout}, recurrent_dropout={cell.recurrent_dropout}")
        h_prev, c_prev = lstm_state
        kernel = tf.convert_to_tensor(cell.kernel)  # W [n, 4u]
        z = (tf.matmul(x, kernel) + tf.matmul(h_prev, tf.convert_to_tensor(cell.recurrent_kernel))
             + tf.convert_to_tensor(cell.bias))
        i = tf.sigmoid(z[:, :u])
        f = tf.sigmoid(z[:, u:2 * u])
        g = tf.tanh(z[:, 2 * u:3 * u])
        o = tf.sigmoid(z[:, 3 * u:])
        c = f * c_prev + i * g
        tanh_c = tf.tanh(c)
        h = o * tanh_c
        pred_mean = x + self.out_a(h)
        dc = o * (1.0 - tf.square(tanh_c))  # dh/dc
        dz = tf.concat([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                        dc * i * (1.0 - tf.square(g)), tanh_c * o * (1.0 - o)], 1)  # [b, 4u]
        # F[b, m, k] = delta_mk + sum_j A4[j, m] dz[b, j] W[k, j], A4 = A stacked 4 times [4u, n]
        n = self.state_dim
        out_kernel = tf.convert_to_tensor(self.out_a.kernel)  # A [u, n]
        a4 = tf.transpose(tf.concat([out_kernel] * 4, 0))  # [n, 4u]
        scaled = tf.reshape(dz[:, None, :] * a4, [-1, 4 * u])  # [b * n, 4u]
        jacobian = tf.reshape(tf.matmul(scaled, kernel, transpose_b=True), [-1, n, n])
        return pred_mean, jacobian + tf.eye(n), [h, c]

    def _predict(self, state: dict):
        """x^- = f(x), its Jacobian F, and Q from the LSTMs; returns (x^-, F, q, lstm states)."""
        pred_mean, jacobian, lstm_a = self._transition(state["mean"], state["lstm_a"])
        h_q, lstm_q = self.lstm_q(pred_mean, state["lstm_q"])
        return pred_mean, jacobian, self._diag_variance(self.out_q(h_q)), lstm_a, lstm_q

    def filter_step(self, state: dict, observation, observed=None):
        """One step: (state, z_t [batch, p]) -> (new state, outputs), TFLite built-in ops only.

        ``observed`` [batch] (default all 1) marks present frames: a missing one (which may
        hold anything, NaN included) skips the update (the estimate is the prediction, the
        log-likelihood term 0) and feeds H x^- to the R-LSTM instead of z_t. Outputs:
        ``filtered_mean`` [batch, n], ``filtered_cov`` [batch, n, n], ``predicted_mean``,
        ``predicted_cov``, ``jacobian`` F_t, the learned ``process_variance`` and
        ``observation_variance`` diagonals and ``log_likelihood`` [batch].
        """
        z = tf.cast(observation, tf.float32)
        n, p = self.state_dim, self.observation_dim
        pred_mean, jacobian, q, lstm_a, lstm_q = self._predict(state)
        w = None
        if observed is not None:
            seen = tf.cast(observed, tf.float32) > 0.5
            w = tf.cast(seen, tf.float32)[:, None]
            z = tf.where(seen[:, None], z, tf.matmul(pred_mean, self._h, transpose_b=True))
        h_r, lstm_r = self.lstm_r(z, state["lstm_r"])
        r = self._diag_variance(self.out_r(h_r))
        pred_cov = tf.matmul(tf.matmul(jacobian, state["cov"]), jacobian, transpose_b=True)
        pred_cov = pred_cov + q[..., None] * tf.eye(n)  # diag without a Flex MatrixDiag
        pred_cov = 0.5 * (pred_cov + tf.linalg.matrix_transpose(pred_cov))
        out = ki.linear_gaussian_update(pred_mean, pred_cov, z, self._h,
                                        r[..., None] * tf.eye(p))
        mean, cov, log_lik = out.mean, out.cov, out.log_likelihood
        if w is not None:
            mean = w * mean + (1.0 - w) * pred_mean
            cov = w[..., None] * cov + (1.0 - w[..., None]) * pred_cov
            log_lik = w[:, 0] * log_lik
        new_state = {"mean": mean, "cov": cov, "lstm_a": list(lstm_a),
                     "lstm_q": list(lstm_q), "lstm_r": list(lstm_r)}
        return new_state, {"filtered_mean": mean, "filtered_cov": cov,
                           "predicted_mean": pred_mean, "predicted_cov": pred_cov,
                           "jacobian": jacobian, "process_variance": q,
                           "observation_variance": r, "log_likelihood": log_lik}

    # ------------------------------------------------------------------ sequences
    def _check(self, observations, observed=None):
        z = tf.cast(tf.convert_to_tensor(observations), tf.float32)
        if z.shape.rank != 3 or (z.shape[-1] is not None and z.shape[-1] != self.observation_dim):
            raise ValueError(f"LSTMKalmanFilter expects observations [batch, time, "
                             f"{self.observation_dim}], got {tuple(z.shape)}.")
        if z.shape[1] == 0:
            raise ValueError(f"`observations` have 0 time steps (shape {tuple(z.shape)}): a "
                             f"sequence needs at least one step.")
        observed = sequences.checked_flags("observed", observed, z.shape[1], z.shape[0])
        if observed is not None:  # a missing frame may hold anything, NaN included
            keep = tf.cast(observed, tf.float32)[..., None] > 0.5
            z = tf.where(keep, z, tf.zeros_like(z))
        with tf.control_dependencies([tf.debugging.assert_all_finite(
                z, "observations contain NaN or Inf at observed frames")]):
            return tf.identity(z)

    def filter(self, observations, observed=None) -> LSTMFilterResult:
        """Filtered and predicted moments, Jacobians, learned noise diagonals and
        log-likelihoods (:class:`LSTMFilterResult`). ``observed`` [batch, time] marks present
        frames (0 = missing)."""
        z = self._check(observations, observed)
        o = tf.ones(tf.shape(z)[:2]) if observed is None else tf.cast(observed, tf.float32)
        if tf.executing_eagerly():  # an eager scan would run op by op, step by step
            if getattr(self, "_compiled_filter", None) is None:
                self._compiled_filter = tf.function(self._filter, reduce_retracing=True)
            return self._compiled_filter(z, o)
        return self._filter(z, o)

    STEP_KEYS = ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov",
                 "jacobian", "process_variance", "observation_variance", "log_likelihood")

    def _filter(self, z, observed):
        def step(carry, elems):
            new_state, out = self.filter_step(carry[0], elems[0], elems[1])
            return new_state, tuple(out[k] for k in self.STEP_KEYS)

        state = self.initial_state(tf.shape(z)[0])
        first = self.filter_step(state, z[:, 0])[1]
        dummy = tuple(tf.zeros_like(first[k]) for k in self.STEP_KEYS)
        _, outs = tf.scan(step, (tf.transpose(z, [1, 0, 2]), tf.transpose(observed)),
                          initializer=(state, dummy))
        swap = lambda t: tf.transpose(t, [1, 0, *range(2, t.shape.rank)])  # noqa: E731
        named = dict(zip(self.STEP_KEYS, (swap(t) for t in outs)))
        lls = named["log_likelihood"]
        return LSTMFilterResult(
            tf.reduce_sum(lls, 1), lls, named["filtered_mean"], named["filtered_cov"],
            named["predicted_mean"], named["predicted_cov"], named["jacobian"],
            named["process_variance"], named["observation_variance"])

    def smooth(self, observations, observed=None) -> ki.SmootherResult:
        """Extended Rauch-Tung-Striebel smoother with the filter's Jacobians:
        G_t = P_t F_{t+1}^T (P^-_{t+1})^{-1}, m^s_t = m_t + G_t (m^s_{t+1} - m^-_{t+1}),
        P^s_t = P_t + G_t (P^s_{t+1} - P^-_{t+1}) G_t^T. Returns ``smoothed_means``,
        ``smoothed_covs``."""
        f = self.filter(observations, observed)
        tm = lambda t: tf.transpose(t, [1, 0, *range(2, t.shape.rank)])  # noqa: E731
        means, covs = tm(f.filtered_means), tm(f.filtered_covs)
        pred_means, pred_covs = tm(f.predicted_means), tm(f.predicted_covs)
        jacobians = tm(f.jacobians)

        def back(carry, elems):
            m_s, p_s = carry
            m, p, m_pred, p_pred, f_next = elems
            gain = tf.linalg.matrix_transpose(tf.linalg.cholesky_solve(
                tf.linalg.cholesky(p_pred), tf.matmul(f_next, p, transpose_b=True)))
            m_new = m + tf.linalg.matvec(gain, m_s - m_pred)
            p_new = p + tf.matmul(tf.matmul(gain, p_s - p_pred), gain, transpose_b=True)
            return m_new, 0.5 * (p_new + tf.linalg.matrix_transpose(p_new))

        sm, sp = tf.scan(back, (means[:-1], covs[:-1], pred_means[1:], pred_covs[1:],
                                jacobians[1:]), initializer=(means[-1], covs[-1]), reverse=True)
        return ki.SmootherResult(tm(tf.concat([sm, means[-1:]], 0)),
                                 tm(tf.concat([sp, covs[-1:]], 0)))

    def impute(self, observations, observed) -> dict:
        """Fill frames where ``observed`` [batch, time] is 0 with H times the smoothed state:
        ``imputed`` observations and ``states`` (the smoothed means)."""
        keep = tf.cast(observed, tf.float32)[..., None]
        z = tf.where(keep > 0, tf.cast(observations, tf.float32), 0.0)
        states = self.smooth(z, observed).smoothed_means
        return {"imputed": keep * z + (1.0 - keep) * tf.linalg.matvec(self._h, states),
                "states": states}

    def _roll(self, state: dict, steps: int, noise=None):
        """Predict ``steps`` steps from a filter state with no updates (means, covariances);
        with ``noise`` [steps, batch, n] the path is sampled, x_t = f(x_{t-1}) + sqrt(Q) eps."""
        means, covs = [], []
        for h in range(steps):
            pred_mean, jacobian, q, lstm_a, lstm_q = self._predict(state)
            cov = ki.predict_covariance(state["cov"], jacobian, tf.linalg.diag(q))
            if noise is not None:
                pred_mean = pred_mean + tf.sqrt(q) * noise[h]
            state = {**state, "mean": pred_mean, "cov": cov, "lstm_a": list(lstm_a),
                     "lstm_q": list(lstm_q)}
            means.append(pred_mean)
            covs.append(cov)
        return tf.stack(means, 1), tf.stack(covs, 1)

    def forecast(self, observations, steps: int) -> ki.ForecastResult:
        """State and observation moments 1..``steps`` steps after ``observations``
        (:class:`ForecastResult`): ``state_means`` [batch, steps, n], ``state_covs``,
        ``observation_means`` (H x) and ``observation_covs`` (H P H^T, the uncertainty of the
        signal)."""
        check_positive_int("steps", steps)
        z = self._check(observations)
        state = self.initial_state(tf.shape(z)[0])
        for t in range(z.shape[1]):
            state, _ = self.filter_step(state, z[:, t])
        means, covs = self._roll(state, steps)
        return ki.ForecastResult(means, covs, tf.linalg.matvec(self._h, means),
                                 tf.matmul(tf.matmul(self._h, covs), self._h, transpose_b=True))

    def sample(self, n: int, steps: int, seed: int = 0) -> dict:
        """``n`` paths of the learned dynamics from x_0 ~ N(m_0, P_0), with
        x_t = f(x_{t-1}) + sqrt(Q_t) eps_t: ``states`` [n, steps, state_dim] and the noise-free
        ``observations`` H x_t."""
        seeds = tf.random.experimental.stateless_split(tf.constant([seed, 0], tf.int64), 2)
        state = self.initial_state(n)
        eps0 = tf.random.stateless_normal([n, self.state_dim], seeds[0])
        state["mean"] = state["mean"] + tf.sqrt(tf.linalg.diag_part(state["cov"])) * eps0
        noise = tf.random.stateless_normal([steps, n, self.state_dim], seeds[1])
        states, _ = self._roll(state, steps, noise)
        return {"states": states, "observations": tf.linalg.matvec(self._h, states)}

    def call(self, observations):
        return self.filter(observations).filtered_means

    # ------------------------------------------------------------------ contract
    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        """State and observation sizes, and the known H (``arrays["H"]``; without it H = I)."""
        n = int(np.asarray(arrays["states"]).shape[-1])
        p = int(np.asarray(arrays["observations"]).shape[-1])
        if "H" in arrays:
            return {"state_dim": n, "observation_dim": p,
                    "observation_matrix": np.asarray(arrays["H"], np.float64).tolist()}
        if p != n:
            raise ValueError(f"the data has {p}-dimensional observations of {n}-dimensional "
                             f"states and no 'H' array: LSTMKalmanFilter needs the observation "
                             f"matrix H")
        return {"state_dim": n}

    @classmethod
    def fit_inputs(cls, arrays: dict):
        """Supervised: observations -> ground-truth ``states``."""
        if "states" not in arrays:
            raise ValueError("LSTMKalmanFilter learns from ground-truth states: the data has "
                             f"no 'states' array (it has {sorted(arrays)})")
        return np.asarray(arrays["observations"]), np.asarray(arrays["states"])

    def compile_kwargs(self) -> dict:
        return {"loss": "mse"}

    def validate_data(self, arrays: dict) -> None:
        """Training needs complete sequences: NaN anywhere (observations included) is an
        error naming the array (``filter(observations, observed)`` handles missing frames)."""
        sequences.check_finite(arrays, type(self).__name__, allowed=())

    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """RMSE of the filtered means against the states, and the observations'
        log-likelihood under the learned filter (per sequence and per step)."""
        filtered = self.filter(x)
        means = np.asarray(filtered.filtered_means, np.float64)
        log_lik = np.asarray(filtered.log_likelihood, np.float64)
        steps = means.shape[1]
        return {"rmse": float(np.sqrt(np.mean((means - np.asarray(y, np.float64)) ** 2))),
                "log_likelihood": float(np.mean(log_lik)),
                "nll_per_step": float(-np.mean(log_lik) / steps),
                "likelihood_examples": int(len(log_lik))}

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        """The first example's filtered states +/- 2 sd against the ground truth."""
        from zoo import plots

        out = self.filter(np.asarray(x)[:1])
        std = np.sqrt(np.diagonal(np.asarray(out.filtered_covs)[0], axis1=-2, axis2=-1))
        truth = np.asarray(arrays["states"])[0] if "states" in arrays else None
        return [plots.trajectories(np.full_like(std, np.nan),
                                   np.asarray(out.filtered_means)[0], std,
                                   os.path.join(out_dir, "filter.png"), truth=truth,
                                   title="filtered states +/- 2 sd vs ground truth")]

    def get_config(self):
        config = super().get_config()
        config.update(state_dim=self.state_dim, observation_dim=self.observation_dim,
                      observation_matrix=self.observation_matrix, lstm_units=self.lstm_units,
                      min_variance=self.min_variance, initial_variance=self.initial_variance)
        return config

"""LSTM Kalman filter (Coskun et al. 2017) on the Kalman update of `layers.kalman_inference`."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from layers import kalman_inference as ki
from layers.common import check_positive, check_positive_int, register


@register
class LSTMKalmanFilter(keras.Model):
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
    $\hat R_t = \mathrm{diag}\,\mathrm{softplus}(\mathrm{LSTM}_R(z_t))$. The update is the
    Joseph-form, Cholesky-solved step of ``layers.kalman_inference.update_step``. The model is
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
    >>> model.filter(z[:2].astype("float32"))["means"].shape
    TensorShape([2, 10, 2])
    """

    def __init__(self, state_dim: int, observation_dim: int | None = None,
                 observation_matrix=None, lstm_units: int = 64, min_variance: float = 1e-4,
                 initial_variance: float = 1.0, **kwargs):
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
        self.lstm_a = keras.layers.LSTMCell(u, name="lstm_A")
        self.out_a = keras.layers.Dense(n, kernel_initializer="zeros", name="A_out")
        self.lstm_q = keras.layers.LSTMCell(u, name="lstm_Q")
        self.out_q = keras.layers.Dense(n, name="Q_out")
        self.lstm_r = keras.layers.LSTMCell(u, name="lstm_R")
        self.out_r = keras.layers.Dense(p, name="R_out")
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

    def filter_step(self, state: dict, observation):
        """One step: (state, z_t [batch, p]) -> (new state, dict of estimate and covariances).

        The estimate is ``mean`` [batch, n] with covariance ``cov`` [batch, n, n]; also the
        predicted mean, the Jacobian F_t and the learned Q_t, R_t diagonals.
        """
        z = tf.cast(observation, tf.float32)
        x = state["mean"]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            h_a, lstm_a = self.lstm_a(x, state["lstm_a"])
            pred_mean = x + self.out_a(h_a)
        jacobian = tape.batch_jacobian(pred_mean, x)  # F_t: [batch, n, n]
        h_q, lstm_q = self.lstm_q(pred_mean, state["lstm_q"])
        q = self._diag_variance(self.out_q(h_q))
        h_r, lstm_r = self.lstm_r(z, state["lstm_r"])
        r = self._diag_variance(self.out_r(h_r))
        pred_cov = ki.predict_covariance(state["cov"], jacobian, tf.linalg.diag(q))
        mean, cov, log_lik = ki.update_step(pred_mean, pred_cov, z, None, self._h,
                                            tf.linalg.diag(r))
        new_state = {"mean": mean, "cov": cov, "lstm_a": list(lstm_a),
                     "lstm_q": list(lstm_q), "lstm_r": list(lstm_r)}
        return new_state, {"mean": mean, "cov": cov, "predicted_mean": pred_mean,
                           "jacobian": jacobian, "process_variance": q,
                           "observation_variance": r, "log_likelihood": log_lik}

    # ------------------------------------------------------------------ sequences
    def _check(self, observations):
        z = tf.cast(tf.convert_to_tensor(observations), tf.float32)
        if z.shape.rank != 3 or (z.shape[-1] is not None and z.shape[-1] != self.observation_dim):
            raise ValueError(f"LSTMKalmanFilter expects observations [batch, time, "
                             f"{self.observation_dim}], got {tuple(z.shape)}.")
        with tf.control_dependencies([tf.debugging.assert_all_finite(
                z, "observations contain NaN or Inf")]):
            return tf.identity(z)

    def filter(self, observations) -> dict:
        """Filtered means ``means`` [batch, time, n], covariances ``covs`` [batch, time, n, n],
        learned noise diagonals and per-step log-likelihoods of the observations."""
        z = self._check(observations)
        if tf.executing_eagerly():  # an eager scan would retrace the Jacobian every step
            if getattr(self, "_compiled_filter", None) is None:
                self._compiled_filter = tf.function(self._filter, reduce_retracing=True)
            return self._compiled_filter(z)
        return self._filter(z)

    def _filter(self, z):
        state = self.initial_state(tf.shape(z)[0])

        def step(carry, z_t):
            new_state, out = self.filter_step(carry, z_t)
            return new_state, (out["mean"], out["cov"], out["process_variance"],
                               out["observation_variance"], out["log_likelihood"])

        _, outs = tf.scan(lambda c, z_t: step(c[0], z_t), tf.transpose(z, [1, 0, 2]),
                          initializer=(state, self._dummy_outputs(tf.shape(z)[0])))
        means, covs, q, r, log_lik = outs
        swap = lambda t: tf.transpose(t, [1, 0, *range(2, t.shape.rank)])  # noqa: E731
        return {"means": swap(means), "covs": swap(covs), "process_variance": swap(q),
                "observation_variance": swap(r), "log_likelihood": swap(log_lik)}

    def _dummy_outputs(self, batch):
        n, p = self.state_dim, self.observation_dim
        return (tf.zeros([batch, n]), tf.zeros([batch, n, n]), tf.zeros([batch, n]),
                tf.zeros([batch, p]), tf.zeros([batch]))

    def call(self, observations):
        return self.filter(observations)["means"]

    def get_config(self):
        config = super().get_config()
        config.update(state_dim=self.state_dim, observation_dim=self.observation_dim,
                      observation_matrix=self.observation_matrix, lstm_units=self.lstm_units,
                      min_variance=self.min_variance, initial_variance=self.initial_variance)
        return config

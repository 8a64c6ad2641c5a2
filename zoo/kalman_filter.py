"""Linear-Gaussian state-space model fitted by maximum likelihood with ``model.fit``."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers import kalman_inference as ki
from zoo.layers.common import register
from zoo.layers.kalman_filter import KalmanFilter as KalmanFilterLayer


@register
class KalmanFilterModel(keras.Model):
    r"""Linear-Gaussian state-space model whose parameters are fitted by ``model.fit``.

    Kalman, "A New Approach to Linear Filtering and Prediction Problems" (1960); smoothing by
    Rauch, Tung & Striebel, "Maximum Likelihood Estimates of Linear Dynamic Systems" (1965).

    $$x_0 \sim N(m_0, P_0),\quad x_t = A x_{t-1} + B u_t + b + w_t,\ w_t \sim N(0, Q),\quad
    y_t = H x_t + d + v_t,\ v_t \sim N(0, R).$$

    Training maximizes the exact log-likelihood $\log p(y_{0:T-1})$ from the Kalman filter:
    the :class:`layers.kalman_filter.KalmanFilter` layer adds $-\log p / T$ (mean over the
    batch) as the loss, so ``compile(optimizer)`` with no loss and ``fit(observations)`` is
    maximum likelihood. A dict input ``{"observations", "controls", "mask"}`` carries
    control inputs and missing-data masks (True = observed).

    After fitting, ``filter``, ``smooth``, ``forecast`` and ``sample`` run exact inference
    with the fitted parameters (see :mod:`layers.kalman_inference`).

    Args:
        state_dim: int. n.
        **kwargs: the other arguments of :class:`layers.kalman_filter.KalmanFilter`
            (``transition``, ``observation``, ``transition_cov``, scales, ``method``, ...),
            plus ``seed`` (int or None, for ``sample``) and Keras ``Model`` arguments.

    Example:

    >>> import numpy as np
    >>> model = KalmanFilterModel(1, transition="identity", observation="identity",
    ...                           dtype="float64")
    >>> model.compile(keras.optimizers.Adam(0.1))
    >>> y = np.cumsum(np.random.default_rng(0).normal(size=(8, 50, 1)), 1)
    >>> history = model.fit(y, epochs=2, batch_size=8, verbose=0)
    >>> tuple(model.smooth(y).smoothed_means.shape)
    (8, 50, 1)
    """

    LAYER_ARGS = (
        "control_dim", "transition", "observation", "transition_cov", "observation_cov",
        "use_offsets", "transition_init", "transition_scale", "observation_scale",
        "initial_scale", "trainable_initial", "min_scale", "method", "square_root",
        "nan_as_missing", "validate_args",
    )

    def __init__(self, state_dim: int, seed: int | None = None, **kwargs):
        layer_kwargs = {k: kwargs.pop(k) for k in self.LAYER_ARGS if k in kwargs}
        dtype = kwargs.get("dtype")
        super().__init__(**kwargs)
        self.state_dim = state_dim
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kalman = KalmanFilterLayer(state_dim, name="kalman_filter", dtype=dtype,
                                        **layer_kwargs)
        self.layer_kwargs = {k: getattr(self.kalman, k) for k in self.LAYER_ARGS}

    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            return inputs["observations"], inputs.get("controls"), inputs.get("mask")
        return inputs, None, None

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["observations"]
        self.kalman.build(tuple(input_shape))

    def call(self, inputs, mask=None):
        observations, controls, given_mask = self._unpack(inputs)
        if isinstance(mask, dict):  # Keras hands a dict input a dict of (absent) masks
            mask = mask.get("observations")
        return self.kalman(observations, controls=controls,
                           mask=given_mask if given_mask is not None else mask)

    # ------------------------------------------------------------------------------ inference
    def state_space_params(self) -> ki.LGSSMParams:
        """The fitted parameters (constrained) as tensors."""
        return self.kalman.state_space_params()

    def _ensure_built(self, observations):
        if not self.kalman.built:
            self.build(tuple(observations.shape))

    def filter(self, observations, controls=None, mask=None) -> ki.FilterResult:
        """Filtered/predicted moments and log-likelihoods; ``observations`` [batch, time, p]."""
        observations = tf.convert_to_tensor(observations)
        self._ensure_built(observations)
        return self.kalman.run_filter(observations, controls, mask)

    def smooth(self, observations, controls=None, mask=None) -> ki.SmootherResult:
        """Rauch-Tung-Striebel smoothed moments of x_t given all observations."""
        return ki.rts_smoother(self.state_space_params(),
                               self.filter(observations, controls, mask))

    def forecast(self, observations, steps: int, controls=None, mask=None,
                 future_controls=None) -> ki.ForecastResult:
        """Moments of x and y for 1..``steps`` steps after the end of ``observations``."""
        return ki.forecast(self.state_space_params(),
                           self.filter(observations, controls, mask), steps, future_controls)

    def sample(self, observations, num_samples: int = 1, controls=None, mask=None, seed=None):
        """Posterior draws of x_{0:T-1} | y by forward filtering, backward sampling.

        Returns ``[num_samples, batch, time, state_dim]``; ``seed`` (an int or a
        ``keras.random.SeedGenerator``) defaults to the model's generator.
        """
        filtered = self.filter(observations, controls, mask)
        shape = (num_samples,) + tuple(filtered.filtered_means.shape)
        noise = keras.random.normal(shape, seed=seed if seed is not None else
                                    self.seed_generator, dtype=filtered.filtered_means.dtype)
        return ki.posterior_sample(self.state_space_params(), filtered, noise)

    def get_config(self):
        config = super().get_config()
        config.update(state_dim=self.state_dim, seed=self.seed, **self.layer_kwargs)
        return config


# The issue asks for ``from zoo import KalmanFilter``: the model under that name. The layer of
# the same name stays ``layers.KalmanFilter`` (imported here as ``KalmanFilterLayer``).
KalmanFilter = KalmanFilterModel

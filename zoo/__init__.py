"""The model zoo: `from zoo import VAE, DLGM, CategoricalVAE, ...`."""

from layers.common import check_backend  # noqa: F401  (fails fast on a non-TF backend)
from zoo.categorical_vae import CategoricalVAE
from zoo.deep_state_space import DeepKalmanFilter, DeepMarkovModel
from zoo.dlgm import DLGM
from zoo.kalman_filter import KalmanFilter, KalmanFilterModel
from zoo.lstm_kalman_filter import LSTMKalmanFilter
from zoo.vae import VAE

__all__ = [
    "CategoricalVAE",
    "DLGM",
    "DeepKalmanFilter",
    "DeepMarkovModel",
    "KalmanFilter",
    "KalmanFilterModel",
    "LSTMKalmanFilter",
    "VAE",
]

"""Keras 3 probabilistic layers built on TensorFlow Probability.

Each layer builds ``tfp.distributions`` objects inside ``call`` and returns tensors.
"""

from layers.common import check_backend  # noqa: F401  (fails fast on a non-TF backend)
from layers.annealing import KLAnnealing, TemperatureAnnealing
from layers.bernoulli_likelihood import BernoulliLikelihood
from layers.categorical_likelihood import CategoricalLikelihood
from layers.combiner import Combiner
from layers.gaussian_likelihood import GaussianLikelihood
from layers.gaussian_posterior import GaussianPosterior
from layers.kalman_filter import KalmanFilter
from layers.relaxed_categorical import RelaxedCategorical
from layers.state_transition import StateTransition
from layers import kalman_inference, sampling

__all__ = [
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "Combiner",
    "GaussianLikelihood",
    "GaussianPosterior",
    "KalmanFilter",
    "KLAnnealing",
    "RelaxedCategorical",
    "StateTransition",
    "TemperatureAnnealing",
    "kalman_inference",
    "sampling",
]

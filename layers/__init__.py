"""Keras 3 probabilistic layers built on TensorFlow Probability.

Each layer builds ``tfp.distributions`` objects inside ``call`` and returns tensors.
"""

from zoo.layers.common import check_backend  # noqa: F401  (fails fast on a non-TF backend)
from zoo.layers.annealing import KLAnnealing, TemperatureAnnealing
from zoo.layers.autoregressive_network import AutoregressiveNetwork
from zoo.layers.bernoulli_likelihood import BernoulliLikelihood
from zoo.layers.categorical_likelihood import CategoricalLikelihood
from zoo.layers.combiner import Combiner
from zoo.layers.gaussian_likelihood import GaussianLikelihood
from zoo.layers.gaussian_posterior import GaussianPosterior
from zoo.layers.iaf import IAF
from zoo.layers.kalman_filter import KalmanFilterLayer
from zoo.layers.maf import MAF
from zoo.layers.masked_dense import MaskedDense
from zoo.layers.planar_flow import PlanarFlow
from zoo.layers.posterior_flow import PosteriorFlow
from zoo.layers.persistent_chains import PersistentChains
from zoo.layers.relaxed_categorical import RelaxedCategorical
from zoo.layers.relu_rnn import ReluRNN
from zoo.layers.state_transition import StateTransition
from zoo.layers import kalman_inference, particle_filter, resampling, sampling

__all__ = [
    "AutoregressiveNetwork",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "Combiner",
    "GaussianLikelihood",
    "GaussianPosterior",
    "IAF",
    "KalmanFilterLayer",
    "KLAnnealing",
    "PersistentChains",
    "MAF",
    "MaskedDense",
    "PlanarFlow",
    "PosteriorFlow",
    "RelaxedCategorical",
    "ReluRNN",
    "StateTransition",
    "TemperatureAnnealing",
    "kalman_inference",
    "sampling",
]


def __getattr__(name):
    if name == "KalmanFilter":  # the layer's former name (one release); zoo.KalmanFilter: model
        from zoo.layers import kalman_filter

        return kalman_filter.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

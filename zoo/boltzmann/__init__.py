"""Boltzmann machines and Hopfield networks: RBM, Gaussian-Bernoulli RBM, DBM, Hopfield.

The math (energies, Gibbs steps, mean field, AIS) is in ``zoo.layers.boltzmann_energy``,
``zoo.layers.gibbs`` and ``zoo.layers.ais``; the classes here train it with ``model.fit``.
"""

from zoo.boltzmann.dbm import DBM
from zoo.boltzmann.hopfield import HopfieldNetwork
from zoo.boltzmann.rbm import RBM, GaussianBernoulliRBM

__all__ = ["DBM", "GaussianBernoulliRBM", "HopfieldNetwork", "RBM"]

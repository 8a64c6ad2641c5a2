"""Keras 3 probabilistic layers built on TensorFlow Probability."""

from layers.common import check_backend  # noqa: F401  (fails fast on a non-TF backend)
from layers.gaussian_posterior import GaussianPosterior

__all__ = ["GaussianPosterior"]

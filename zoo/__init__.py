"""The model zoo: `from zoo import VAE, DLGM, CategoricalVAE, ...`.

One import package, ``zoo``: the repository's ``layers/`` and ``export/`` folders install as
``zoo.layers`` and ``zoo.export``. Model classes load on first use (all of
them at once, registering each with Keras), so ``from zoo.export.runtime import
StreamingFilter`` needs only numpy and ai-edge-litert.
"""

import importlib
import os

__version__ = "0.2.0"

# In a source checkout (or a `pip install -e .`), layers/ and export/ sit beside zoo/ rather
# than inside it; let the `zoo` package find them there. An installed copy has them inside.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
if (not os.path.isdir(os.path.join(_HERE, "layers"))
        and os.path.isfile(os.path.join(_ROOT, "layers", "__init__.py"))
        and os.path.isfile(os.path.join(_ROOT, "export", "__init__.py"))):
    __path__.append(_ROOT)  # noqa: F821  (the package's own search path)

# Public class -> module defining it, imported on first attribute access.
_LAZY = {
    "CategoricalVAE": "zoo.categorical_vae",
    "DBM": "zoo.boltzmann",
    "DeepKalmanFilter": "zoo.deep_state_space",
    "DeepMarkovModel": "zoo.deep_state_space",
    "DLGM": "zoo.dlgm",
    "FVSBN": "zoo.autoregressive",
    "GaussianBernoulliRBM": "zoo.boltzmann",
    "HierarchicalVAE": "zoo.hierarchical_vae",
    "HopfieldNetwork": "zoo.boltzmann",
    "KalmanFilter": "zoo.kalman_filter",
    "KalmanFilterModel": "zoo.kalman_filter",
    "LSTMKalmanFilter": "zoo.lstm_kalman_filter",
    "MADE": "zoo.autoregressive",
    "NADE": "zoo.autoregressive",
    "OrderAgnosticNADE": "zoo.autoregressive",
    "ParticleFilter": "zoo.particle_filter",
    "RBM": "zoo.boltzmann",
    "RNADE": "zoo.autoregressive",
    "VAE": "zoo.vae",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    # The first model class asked for loads them all (0.1-0.2 s once TensorFlow is in), so
    # that `from zoo import VAE` then `keras.saving.load_model("dbm.keras")` finds every
    # registered class, not only the VAE's.
    load_all()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def load_all() -> None:
    """Import every model module, registering each class for Keras deserialization."""
    for module in sorted(set(_LAZY.values())):
        importlib.import_module(module)

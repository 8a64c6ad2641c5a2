"""The package as a user meets it: imports, backend check, docstring examples."""

import doctest
import importlib
import os
import subprocess
import sys

import keras
import pytest

import zoo.layers as layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                          timeout=300)


def test_other_keras_backend_fails_with_clear_message():
    result = _run("import zoo.layers", KERAS_BACKEND="jax")
    assert result.returncode != 0
    assert "KERAS_BACKEND='jax'" in result.stderr and "tensorflow" in result.stderr


def test_import_sets_nothing_global():
    result = _run(
        "import os, keras; before_env = os.environ.get('KERAS_BACKEND'); "
        "before = keras.config.floatx(), keras.mixed_precision.global_policy().name; "
        "import zoo, zoo.layers, zoo.export; zoo.load_all(); after = keras.config.floatx(), "
        "keras.mixed_precision.global_policy().name; assert before == after, (before, after); "
        "assert os.environ.get('KERAS_BACKEND') == before_env"
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_import_cost_beyond_tensorflow_is_a_few_seconds():
    result = _run(
        "import time; import tensorflow; t = time.perf_counter(); import zoo, zoo.layers, "
        "zoo.export; zoo.load_all(); "
        "print(time.perf_counter() - t)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 8.0


MODULES = [
    "zoo.layers.gaussian_posterior",
    "zoo.layers.relaxed_categorical",
    "zoo.layers.bernoulli_likelihood",
    "zoo.layers.gaussian_likelihood",
    "zoo.layers.categorical_likelihood",
    "zoo.layers.state_transition",
    "zoo.layers.combiner",
    "zoo.vae",
    "zoo.dlgm",
    "zoo.categorical_vae",
    "zoo.deep_state_space",
    "zoo.lstm_kalman_filter",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    import zoo

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={**vars(layers), **vars(zoo), "keras": keras},
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

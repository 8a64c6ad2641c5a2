"""The package as a user meets it: imports, backend check, docstring examples."""

import doctest
import importlib
import os
import subprocess
import sys

import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf

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


def _modules_with_examples() -> list:
    """Every module of the package whose source holds a doctest example (``>>>``): found by
    walking zoo/, layers/ (zoo.layers) and export/ (zoo.export), never listed by hand."""
    import pkgutil

    import zoo
    import zoo.export
    import zoo.layers

    roots = [(os.path.dirname(zoo.__file__), "zoo."),
             (os.path.dirname(zoo.layers.__file__), "zoo.layers."),
             (os.path.dirname(zoo.export.__file__), "zoo.export.")]
    found = set()
    for folder, prefix in roots:
        for info in pkgutil.walk_packages([folder], prefix):
            name = info.name
            if name.startswith(("zoo.layers.", "zoo.export.")) and prefix == "zoo.":
                continue
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec else None
            if origin and origin.endswith(".py"):
                with open(origin, encoding="utf-8") as f:
                    if ">>>" in f.read():
                        found.add(name)
    for package in ("zoo", "zoo.layers", "zoo.export", "zoo.datasets"):
        with open(importlib.util.find_spec(package).origin, encoding="utf-8") as f:
            if ">>>" in f.read():
                found.add(package)
    return sorted(found)


MODULES = _modules_with_examples()


def test_the_doctest_discovery_finds_the_documented_modules():
    for module in ("zoo.vae", "zoo.layers.gaussian_posterior", "zoo.export.exporter"):
        assert module in MODULES, module


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    import zoo

    zoo.load_all()
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={**vars(layers), **{n: getattr(zoo, n) for n in
                                                                 zoo.__all__},
                                              "keras": keras, "np": np, "tf": tf},
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_wheel_installs_one_import_package_and_the_commands(tmp_path):
    """`pip install .` (non-editable) installs `zoo` alone, with zoo.layers / zoo.export inside
    it and the zoo-train / zoo-evaluate / zoo-export commands."""
    import zipfile

    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         ROOT, "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"zoo"}, tops
    for module in ("zoo/layers/gaussian_posterior.py", "zoo/export/runtime.py",
                   "zoo/training/loop.py", "zoo/cli/train.py", "zoo/datasets/pipeline.py"):
        assert module in names, module
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in ("zoo-train = zoo.cli.train:main", "zoo-evaluate = zoo.cli.evaluate:main",
                    "zoo-export = zoo.cli.export:main"):
        assert command in entry_points


def test_a_users_layers_and_export_modules_do_not_shadow_the_package(tmp_path):
    (tmp_path / "layers.py").write_text("raise ImportError('the user layers.py was imported')")
    (tmp_path / "export.py").write_text("raise ImportError('the user export.py was imported')")
    result = subprocess.run(
        [sys.executable, "-c", "from zoo import DeepKalmanFilter; import zoo.layers, zoo.export;"
         " from zoo.export.runtime import StreamingFilter; print(zoo.__version__)"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    import zoo

    assert result.stdout.strip() == zoo.__version__


def test_streaming_filter_imports_without_tensorflow():
    """The device runtime needs only numpy and ai-edge-litert: importing it loads no TF."""
    result = _run("import sys; import zoo.export.runtime; "
                  "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; "
                  "assert 'keras' not in sys.modules, 'keras was imported'")
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_first_model_class_imported_registers_every_model_with_keras():
    """`from zoo import VAE` alone lets keras.saving.load_model find a DBM or a DKF too: the
    first class asked for loads every model module; `import zoo` alone imports none."""
    result = _run(
        "import sys, keras, zoo; assert 'zoo.boltzmann' not in sys.modules; "
        "from zoo import VAE; "
        "names = ['DBM', 'DeepKalmanFilter', 'MADE', 'RBM', 'ParticleFilter', 'VAE']; "
        "unloaded = [n for n in names if zoo._LAZY[n] not in sys.modules]; "
        "assert not unloaded, unloaded; "
        "classes = [getattr(sys.modules[zoo._LAZY[n]], n) for n in names]; "
        "missing = [n for n, c in zip(names, classes) "
        "           if keras.saving.get_registered_object(keras.saving.get_registered_name(c)) "
        "           is not c]; "
        "assert not missing, missing; print('ok')"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "ok"

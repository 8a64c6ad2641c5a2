"""Time-series datasets: the Nile river flow, simulated linear-Gaussian and pendulum systems."""

from __future__ import annotations

import numpy as np

from zoo.datasets._deps import require


def load_nile() -> np.ndarray:
    """Annual flow of the Nile at Aswan, 1871-1970 (10^8 m^3), from statsmodels.

    Returns:
        float64 array of shape [100]; element 0 is 1871 (1120.0), the mean is 919.35. The
        classic local-level series of Durbin & Koopman, "Time Series Analysis by State Space
        Methods" (2001), with a change point near 1899 (the Aswan dam).
    """
    sm_datasets = require("statsmodels.datasets", "statsmodels")
    frame = sm_datasets.nile.load_pandas().data
    return np.asarray(frame["volume"], dtype=np.float64).copy()


def nile(split: str = "train") -> dict:
    """The Nile series as one sequence: ``flow`` float64 [100], ``year`` int64 [100]."""
    sm_datasets = require("statsmodels.datasets", "statsmodels")
    frame = sm_datasets.nile.load_pandas().data
    return {
        "flow": np.asarray(frame["volume"], dtype=np.float64).copy(),
        "year": np.asarray(frame["year"], dtype=np.int64).copy(),
    }

"""Tests of zoo.datasets: shapes, dtypes, value ranges, splits, and the statistics of the
simulated systems against their true parameters."""

import numpy as np

from zoo import datasets


def test_nile_matches_statsmodels_and_known_facts():
    import statsmodels.api as sm

    flow = datasets.load_nile()
    assert flow.shape == (100,) and flow.dtype == np.float64
    np.testing.assert_array_equal(flow, sm.datasets.nile.load_pandas().data["volume"].values)
    assert flow[0] == 1120.0
    np.testing.assert_allclose(flow.mean(), 919.35, atol=1e-9)

"""Datasets of the zoo: real data where it ships offline, simulated systems with ground truth.

Work in progress; see ``load_nile``.
"""

from zoo.datasets.timeseries import load_nile

__all__ = ["load_nile"]

"""Reading finished runs: their config, models and metrics."""

from __future__ import annotations

import csv
import json
import os
import time

from zoo.training.checkpoint import load_model_file
from zoo.training.config import ConfigError


def read_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir!r} is not a training run (no config.json)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or "model_name" not in config:
        raise ConfigError(f"{path} is not a run config (no model_name)")
    return config


def load_run(run_dir: str, which: str = "best"):
    """The config and the ``best`` or ``last`` model of a finished run."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    config = read_config(run_dir)
    path = os.path.join(run_dir, f"{which}.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the run finished no epoch (or is not "
                                f"a training run)")
    return config, load_model_file(path)


def read_metrics(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")

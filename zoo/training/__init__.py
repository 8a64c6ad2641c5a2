"""Training runs behind ``zoo-train`` and ``zoo-evaluate`` (``tools/train.py``, ``tools/evaluate.py``).

A run is a resolved config (model, data, train sections) and an output directory holding
``config.json``, per-epoch checkpoints (weights with optimizer state, for ``--resume``),
``best.keras`` / ``last.keras``, ``metrics.csv``, TensorBoard logs, pictures and
``evaluation.json``; every file is written atomically. The package never asks which kind of
model it trains: the model's contract (:mod:`zoo.contract`) and its registry entry
(:mod:`zoo.registry`) say everything.

- :mod:`zoo.training.config`: defaults, config files, ``--set`` overrides, checks.
- :mod:`zoo.training.data`: dataset -> ``fit`` / ``evaluate`` inputs (one pipeline).
- :mod:`zoo.training.loop`: build, fit with checkpoints, NaN stop, interruption, resume.
- :mod:`zoo.training.evaluation` and :mod:`zoo.training.pictures`.
- :mod:`zoo.training.checkpoint` and :mod:`zoo.training.runs`: the files of a run.
"""

from zoo.registry import MODELS, ModelEntry, model_entry
from zoo.training.checkpoint import seed_states
from zoo.training.config import (TRAIN_DEFAULTS, ConfigError, parse_value, read_config_file,
                                 resolve_config)
from zoo.training.data import load_split, split_names
from zoo.training.evaluation import evaluate_model
from zoo.training.loop import RunResult, build_model, train
from zoo.training.pictures import write_plots
from zoo.training.runs import load_run, read_config, read_metrics, timestamp

__all__ = ["MODELS", "ModelEntry", "RunResult", "TRAIN_DEFAULTS", "ConfigError", "build_model",
           "evaluate_model", "load_run", "load_split", "model_entry", "parse_value",
           "read_config", "read_config_file", "read_metrics", "resolve_config", "seed_states",
           "split_names", "timestamp", "train", "write_plots"]

"""Pictures of a trained model, drawn by the model's ``pictures`` contract method."""

from __future__ import annotations

import os

from zoo.contract import EvalSettings
from zoo.registry import model_entry
from zoo.training import data as run_data

NUM_EXAMPLES = 16


def write_plots(model, config: dict, out_dir: str, log=print, arrays: dict | None = None) -> list:
    """PNG files under ``out_dir`` from a seeded random choice of evaluation examples."""
    try:
        import zoo.plots  # noqa: F401
    except ImportError as err:  # matplotlib missing
        log(f"No pictures: {err}")
        return []
    cls = model_entry(config["model_name"]).load()
    if arrays is None:
        arrays = run_data.load_split(config, run_data.split_names(config)[1])
    seed = config["train"]["seed"]
    picked, selection = run_data.subset(arrays, config, NUM_EXAMPLES, seed)
    x, _ = cls.fit_inputs(picked)
    os.makedirs(out_dir, exist_ok=True)
    settings = EvalSettings(num_samples=config["train"]["eval_samples"], seed=seed,
                            batch_size=config["train"]["batch_size"], selection=selection)
    written = model.pictures(x, picked, out_dir, settings)
    if written:
        log("Pictures: " + ", ".join(written))
    return written

"""Evaluation of a trained model: Keras' metrics on the whole split plus the model's own report
(its ``evaluation`` contract method) on the whole split or a seeded random subset."""

from __future__ import annotations

from zoo.contract import EvalSettings
from zoo.registry import model_entry
from zoo.training import data as run_data
from zoo.training.checkpoint import seed_states


def evaluate_model(model, config: dict, split: str, log=print, num_samples: int | None = None,
                   num_examples: int | None = None, arrays: dict | None = None) -> dict:
    """Keras metrics on every example of ``split``, then ``model.evaluation`` (e.g. the
    K-sample importance-weighted bound, an exact log-likelihood, RMSE) on ``num_examples``
    examples drawn at random with the run's seed (0 or None with ``eval_examples`` 0: all).
    The result says which examples were used."""
    train_cfg = config["train"]
    cls = model_entry(config["model_name"]).load()
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if num_examples is not None and num_examples < 0:
        raise ValueError(f"num_examples must be >= 0 (0: the whole split), got {num_examples}")
    arrays = run_data.load_split(config, split) if arrays is None else arrays
    model.validate_data(arrays)
    x, y = cls.fit_inputs(arrays)
    count = run_data.example_count(arrays, config)
    for variable in seed_states(model):  # the same noise for every evaluation of a model
        variable.assign([train_cfg["seed"], 0])
    metrics = model.evaluate(run_data.eval_stream(cls, x, y, train_cfg["batch_size"]),
                             verbose=0, return_dict=True)
    result = {"split": split, "examples": int(count),
              **{k: float(v) for k, v in metrics.items()}}
    size = train_cfg["eval_examples"] if num_examples is None else num_examples
    picked, selection = run_data.subset(arrays, config, size, train_cfg["seed"])
    settings = EvalSettings(num_samples=num_samples or train_cfg["eval_samples"],
                            seed=train_cfg["seed"], batch_size=train_cfg["batch_size"],
                            split=split, selection=selection)
    px, py = cls.fit_inputs(picked)
    report = model.evaluation(px, py, picked, settings)
    if report:
        result.update(report)
        result["evaluation_examples"] = selection
    if "binarize" in config["data"]:
        result["training_binarization"] = config["data"]["binarize"]
        result["evaluation_binarization"] = (
            "static (one seeded draw)" if config["data"]["binarize"] in ("dynamic", "static")
            else config["data"]["binarize"])
    log(f"{split}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in result.items() if not isinstance(v, dict)))
    return result

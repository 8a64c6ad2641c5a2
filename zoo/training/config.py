"""A run's config: defaults, the user's file and ``--set`` overrides, every value checked."""

from __future__ import annotations

import copy
import inspect
import json
import math
import os

from zoo.registry import MODELS, model_entry

TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 100,
    "learning_rate": 1e-3,
    "schedule": "constant",  # constant | cosine | exponential | piecewise
    "decay_rate": 0.5,  # exponential: factor per `decay_epochs`
    "decay_epochs": 10,
    "schedule_epochs": [],  # piecewise: epochs at which the rate changes...
    "schedule_values": [],  # ...and the rates (one more than the epochs)
    "optimizer": "adam",  # adam | rmsprop | sgd
    "optimizer_options": {},  # e.g. {"epsilon": 1e-4, "beta_1": 0.9, "clipnorm": 10.0}
    "seed": 0,
    "jit": False,
    "mixed_precision": False,
    "strategy": "default",  # default | mirrored | multiworker
    "eval_samples": 100,  # K of the importance-weighted bound in the final evaluation
    "eval_examples": 500,  # a seeded random subset of the test split of this size (0: all)
    # After fit: epochs of training the separate filter network alone (the DKF / DMM
    # recipe's second step, ``fit_filter``); 0: none. Models without one refuse it.
    "filter_epochs": 0,
    "filter_learning_rate": 1e-3,
    # Sequence models: sort pools of this many batches by sequence length each epoch
    # ("sortish" batches, less padding per batch); 0: plain shuffled batches.
    "bucket_by_length": 0,
}
CHOICES = {"schedule": ("constant", "cosine", "exponential", "piecewise"),
           "optimizer": ("adam", "rmsprop", "sgd"),
           "strategy": ("default", "mirrored", "multiworker")}
POSITIVE_INTS = ("epochs", "batch_size", "eval_samples", "decay_epochs")
BOOLEANS = ("jit", "mixed_precision")
#: Keyword arguments ``train.optimizer_options`` may pass to the Keras optimizer.
OPTIMIZER_OPTIONS = {
    "adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "rmsprop": ("rho", "momentum", "epsilon", "centered"),
    "sgd": ("momentum", "nesterov"),
}
COMMON_OPTIMIZER_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay")
#: What ``--resume`` may change in a run's config; any other difference is refused.
RESUMABLE = ("epochs", "learning_rate", "eval_samples", "eval_examples", "filter_epochs")


class ConfigError(ValueError):
    """A config key or value that does not exist or is invalid."""


def _choices_error(what, value, valid):
    return ConfigError(f"unknown {what} {value!r}; valid: {', '.join(sorted(valid))}")


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, lists, true/null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.lower()
        if lowered in ("true", "false", "yes", "no", "on", "off"):
            return lowered in ("true", "yes", "on")
        if lowered in ("none", "null"):
            return None
        return text


def read_config_file(path: str) -> dict:
    """The mapping in a YAML or JSON config file; ConfigError naming the file otherwise."""
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"config file {path!r} is a directory")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as err:
            raise ConfigError("YAML configs need pyyaml: pip install pyyaml") from err
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path!r} is not valid JSON: {err}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping, got {type(loaded).__name__}")
    return loaded


FROM_DATA = ("self", "kwargs", "args", "input_shape", "observation_shape")


def model_parameters(cls) -> list:
    """Constructor arguments a config may set (shapes come from the data)."""
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in FROM_DATA]
    params += list(getattr(cls, "LAYER_ARGS", ())) + (["dtype"] if hasattr(cls, "LAYER_ARGS")
                                                      else [])
    data_keys = set()
    if hasattr(cls, "data_kwargs_keys"):
        data_keys = set(cls.data_kwargs_keys)
    return [p for p in params if p not in data_keys and p != "action_dim"]


def _check_train(train: dict, model_cls) -> None:
    for key in train:
        if key not in TRAIN_DEFAULTS:
            raise _choices_error("config key", f"train.{key}",
                                 [f"train.{k}" for k in TRAIN_DEFAULTS])
    for key, valid in CHOICES.items():
        if train[key] not in valid:
            raise _choices_error(f"train.{key}", train[key], valid)
    for key in POSITIVE_INTS:
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {value!r}")
    value = train["eval_examples"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"train.eval_examples must be an integer >= 0 (0: the whole split), "
                          f"got {value!r}")
    value = train["bucket_by_length"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"train.bucket_by_length must be an integer >= 0 (batches per pool "
                          f"sorted by length; 0: off), got {value!r}")
    if value and not model_cls.has_example_lengths():
        raise ConfigError(f"train.bucket_by_length is for sequence models; "
                          f"{model_cls.__name__}'s examples have no length")
    value = train["filter_epochs"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"train.filter_epochs must be an integer >= 0 (0: no filter-only "
                          f"phase), got {value!r}")
    if value and not callable(getattr(model_cls, "fit_filter", None)):
        raise ConfigError(f"train.filter_epochs is for models with a separate filter network "
                          f"(dkf, dmm); {model_cls.__name__} has none")
    for key in BOOLEANS:
        if not isinstance(train[key], bool):
            raise ConfigError(f"train.{key} must be true or false, got {train[key]!r}")
    for key in ("learning_rate", "decay_rate", "filter_learning_rate"):
        value = train[key]
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"train.{key} must be a finite number > 0, got {value!r}")
    _check_schedule(train)
    _check_optimizer_options(train)
    if isinstance(train["seed"], bool) or not isinstance(train["seed"], int):
        raise ConfigError(f"train.seed must be an integer, got {train['seed']!r}")
    if train["jit"] and not getattr(model_cls, "supports_jit", True):
        reason = getattr(model_cls, "jit_unsupported_reason",
                         "XLA cannot compile its training step")
        raise ConfigError(f"train.jit is not supported for {model_cls.__name__}: {reason} "
                          f"in TF 2.21; train without --jit")


def _number(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def _check_schedule(train: dict) -> None:
    epochs, values = train["schedule_epochs"], train["schedule_values"]
    if not isinstance(epochs, list) or not isinstance(values, list):
        raise ConfigError("train.schedule_epochs and train.schedule_values must be lists")
    if train["schedule"] != "piecewise":
        if epochs or values:
            raise ConfigError("train.schedule_epochs / schedule_values need "
                              "train.schedule=piecewise")
        return
    if (not all(isinstance(e, int) and not isinstance(e, bool) and e > 0 for e in epochs)
            or epochs != sorted(set(epochs))):
        raise ConfigError(f"train.schedule_epochs must be increasing positive epoch numbers, "
                          f"got {epochs!r}")
    if len(values) != len(epochs) + 1 or not all(_number(v) and v > 0 for v in values):
        raise ConfigError(f"train.schedule_values must hold {len(epochs) + 1} rates > 0 (one "
                          f"more than train.schedule_epochs), got {values!r}")


def _check_optimizer_options(train: dict) -> None:
    options = train["optimizer_options"]
    if not isinstance(options, dict):
        raise ConfigError(f"train.optimizer_options must be a mapping, got {options!r}")
    valid = OPTIMIZER_OPTIONS[train["optimizer"]] + COMMON_OPTIMIZER_OPTIONS
    for key, value in options.items():
        if key not in valid:
            raise _choices_error(f"train.optimizer_options key for {train['optimizer']}:", key,
                                 valid)
        if key in ("amsgrad", "centered", "nesterov"):
            if not isinstance(value, bool):
                raise ConfigError(f"train.optimizer_options.{key} must be true or false")
        elif not (_number(value) and value >= 0):
            raise ConfigError(f"train.optimizer_options.{key} must be a finite number >= 0, "
                              f"got {value!r}")


def resolve_config(model: str, dataset: str | None = None, config: dict | None = None,
                   overrides: dict | None = None) -> dict:
    """Defaults, then the config file's mapping, then ``overrides`` ({"train.epochs": 3}).

    Every key is checked: model keys against the model's constructor, train keys and value
    types against ``TRAIN_DEFAULTS``; data keys are checked by the dataset loader. A bad key or
    value raises ``ConfigError`` naming it.
    """
    entry = model_entry(model)
    cls = entry.load()
    resolved = {"model_name": model, "model": {}, "data": {}, "train": dict(TRAIN_DEFAULTS)}
    resolved = _merge(resolved, entry.defaults)
    user = copy.deepcopy(config or {})
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"--set key {dotted!r} must be section.key, e.g. train.epochs=3")
        if not isinstance(user.setdefault(section, {}), dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        user[section][key] = value
    for section, value in user.items():
        if section not in ("model", "data", "train", "model_name"):
            raise ConfigError(f"unknown config section {section!r}; valid: data, model, train")
        if section != "model_name" and not isinstance(value, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys to "
                              f"values, got {type(value).__name__} {value!r}")
    if user.get("model_name", model) != model:
        raise ConfigError(f"config is for model {user['model_name']!r}, not {model!r}")
    name = dataset or user.get("data", {}).get("name") or entry.default_dataset
    if name not in entry.datasets:
        raise _choices_error(f"dataset for model {model!r}:", name, entry.datasets)
    resolved = _merge(resolved, entry.dataset_defaults.get(name, {}))
    resolved = _merge(resolved, {k: v for k, v in user.items() if k != "model_name"})
    resolved["data"]["name"] = name
    valid_model = model_parameters(cls)
    for key in resolved["model"]:
        if key not in valid_model:
            raise _choices_error(f"config key model.{key} for {model!r}; it is", key,
                                 valid_model)
    _check_train(resolved["train"], cls)
    resolved["data"] = cls.data_defaults(resolved["model"], resolved["data"],
                                         user.get("data", {}))
    _check_data(resolved["data"])
    return resolved


def _check_data(data: dict) -> None:
    """Data options against the dataset's loader (unknown keys, bad binarization)."""
    from zoo import datasets

    spec = datasets.get_spec(data["name"])
    options = spec.options
    for key in data:
        if key != "name" and key not in options:
            raise _choices_error(f"config key data.{key} for dataset {data['name']!r}; it is",
                                 key, list(options) or ["(none)"])
    if "binarize" in data and data["binarize"] not in datasets.BINARIZE_CHOICES:
        raise ConfigError(f"data.binarize must be one of {datasets.BINARIZE_CHOICES}, got "
                          f"{data['binarize']!r}")


def resume_config(saved: dict, requested: dict, explicit: dict) -> tuple[dict, dict]:
    """The config a resumed run continues with, and the changes it accepted.

    ``saved``: the run's config.json; ``requested``: the config the command line resolves to;
    ``explicit``: the dotted keys the user set on this command line ({"train.epochs": 5}).
    Keys in ``RESUMABLE`` may change (more epochs, a new learning rate); any other explicit
    difference is refused with the difference named.
    """
    config = copy.deepcopy(saved)
    changes = {}
    if requested["model_name"] != saved["model_name"]:
        raise ConfigError(f"--resume: the run is a {saved['model_name']!r} run, not "
                          f"{requested['model_name']!r}")
    for dotted in explicit:
        section, _, key = dotted.partition(".")
        if section == "data" and key == "name":
            new, old = requested["data"]["name"], saved["data"]["name"]
        else:
            new = requested.get(section, {}).get(key)
            old = saved.get(section, {}).get(key)
        if new == old:
            continue
        if section == "train" and key in RESUMABLE:
            config["train"][key] = new
            changes[dotted] = {"from": old, "to": new}
        else:
            raise ConfigError(
                f"--resume cannot change {dotted} (the run has {old!r}, the command line asks "
                f"{new!r}); only {', '.join('train.' + k for k in RESUMABLE)} may change on "
                f"resume. Start a new run (another --output-dir) for other changes")
    return config, changes


__all__ = ["MODELS", "TRAIN_DEFAULTS", "ConfigError", "parse_value", "read_config_file",
           "resolve_config", "resume_config", "model_parameters"]

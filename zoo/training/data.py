"""From a config's dataset to what ``fit`` and ``evaluate`` read, through the model's contract."""

from __future__ import annotations

import numpy as np

from zoo import datasets
from zoo.datasets.pipeline import epoch_stream

_X, _Y = "__x__", "__y__"


def split_names(config: dict) -> tuple:
    """(validation split or None, evaluation split) of the config's dataset."""
    spec = datasets.get_spec(config["data"]["name"])
    splits = spec.available_splits({k: v for k, v in config["data"].items() if k != "name"})
    valid = "valid" if "valid" in splits else None
    test = "test" if "test" in splits else (valid or "train")
    return valid, test


def load_split(config: dict, split: str, for_training: bool = False) -> dict:
    """NumPy arrays of a split. Dynamic binarization: grey levels for training (resampled per
    epoch by the input pipeline), one fixed seeded draw for evaluation."""
    from zoo.training.config import ConfigError

    data = {k: v for k, v in config["data"].items() if k != "name"}
    if data.get("binarize") == "dynamic":
        data["binarize"] = None if for_training else "static"
    try:
        return datasets.load_arrays(config["data"]["name"], split, **data)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"data settings for {config['data']['name']!r}: {err}") from None


def example_count(arrays: dict, config: dict) -> int:
    spec = datasets.get_spec(config["data"]["name"])
    return len(next(v for k, v in arrays.items() if k not in spec.constant_keys))


def subset(arrays: dict, config: dict, size: int, seed: int) -> tuple[dict, str]:
    """A seeded random subset of ``size`` examples (kept in split order), or the whole split
    when ``size`` is 0 or covers it; with a sentence saying which. Never "the first N": splits
    can be sorted (mnist5k's test split is sorted by class)."""
    spec = datasets.get_spec(config["data"]["name"])
    n = example_count(arrays, config)
    if not size or size >= n:
        return arrays, f"all {n} examples"
    index = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    picked = {k: (v if k in spec.constant_keys else np.asarray(v)[index])
              for k, v in arrays.items()}
    return picked, f"a random subset of {size} of {n} examples (seed {seed})"


def _as_dict(x, y) -> dict:
    out = dict(x) if isinstance(x, dict) else {_X: x}
    if y is not None:
        out[_Y] = y
    return out


def _split_pair(model_cls, batch, has_y: bool):
    y = batch.pop(_Y) if has_y else None
    x = batch[_X] if _X in batch else batch
    x = model_cls.prepare_batch(x)
    return x if y is None else (x, y)


def train_stream(model_cls, x, y, config: dict, start_epoch: int):
    """Epochs ``start_epoch .. epochs - 1`` of training batches (use with ``steps_per_epoch``)."""
    train = config["train"]
    dynamic = config["data"].get("binarize") == "dynamic" and model_cls.binarizes_inputs
    if dynamic and isinstance(x, dict):
        raise ValueError(f"{model_cls.__name__}: dynamic binarization needs a single input "
                         f"array")
    bucket = train.get("bucket_by_length", 0)
    lengths = model_cls.example_lengths(x) if bucket else None
    stream = epoch_stream(_as_dict(x, y), train["batch_size"], train["seed"], start_epoch,
                          train["epochs"], binarize_key=_X if dynamic else None,
                          lengths=lengths, bucket_by_length=bucket)
    return stream.map(lambda b: _split_pair(model_cls, dict(b), y is not None))


def eval_stream(model_cls, x, y, batch_size: int):
    """The examples in order, batched, as ``evaluate`` reads them."""
    stream = epoch_stream(_as_dict(x, y), batch_size, 0, 0, 1, shuffle=False)
    return stream.map(lambda b: _split_pair(model_cls, dict(b), y is not None))

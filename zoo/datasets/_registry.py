"""The dataset registry and the two entry points, ``load_arrays`` (NumPy) and ``load`` (tf.data).

A loader is a plain function ``loader(split, **options) -> dict[str, np.ndarray]`` whose
arrays share their leading (example) axis. ``register`` adds it to the registry with a
one-line description; the loader's keyword arguments are the dataset's options, and nothing
else is accepted. ``load`` builds the input pipeline on top: shuffling, batching, per-epoch
("dynamic") binarization, and trimming of padded sequences to the longest in each batch.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

# Options that only ``load`` understands; they shape the tf.data pipeline, not the data.
PIPELINE_OPTIONS = ("batch_size", "shuffle", "seed", "drop_remainder", "keys", "pad")
BINARIZE_CHOICES = (None, "static", "threshold", "dynamic")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Args:
        name: str. Registry name.
        description: str. One line, shown by ``tools/train.py --help``.
        loader: callable. ``loader(split, **options)`` returning a dict of NumPy arrays.
        splits: tuple of str. Valid ``split`` values.
        binarize_key: str or None. The array that ``binarize="dynamic"`` resamples per epoch.
        mask_key: str or None. For padded variable-length sequences, the [N, T] validity mask;
            ``load(..., pad="batch")`` trims every array in ``time_keys`` to the batch's
            longest sequence.
        time_keys: tuple of str. Arrays whose axis 1 is time (padded with ``mask_key``).
        constant_keys: tuple of str. Arrays without the example axis (true parameters of a
            simulation); ``load_arrays`` returns them, ``load`` leaves them out.
        splits_for: callable or None. ``splits_for(options) -> tuple`` when the splits depend
            on the dataset's options (MNIST's ``split_scheme="60k"`` has no "valid"); see
            ``available_splits``.
    """

    name: str
    description: str
    loader: Callable[..., dict]
    splits: tuple
    binarize_key: str | None = None
    mask_key: str | None = None
    time_keys: tuple = ()
    constant_keys: tuple = ()
    splits_for: Callable[[dict], tuple] | None = None

    @property
    def options(self) -> dict:
        """The loader's options and their defaults."""
        params = inspect.signature(self.loader).parameters
        return {k: p.default for k, p in params.items() if k != "split"}

    def available_splits(self, options: dict | None = None) -> tuple:
        """The splits that exist under the dataset options ``options`` (all of ``splits``
        unless the dataset declares ``splits_for``)."""
        if self.splits_for is None:
            return self.splits
        return tuple(self.splits_for(dict(options or {})))


_REGISTRY: dict[str, DatasetSpec] = {}


def register(name: str, description: str, splits: Sequence[str], **spec_kwargs):
    """Decorator adding ``loader`` to the registry under ``name``."""

    def wrap(loader):
        _REGISTRY[name] = DatasetSpec(name, description, loader, tuple(splits), **spec_kwargs)
        return loader

    return wrap


def names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def describe() -> dict[str, str]:
    """``{name: one-line description}`` for every registered dataset."""
    return {name: _REGISTRY[name].description for name in names()}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; a ValueError lists the valid names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(names())}.")
    return _REGISTRY[name]


def _check(spec: DatasetSpec, split: str, options: dict, allowed_extra=()):
    if split not in spec.splits:
        raise ValueError(
            f"Dataset {spec.name!r} has no split {split!r}. Valid splits: "
            f"{', '.join(spec.splits)}."
        )
    valid = list(spec.options) + list(allowed_extra)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        hint = ""
        if set(unknown) & set(PIPELINE_OPTIONS) and not allowed_extra:
            hint = " (batch_size, shuffle, seed, drop_remainder, keys and pad belong to load())"
        raise ValueError(
            f"Unknown option(s) for dataset {spec.name!r}: {', '.join(unknown)}{hint}. "
            f"Valid options: {', '.join(valid) or 'none'}."
        )
    if "binarize" in options and options["binarize"] not in BINARIZE_CHOICES:
        raise ValueError(
            f"binarize must be one of {BINARIZE_CHOICES}, got {options['binarize']!r}."
        )


def load_arrays(name: str, split: str = "train", **options) -> dict[str, np.ndarray]:
    """NumPy arrays of dataset ``name``: a dict whose arrays share the leading example axis.

    The keys, shapes and dtypes are documented by each loader (``help(zoo.datasets.<name>)``
    or ``describe()``). ``binarize="dynamic"`` is refused here: it resamples each epoch and
    so only exists in ``load``; ``binarize=None`` gives its Bernoulli means.
    """
    spec = get_spec(name)
    _check(spec, split, options)
    if options.get("binarize") == "dynamic":
        raise ValueError(
            "binarize='dynamic' resamples the pixels every epoch, so it only exists in load(); "
            "load_arrays() can give binarize=None (the Bernoulli means), 'static' or "
            "'threshold'."
        )
    return spec.loader(split=split, **options)


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    drop_remainder: bool = False,
    keys: str | Sequence[str] | None = None,
    pad: str = "batch",
    start_epoch: int = 0,
    epochs: int | None = None,
    bucket_by_length: int = 0,
    **options,
) -> "tf.data.Dataset":
    """A ``tf.data.Dataset`` of dataset ``name``.

    Args:
        name: str. A registered name (``names()``).
        split: str. One of the dataset's splits.
        batch_size: int or None. Batch size; None gives single examples.
        shuffle: bool or None. Reshuffle every epoch (a full-size buffer); None shuffles the
            "train" split only.
        seed: int or None. Seeds shuffling and dynamic binarization; with a seed the pipeline
            is deterministic (each epoch differs from the last, and a rebuilt pipeline repeats
            the same epochs). None draws from TensorFlow's global seed.
        drop_remainder: bool. Drop the last incomplete batch.
        keys: str, sequence of str, or None. None yields the dict of all arrays; a str yields
            that tensor alone; a sequence yields a tuple in that order (e.g. ("image", "label")
            for ``fit``).
        pad: str. For variable-length sequence datasets: "batch" trims each batch to its
            longest sequence, "fixed" keeps the padded length of the arrays.
        start_epoch, epochs: with ``epochs``, the pipeline holds epochs ``start_epoch ..
            epochs - 1`` back to back, each a stateless function of (seed, epoch), so a
            resumed run sees the same batches (use with ``fit(steps_per_epoch=...)``); by
            default it holds one epoch, a new one at every iteration.
        bucket_by_length: int. For variable-length sequence datasets, "sortish" batches:
            pools of this many shuffled batches sorted by length, the full batches then
            shuffled, so a batch trimmed to its longest sequence carries less padding (0:
            plain shuffled batches). A partial last batch is a random draw, unsorted.
        **options: the dataset's own options (see ``load_arrays``), including
            ``binarize="dynamic"`` where the dataset has images.
    """
    import tensorflow as tf

    spec = get_spec(name)
    _check(spec, split, options)
    if pad not in ("batch", "fixed"):
        raise ValueError(f"pad must be 'batch' or 'fixed', got {pad!r}.")
    dynamic = options.get("binarize") == "dynamic"
    if dynamic:
        options = {**options, "binarize": None}
    arrays = spec.loader(split=split, **options)
    arrays = {k: v for k, v in arrays.items() if k not in spec.constant_keys}
    if keys is not None:
        wanted = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in wanted if k not in arrays]
        if missing:
            raise ValueError(
                f"Dataset {name!r} has no array(s) {', '.join(missing)}. "
                f"It has: {', '.join(arrays)}."
            )
    from zoo.datasets.pipeline import epoch_stream

    lengths = None
    if bucket_by_length:
        if spec.mask_key is None:
            raise ValueError(f"bucket_by_length is for variable-length sequence datasets; "
                             f"{name!r} has no padding mask.")
        from zoo.sequences import sequence_steps

        lengths = sequence_steps({"mask": arrays[spec.mask_key]})
    if shuffle is None:
        shuffle = split == "train"
    ds = epoch_stream(
        arrays, batch_size, seed, start_epoch, epochs, shuffle=shuffle,
        binarize_key=spec.binarize_key if dynamic else None,
        mask_key=spec.mask_key if pad == "batch" else None, time_keys=spec.time_keys,
        drop_remainder=drop_remainder, lengths=lengths, bucket_by_length=bucket_by_length)
    if keys is not None:
        if isinstance(keys, str):
            ds = ds.map(lambda e: e[keys])
        else:
            ds = ds.map(lambda e: tuple(e[k] for k in keys))
    return ds.prefetch(2)  # no autotuning (epoch_stream's options say why)

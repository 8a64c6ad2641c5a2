"""Shared plumbing for every layer: backend check, serialization, dtypes, input checks."""

from __future__ import annotations

import os

SUPPORTED_BACKEND = "tensorflow"


def check_backend() -> None:
    """Fail with a clear message when Keras is set to a backend other than TensorFlow.

    Nothing global is set: the user's ``KERAS_BACKEND`` (or ``~/.keras/keras.json``) is read,
    never written.
    """
    requested = os.environ.get("KERAS_BACKEND")
    if requested is not None and requested != SUPPORTED_BACKEND:
        raise ImportError(
            f"This package runs on the TensorFlow backend of Keras 3 (it is built on "
            f"TensorFlow Probability), but KERAS_BACKEND={requested!r}. Unset KERAS_BACKEND "
            f"or set KERAS_BACKEND=tensorflow before importing it."
        )
    import keras

    active = keras.backend.backend()
    if active != SUPPORTED_BACKEND:
        raise ImportError(
            f"This package runs on the TensorFlow backend of Keras 3, but Keras is using "
            f"{active!r} (from ~/.keras/keras.json or KERAS_BACKEND). Set "
            f"KERAS_BACKEND=tensorflow before importing it."
        )


check_backend()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

PACKAGE = "zoo"


def register(cls):
    """Register a public class for Keras serialization under the package name ``zoo``."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


LOW_PRECISION = ("float16", "bfloat16")


def math_dtype(layer: keras.layers.Layer) -> str:
    """Dtype for distribution math: float32 under mixed precision, else the compute dtype."""
    dtype = layer.compute_dtype
    return "float32" if dtype in LOW_PRECISION else dtype


def check_choice(name: str, value, choices) -> None:
    """Raise ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {bound}, got {value!r}.")


def check_positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_min_rank(name: str, shape, min_rank: int) -> None:
    """Static rank check on a (possibly partially known) shape."""
    if shape is not None and len(shape) < min_rank:
        raise ValueError(
            f"`{name}` must have rank >= {min_rank} ([batch, ..., features]), got shape "
            f"{tuple(shape)}."
        )


def assert_finite(x, name: str):
    """Check a tensor for NaN/Inf in eager mode and in `tf.function` (a no-op under XLA)."""
    return tf.debugging.assert_all_finite(
        x, f"`{name}` contains NaN or Inf values; check the input data and learning rate."
    )


def standard_normal(shape, seed_generator, dtype="float32"):
    """N(0, 1) noise drawn with a Keras ``SeedGenerator`` and the Philox algorithm.

    ``keras.random.normal`` lets TensorFlow auto-select the algorithm, which compiles to a
    kernel about 50x slower under XLA on CPU (measured: 78 ms vs 1.5 ms for 256 x 256).
    """
    return tf.random.stateless_normal(shape, seed=seed_generator.next(), dtype=dtype,
                                      alg="philox")


def standard_uniform(shape, seed_generator, dtype="float32"):
    """U(0, 1) noise drawn like :func:`standard_normal`."""
    return tf.random.stateless_uniform(shape, seed=seed_generator.next(), dtype=dtype,
                                       alg="philox")


def sum_rightmost(x, ndims: int):
    """Sum over the rightmost ``ndims`` axes (the event axes)."""
    if ndims == 0:
        return x
    return tf.reduce_sum(x, axis=list(range(-ndims, 0)))


def loop_pieces() -> int:
    """Into how many independent pieces a batch's time loop is cut, to run side by side.

    A loop step's products are too small for TensorFlow to spread over threads (a
    [20, 600] x [600, 600] product runs on one core; the DMM trained no faster on 2 threads
    than on 1), but independent loops run at the same time on the inter-op threads. So on
    a machine without a visible GPU this is the number of threads TensorFlow may use at
    once: the smaller of its intra- and inter-op settings, each the cores available when 0
    (TensorFlow's default), at most 8; 1 where a GPU is visible (one loop on the device).
    The ``ZOO_LOOP_PIECES`` environment variable, a positive integer, overrides it. Measured
    on 2 cores only (benchmarks/README.md, "pyro_dmm").
    """
    forced = os.environ.get("ZOO_LOOP_PIECES")
    if forced:
        try:
            value = int(forced)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"ZOO_LOOP_PIECES must be a positive integer, got {forced!r}.")
        return value
    if tf.config.list_logical_devices("GPU"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    threads = [tf.config.threading.get_intra_op_parallelism_threads() or cores,
               tf.config.threading.get_inter_op_parallelism_threads() or cores]
    return max(1, min(8, *threads))


def map_batch_pieces(fn, tensors, pieces: int, axis: int = 0):
    """``fn(*tensors)`` on ``pieces`` near-equal slices of their batch ``axis`` (sizes
    differ by at most one; empty when the batch is smaller), concatenated back along it.
    ``fn`` returns a tensor or a tuple of tensors, each batched on ``axis``."""
    if pieces <= 1:
        return fn(*tensors)
    batch = tf.shape(tensors[0])[axis]
    sizes = batch // pieces + tf.cast(tf.range(pieces) < batch % pieces, batch.dtype)
    parts = [fn(*args) for args in zip(*[tf.split(t, sizes, axis) for t in tensors])]
    if isinstance(parts[0], (tuple, list)):
        return tuple(tf.concat(list(p), axis) for p in zip(*parts))
    return tf.concat(parts, axis)

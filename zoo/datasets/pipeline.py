"""The one input pipeline: seeded epochs of batches from NumPy arrays.

``zoo.datasets.load``, the trainer (``zoo.training``), the test harness and the benchmarks all
read data through :func:`epoch_stream`. Each epoch's order (and dynamic binarization) is a
stateless function of ``(seed, epoch)``, so a run resumed at epoch ``e`` sees exactly the
batches an uninterrupted run would.
"""

from __future__ import annotations

import numpy as np


def epoch_stream(arrays: dict, batch_size: int | None, seed: int | None,
                 start_epoch: int = 0, epochs: int | None = None, *,
                 shuffle: bool = True, binarize_key: str | None = None,
                 mask_key: str | None = None, time_keys: tuple = (),
                 drop_remainder: bool = False, lengths=None, bucket_by_length: int = 0):
    """A ``tf.data.Dataset`` of batches of ``arrays`` (a dict, examples on axis 0).

    Args:
        arrays: dict of arrays with equal first dimension.
        batch_size: int, or None for single examples.
        seed: int. Seeds the order and the binarization noise; None draws one.
        start_epoch, epochs: with ``epochs`` given, the stream holds epochs
            ``start_epoch .. epochs - 1`` back to back (use it with ``steps_per_epoch``);
            with ``epochs=None`` it holds one epoch, a new one each time it is iterated.
        shuffle: bool. Shuffle each epoch (else the arrays' order).
        binarize_key: str or None. The array resampled as Bernoulli(value) every epoch
            (dynamic binarization, Burda et al. 2016).
        mask_key, time_keys: for padded sequences, the padding mask (1 = real step) and the
            arrays with time on axis 1: each batch is cut to its longest sequence.
        drop_remainder: bool. Drop the last incomplete batch.
        lengths, bucket_by_length: "sortish" batches for sequences of unequal length. With
            ``bucket_by_length`` = P > 0, each epoch's shuffled order is cut into pools of P
            batches, each pool is sorted by ``lengths`` (one per example), cut into batches,
            and the epoch's full batches are shuffled (a last, partial batch stays last).
            Every example is still seen once an epoch, in batches of similar length, so a
            batch cut to its longest sequence carries less padding. 0: plain shuffled
            batches.
    """
    import tensorflow as tf

    if not arrays:
        raise ValueError("epoch_stream needs at least one array.")
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays must have equal first dimensions, got {sizes}.")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                   or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("the arrays hold no examples.")
    bucket_by_length = _check_bucketing(bucket_by_length, lengths, n, batch_size, shuffle)
    tensors = {k: tf.constant(v) for k, v in arrays.items()}
    if bucket_by_length:
        length_t = tf.constant(np.asarray(lengths, np.int64))
        pool = int(bucket_by_length) * int(batch_size)
        full_batches = n // int(batch_size)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed_t = tf.constant(int(seed), tf.int64)

    def one_epoch(epoch):
        epoch = tf.cast(epoch, tf.int64)
        index = tf.range(n, dtype=tf.int64)
        if shuffle:
            index = tf.random.experimental.stateless_shuffle(index,
                                                             seed=tf.stack([seed_t, epoch]))
        if bucket_by_length:
            index = _sortish(index, length_t, pool, int(batch_size), full_batches,
                             tf.stack([seed_t, -1 - epoch]))

        def gather(i, noise_id):
            """Examples ``i`` (one index or a batch of them); binarization noise from
            (seed, epoch, noise_id): the example's index, or the batch's number."""
            example = {k: tf.gather(t, i) for k, t in tensors.items()}
            if binarize_key is not None:
                grey = example[binarize_key]
                u = tf.random.stateless_uniform(
                    tf.shape(grey), seed=tf.stack([epoch + 1000003 * seed_t, noise_id]),
                    dtype=grey.dtype)
                example[binarize_key] = tf.cast(u < grey, grey.dtype)
            return example

        ds = tf.data.Dataset.from_tensor_slices(index)
        if batch_size is None:
            ds = ds.map(lambda i: gather(i, i))
        else:  # gather whole batches: one op per batch instead of one per example
            ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).enumerate()
            ds = ds.map(lambda b, i: gather(i, b))
        if mask_key is not None:
            ds = ds.map(lambda e: trim_to_longest(e, mask_key, time_keys,
                                                  batch_size is not None))
        return ds

    if epochs is None:  # one epoch, a new index at each iteration
        ids = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).take(1)
        ids = ids.map(lambda r: tf.math.floormod(r, 2**31))
    else:
        ids = tf.data.Dataset.range(int(start_epoch), int(epochs))
    if batch_size is None:
        per_epoch = n
    else:
        per_epoch = n // batch_size if drop_remainder else -(-n // batch_size)
    held = 1 if epochs is None else max(int(epochs) - int(start_epoch), 0)
    # flat_map hides the length: stating it lets Keras' fit show "step k / total" and stops it
    # from warning "Your input ran out of data" at the end of every first epoch.
    ds = ids.flat_map(one_epoch).apply(tf.data.experimental.assert_cardinality(per_epoch * held))
    return ds.prefetch(2).with_options(_no_autotune())


def _no_autotune():
    """tf.data options without autotuning. With it on, the DMM of bench_pyro_dmm (one
    ``fit`` per epoch, alternated with Pyro's epochs) returned from ``fit`` at 1.30 s after
    epochs of 0.85-0.9 s in 33 of 100 epochs (the wait came after ``on_train_end``, as the
    iterator was torn down; 10 + 20 + ... + 640 ms, the autotuning thread's doubling sleeps,
    is 1.27 s, likely what it waited for); with it off, 0.87-0.94 s every epoch. The stream
    gathers in-memory batches with sequential maps, so there is nothing to tune; a fixed
    prefetch of 2 batches is kept."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _check_bucketing(bucket_by_length, lengths, n: int, batch_size, shuffle: bool) -> int:
    if isinstance(bucket_by_length, bool) or not isinstance(bucket_by_length, (int, np.integer)) \
            or bucket_by_length < 0:
        raise ValueError(f"bucket_by_length must be an int >= 0 (batches per sorted pool; 0: "
                         f"off), got {bucket_by_length!r}.")
    if not bucket_by_length:
        return 0
    if batch_size is None or not shuffle:
        raise ValueError("bucket_by_length needs batches (batch_size) and shuffle=True.")
    if lengths is None:
        raise ValueError("bucket_by_length needs `lengths`, one per example.")
    lengths = np.asarray(lengths)
    if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer) \
            or np.any(lengths < 0):
        raise ValueError(f"lengths must be {n} integers >= 0 (one per example), got an array "
                         f"of shape {lengths.shape} and dtype {lengths.dtype}.")
    return int(bucket_by_length)


def _sortish(index, lengths, pool: int, batch_size: int, full_batches: int, seed):
    """The full batches of ``index``: sorted by length within consecutive pools of ``pool``
    positions (stable), then put in an order drawn from ``seed``. The examples of a partial
    last batch, if any, stay last and unsorted: a uniform draw, as in the plain stream, so
    that ``drop_remainder`` drops random examples, not the longest of the last pool."""
    import tensorflow as tf

    m = full_batches * batch_size
    head, tail = index[:m], index[m:]
    position = tf.range(m, dtype=tf.int64)
    key = (position // pool) * (tf.reduce_max(lengths) + 1) + tf.gather(lengths, head)
    head = tf.gather(head, tf.argsort(key, stable=True))
    slot = tf.math.invert_permutation(tf.random.experimental.stateless_shuffle(
        tf.range(full_batches, dtype=tf.int64), seed=seed))
    key = tf.gather(slot, position // batch_size) * batch_size + position % batch_size
    return tf.concat([tf.gather(head, tf.argsort(key, stable=True)), tail], 0)


def trim_to_longest(element: dict, mask_key: str, time_keys: tuple, batched: bool = True):
    """Cut the time axis of padded sequences to the longest valid length present."""
    import tensorflow as tf

    mask = element[mask_key]
    length = tf.cast(tf.reduce_max(tf.reduce_sum(tf.cast(mask > 0, tf.int32), axis=-1)),
                     tf.int32)
    out = dict(element)
    for key in time_keys:
        if key in out:
            out[key] = element[key][:, :length] if batched else element[key][:length]
    return out

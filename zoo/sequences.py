"""What the sequence models (Kalman filter, LSTM-KF, DKF/DMM) share in the model contract.

One vocabulary (:mod:`zoo.contract`): ``observations`` [batch, time, ...]; ``mask``
[batch, time] 1 on a real step, 0 on padding after a shorter sequence's end; ``observed``
[batch, time] 1 when the frame was seen, 0 when it is missing; ``actions``
[batch, time, action_dim]; ``time_gaps`` [batch, time].

Every filter returns the same names (``filter()`` a NamedTuple of sequences, ``filter_step`` a
dict for one frame):

- ``filtered_means`` [batch, time, n] (step: ``filtered_mean``): E[state_t | frames 0..t];
- ``filtered_covs`` [batch, time, n, n] (step: ``filtered_cov``) for the Gaussian filters, or
  ``filtered_scales`` [batch, time, n] (step: ``filtered_scale``) for a diagonal posterior
  (DKF/DMM);
- ``log_likelihood`` [batch]: log p(frames) summed over the steps, and ``log_likelihoods``
  [batch, time] per step (step: ``log_likelihood`` [batch]), where the model has one;
- ``predicted_means`` / ``predicted_covs`` (step: ``predicted_mean`` / ``predicted_cov``):
  the moments before frame t's update;
- ``observation_means`` (step: ``observation_mean``): the emission of the filtered state.

Smoothers return ``smoothed_means`` and ``smoothed_covs`` / ``smoothed_scales``.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

SEQUENCE_KEYS = ("observations", "mask", "observed", "actions", "time_gaps")


def sequence_inputs(arrays: dict, keys=SEQUENCE_KEYS) -> dict:
    """The model's input dict from a split's arrays: the sequence arrays present among
    ``keys``; NaN in ``observations`` marks a missing frame, so a frame holding any NaN becomes
    ``observed = 0`` (and zeros), on the host."""
    x = {k: np.asarray(arrays[k]) for k in keys if k in arrays}
    obs = x["observations"]
    if obs.dtype.kind == "f":
        bad = ~np.isfinite(obs)
        if bad.any():
            missing = bad.reshape(*obs.shape[:2], -1).any(-1)
            seen = (np.asarray(x["observed"]) > 0) if "observed" in x else np.ones_like(missing)
            x["observed"] = (seen & ~missing).astype(np.float32)
            x["observations"] = np.where(bad, 0.0, obs).astype(obs.dtype)
    return x


def trim_to_longest(x):
    """A batch of padded sequences cut to its longest one (``mask``'s real steps); every array
    has time on axis 1. Runs inside ``tf.data``; a batch without ``mask`` is returned as is."""
    if not isinstance(x, dict) or "mask" not in x:
        return x
    from zoo.datasets.pipeline import trim_to_longest as trim

    return trim(x, "mask", tuple(x), batched=True)


FLAG_KEYS = ("mask", "observed")


def check_flags(name: str, value, steps=None, batch=None) -> None:
    """ValueError naming ``name`` unless ``value`` (a ``mask`` or ``observed`` array, NumPy or
    an eager tensor) is [batch, time] and holds only 0 and 1 (bools too): 0.5 or 2 is neither
    a seen nor a missing frame. ``steps`` / ``batch``: the observations' sizes, when known."""
    v = np.asarray(value)
    if v.ndim != 2:
        raise ValueError(f"`{name}` must be [batch, time], got shape {list(v.shape)}")
    if steps is not None and v.shape[1] != steps:
        raise ValueError(f"`{name}` has {v.shape[1]} time steps but the observations have "
                         f"{steps}")
    if batch is not None and v.shape[0] != batch:
        raise ValueError(f"`{name}` has {v.shape[0]} sequences but the observations have "
                         f"{batch}")
    if v.dtype != bool:
        bad = ~((v == 0) | (v == 1))
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"`{name}` must hold only 0 and 1, got {v[at].item()!r} at "
                             f"(batch, time) = {at} ({int(bad.sum())} such value(s))")


def on_host(value) -> bool:
    """Whether ``value``'s numbers are known now (NumPy, a list, an eager tensor), so that
    the sequence checks can run on the host; inside a traced step they are not."""
    return not tf.is_tensor(value) or tf.executing_eagerly()


def checked_flags(name: str, value, steps=None, batch=None):
    """``value`` (a ``mask`` / ``observed`` input of a model's Python API or ``call``) after
    :func:`check_flags`: on the host when its value is known (NumPy, eager), else an assert
    in the graph (``InvalidArgumentError`` naming ``name`` when run; none under XLA, which
    drops asserts: the trainer checks the data on the host before ``fit``). None stays None.
    The one line a sequence model needs: ``mask = sequences.checked_flags("mask", mask)``."""
    if value is None:
        return None
    if on_host(value):
        check_flags(name, value, steps, batch)
        return value
    if value.dtype == tf.bool:
        return value
    ok = tf.reduce_all(tf.logical_or(tf.equal(value, 0), tf.equal(value, 1)))
    with tf.control_dependencies([tf.debugging.Assert(
            ok, [f"`{name}` must hold only 0 and 1"], name=f"check_{name}")]):
        return tf.identity(value)


def check_time_gaps(value, name: str = "time_gaps") -> None:
    """ValueError naming ``name`` when a time gap is negative or not finite."""
    v = np.asarray(value, np.float64)
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"`{name}` must be finite and >= 0 (the time from step t-1 to t), got "
                         f"{v[at].item()!r} at {at} ({int(bad.sum())} such value(s))")


def check_sequence_arrays(arrays: dict) -> None:
    """The shared checks of a sequence split's arrays: ``mask`` / ``observed`` 0/1 and
    [batch, time] matching the observations, ``time_gaps`` >= 0, every sequence at least one
    step long. ValueError naming the array."""
    obs = arrays.get("observations")
    batch = steps = None
    if obs is not None:
        shape = np.shape(obs)
        if len(shape) >= 2:
            batch, steps = shape[0], shape[1]
            if steps == 0:
                raise ValueError("`observations` have 0 time steps: a sequence needs at "
                                 "least one step")
    for key in FLAG_KEYS:
        if key in arrays and arrays[key] is not None:
            check_flags(key, arrays[key], steps, batch)
    if arrays.get("time_gaps") is not None:
        check_time_gaps(arrays["time_gaps"])


def check_finite(arrays: dict, model_name: str, allowed=("observations",)) -> None:
    """ValueError naming the first float array outside ``allowed`` that holds NaN or Inf;
    first the shared checks of :func:`check_sequence_arrays` (flags 0/1, gaps >= 0)."""
    check_sequence_arrays(arrays)
    for key, value in arrays.items():
        value = np.asarray(value)
        if key in allowed or value.dtype.kind != "f":
            continue
        if not np.all(np.isfinite(value)):
            raise ValueError(f"the data's {key!r} array holds "
                             f"{int(np.sum(~np.isfinite(value)))} NaN/Inf value(s); "
                             f"{model_name} cannot use them: remove or impute them")


def sequence_steps(x: dict) -> np.ndarray:
    """Real steps per sequence: the sum of ``mask``, else the full length."""
    if "mask" in x:
        return np.sum(np.asarray(x["mask"]) > 0, 1)
    obs = np.asarray(x["observations"])
    return np.full(len(obs), obs.shape[1])


def first_sequence(x: dict) -> tuple:
    """The first example of an input dict (batch axis kept) and its real length."""
    one = {k: np.asarray(v)[:1] for k, v in x.items()}
    return one, int(sequence_steps(one)[0])


def looks_binary(values) -> bool:
    values = np.asarray(values)
    return values.size > 0 and bool(np.all((values == 0) | (values == 1)))


def picture_sequence(observations, means, length: int, out_dir: str, arrays: dict,
                     sample=None, std=None, truth=None, title: str = "") -> list:
    """One sequence drawn by what its frames are, not by the dataset's name: image frames
    (rank >= 4, [batch, time, h, w(, c)]) as rows of input / healed (the model's emission
    means) / ``arrays["clean"]`` when present (``healing.png``); binary vectors as piano rolls
    (data and ``sample``, a model draw; ``piano_rolls.png``); otherwise trajectories (with
    ``std`` bands and ``truth``; ``trajectories.png``)."""
    from zoo import plots

    path = lambda name: os.path.join(out_dir, name)  # noqa: E731
    obs = np.asarray(observations)[0, :length]
    means = np.asarray(means)[0, :length]
    if obs.ndim >= 3:  # image frames: the model's reconstruction "heals" noise and occlusion
        rows, labels = [obs, means], ["input", "healed"]
        if "clean" in arrays:
            rows.append(np.asarray(arrays["clean"])[0, :length])
            labels.append("clean")
        return [plots.image_rows(rows, labels, path("healing.png"))]
    if looks_binary(obs) and sample is not None:
        return [plots.piano_rolls([obs, np.asarray(sample)[:length]],
                                  ["data", "model sample (emission means)"],
                                  path("piano_rolls.png"))]
    return [plots.trajectories(obs, means, None if std is None else np.asarray(std)[0, :length],
                               path("trajectories.png"),
                               truth=None if truth is None else np.asarray(truth)[0, :length],
                               title=title or None)]

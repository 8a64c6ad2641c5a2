"""What a model exports: named signatures of tensors in, a dict of named tensors out.

A model that exports implements :class:`Exportable`, or names an adapter in its
``export_adapter`` class attribute (:mod:`export.adapters` keeps the registry). ``export/``
then turns the signatures into a SavedModel (Keras 3's ``ExportArchive``) and a TFLite file,
without knowing which model it is. This module imports no other part of ``zoo``.

Signature names used by convention:

- ``decode``: latent -> likelihood parameters (``sample`` is the same with the noise as an input,
  ``sample_random`` draws it with TFLite's built-in RANDOM_UNIFORM / RANDOM_STANDARD_NORMAL).
- ``encode``: data -> posterior parameters (noise as an input where the encoder samples).
- ``init_state``: no inputs -> the filter's state tensors for the first frame.
- ``filter_step``: state tensors + ``observation`` [+ ``observed`` (1 = frame present, 0 =
  missing), ``action``, ``time_gap``, ``noise``] ->
  the new state tensors (same names as the inputs) + ``estimate`` + ``uncertainty`` (+ extras).
  An app calls ``init_state`` once and then ``filter_step`` once per frame, feeding each
  output state back as the next input.

Packed state: a filter may hold several pieces in one flat tensor (the Kalman filter's
``state`` = [mean | cov | started]): every tensor an app passes costs a copy in and out of the
interpreter per frame, so fewer, larger tensors are cheaper. Its ExportSpec metadata then has
``state_layout`` = ``{tensor: {piece: {"offset", "size", "shape"}}}`` (offsets and sizes in
elements along the last axis, pieces row-major; see ``STATE_LAYOUT_DOC``), written to the
sidecar for app developers and read by :meth:`export.runtime.StreamingFilter.unpack`.

Filter noise: a ``filter_step`` that takes ``noise`` (e.g. the particle filter's normals and
resampling uniforms) may describe it in its metadata as ``noise_layout`` =
``{kind: {"offset", "size", "shape"}}`` along the last axis of ``noise`` (kind ``"normal"``: standard
normals, ``"uniform"``: U(0, 1)); :class:`export.runtime.StreamingFilter` then draws the noise
itself for a frame that comes without it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

DECODE, SAMPLE, SAMPLE_RANDOM, ENCODE = "decode", "sample", "sample_random", "encode"
INIT_STATE, FILTER_STEP = "init_state", "filter_step"
FRAME_INPUTS = ("observation", "observed", "action", "time_gap", "noise")
FILTER_OUTPUTS = ("estimate", "uncertainty")
NOISE_KINDS = ("normal", "uniform")  # kinds of a filter's `noise_layout` pieces
STATE_LAYOUT_DOC = ("state_layout: {tensor: {piece: {offset, size, shape}}}; offset and size count "
                    "float32 elements along the tensor's last axis (one batch row), each piece "
                    "is stored row-major (C order) and reshaped to `shape`.")


class Signature(NamedTuple):
    """One exported function.

    Args:
        fn: callable taking keyword tensors named as ``inputs`` and returning a dict of tensors.
            It may only use variables of the model being exported (they are tracked and frozen).
        inputs: dict name -> ``tf.TensorSpec`` (static shapes, batch included; order kept).
        example: callable ``rng -> {name: np.ndarray}`` giving realistic inputs for parity
            checks and int8 calibration (a filter step's example holds a valid state).
        doc: one line for the sidecar, read by app developers.
        random_outputs: outputs drawn from a random op inside the function; parity checks
            skip them (they are tested in distribution instead).
    """

    fn: Callable
    inputs: dict
    example: Callable[[np.random.Generator], dict]
    doc: str = ""
    random_outputs: tuple = ()


class ExportSpec(NamedTuple):
    """What a model exports: its signatures and JSON-able metadata.

    ``state`` names the filter state tensors (inputs and outputs of ``filter_step``, outputs of
    ``init_state``); empty for models without a filter.
    """

    signatures: dict
    metadata: dict
    state: tuple = ()


@runtime_checkable
class Exportable(Protocol):
    """A model that says what it exports (adapters give the zoo's models this method)."""

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        ...


def spec(shape, name: str, dtype=tf.float32) -> tf.TensorSpec:
    return tf.TensorSpec([int(s) for s in shape], dtype, name=name)


def validate(es: ExportSpec) -> ExportSpec:
    """Check the conventions above; raises ValueError naming what is wrong."""
    sigs = es.signatures
    if not sigs:
        raise ValueError("The export spec has no signatures.")
    for name, sig in sigs.items():
        for key, s in sig.inputs.items():
            if not isinstance(s, tf.TensorSpec) or s.shape.rank is None or None in s.shape:
                raise ValueError(f"Signature {name!r} input {key!r} needs a static TensorSpec, "
                                 f"got {s!r}.")
    if (FILTER_STEP in sigs) != (INIT_STATE in sigs):
        raise ValueError("`filter_step` and `init_state` are exported together.")
    if FILTER_STEP in sigs:
        if not es.state:
            raise ValueError("A `filter_step` needs `state` names in its ExportSpec.")
        step_inputs = sigs[FILTER_STEP].inputs
        missing = [s for s in es.state if s not in step_inputs]
        if missing:
            raise ValueError(f"State tensors {missing} are not inputs of `filter_step`.")
        if "observation" not in step_inputs:
            raise ValueError("`filter_step` must take an `observation` input.")
        other = [k for k in step_inputs if k not in es.state and k not in FRAME_INPUTS]
        if other:
            raise ValueError(f"`filter_step` inputs {other} are neither state tensors nor one "
                             f"of {FRAME_INPUTS}.")
        for tensor, pieces in (es.metadata.get("state_layout") or {}).items():
            if tensor not in es.state:
                raise ValueError(f"`state_layout` names {tensor!r}, not a state tensor "
                                 f"{list(es.state)}.")
            width = int(step_inputs[tensor].shape[-1])
            for piece, at in pieces.items():
                if (int(np.prod(at["shape"], dtype=np.int64)) != at["size"] or at["offset"] < 0
                        or at["offset"] + at["size"] > width):
                    raise ValueError(f"`state_layout` piece {tensor}.{piece} {at} does not fit "
                                     f"the last axis ({width}) of {tensor!r}.")
        noise = es.metadata.get("noise_layout")
        if noise:
            if "noise" not in step_inputs:
                raise ValueError("`noise_layout` is given but `filter_step` takes no `noise`.")
            width = int(step_inputs["noise"].shape[-1])
            for kind, at in noise.items():
                if kind not in NOISE_KINDS or at["offset"] < 0 or (
                        at["offset"] + at["size"] > width):
                    raise ValueError(f"`noise_layout` piece {kind!r} {at} must be one of "
                                     f"{NOISE_KINDS} within the last axis ({width}) of "
                                     f"`noise`.")
    return es


# ---------------------------------------------------------------------------- packed state
def state_layout(parts) -> dict:
    """Offsets of named pieces in one flat state vector: ``parts`` is ``[(name, shape), ...]``
    in order; returns ``{name: {"offset", "size", "shape"}}`` (row-major pieces, no padding).

    One packed ``state`` tensor costs one copy in and one out per frame instead of one per
    piece (what an app pays in LiteRT), and the app can feed the output buffer back as is.
    """
    layout, offset = {}, 0
    for name, shape in parts:
        shape = [int(s) for s in shape]
        size = int(np.prod(shape, dtype=np.int64))
        layout[name] = {"offset": offset, "size": size, "shape": shape}
        offset += size
    return layout


def state_size(layout: dict) -> int:
    return max((v["offset"] + v["size"] for v in layout.values()), default=0)


def unpack_state(state, layout: dict) -> dict:
    """The named pieces of a packed ``state`` [batch, size] (tensors, built-in slices)."""
    b = state.shape[0]
    return {k: tf.reshape(state[:, v["offset"]:v["offset"] + v["size"]], [b, *v["shape"]])
            for k, v in layout.items()}


def pack_state(pieces: dict, layout: dict):
    """Inverse of :func:`unpack_state`: one [batch, size] tensor from the named pieces."""
    b = next(iter(pieces.values())).shape[0]
    return tf.concat([tf.reshape(pieces[k], [b, v["size"]]) for k, v in layout.items()], -1)

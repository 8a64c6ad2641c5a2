"""Run an exported filter frame by frame in LiteRT, as an app does: numpy + ai-edge-litert only.

This module imports no TensorFlow; it is the reference for mobile developers. The state lives
with the caller (here in the object): ``init_state`` once, then one ``filter_step`` per frame
with the previous outputs fed back.

Example (after ``export_tflite(model, "kf.tflite")``)::

    f = StreamingFilter("kf.tflite")
    for y in frames:                 # y: [obs_dim] or [batch, obs_dim]
        out = f.step(observation=y)  # {"estimate", "uncertainty", ...}
    f.unpack()                       # a packed state's pieces: {"mean", "cov", "started"}

Per frame the runner copies each state and frame tensor in (the held state is the previous
output, fed back as is), invokes, and copies each output out; the Kalman filter's state is one
packed tensor so that this costs as few copies as possible (``benchmarks/README.md``, export).
"""

from __future__ import annotations

import json
import os
from math import isfinite

import numpy as np

from zoo.export.litert import load_interpreter

INIT_STATE, FILTER_STEP = "init_state", "filter_step"


class SignatureCall:
    """A signature of a LiteRT interpreter called with fixed input shapes, for per-frame use.

    ``SignatureRunner.__call__`` resizes and re-allocates every tensor on every call; here that
    happens once, and a call only copies the inputs in (``SetTensor``, which checks dtype and
    shape), invokes, and copies the outputs out of numpy views of the output buffers, made
    once (the same wrapper calls the runner makes; it falls back to the runner if they are
    absent). The views stay valid because nothing resizes this signature's tensors again:
    do not resize or re-allocate them through the interpreter while this object lives.
    """

    def __init__(self, interpreter, name: str):
        self.runner = interpreter.get_signature_runner(name)
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()
        self._wrapper = getattr(self.runner, "_interpreter_wrapper", None)
        self._subgraph = getattr(self.runner, "_subgraph_index", None)
        self._ins = getattr(self.runner, "_inputs", None)
        self._outs = list(getattr(self.runner, "_outputs", []) or [])
        self._fast = None not in (self._wrapper, self._subgraph, self._ins) and bool(self._outs)
        self._pending, self._last = {}, None  # the runner fallback
        if self._fast:
            w, g = self._wrapper, self._subgraph
            for name_, d in self.input_details.items():  # allocate once at the exported shapes
                w.ResizeInputTensor(self._ins[name_], np.array(d["shape"], np.int32), False, g)
            w.AllocateTensors(g)
            # Views of the output buffers, based on this object (not on the interpreter, whose
            # own invoke() refuses to run while views of it exist); copied out per call.
            try:
                self._views = [(n, w.tensor(self, i, g)) for n, i in self._outs]
            except ValueError:  # a dynamic output (allocated by invoke): no fixed buffers
                self._fast = False

    @property
    def direct(self) -> bool:
        """Whether inputs are copied straight into the interpreter's buffers (else each call
        goes through the signature runner)."""
        return self._fast

    def set_input(self, name: str, value) -> None:
        """Copy one input in (ValueError on a wrong dtype or shape, KeyError on a bad name)."""
        if self._fast:
            self._wrapper.SetTensor(self._ins[name], value, self._subgraph)
        else:
            self._pending[name] = value

    def set_inputs(self, values: dict, names=None) -> None:
        """Copy ``values[name]`` in for each of ``names`` (default every key), as they are:
        arrays of the exported dtype and shape (ValueError / TypeError / KeyError otherwise,
        from the interpreter's own checks)."""
        if self._fast:
            w, g, ins = self._wrapper, self._subgraph, self._ins
            for name in (values if names is None else names):
                w.SetTensor(ins[name], values[name], g)
        else:
            for name in (values if names is None else names):
                self._pending[name] = values[name]

    def invoke(self) -> None:
        """Only the interpreter's work, on the inputs last set."""
        if self._fast:
            self._wrapper.Invoke(self._subgraph)
        else:
            self._last = self.runner(**self._pending)

    def outputs(self) -> dict:
        """Copies of every output of the last invoke."""
        if self._fast:
            return {name: view.copy() for name, view in self._views}
        return {k: np.array(v) for k, v in self._last.items()}

    def frame_runner(self, names):
        """A function ``(values, more) -> outputs`` for per-frame use: copies ``values[name]``
        for each of ``names`` and every item of ``more`` in as they are (arrays of the exported
        dtype and shape; the interpreter's own checks raise ValueError / TypeError / KeyError
        before anything is invoked), invokes, and returns copies of every output. The
        interpreter's entry points are bound once, so a frame costs only the copies."""
        if not self._fast:
            def run(values, more):
                self.set_inputs(values, names)
                self.set_inputs(more)
                return self.run()
            return run
        set_tensor, invoke, g, ins = (self._wrapper.SetTensor, self._wrapper.Invoke,
                                      self._subgraph, self._ins)
        slots = [(name, ins[name]) for name in names]
        views = self._views

        def run(values, more):
            for name, index in slots:
                set_tensor(index, values[name], g)
            for name, value in more.items():
                set_tensor(ins[name], value, g)
            invoke(g)
            return {name: view.copy() for name, view in views}
        return run

    def run(self) -> dict:
        """Invoke on the inputs last set and return copies of every output."""
        if self._fast:
            self._wrapper.Invoke(self._subgraph)
            return {name: view.copy() for name, view in self._views}
        self._last = self.runner(**self._pending)
        return {k: np.array(v) for k, v in self._last.items()}

    def __call__(self, **inputs) -> dict:
        if not self._fast:
            return self.runner(**inputs)
        w, g, ins = self._wrapper, self._subgraph, self._ins
        for name, value in inputs.items():
            w.SetTensor(ins[name], value, g)
        w.Invoke(g)
        return {name: view.copy() for name, view in self._views}


class StreamingFilter:
    """An exported ``filter_step`` with its state held between frames.

    Args:
        path: str. The ``.tflite`` file (its ``PATH.json`` sidecar, when present, names the
            state tensors and the layout of packed ones; otherwise the state is the inputs
            that are also outputs).
        num_threads: int. Interpreter threads (XNNPACK).
        seed: int or None. Seed of the runner's own noise (see below).

    Noise: a filter whose step takes ``noise`` (e.g. the particle filter's normals and
    uniforms) gets it from the caller, who then replays a run exactly; when the sidecar
    describes it (``noise_layout``: ``{kind: {offset, size, shape}}`` along the last axis,
    kind ``normal`` or ``uniform``) a frame may leave it out and the runner draws it from its
    own ``numpy.random.default_rng(seed)`` (float32: standard normals, U(0, 1) uniforms); the
    last drawn noise is kept in ``last_noise``.

    A frame given as float arrays of the exported shape, or for batch 1 without the batch
    axis (``[obs_dim]``, the README's loop), of any float dtype (NumPy's default float64
    included), is converted once (``astype`` / ``reshape``, about a microsecond) and goes
    straight into the interpreter; anything else (a list, ints, a wrong shape) goes through
    the checked path, converted or refused with an error naming the input.

    A frame whose inputs hold NaN or Inf is refused (ValueError naming the frame, the input
    and the batch rows) and the held state is left as it was, unless the rows are marked
    missing (``observed`` 0): a missing frame's observation may hold anything. Without this
    a single NaN frame would make the held state NaN for every later frame.
    """

    def __init__(self, path: str, num_threads: int = 1, seed: int | None = None):
        self.path = str(path)
        self.interpreter = load_interpreter(self.path, num_threads)
        signatures = self.interpreter.get_signature_list()
        missing = [s for s in (INIT_STATE, FILTER_STEP) if s not in signatures]
        if missing:
            raise ValueError(f"{self.path} has no {missing} signature(s) (it has "
                             f"{sorted(signatures)}); export a filter model with "
                             f"what=('filter_step', 'init_state').")
        self._init = SignatureCall(self.interpreter, INIT_STATE)
        self._step = SignatureCall(self.interpreter, FILTER_STEP)
        self._direct = self._step.direct
        self.inputs = {d: (tuple(int(s) for s in v["shape"]), np.dtype(v["dtype"]))
                       for d, v in self._step.input_details.items()}
        outputs = set(self._step.output_details)
        sidecar = self.path + ".json"
        self.metadata = json.load(open(sidecar)) if os.path.exists(sidecar) else {}
        self.state_names = tuple(self.metadata.get("state") or
                                 sorted(set(self.inputs) & outputs))
        self.state_layout = self.metadata.get("state_layout") or {}
        self.frame_inputs = tuple(k for k in self.inputs if k not in self.state_names)
        self._frame_keys = frozenset(self.frame_inputs)
        self._run_frame = self._step.frame_runner(self.state_names)
        self._observed = (np.ones(self.inputs["observed"][0], np.float32)
                          if "observed" in self.inputs else None)
        # Per frame input: (name, exported shape, that shape without a batch axis of 1 or
        # None, exported dtype), for the one-conversion fast path.
        self._frame_specs = tuple(
            (k, self.inputs[k][0],
             self.inputs[k][0][1:] if self.inputs[k][0][:1] == (1,) else None,
             self.inputs[k][1]) for k in self.frame_inputs)
        # Inputs checked for NaN / Inf each frame (``observed`` is a flag, ``noise`` a draw).
        self._finite_inputs = tuple(k for k in self.frame_inputs
                                    if k not in ("observed", "noise"))
        self.noise_layout = (self.metadata.get("noise_layout") or None
                             if "noise" in self.inputs else None)
        self.rng = np.random.default_rng(seed)
        self.last_noise = None
        self._ll_key = "log_likelihood" if "log_likelihood" in outputs else None
        self._ll_single = (self._ll_key is not None and tuple(
            self._step.output_details[self._ll_key]["shape"]) == (1,))
        self.state = None
        self.frame = 0  # frames stepped with the held state since the last reset
        self.reset()

    def reset(self) -> dict:
        """Start a new sequence: the state from ``init_state``."""
        out = self._init()
        self.state = {k: np.array(out[k]) for k in self.state_names}
        self.frame = 0
        return dict(self.state)

    def draw_noise(self) -> np.ndarray:
        """One frame's ``noise`` of the exported shape, drawn by ``noise_layout`` from the
        runner's generator (float32)."""
        if self.noise_layout is None:
            raise ValueError(f"{self.path} describes no `noise_layout`: pass `noise` per frame.")
        shape = self.inputs["noise"][0]
        noise = np.empty(shape, np.float32)
        for kind, at in self.noise_layout.items():
            part = (*shape[:-1], at["size"])
            o = at["offset"]
            if kind == "normal":
                noise[..., o:o + at["size"]] = self.rng.standard_normal(part, np.float32)
            elif kind == "uniform":
                noise[..., o:o + at["size"]] = self.rng.random(part, np.float32)
            else:
                raise ValueError(f"`noise_layout` kind {kind!r} is neither 'normal' nor "
                                 f"'uniform'.")
        self.last_noise = noise
        return noise

    def _fast_frame(self, frame: dict):
        """The frame with its inputs as arrays of the exported dtype and shape (the frame
        itself when they already are), converting a float dtype and adding a batch axis of 1
        (one ``astype`` / ``reshape`` each), or None when an input needs the checked path
        (not a float array, a shape that does not fit)."""
        out = None
        for name, shape, unbatched, dtype in self._frame_specs:
            v = frame[name]
            if type(v) is not np.ndarray or v.dtype.kind != "f":
                return None
            if v.dtype == dtype and v.shape == shape:
                continue
            if v.dtype != dtype:
                v = v.astype(dtype)
            if v.shape != shape:
                if v.shape != unbatched:
                    return None
                v = v.reshape(shape)
            if out is None:
                out = dict(frame)
            out[name] = v
        return frame if out is None else out

    def _refuse_non_finite(self, frame: dict) -> None:
        """ValueError naming the frame when an input holds NaN / Inf on a row marked
        observed (a missing row's observation may hold anything)."""
        for name in self._finite_inputs:
            v = np.asarray(frame[name], np.float64)
            bad = ~np.isfinite(v.reshape(v.shape[0] if v.ndim > 1 else 1, -1)).all(-1)
            if name == "observation" and "observed" in frame:
                seen = np.asarray(frame["observed"], np.float64).reshape(-1) > 0.5
                bad = bad & seen
            if bad.any():
                rows = [int(i) for i in np.flatnonzero(bad)]
                raise ValueError(
                    f"frame {self.frame}: `{name}` holds NaN or Inf (batch row(s) {rows}); the "
                    f"filter refuses it (its state would stay NaN for every later frame) and "
                    f"keeps its state. Mark a missing frame with observed=0 instead.")

    def unpack(self, values: dict | None = None) -> dict:
        """The named pieces of packed state tensors, per the sidecar's ``state_layout``.

        ``values``: a dict holding the packed tensors, shaped ``[..., size]`` (the held state
        by default, or the output of :meth:`step` or :meth:`run`); returns e.g. ``{"mean":
        [..., n], "cov": [..., n, n], "started": [...]}`` for the Kalman filter (views).
        """
        values = self.state if values is None else values
        if not self.state_layout:
            raise ValueError(f"{self.path} has no packed state (no `state_layout` in its "
                             f"sidecar); its state tensors are {list(self.state_names)}.")
        pieces = {}
        for tensor, layout in self.state_layout.items():
            x = np.asarray(values[tensor])
            for piece, at in layout.items():
                o = at["offset"]
                pieces[piece] = x[..., o:o + at["size"]].reshape(*x.shape[:-1], *at["shape"])
        return pieces

    def _check(self, name, value):
        shape, dtype = self.inputs[name]
        value = np.asarray(value)
        if not (np.issubdtype(value.dtype, np.floating) or value.dtype == dtype):
            raise TypeError(f"`{name}` must be a float array (the model takes {dtype.name}), "
                            f"got dtype {value.dtype}.")
        if value.shape != shape and value.shape == shape[1:] and shape[:1] == (1,):
            value = value[None]  # one frame without the batch axis
        if value.shape != shape:
            raise ValueError(f"`{name}` must have shape {list(shape)} (or {list(shape[1:])} "
                             f"for batch 1), got {list(value.shape)}.")
        return np.ascontiguousarray(value, dtype)

    def _feed_checked(self, state, frame):
        """Copy the state and frame in, converting what needs it; errors name the input."""
        lost = [k for k in self.state_names if k not in state]
        if lost:
            raise ValueError(f"The state misses {lost}; it must hold {list(self.state_names)} "
                             f"(the outputs of init_state / the previous filter_step).")
        for k in self.state_names:
            self._step.set_input(k, self._check(k, state[k]))
        for k, v in frame.items():
            self._step.set_input(k, self._check(k, v))

    def step(self, state: dict | None = None, **frame) -> dict:
        """One frame: ``observation`` (+ ``observed``, ``action``, ``time_gap``, ``noise`` as
        exported; ``observed`` defaults to 1, a present frame; ``noise`` is drawn by the
        runner when the sidecar has a ``noise_layout`` and the frame has none).

        Uses and updates the held state, or the given ``state`` dict (then the held state is
        left alone). Returns copies of every output of ``filter_step`` (new state included).
        """
        if self._observed is not None and "observed" not in frame:
            frame["observed"] = self._observed
        if self.noise_layout is not None and "noise" not in frame:
            frame["noise"] = self.draw_noise()
        if frame.keys() != self._frame_keys:
            unknown = sorted(set(frame) - self._frame_keys)
            if unknown:
                raise ValueError(f"Unknown input(s) {unknown}; this filter takes "
                                 f"{list(self.frame_inputs)} per frame.")
            absent = [k for k in self.frame_inputs if k not in frame]
            raise ValueError(f"Missing input(s) {absent}; this filter takes "
                             f"{list(self.frame_inputs)} per frame.")
        held = state is None
        state = self.state if held else state
        if state is None:
            raise ValueError("No filter state: call reset() (or pass `state`).")
        out = None
        fast = self._fast_frame(frame) if self._direct else None
        if fast is not None:
            if self._ll_key is None:  # no log-likelihood output: check the inputs themselves
                for name in self._finite_inputs:
                    v = fast[name]
                    if not isfinite(v.sum()) and not np.isfinite(v).all():
                        self._refuse_non_finite(fast)
            # Arrays of the exported dtype and shape go straight in (the interpreter checks
            # them itself); on any refusal (e.g. a wrong state), feed again with errors.
            try:
                out = self._run_frame(state, fast)
            except (ValueError, TypeError, KeyError):
                pass
            else:
                # A NaN / Inf input at an observed row makes its log-likelihood non-finite
                # (a missing row's is 0): one look at that output instead of a reduction over
                # every input; only then are the inputs searched, and the frame refused
                # before the held state takes the output.
                key = self._ll_key
                if key is not None and not isfinite(
                        out[key][0] if self._ll_single else out[key].sum()):
                    self._refuse_non_finite(fast)
        if out is None:
            self._feed_checked(state, frame)
            self._refuse_non_finite(frame)
            out = self._step.run()
        if held:
            self.state = {k: out[k] for k in self.state_names}
            self.frame += 1
        return out

    def run(self, observation, reset: bool = True, **frames) -> dict:
        """Filter a whole sequence frame by frame; inputs are ``[time, ...]`` (or
        ``[batch, time, ...]`` with the exported batch size). Returns the per-frame outputs
        stacked on a time axis (``[time, ...]`` / ``[batch, time, ...]``)."""
        batch = self.inputs["observation"][0][0]
        observation = np.asarray(observation)
        time_axis = 1 if observation.ndim == len(self.inputs["observation"][0]) + 1 else 0
        if time_axis == 0 and observation.ndim != len(self.inputs["observation"][0]):
            raise ValueError(f"`observation` must be [time, ...] or [batch={batch}, time, ...] "
                             f"with frames of shape {list(self.inputs['observation'][0])}, got "
                             f"{list(observation.shape)}.")
        arrays = {"observation": observation, **{k: np.asarray(v) for k, v in frames.items()}}
        steps = observation.shape[time_axis]
        for k, v in arrays.items():
            if v.ndim <= time_axis or v.shape[time_axis] != steps:
                raise ValueError(f"`{k}` must have {steps} frames on axis {time_axis}, got "
                                 f"shape {list(v.shape)}.")
        if reset:
            self.reset()
        outs = [self.step(**{k: np.take(v, t, axis=time_axis) for k, v in arrays.items()})
                for t in range(steps)]
        stacked = {k: np.stack([o[k] for o in outs], 0) for k in outs[0]}
        if time_axis == 1:  # [time, batch, ...] -> [batch, time, ...]
            stacked = {k: np.moveaxis(v, 0, 1) for k, v in stacked.items()}
        elif batch == 1:  # frames had no batch axis: drop the exported one
            stacked = {k: v[:, 0] for k, v in stacked.items()}
        return stacked

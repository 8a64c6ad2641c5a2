"""SavedModel and TFLite export of any :class:`export.protocol.Exportable`, and verification.

Example:

>>> import os, tempfile
>>> from zoo.vae import VAE
>>> model = VAE(input_shape=(8,), latent_dim=2, hidden_units=(16,), seed=0)
>>> path = os.path.join(tempfile.mkdtemp(), "vae_decoder.tflite")
>>> meta = export_tflite(model, path, what="decode", quantize="dynamic")
>>> meta["signatures"]["decode"]["outputs"]["probs"]
{'shape': [1, 8], 'dtype': 'float32'}
>>> report = verify(path, model)
>>> report.ops.builtin_only, report.worst_rel() < 0.05
(True, True)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from zoo.export.litert import OpAudit, list_ops, load_interpreter
from zoo.export.adapters import as_exportable
from zoo.export.protocol import ExportSpec, validate

FORMAT_VERSION = 1
QUANTIZATIONS = (None, "dynamic", "float16", "int8")
SIDECAR_NAME = "export.json"  # inside a SavedModel directory


def sidecar_path(path: str) -> str:
    """Where the JSON sidecar of an export lives: ``DIR/export.json`` or ``FILE.json``."""
    path = str(path)
    return os.path.join(path, SIDECAR_NAME) if os.path.isdir(path) else path + ".json"


def read_sidecar(path: str) -> dict:
    with open(sidecar_path(path)) as f:
        return json.load(f)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("keras-prob-zoo")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _select(es: ExportSpec, what) -> ExportSpec:
    if what is None:
        return es
    what = [what] if isinstance(what, str) else list(what)
    unknown = [w for w in what if w not in es.signatures]
    if unknown:
        raise ValueError(f"Cannot export {unknown}: this model exports {sorted(es.signatures)}.")
    if "filter_step" in what and "init_state" not in what:
        what.append("init_state")
    return es._replace(signatures={k: es.signatures[k] for k in what})


def export_spec_of(model, what=None, batch_size: int = 1) -> ExportSpec:
    """The validated spec of ``model`` (or its adapter), restricted to ``what``."""
    return validate(_select(as_exportable(model).export_spec(batch_size=batch_size), what))


def _endpoint(sig):
    names = list(sig.inputs)

    def fn(*args):
        out = sig.fn(**dict(zip(names, args)))
        return {k: tf.identity(v, name=k) for k, v in out.items()}

    return fn


def _describe(es: ExportSpec, model) -> dict:
    sigs = {}
    for name, sig in es.signatures.items():
        outs = sig.fn(**{k: tf.constant(v) for k, v in
                         sig.example(np.random.default_rng(0)).items()})
        sigs[name] = {
            "doc": sig.doc,
            "inputs": {k: {"shape": s.shape.as_list(), "dtype": s.dtype.name}
                       for k, s in sig.inputs.items()},
            "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name}
                        for k, v in outs.items()},
        }
    return {
        "format_version": FORMAT_VERSION,
        "package": "keras-prob-zoo",
        "package_version": _package_version(),
        "model_name": model.name,
        **es.metadata,
        "signatures": sigs,
        "state": list(es.state),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist")
                  else str(o))


def export_saved_model(model, path: str, what=None, batch_size: int = 1,
                       normalization: dict | None = None) -> dict:
    """Write a SavedModel with one named signature per exported function (Keras ExportArchive).

    ``what``: signature names (default all the model exports); ``normalization``: how an app
    must scale its inputs (e.g. ``{"x": {"mean": ..., "std": ...}}``), recorded in the sidecar.
    Returns the sidecar dict (also written to ``PATH/export.json``).
    """
    es = export_spec_of(model, what, batch_size)
    # No archive.track(model): the endpoints track the variables they use, and tracking the
    # model itself would also trace its default `call` signature, which some models (a Kalman
    # filter with controls) cannot serve from observations alone.
    archive = keras.export.ExportArchive()
    for name, sig in es.signatures.items():
        archive.add_endpoint(name, _endpoint(sig), input_signature=list(sig.inputs.values()))
    archive.write_out(str(path), verbose=False)
    meta = {**_describe(es, model), "format": "saved_model", "normalization": normalization}
    _write_json(sidecar_path(path), meta)
    return meta


def _representative(es: ExportSpec, data, count=64):
    """Calibration generator for the converter: yields (signature, {input: array})."""
    def gen():
        if data is None:
            rng = np.random.default_rng(0)
            for _ in range(count):
                for name, sig in es.signatures.items():
                    if sig.inputs:
                        yield name, sig.example(rng)
            return
        items = data.items() if isinstance(data, dict) else [(next(iter(
            n for n, s in es.signatures.items() if s.inputs)), data)]
        for name, batches in items:
            for inputs in batches:
                if not isinstance(inputs, dict):
                    inputs = {next(iter(es.signatures[name].inputs)): inputs}
                yield name, {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    return gen


def convert(saved_model_dir: str, signatures, quantize=None, representative=None,
            allow_flex: bool = False) -> bytes:
    """TFLite flatbuffer from a SavedModel, with the chosen post-training quantization."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}, got {quantize!r}.")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                    signature_keys=list(signatures))
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    conv.target_spec.supported_ops = ops
    if quantize is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        conv.representative_dataset = representative
    return conv.convert()


def export_tflite(model, path: str, what=None, quantize=None, representative_data=None,
                  batch_size: int = 1, normalization: dict | None = None,
                  verify_inputs: dict | None = None, allow_flex: bool = False) -> dict:
    """Write a ``.tflite`` file (built-in ops only) plus ``PATH.json``; returns the sidecar.

    The file is converted from a SavedModel written by :func:`export_saved_model` (converting a
    Keras 3 model's concrete function directly would leave its weights unfrozen and the file
    would output NaN). ``quantize``: None (float32), ``"dynamic"`` (int8 weights), ``"float16"``
    or ``"int8"`` (weights and activations, calibrated on ``representative_data``: a dict
    ``{signature: iterable of {input: array}}``, or one iterable of arrays for the first
    signature; the signatures' synthetic examples when None). The file is verified against
    the model at once (:func:`verify`, on ``verify_inputs`` or the synthetic examples) and the
    measured parity and op audit go into the sidecar; ValueError if a Flex or custom op
    remains and ``allow_flex`` is False.
    """
    es = export_spec_of(model, what, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        meta = export_saved_model(model, saved, what=list(es.signatures), batch_size=batch_size,
                                  normalization=normalization)
        flat = convert(saved, es.signatures, quantize, _representative(es, representative_data),
                       allow_flex)
    with open(path, "wb") as f:
        f.write(flat)
    report = verify(path, model, verify_inputs, allow_flex=allow_flex, batch_size=batch_size)
    calibration = None if quantize != "int8" else (
        "synthetic examples of the signatures" if representative_data is None
        else "representative_data given at export")
    meta.update(format="tflite", quantization=quantize or "float32", calibration=calibration,
                size_bytes=len(flat), ops=list(report.ops.builtin + report.ops.custom),
                parity=report.parity_dict())
    _write_json(sidecar_path(path), meta)
    return meta


# ---------------------------------------------------------------------------- verification
class Parity(NamedTuple):
    """Largest differences between the TFLite file and Keras for one signature output."""

    max_abs: float
    max_rel: float  # max |a - b| / max |b|  (relative to the output's scale)


class VerifyReport(NamedTuple):
    ops: OpAudit
    parity: dict  # {signature: {output: Parity}}

    def parity_dict(self) -> dict:
        return {s: {o: p._asdict() for o, p in outs.items()} for s, outs in self.parity.items()}

    def worst_rel(self, signature: str | None = None) -> float:
        return max(p.max_rel for s, outs in self.parity.items() for p in outs.values()
                   if signature in (None, s))

    def __str__(self):
        lines = [f"ops ({'built-in only' if self.ops.builtin_only else 'CUSTOM/FLEX PRESENT'}):"
                 f" {', '.join(self.ops.builtin + self.ops.custom)}"]
        for s, outs in self.parity.items():
            for o, p in outs.items():
                lines.append(f"  {s}.{o}: max abs {p.max_abs:.3g}, max rel {p.max_rel:.3g}")
        return "\n".join(lines)


def export_all(model, out_dir: str, saved_model: bool = True, quantize=("float32",),
               what=None, batch_size: int = 1, normalization: dict | None = None,
               allow_flex: bool = False, log=print) -> list:
    """A SavedModel (``OUT/saved_model``) and one verified TFLite file per quantization mode
    (``OUT/model_MODE.tflite``), each with its sidecar; logs the verification reports and
    returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if saved_model:
        path = os.path.join(out_dir, "saved_model")
        meta = export_saved_model(model, path, what=what, batch_size=batch_size,
                                  normalization=normalization)
        log(f"SavedModel: {path}  signatures: {', '.join(meta['signatures'])}")
        written.append(path)
    for mode in quantize or ():
        path = os.path.join(out_dir, f"model_{mode}.tflite")
        meta = export_tflite(model, path, what=what, batch_size=batch_size,
                             quantize=None if mode == "float32" else mode,
                             normalization=normalization, allow_flex=allow_flex)
        log(f"TFLite ({mode}): {path}  {meta['size_bytes'] / 1024:.1f} KiB")
        log(str(verify(path, model, allow_flex=allow_flex, batch_size=batch_size)))
        written.append(path)
    return written


def verify(tflite_path: str, model, inputs: dict | None = None, allow_flex: bool = False,
           batch_size: int | None = None, num_examples: int = 3) -> VerifyReport:
    """Run the file in the LiteRT interpreter, compare with the Keras model, audit its ops.

    ``inputs``: ``{signature: [{input: array}, ...]}`` (or one dict per signature); default
    ``num_examples`` synthetic examples from the model's spec. ``batch_size``: read from the
    file when None. ValueError if the file holds a Flex or custom op and ``allow_flex`` is
    False, or a signature the model does not export.
    """
    ops = list_ops(tflite_path)
    if not allow_flex and not ops.builtin_only:
        raise ValueError(f"{tflite_path} needs non-built-in ops {list(ops.custom)} (Flex = the "
                         f"select-TF-ops delegate); pass allow_flex=True to accept them.")
    interp = load_interpreter(tflite_path)
    listed = interp.get_signature_list()
    if batch_size is None:  # the batch the file was exported with
        shapes = [d["shape"] for name in listed for d in
                  interp.get_signature_runner(name).get_input_details().values()]
        batch_size = int(shapes[0][0]) if shapes and len(shapes[0]) else 1
    es = as_exportable(model).export_spec(batch_size=batch_size)
    foreign = sorted(set(listed) - set(es.signatures))
    if foreign:
        raise ValueError(f"{tflite_path} has signatures {foreign} that {type(model).__name__} "
                         f"does not export ({sorted(es.signatures)}): is it the right model?")
    rng = np.random.default_rng(1)
    parity = {}
    for name in listed:
        sig = es.signatures[name]
        cases = (inputs or {}).get(name)
        if cases is None:
            cases = [sig.example(rng) for _ in range(num_examples if sig.inputs else 1)]
        elif isinstance(cases, dict):
            cases = [cases]
        runner = interp.get_signature_runner(name)
        reference = tf.function(sig.fn, autograph=False)  # one trace for all the cases
        worst = {}
        for case in cases:
            case = {k: np.asarray(v, np.float32) for k, v in case.items()}
            got = runner(**case)
            want = reference(**{k: tf.constant(v) for k, v in case.items()})
            for key, ref in want.items():
                if key in sig.random_outputs:
                    continue
                ref = np.asarray(ref, np.float64)
                out = np.asarray(got[key], np.float64)
                if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(out))):
                    which = "the Keras model" if not np.all(np.isfinite(ref)) else "the file"
                    raise ValueError(
                        f"{tflite_path}: {name}.{key} is not finite (NaN or Inf) in {which} "
                        f"for a valid example input: the model's weights or the export are "
                        f"broken (a diverged training run?); nothing verified.")
                diff = float(np.max(np.abs(out - ref), initial=0.0))
                scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-30)
                old = worst.get(key, Parity(0.0, 0.0))
                worst[key] = Parity(max(old.max_abs, diff), max(old.max_rel, diff / scale))
        parity[name] = worst
    return VerifyReport(ops, parity)

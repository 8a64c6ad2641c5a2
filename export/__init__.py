"""Export of zoo models to SavedModel and TFLite (built-in ops only), and their LiteRT runtime.

``export_saved_model``, ``export_tflite`` and ``verify`` need TensorFlow; they are loaded on
first use, so ``from export.runtime import StreamingFilter`` works on a machine with only numpy
and ai-edge-litert.
"""

_LAZY = {
    "export_all": "export.exporter",
    "export_saved_model": "export.exporter",
    "export_tflite": "export.exporter",
    "verify": "export.exporter",
    "read_sidecar": "export.exporter",
    "Exportable": "export.protocol",
    "ExportSpec": "export.protocol",
    "Signature": "export.protocol",
    "as_exportable": "export.protocol",
    "StreamingFilter": "export.runtime",
    "list_ops": "export.litert",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")

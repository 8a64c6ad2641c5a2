"""Export of zoo models to SavedModel and TFLite (built-in ops only), and their LiteRT runtime.

``export_saved_model``, ``export_tflite`` and ``verify`` need TensorFlow; they are loaded on
first use, so ``from export.runtime import StreamingFilter`` works on a machine with only numpy
and ai-edge-litert.
"""

_LAZY = {
    "export_all": "zoo.export.exporter",
    "export_saved_model": "zoo.export.exporter",
    "export_tflite": "zoo.export.exporter",
    "verify": "zoo.export.exporter",
    "read_sidecar": "zoo.export.exporter",
    "Exportable": "zoo.export.protocol",
    "ExportSpec": "zoo.export.protocol",
    "Signature": "zoo.export.protocol",
    "as_exportable": "zoo.export.adapters",
    "register_adapter": "zoo.export.adapters",
    "StreamingFilter": "zoo.export.runtime",
    "list_ops": "zoo.export.litert",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")

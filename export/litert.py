"""LiteRT (ai-edge-litert) access without TensorFlow: the interpreter and the op list of a file.

Nothing here imports TensorFlow, so an app-side script (and :mod:`export.runtime`) runs with
numpy and ai-edge-litert only.
"""

from __future__ import annotations

from typing import NamedTuple

INSTALL_HINT = "pip install -e .[litert]"


def require_litert():
    """The ``ai_edge_litert.interpreter`` module, or an ImportError that says how to install it."""
    try:
        from ai_edge_litert import interpreter
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"Running TFLite files needs the LiteRT interpreter (ai-edge-litert): "
            f"`{INSTALL_HINT}` (or `pip install ai-edge-litert==2.3.0`). ({e})"
        ) from e
    return interpreter


def load_interpreter(path: str, num_threads: int = 1):
    """A LiteRT ``Interpreter`` for ``path`` with the default resolver (XNNPACK on CPU)."""
    return require_litert().Interpreter(model_path=str(path), num_threads=num_threads)


class OpAudit(NamedTuple):
    """The operators a ``.tflite`` file uses, in every subgraph."""

    builtin: tuple  # sorted builtin operator names, e.g. ("FULLY_CONNECTED", "LOGISTIC")
    custom: tuple  # sorted custom operator names; Flex (select TF) ops are "Flex..."

    @property
    def flex(self) -> tuple:
        return tuple(name for name in self.custom if name.startswith("Flex"))

    @property
    def builtin_only(self) -> bool:
        return not self.custom


def list_ops(path: str) -> OpAudit:
    """Read the operator codes that the file's subgraphs use, from the flatbuffer itself.

    Unlike the interpreter's node list this sees every subgraph and works on files whose Flex
    ops the plain interpreter cannot even load.
    """
    require_litert()
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        buf = f.read()
    model = schema.Model.GetRootAs(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        custom = oc.CustomCode()
        codes.append((names.get(code, str(code)), custom.decode() if custom else None))
    used = set()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for o in range(sub.OperatorsLength()):
            used.add(sub.Operators(o).OpcodeIndex())
    builtin = sorted({codes[i][0] for i in used if codes[i][1] is None})
    custom = sorted({codes[i][1] for i in used if codes[i][1] is not None})
    return OpAudit(tuple(builtin), tuple(custom))

"""Trained models shipped with the package, keras-hub's way: ``VAE.from_preset("NAME")``.

A preset is a folder ``zoo/presets/NAME/`` (installed with the package) holding

- ``config.json``: ``{"class_name": <a name in zoo>, "config": <the model's get_config()>,
  "metrics": {...measured numbers...}, "command": <the command that trained it>}``;
- ``model.weights.h5``: the trained weights (``model.save_weights``);
- ``MODEL_CARD.md``: data, budget, what was measured and the exact command;
- ``reference.npz``: fixed inputs and the outputs the stored model gives on them (the tests
  check that a loaded preset reproduces them);
- the verified TFLite file(s) from ``zoo.export`` with their JSON sidecars (parity measured
  in the LiteRT interpreter, op audit), for a phone or a board that starts without training.

>>> import zoo.presets
>>> "vae_mnist_burda_k1" in zoo.presets.list_presets()
True
>>> zoo.presets.preset_dir("no_such_preset")
Traceback (most recent call last):
...
ValueError: Unknown preset 'no_such_preset'; available: ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.weights.h5"
REFERENCE_NAME = "reference.npz"


def list_presets() -> list[str]:
    """Names of the presets installed with the package, sorted."""
    if not PRESETS_DIR.is_dir():
        return []
    return sorted(p.name for p in PRESETS_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def preset_dir(name: str) -> Path:
    """The folder of preset ``name``; ValueError listing the available ones if unknown."""
    names = list_presets()
    if name not in names:
        raise ValueError(f"Unknown preset {name!r}; available: {', '.join(names) or 'none'}.")
    return PRESETS_DIR / name


def preset_config(name: str) -> dict:
    """The preset's ``config.json`` (class name, model config, measured metrics, command)."""
    with open(preset_dir(name) / CONFIG_NAME) as f:
        return json.load(f)


def preset_files(name: str) -> dict:
    """Paths of the preset's files by name (``model.weights.h5``, ``*.tflite``, ...)."""
    folder = preset_dir(name)
    return {p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file()}


def model_class(class_name: str):
    import zoo

    cls = getattr(zoo, class_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"preset model class {class_name!r} is not a model of zoo")
    return cls


def load(name: str, expected_class=None):
    """Build preset ``name``'s model from its config and load its trained weights.

    ``expected_class``: the class ``from_preset`` was called on; a preset of another model
    is refused with a message naming the right class."""
    meta = preset_config(name)
    cls = model_class(meta["class_name"])
    if expected_class is not None and not issubclass(cls, expected_class):
        raise ValueError(f"Preset {name!r} is a {cls.__name__}, not a "
                         f"{expected_class.__name__}: use {meta['class_name']}.from_preset"
                         f"({name!r}) or zoo.presets.load({name!r}).")
    model = cls.from_config(meta["config"])
    model.load_weights(str(preset_dir(name) / WEIGHTS_NAME))
    return model


def reference(name: str) -> dict:
    """The preset's stored fixed inputs and outputs (``reference.npz``) as arrays."""
    import numpy as np

    with np.load(preset_dir(name) / REFERENCE_NAME) as f:
        return {k: f[k] for k in f.files}


def write_preset(model, name: str, out_root: str | os.PathLike, metrics: dict, command: str,
                 card: str, reference_arrays: dict, extra_files: dict | None = None) -> Path:
    """Write a preset folder (maintainers' tool; ``tools/make_presets.py`` calls it).

    Every file is written to a temporary name and renamed, so a reader never sees half a
    file. ``extra_files``: ``{name in the folder: source path}`` (TFLite files, sidecars)."""
    import shutil

    import numpy as np

    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)

    def atomic(target: Path, write):
        tmp = target.with_name(".tmp-" + target.name)  # keeps the suffix Keras checks
        write(str(tmp))
        os.replace(tmp, target)

    meta = {"class_name": type(model).__name__, "config": model.get_config(),
            "metrics": metrics, "command": command}
    atomic(folder / CONFIG_NAME,
           lambda p: Path(p).write_text(json.dumps(meta, indent=2, default=_json) + "\n"))
    atomic(folder / WEIGHTS_NAME, lambda p: model.save_weights(p))
    atomic(folder / REFERENCE_NAME, lambda p: np.savez(p, **reference_arrays))
    atomic(folder / "MODEL_CARD.md", lambda p: Path(p).write_text(card))
    for target, source in (extra_files or {}).items():
        atomic(folder / target, lambda p, s=source: shutil.copyfile(s, p))
    return folder


def _json(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")

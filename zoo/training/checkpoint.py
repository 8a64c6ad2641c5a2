"""Files of a run, each written atomically, and the checkpoint as one consistent unit.

A checkpoint is ``checkpoints/epoch-NNNN.weights.h5`` (weights and optimizer state) plus
``checkpoints/state.json`` naming it. ``state.json`` is written last, by an atomic rename, so
it is the commit point: a kill at any moment leaves either the previous checkpoint or the new
one, never a mix, and the weights it names are removed only after a newer state is committed.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os

import keras

from zoo.training.config import ConfigError

STATE = "state.json"


def _tmp_path(path: str, suffix: str = "") -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def atomic_save(path: str, save) -> None:
    """``save(tmp)`` then rename onto ``path``; the temporary name keeps Keras' suffix
    (``.keras`` / ``.weights.h5``) so ``model.save`` / ``save_weights`` accept it."""
    suffix = ".weights.h5" if path.endswith(".weights.h5") else os.path.splitext(path)[1]
    tmp = _tmp_path(path, suffix)
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def seed_states(model) -> list:
    """The state variables of the model's SeedGenerators. Keras's weight files leave them
    out, so checkpoints store them beside the weights: a resumed run draws the same noise."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def read_state(run_dir: str) -> dict | None:
    """The committed checkpoint state of a run, None when there is none; a clear error when
    it cannot be read."""
    path = os.path.join(run_dir, "checkpoints", STATE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"checkpoint state {path} is unreadable ({err}); the run cannot be "
                         f"resumed") from None
    weights = state.get("weights", "latest.weights.h5")
    if not os.path.exists(os.path.join(run_dir, "checkpoints", weights)):
        raise ConfigError(f"checkpoint {path} names {weights}, which is missing; the run "
                         f"cannot be resumed")
    return state


def restore(model, run_dir: str, state: dict) -> None:
    """Load the weights, optimizer state and sampler states of a committed checkpoint."""
    path = os.path.join(run_dir, "checkpoints", state.get("weights", "latest.weights.h5"))
    try:
        model.load_weights(path)
    except Exception as err:  # h5py / Keras raise many types for a damaged file
        raise ConfigError(f"checkpoint weights {path} cannot be loaded into the model: "
                         f"{type(err).__name__}: {err}") from None
    for variable, value in zip(seed_states(model), state["seed_generators"]):
        variable.assign(value)


def load_model_file(path: str):
    """A ``.keras`` file as a model, with an error that tells a missing file from a bad one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    import zoo

    zoo.load_all()  # registers the model classes for deserialization
    try:
        return keras.saving.load_model(path)
    except Exception as err:
        raise ConfigError(f"{path} is not a loadable .keras model file ({type(err).__name__}: "
                         f"{err})") from None


class EpochCheckpoint(keras.callbacks.Callback):
    """At every epoch end: ``last.keras``, ``best.keras`` when the monitored value improved,
    ``metrics.csv``, and the checkpoint (weights, optimizer state, sampler states, epoch)
    committed by ``state.json``. Nothing is saved after a non-finite loss."""

    def __init__(self, run_dir: str, monitor: str, best: float = math.inf,
                 extra_state: dict | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.best = best
        self.stopped_on_nan = False
        self.extra_state = dict(extra_state or {})
        self.metrics_path = os.path.join(run_dir, "metrics.csv")

    def save_state(self, epoch: int) -> None:
        ckpt = os.path.join(self.run_dir, "checkpoints")
        os.makedirs(ckpt, exist_ok=True)
        name = f"epoch-{epoch:04d}.weights.h5"
        atomic_save(os.path.join(ckpt, name), self.model.save_weights)
        state = {"epoch": epoch, "best": self.best, "weights": name,
                 "step": int(self.model.optimizer.iterations.numpy()),
                 "seed_generators": [v.numpy().tolist() for v in seed_states(self.model)],
                 **self.extra_state}
        atomic_write_json(os.path.join(ckpt, STATE), state)
        for old in glob.glob(os.path.join(ckpt, "*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)

    def _append_metrics(self, epoch: int, logs: dict) -> None:
        rows = []
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path, encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < epoch]
        rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        fields = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_path, out.getvalue())

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_on_nan:
            return
        logs = logs or {}
        value = logs.get(self.monitor)
        self._append_metrics(epoch, logs)
        atomic_save(os.path.join(self.run_dir, "last.keras"), self.model.save)
        if value is not None and value < self.best:
            self.best = float(value)
            atomic_save(os.path.join(self.run_dir, "best.keras"), self.model.save)
        self.save_state(epoch + 1)

"""Training runs behind `tools/train.py` and `tools/evaluate.py`.

A run is a resolved config (model, data, train sections) and an output directory holding
``config.json``, per-epoch checkpoints (weights with optimizer state, for ``--resume``),
``best.keras`` / ``last.keras``, ``metrics.csv``, TensorBoard logs, pictures and
``evaluation.json``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import json
import math
import os
import sys
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from zoo import datasets

# --------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """How the trainer builds, feeds and evaluates one zoo model.

    Args:
        factory: callable returning the model class (imported lazily).
        kind: str. ``"image"`` (a VAE-family model fed ``image`` arrays), ``"sequence"``
            (a deep state-space model fed a dict of ``observations``, ``mask``, ``actions``)
            ``"lgssm"`` (the Kalman filter model, fed ``observations``) or ``"supervised"``
            (a filter trained on ground-truth ``states``).
        default_dataset: str. Dataset used when ``--dataset`` is not given.
        datasets: tuple of str. Datasets the model can train on.
        defaults: dict. Default model, data and train settings (merged under the user's).
        describe: str. One line for ``--help``.
        dataset_defaults: dict. Per-dataset settings merged over ``defaults``.
        jit: bool. Whether ``train.jit`` (XLA) is supported.
    """

    factory: Callable
    kind: str
    default_dataset: str
    datasets: tuple
    defaults: dict
    describe: str
    dataset_defaults: dict = dataclasses.field(default_factory=dict)
    jit: bool = True


def _vae():
    from zoo.vae import VAE
    return VAE


def _dlgm():
    from zoo.dlgm import DLGM
    return DLGM


def _categorical_vae():
    from zoo.categorical_vae import CategoricalVAE
    return CategoricalVAE


def _dkf():
    from zoo.deep_state_space import DeepKalmanFilter
    return DeepKalmanFilter


def _dmm():
    from zoo.deep_state_space import DeepMarkovModel
    return DeepMarkovModel


def _kalman():
    from zoo.kalman_filter import KalmanFilterModel
    return KalmanFilterModel


def _lstm_kf():
    from zoo.lstm_kalman_filter import LSTMKalmanFilter
    return LSTMKalmanFilter


IMAGE_DATASETS = ("mnist5k", "digits", "mnist", "fashion_mnist", "binarized_mnist")
SEQUENCE_DATASETS = ("healing_mnist", "chorales", "lgssm", "pendulum", "nile")
_SMALL_HEALING = {"num_sequences": 1000}
_GAUSSIAN_SERIES = {"model": {"likelihood": "gaussian", "emission_units": [32]}}

MODELS = {
    "vae": ModelEntry(
        _vae, "image", "mnist5k", IMAGE_DATASETS,
        {"model": {"latent_dim": 20, "hidden_units": [500]},
         "data": {"binarize": "dynamic"}},
        "Variational autoencoder (Kingma & Welling 2014), any Gaussian posterior family",
    ),
    "dlgm": ModelEntry(
        _dlgm, "image", "mnist5k", IMAGE_DATASETS,
        {"model": {"latent_dims": [50, 50], "hidden_units": [200]},
         "data": {"binarize": "dynamic"}, "train": {"optimizer": "rmsprop"}},
        "Deep latent Gaussian model (Rezende et al. 2014), rank-one precision posteriors",
    ),
    "categorical_vae": ModelEntry(
        _categorical_vae, "image", "mnist5k", IMAGE_DATASETS,
        {"model": {"num_variables": 20, "num_classes": 10}, "data": {"binarize": "dynamic"}},
        "Categorical VAE with Gumbel-softmax latents (Jang et al. 2017)",
    ),
    "dkf": ModelEntry(
        _dkf, "sequence", "healing_mnist", SEQUENCE_DATASETS,
        {"model": {"latent_dim": 16, "rnn_units": 128, "emission_units": [200]},
         "train": {"batch_size": 50, "epochs": 10, "eval_samples": 20, "eval_examples": 100}},
        "Deep Kalman Filter (Krishnan et al. 2015): q-INDEP/LR/RNN/BRNN, actions, time gaps",
        {"healing_mnist": {"data": _SMALL_HEALING}, "lgssm": _GAUSSIAN_SERIES,
         "pendulum": _GAUSSIAN_SERIES, "nile": _GAUSSIAN_SERIES},
        jit=False,
    ),
    "dmm": ModelEntry(
        _dmm, "sequence", "chorales", SEQUENCE_DATASETS,
        {"model": {"latent_dim": 32, "rnn_units": 128, "emission_units": [100, 100],
                   "transition_units": 100, "kl_annealing_steps": 1000},
         "train": {"batch_size": 20, "epochs": 10, "learning_rate": 3e-4, "eval_samples": 20,
                   "eval_examples": 74}},
        "Deep Markov Model (Krishnan et al. 2017): gated transition, ST-L/R/LR inference",
        {"healing_mnist": {"data": _SMALL_HEALING}, "lgssm": _GAUSSIAN_SERIES,
         "pendulum": _GAUSSIAN_SERIES, "nile": _GAUSSIAN_SERIES},
        jit=False,
    ),
    "kalman_filter": ModelEntry(
        _kalman, "lgssm", "nile", ("nile", "lgssm", "pendulum"),
        {"model": {"state_dim": 4}, "train": {"batch_size": 100, "epochs": 50,
                                              "learning_rate": 0.05}},
        "Linear-Gaussian state-space model fitted by maximum likelihood (exact Kalman filter)",
        # Local level model (Durbin & Koopman ch. 2), started at sensible scales.
        {"nile": {"model": {"state_dim": 1, "transition": "identity",
                            "observation": "identity", "observation_scale": 100.0,
                            "transition_scale": 30.0, "initial_scale": 1e4,
                            "trainable_initial": False, "dtype": "float64"},
                  "train": {"epochs": 200, "learning_rate": 3.0, "schedule": "cosine",
                            "batch_size": 1, "jit": True}},
         "pendulum": {"model": {"state_dim": 2}}},
    ),
    "lstm_kf": ModelEntry(
        _lstm_kf, "supervised", "lgssm", ("lgssm",),
        {"model": {"lstm_units": 32}, "train": {"batch_size": 50, "epochs": 20,
                                                "learning_rate": 3e-3}},
        "LSTM Kalman filter (Coskun et al. 2017), supervised on ground-truth states",
        jit=False,
    ),
}

TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 100,
    "learning_rate": 1e-3,
    "schedule": "constant",  # constant | cosine | exponential
    "decay_rate": 0.5,  # exponential: factor per `decay_epochs`
    "decay_epochs": 10,
    "optimizer": "adam",  # adam | rmsprop | sgd
    "seed": 0,
    "jit": False,
    "mixed_precision": False,
    "strategy": "default",  # default | mirrored | multiworker
    "eval_samples": 100,  # K of the importance-weighted bound in the final evaluation
    "eval_examples": 500,  # examples of the test split used for it
}
SCHEDULES = ("constant", "cosine", "exponential")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
STRATEGIES = ("default", "mirrored", "multiworker")


class ConfigError(ValueError):
    """A config key or value that does not exist or is invalid."""


def _choices_error(what, value, valid):
    return ConfigError(f"unknown {what} {value!r}; valid: {', '.join(sorted(valid))}")


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise _choices_error("model", name, MODELS)
    return MODELS[name]


# --------------------------------------------------------------------------- config


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, lists, true/null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null"):
            return None
        return text


def read_config_file(path: str) -> dict:
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as err:
            raise ImportError("YAML configs need pyyaml: pip install -e .[config]") from err
        loaded = yaml.safe_load(text) or {}
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping, got {type(loaded).__name__}")
    return loaded


FROM_DATA = ("self", "kwargs", "args", "input_shape", "observation_shape")


def model_parameters(cls) -> list:
    """Constructor arguments a config may set (shapes come from the data)."""
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in FROM_DATA]
    params += list(getattr(cls, "LAYER_ARGS", ())) + (["dtype"] if hasattr(cls, "LAYER_ARGS")
                                                      else [])
    if "action_dim" in params:
        params.remove("action_dim")  # from the data
    return params


def resolve_config(model: str, dataset: str | None = None, config: dict | None = None,
                   overrides: dict | None = None) -> dict:
    """Defaults, then the config file's mapping, then ``overrides`` ({"train.epochs": 3}).

    Every key is checked: model keys against the model's constructor, train keys against
    ``TRAIN_DEFAULTS``; data keys are checked by the dataset loader. Unknown keys raise
    ``ConfigError`` naming them.
    """
    entry = model_entry(model)
    resolved = {"model_name": model, "model": {}, "data": {}, "train": dict(TRAIN_DEFAULTS)}
    resolved = _merge(resolved, entry.defaults)
    user = copy.deepcopy(config or {})
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"--set key {dotted!r} must be section.key, e.g. train.epochs=3")
        user.setdefault(section, {})[key] = value
    for section in user:
        if section not in ("model", "data", "train", "model_name"):
            raise ConfigError(f"unknown config section {section!r}; valid: data, model, train")
    if user.get("model_name", model) != model:
        raise ConfigError(f"config is for model {user['model_name']!r}, not {model!r}")
    name = dataset or user.get("data", {}).get("name") or entry.default_dataset
    if name not in entry.datasets:
        raise _choices_error(f"dataset for model {model!r}:", name, entry.datasets)
    resolved = _merge(resolved, entry.dataset_defaults.get(name, {}))
    resolved = _merge(resolved, {k: v for k, v in user.items() if k != "model_name"})
    resolved["data"]["name"] = name
    valid_model = model_parameters(entry.factory())
    for key in resolved["model"]:
        if key not in valid_model:
            raise _choices_error(f"config key model.{key} for {model!r}; it is", key,
                                 valid_model)
    for key in resolved["train"]:
        if key not in TRAIN_DEFAULTS:
            raise _choices_error("config key", f"train.{key}", [f"train.{k}" for k in
                                                                 TRAIN_DEFAULTS])
    train = resolved["train"]
    for key, valid in (("schedule", SCHEDULES), ("optimizer", OPTIMIZERS),
                       ("strategy", STRATEGIES)):
        if train[key] not in valid:
            raise _choices_error(f"train.{key}", train[key], valid)
    for key in ("epochs", "batch_size", "eval_samples", "eval_examples", "decay_epochs"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {train[key]!r}")
    if train["jit"] and not entry.jit:
        raise ConfigError(
            f"train.jit is not supported for {model!r}: XLA needs compile-time shapes in the "
            f"gradient of its time loop (tf.scan over variable-length sequences / per-step "
            f"Jacobians), which TF 2.21 cannot give it; train without --jit")
    if not (isinstance(train["learning_rate"], (int, float)) and train["learning_rate"] > 0):
        raise ConfigError(f"train.learning_rate must be > 0, got {train['learning_rate']!r}")
    if model in ("vae", "dlgm", "categorical_vae"):
        if resolved["model"].get("likelihood", "bernoulli") != "bernoulli":
            resolved["data"].setdefault("binarize", None)
            if resolved["data"]["binarize"] == "dynamic" and "binarize" not in user.get(
                    "data", {}):
                resolved["data"]["binarize"] = None
    return resolved


# --------------------------------------------------------------------------- runs


def _optimizer(train: dict, steps_per_epoch: int):
    lr = float(train["learning_rate"])
    if train["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, train["epochs"] * steps_per_epoch)
    elif train["schedule"] == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(
            lr, train["decay_epochs"] * steps_per_epoch, train["decay_rate"])
    return {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
            "sgd": keras.optimizers.SGD}[train["optimizer"]](learning_rate=lr)


def _rank1_logs(step):
    """Wrap a train/test step so its scalar logs come back as [1] vectors.

    Keras 3.15 reduces per-replica logs under MultiWorkerMirroredStrategy with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars ("Invalid reduction dimension
    0 for input with 0 dimensions", tensorflow/tensorflow#72388); metric results are already
    synchronized across workers, so the mean of the [1] copies is the value itself.
    """
    def wrapped(data):
        logs = step(data)
        return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}
    return wrapped


def strategy_for(name: str):
    """The `tf.distribute` strategy of a run: default, mirrored (GPUs of one machine, or the
    logical CPUs when there is no GPU) or multi-worker (machines configured by TF_CONFIG)."""
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("train.strategy=multiworker needs TF_CONFIG describing the "
                              "cluster (see the README's two-worker example)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def epoch_stream(arrays: dict, batch_size: int, seed: int, start_epoch: int, epochs: int,
                 binarize_key: str | None = None) -> tf.data.Dataset:
    """Batches of epochs ``start_epoch .. epochs - 1`` back to back, each epoch's order (and
    dynamic binarization) a stateless function of (seed, epoch): a resumed run sees exactly
    the batches an uninterrupted one would. Use with ``steps_per_epoch``."""
    tensors = {k: tf.constant(v) for k, v in arrays.items()}
    n = len(next(iter(arrays.values())))

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))

        def gather(index):
            example = {k: tf.gather(t, index) for k, t in tensors.items()}
            if binarize_key is not None:
                grey = example[binarize_key]
                u = tf.random.stateless_uniform(tf.shape(grey), seed=tf.stack(
                    [epoch + 1000003 * tf.cast(seed, tf.int64), index]), dtype=grey.dtype)
                example[binarize_key] = tf.cast(u < grey, grey.dtype)
            return example

        return tf.data.Dataset.from_tensor_slices(order).map(gather).batch(batch_size)

    epochs_ds = tf.data.Dataset.range(start_epoch, epochs)
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def model_inputs(config: dict, arrays: dict):
    """What the model is fed, from a split's NumPy arrays: images, or a dict of sequences."""
    kind = MODELS[config["model_name"]].kind
    if kind == "image":
        return arrays["image"]
    if kind == "supervised":
        return {"observations": arrays["observations"], "states": arrays["states"]}
    inputs = {"observations": arrays["observations"]}
    if "mask" in arrays:
        inputs["mask"] = arrays["mask"]
    if kind == "sequence" and "actions" in arrays:
        inputs["actions"] = arrays["actions"]
    return inputs


def data_kwargs(config: dict, arrays: dict) -> dict:
    """Constructor arguments that come from the data (shapes, action size)."""
    kind = MODELS[config["model_name"]].kind
    if kind == "image":
        return {"input_shape": tuple(arrays["image"].shape[1:])}
    if kind == "sequence":
        kwargs = {"observation_shape": tuple(arrays["observations"].shape[2:])}
        if "actions" in arrays:
            kwargs["action_dim"] = int(arrays["actions"].shape[-1])
        return kwargs
    if kind == "supervised":
        return {"state_dim": int(arrays["states"].shape[-1]),
                "observation_matrix": np.asarray(arrays["H"]).tolist()}
    return {}


def _fit_pair(config: dict, inputs):
    """(x, y) as ``fit`` takes them: supervised filters learn observations -> states."""
    if MODELS[config["model_name"]].kind == "supervised":
        return inputs["observations"], inputs["states"]
    return inputs, None


def _trim_to_longest(batch):
    """Cut a batch of padded sequences to its longest one (every key has time on axis 1)."""
    length = tf.cast(tf.reduce_max(tf.reduce_sum(batch["mask"], 1)), tf.int32)
    return {k: v[:, :length] for k, v in batch.items()}


def _data(config: dict, inputs, start_epoch: int) -> tf.data.Dataset:
    train = config["train"]
    if isinstance(inputs, dict):
        stream = epoch_stream(inputs, train["batch_size"], train["seed"], start_epoch,
                              train["epochs"])
        if MODELS[config["model_name"]].kind == "supervised":
            return stream.map(lambda b: (b["observations"], b["states"]))
        return stream.map(_trim_to_longest) if "mask" in inputs else stream
    dynamic = config["data"].get("binarize") == "dynamic"
    stream = epoch_stream({"image": inputs}, train["batch_size"], train["seed"], start_epoch,
                          train["epochs"], "image" if dynamic else None)
    return stream.map(lambda example: example["image"])


def _validation_data(config: dict, split: str):
    x, y = _fit_pair(config, model_inputs(config, _arrays(config, split)))
    inputs = x if y is None else (x, y)
    data = tf.data.Dataset.from_tensor_slices(inputs).batch(config["train"]["batch_size"])
    return data.map(_trim_to_longest) if isinstance(inputs, dict) and "mask" in inputs else data


def _arrays(config: dict, split: str, for_training: bool = False) -> dict:
    """NumPy arrays of a split. Dynamic binarization: grey levels for training (resampled per
    epoch by ``epoch_stream``), one fixed seeded draw for evaluation."""
    data = {k: v for k, v in config["data"].items() if k != "name"}
    if data.get("binarize") == "dynamic":
        data["binarize"] = None if for_training else "static"
    return datasets.load_arrays(config["data"]["name"], split, **data)


def _splits(config: dict):
    spec = datasets.get_spec(config["data"]["name"])
    valid = "valid" if "valid" in spec.splits else None
    test = "test" if "test" in spec.splits else (valid or "train")
    return valid, test


def build_model(config: dict, arrays: dict):
    """The model of a config, its shapes taken from the training arrays."""
    entry = model_entry(config["model_name"])
    cls = entry.factory()
    kwargs = {**dict(config["model"]), **data_kwargs(config, arrays)}
    if "seed" in model_parameters(cls):
        kwargs.setdefault("seed", config["train"]["seed"])
    return cls(**kwargs)


def seed_states(model) -> list:
    """The state variables of the model's SeedGenerators. Keras's weight files leave them
    out, so checkpoints store them beside the weights: a resumed run draws the same noise."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state and the epoch reached at every epoch end (for
    ``--resume``), ``last.keras`` every epoch and ``best.keras`` when the monitored value
    improves. Nothing is saved after a NaN loss, so the last good checkpoint survives."""

    def __init__(self, run_dir: str, monitor: str):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.best = math.inf
        self.stopped_on_nan = False

    def save_state(self, epoch: int, partial: bool = False):
        ckpt = os.path.join(self.run_dir, "checkpoints")
        os.makedirs(ckpt, exist_ok=True)
        tmp = os.path.join(ckpt, "latest.weights.h5.tmp")
        self.model.save_weights(tmp + ".weights.h5")
        os.replace(tmp + ".weights.h5", os.path.join(ckpt, "latest.weights.h5"))
        state = {"epoch": epoch, "partial": partial, "best": self.best,
                 "step": int(self.model.optimizer.iterations.numpy()),
                 "seed_generators": [v.numpy().tolist() for v in seed_states(self.model)]}
        with open(os.path.join(ckpt, "state.json"), "w") as f:
            json.dump(state, f)

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_on_nan:
            return
        value = (logs or {}).get(self.monitor)
        self.model.save(os.path.join(self.run_dir, "last.keras"))
        if value is not None and value < self.best:
            self.best = float(value)
            self.model.save(os.path.join(self.run_dir, "best.keras"))
        self.save_state(epoch + 1)


class _StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and names the epoch and step."""

    def __init__(self, checkpoint: _EpochCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint
        self.epoch = 0
        self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            self.message = (
                f"loss became {loss} at epoch {self.epoch + 1}, batch {batch + 1} (optimizer "
                f"step {step}); training stopped and the last good checkpoint was kept. Try a "
                f"lower train.learning_rate.")
            self.checkpoint.stopped_on_nan = True
            self.model.stop_training = True


@dataclasses.dataclass
class RunResult:
    run_dir: str
    history: dict
    evaluation: dict
    stopped: str | None  # None, "nan" or "interrupted"


def _verbose() -> int:
    return 1 if sys.stdout.isatty() else 2


def train(config: dict, run_dir: str, resume: bool = False, plots: bool = True,
          log=print, callbacks: list | None = None, export: tuple = ()) -> RunResult:
    """Train (or resume) a run described by a resolved ``config`` into ``run_dir``.

    ``callbacks`` are added to the run's own (annealing, NaN stop, checkpoints, CSV and
    TensorBoard logs). Ctrl-C saves a checkpoint that ``resume=True`` picks up. ``export``:
    TFLite quantization modes (e.g. ``("float32", "dynamic")``); when given, the best model
    is also written as a SavedModel and verified TFLite files under ``RUN/export``."""
    train_cfg = config["train"]
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    state_path = os.path.join(run_dir, "checkpoints", "state.json")
    if resume:
        if not os.path.exists(state_path):
            raise FileNotFoundError(
                f"--resume: no checkpoint in {run_dir!r} (expected {state_path}); start the "
                f"run without --resume first")
        with open(config_path) as f:
            config = json.load(f)
        train_cfg = config["train"]
    elif os.path.exists(state_path):
        raise FileExistsError(
            f"{run_dir!r} already holds a run; pass --resume to continue it or choose "
            f"another --output-dir")
    else:
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)

    keras.utils.set_random_seed(train_cfg["seed"])
    previous_policy = keras.mixed_precision.global_policy()
    if train_cfg["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _run(config, run_dir, resume, plots, log, callbacks, export, state_path)
    finally:  # the policy is global: leave it as the caller had it
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(config, run_dir, resume, plots, log, callbacks, export, state_path) -> RunResult:
    train_cfg = config["train"]
    strategy = strategy_for(train_cfg["strategy"])
    replicas = strategy.num_replicas_in_sync
    if train_cfg["strategy"] != "default":
        log(f"Strategy: {type(strategy).__name__} with {replicas} replicas")
    valid_split, test_split = _splits(config)
    train_arrays = _arrays(config, "train", for_training=True)
    train_inputs = model_inputs(config, train_arrays)
    num_train = len(tf.nest.flatten(train_inputs)[0])
    steps_per_epoch = math.ceil(num_train / train_cfg["batch_size"])
    with strategy.scope():
        model = build_model(config, train_arrays)
        if not model.built:  # models that learn their shapes from the first batch
            model(tf.nest.map_structure(lambda a: a[:1], _fit_pair(config, train_inputs)[0]))
        supervised = MODELS[config["model_name"]].kind == "supervised"
        model.compile(optimizer=_optimizer(train_cfg, steps_per_epoch),
                      loss="mse" if supervised else None, jit_compile=bool(train_cfg["jit"]))
        model.optimizer.build(model.trainable_variables)  # so checkpoints can load into it
        if train_cfg["strategy"] == "multiworker":
            model.train_step = _rank1_logs(model.train_step)
            model.test_step = _rank1_logs(model.test_step)
    valid_data = _validation_data(config, valid_split) if valid_split else None
    monitor = "val_loss" if valid_data is not None else "loss"
    checkpoint = _EpochCheckpoint(run_dir, monitor)
    initial_epoch = 0
    if resume:
        with open(state_path) as f:
            state = json.load(f)
        model.load_weights(os.path.join(run_dir, "checkpoints", "latest.weights.h5"))
        for variable, value in zip(seed_states(model), state["seed_generators"]):
            variable.assign(value)
        initial_epoch = state["epoch"]
        checkpoint.best = state["best"]
        log(f"Resuming {run_dir} at epoch {initial_epoch + 1} (optimizer step {state['step']})"
            + (" from a checkpoint saved mid-epoch" if state["partial"] else ""))
    nan_stop = _StopOnNaN(checkpoint)
    callbacks = [
        *(model.default_callbacks() if hasattr(model, "default_callbacks") else []),
        nan_stop,
        checkpoint,
        keras.callbacks.CSVLogger(os.path.join(run_dir, "metrics.csv"), append=resume),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        *(callbacks or []),
    ]
    train_data = _data(config, train_inputs, initial_epoch)
    stopped, history = None, {}
    try:
        if initial_epoch < train_cfg["epochs"]:
            history = model.fit(train_data, validation_data=valid_data,
                                epochs=train_cfg["epochs"], initial_epoch=initial_epoch,
                                steps_per_epoch=steps_per_epoch,
                                callbacks=callbacks, verbose=_verbose(),
                                shuffle=False).history  # epoch_stream shuffles, seeded
    except KeyboardInterrupt:
        epoch = nan_stop.epoch
        checkpoint.save_state(epoch, partial=True)
        log(f"\nInterrupted during epoch {epoch + 1}: checkpoint saved in "
            f"{os.path.join(run_dir, 'checkpoints')}; `--resume` restarts epoch {epoch + 1} "
            f"from it.")
        return RunResult(run_dir, {}, {}, "interrupted")
    if nan_stop.message:
        log("Stopped: " + nan_stop.message)
        stopped = "nan"
    test_arrays = _arrays(config, test_split)  # loaded once for evaluation and pictures
    evaluation = {**evaluate_model(model, config, test_split, log=log, arrays=test_arrays),
                  "replicas": replicas}
    with open(os.path.join(run_dir, "evaluation.json"), "w") as f:
        json.dump(evaluation, f, indent=2)
    if plots:
        write_plots(model, config, os.path.join(run_dir, "plots"), log=log, arrays=test_arrays)
    if export:
        from zoo.export import export_all

        best = os.path.join(run_dir, "best.keras")
        exported = keras.saving.load_model(best) if os.path.exists(best) else model
        export_all(exported, os.path.join(run_dir, "export"), quantize=tuple(export), log=log)
    return RunResult(run_dir, history, evaluation, stopped)


def evaluate_model(model, config: dict, split: str, log=print, num_samples: int | None = None,
                   num_examples: int | None = None, arrays: dict | None = None) -> dict:
    """Keras metrics on ``split`` plus the model's log-likelihood: the K-sample
    importance-weighted bound for latent-variable models, the exact one for the Kalman
    filter (per sequence and per step)."""
    from zoo.base import LatentVariableModel

    train_cfg = config["train"]
    arrays = _arrays(config, split) if arrays is None else arrays
    x = model_inputs(config, arrays)
    count = len(tf.nest.flatten(x)[0])
    for variable in seed_states(model):  # the same noise for every evaluation of a model
        variable.assign([train_cfg["seed"], 0])
    fit_x, fit_y = _fit_pair(config, x)
    metrics = model.evaluate(fit_x, fit_y, batch_size=train_cfg["batch_size"], verbose=0,
                             return_dict=True)
    result = {"split": split, "examples": int(count), **{k: float(v) for k, v in metrics.items()}}
    if fit_y is not None:  # a supervised filter: RMSE against the states, beside the exact KF
        return _evaluate_supervised(model, split, result, fit_x, fit_y, arrays, log)
    n = min(count, num_examples or train_cfg["eval_examples"])
    head = tf.nest.map_structure(lambda a: a[:n], x)
    steps = (np.sum(head["mask"], 1) if isinstance(head, dict) and "mask" in head else
             np.full(n, tf.nest.flatten(head)[0].shape[1]) if isinstance(head, dict) else None)
    if isinstance(model, LatentVariableModel):
        k = num_samples or train_cfg["eval_samples"]
        log_lik = model.log_likelihood(head, num_samples=k, seed=train_cfg["seed"]).log_likelihood
        result[f"iwae_log_likelihood_k{k}"] = float(np.mean(log_lik))
    else:
        log_lik = model.filter(head["observations"], mask=head.get("mask")).log_likelihood.numpy()
        result["log_likelihood"] = float(np.mean(log_lik))
        result["parameters"] = {k: np.asarray(v).tolist() for k, v in
                                model.state_space_params()._asdict().items() if v is not None}
    result["likelihood_examples"] = int(n)
    if steps is not None:
        result["nll_per_step"] = float(-np.sum(log_lik) / np.sum(steps))
    if "binarize" in config["data"]:
        result["training_binarization"] = config["data"]["binarize"]
        result["evaluation_binarization"] = (
            "static (one seeded draw)" if config["data"]["binarize"] in ("dynamic", "static")
            else config["data"]["binarize"])
    log(f"{split}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in result.items() if k != "parameters"))
    return result


def _evaluate_supervised(model, split, result, observations, states, arrays, log):
    result["rmse"] = float(np.sqrt(result["loss"]))
    if hasattr(model, "filter"):  # the learned model's log-likelihood of the observations
        log_lik = model.filter(observations)["log_likelihood"].numpy().sum(1)
        result["log_likelihood"] = float(np.mean(log_lik))
        result["nll_per_step"] = float(-np.mean(log_lik) / observations.shape[1])
    if all(k in arrays for k in ("A", "H", "Q", "R", "m0", "P0")):
        from zoo.layers import kalman_inference as ki

        params = ki.LGSSMParams(arrays["m0"], arrays["P0"], arrays["A"], arrays["Q"],
                                arrays["H"], arrays["R"])
        exact = ki.kalman_filter(params, np.asarray(observations, np.float64)).filtered_means
        result["exact_kalman_rmse"] = float(np.sqrt(np.mean((exact.numpy() - states) ** 2)))
    log(f"{split}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in result.items()))
    return result


def write_plots(model, config: dict, out_dir: str, log=print, arrays: dict | None = None) -> list:
    """PNG pictures a person would look at, by model kind: prior samples and
    reconstructions; healed / clean frames; piano rolls; trajectories with bands."""
    try:
        from zoo import plots
    except ImportError as err:  # matplotlib missing
        log(f"No pictures: {err}")
        return []
    if arrays is None:
        arrays = _arrays(config, _splits(config)[1])
    x = tf.nest.map_structure(lambda a: a[:16], model_inputs(config, arrays))
    os.makedirs(out_dir, exist_ok=True)
    path = lambda name: os.path.join(out_dir, name)  # noqa: E731
    kind = MODELS[config["model_name"]].kind
    name = config["data"]["name"]
    seed = config["train"]["seed"]
    if kind == "image":
        written = [
            plots.image_grid(np.asarray(model.sample(16, seed=seed)), path("samples.png"),
                             title="Samples from the prior"),
            plots.image_rows([x, np.asarray(model.reconstruct(x))], ["data", "reconstruction"],
                             path("reconstructions.png")),
        ]
    elif kind == "sequence":
        smoothed = model.smooth(x)
        length = int(np.sum(x["mask"][0])) if "mask" in x else x["observations"].shape[1]
        if name == "healing_mnist":
            written = [plots.image_rows(
                [x["observations"][0, :length], np.asarray(smoothed["observation_mean"])[0,
                 :length], arrays["clean"][0, :length]], ["input", "healed", "clean"],
                path("healing.png"))]
        elif name == "chorales":
            written = [plots.piano_rolls(
                [x["observations"][0, :length], np.asarray(model.sample(1, steps=length,
                                                                        seed=seed))[0]],
                ["data", "model sample (emission means)"], path("piano_rolls.png"))]
        else:
            mean = np.asarray(smoothed["observation_mean"])[0, :length]
            written = [plots.trajectories(x["observations"][0, :length], mean, None,
                                          path("trajectories.png"),
                                          title="observations and smoothed emission means")]
    elif kind == "supervised":
        out = model.filter(x["observations"][:1])
        std = np.sqrt(np.diagonal(np.asarray(out["covs"])[0], axis1=-2, axis2=-1))
        written = [plots.trajectories(np.full_like(std, np.nan), np.asarray(out["means"])[0],
                                      std, path("filter.png"), truth=x["states"][0],
                                      title="filtered states +/- 2 sd vs ground truth")]
    else:
        obs = x["observations"]
        filtered = model.filter(obs)
        params = model.state_space_params()
        h = np.asarray(params.observation_matrix, np.float64)
        means = np.asarray(filtered.filtered_means)[0] @ h.T
        covs = np.asarray(filtered.filtered_covs)[0]
        std = np.sqrt(np.einsum("pi,tij,pj->tp", h, covs, h))
        written = [plots.trajectories(obs[0], means, std, path("filter.png"),
                                      title="observations, filtered signal H m_t +/- 2 sd")]
    log("Pictures: " + ", ".join(written))
    return written


def load_run(run_dir: str, which: str = "best"):
    """The config and the ``best`` or ``last`` model of a finished run."""
    path = os.path.join(run_dir, f"{which}.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; is {run_dir!r} a training run?")
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    import zoo; zoo.load_all()  # registers the model classes for load_model
    return config, keras.saving.load_model(path)


def read_metrics(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")

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
        kind: str. ``"image"`` (examples under ``"image"``) or ``"series"``.
        default_dataset: str. Dataset used when ``--dataset`` is not given.
        datasets: tuple of str. Datasets the model can train on.
        defaults: dict. Default model, data and train settings (merged under the user's).
        describe: str. One line for ``--help``.
    """

    factory: Callable
    kind: str
    default_dataset: str
    datasets: tuple
    defaults: dict
    describe: str


def _vae():
    from zoo.vae import VAE
    return VAE


def _dlgm():
    from zoo.dlgm import DLGM
    return DLGM


def _categorical_vae():
    from zoo.categorical_vae import CategoricalVAE
    return CategoricalVAE


IMAGE_DATASETS = ("mnist5k", "digits", "mnist", "fashion_mnist", "binarized_mnist")

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


def model_parameters(cls) -> list:
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", "kwargs", "args", "input_shape")]


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
    resolved = _merge(resolved, {k: v for k, v in user.items() if k != "model_name"})
    if dataset is not None:
        resolved["data"]["name"] = dataset
    resolved["data"].setdefault("name", entry.default_dataset)
    name = resolved["data"]["name"]
    if name not in entry.datasets:
        raise _choices_error(f"dataset for model {model!r}:", name, entry.datasets)
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


def _data(config: dict, arrays: dict, start_epoch: int) -> tf.data.Dataset:
    entry = MODELS[config["model_name"]]
    train = config["train"]
    if entry.kind != "image":
        raise ConfigError(f"unsupported model kind {entry.kind!r}")
    dynamic = config["data"].get("binarize") == "dynamic"
    stream = epoch_stream({"image": arrays["image"]}, train["batch_size"], train["seed"],
                          start_epoch, train["epochs"], "image" if dynamic else None)
    return stream.map(lambda example: example["image"])


def _validation_data(config: dict, split: str):
    return tf.data.Dataset.from_tensor_slices(_arrays(config, split)["image"]).batch(
        config["train"]["batch_size"])


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
    test = "test" if "test" in spec.splits else valid
    return valid, test


def build_model(config: dict, input_shape):
    entry = model_entry(config["model_name"])
    cls = entry.factory()
    kwargs = dict(config["model"])
    if "seed" in model_parameters(cls):
        kwargs.setdefault("seed", config["train"]["seed"])
    return cls(input_shape=tuple(input_shape), **kwargs)


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
          log=print, callbacks: list | None = None) -> RunResult:
    """Train (or resume) a run described by a resolved ``config`` into ``run_dir``.

    ``callbacks`` are added to the run's own (annealing, NaN stop, checkpoints, CSV and
    TensorBoard logs). Ctrl-C saves a checkpoint that ``resume=True`` picks up."""
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
    if train_cfg["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = strategy_for(train_cfg["strategy"])
    replicas = strategy.num_replicas_in_sync
    if train_cfg["strategy"] != "default":
        log(f"Strategy: {type(strategy).__name__} with {replicas} replicas")
    valid_split, test_split = _splits(config)
    train_arrays = _arrays(config, "train", for_training=True)
    input_shape = train_arrays["image"].shape[1:]
    num_train = len(train_arrays["image"])
    steps_per_epoch = math.ceil(num_train / train_cfg["batch_size"])
    with strategy.scope():
        model = build_model(config, input_shape)
        model.compile(optimizer=_optimizer(train_cfg, steps_per_epoch),
                      jit_compile=bool(train_cfg["jit"]))
        model.optimizer.build(model.trainable_variables)  # so checkpoints can load into it
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
        *model.default_callbacks(),
        nan_stop,
        checkpoint,
        keras.callbacks.CSVLogger(os.path.join(run_dir, "metrics.csv"), append=resume),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        *(callbacks or []),
    ]
    train_data = _data(config, train_arrays, initial_epoch)
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
    evaluation = {**evaluate_model(model, config, test_split, log=log), "replicas": replicas}
    with open(os.path.join(run_dir, "evaluation.json"), "w") as f:
        json.dump(evaluation, f, indent=2)
    if plots:
        write_plots(model, config, os.path.join(run_dir, "plots"), log=log)
    return RunResult(run_dir, history, evaluation, stopped)


def evaluate_model(model, config: dict, split: str, log=print, num_samples: int | None = None,
                   num_examples: int | None = None) -> dict:
    """Keras metrics on ``split`` plus the K-sample importance-weighted log-likelihood."""
    train_cfg = config["train"]
    arrays = _arrays(config, split)
    x = arrays["image"]
    for variable in seed_states(model):  # the same noise for every evaluation of a model
        variable.assign([train_cfg["seed"], 0])
    metrics = model.evaluate(x, batch_size=train_cfg["batch_size"], verbose=0, return_dict=True)
    k = num_samples or train_cfg["eval_samples"]
    n = min(len(x), num_examples or train_cfg["eval_examples"])
    bound = model.log_likelihood(x[:n], num_samples=k, seed=train_cfg["seed"])
    result = {
        "split": split,
        "examples": int(len(x)),
        **{k_: float(v) for k_, v in metrics.items()},
        f"iwae_log_likelihood_k{k}": float(np.mean(bound.log_likelihood)),
        f"iwae_examples": int(n),
        "training_binarization": config["data"].get("binarize"),
        "evaluation_binarization": "static (one seeded draw)"
        if config["data"].get("binarize") in ("dynamic", "static") else
        config["data"].get("binarize"),
    }
    log(f"{split}: " + ", ".join(f"{k_}={v:.3f}" if isinstance(v, float) else f"{k_}={v}"
                                 for k_, v in result.items()))
    return result


def write_plots(model, config: dict, out_dir: str, log=print) -> list:
    """PNG pictures a person would look at: prior samples and test reconstructions."""
    try:
        from zoo import plots
    except ImportError as err:  # matplotlib missing
        log(f"No pictures: {err}")
        return []
    _, test_split = _splits(config)
    x = _arrays(config, test_split)["image"][:16]
    os.makedirs(out_dir, exist_ok=True)
    written = [
        plots.image_grid(np.asarray(model.sample(16, seed=config["train"]["seed"])),
                         os.path.join(out_dir, "samples.png"), title="Samples from the prior"),
        plots.image_rows([x, np.asarray(model.reconstruct(x))], ["data", "reconstruction"],
                         os.path.join(out_dir, "reconstructions.png")),
    ]
    log("Pictures: " + ", ".join(written))
    return written


def load_run(run_dir: str, which: str = "best"):
    """The config and the ``best`` or ``last`` model of a finished run."""
    path = os.path.join(run_dir, f"{which}.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; is {run_dir!r} a training run?")
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    import zoo  # noqa: F401  (registers the model classes)
    return config, keras.saving.load_model(path)


def read_metrics(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")

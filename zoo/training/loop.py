"""The run loop: build the model from its registry entry, fit with checkpoints, evaluate, draw."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading

import keras
import numpy as np
import tensorflow as tf

from zoo.contract import EvalSettings
from zoo.registry import model_entry
from zoo.training import data as run_data
from zoo.training.checkpoint import (STATE, EpochCheckpoint, atomic_save, atomic_write_json,
                                     read_state, restore)
from zoo.training.config import ConfigError, model_parameters, resume_config


@dataclasses.dataclass
class RunResult:
    run_dir: str
    history: dict
    evaluation: dict
    stopped: str | None  # None, "nan" or "interrupted"
    model: object = None  # the model evaluated (the last good weights after a NaN stop)


def optimizer_for(train: dict, steps_per_epoch: int):
    lr = float(train["learning_rate"])
    if train["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, train["epochs"] * steps_per_epoch)
    elif train["schedule"] == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(
            lr, train["decay_epochs"] * steps_per_epoch, train["decay_rate"])
    elif train["schedule"] == "piecewise":
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            [e * steps_per_epoch - 1 for e in train["schedule_epochs"]],  # boundary inclusive
            [float(v) for v in train["schedule_values"]])
    options = dict(train.get("optimizer_options") or {})
    return {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
            "sgd": keras.optimizers.SGD}[train["optimizer"]](learning_rate=lr, **options)


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


def build_model(config: dict, arrays: dict):
    """The model of a config, its shapes taken from the training arrays."""
    cls = model_entry(config["model_name"]).load()
    kwargs = {**dict(config["model"]), **cls.data_kwargs(arrays)}
    if "seed" in model_parameters(cls):
        kwargs.setdefault("seed", config["train"]["seed"])
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model settings for {config['model_name']!r} are invalid: "
                          f"{err}") from None


class ImageSummaries(keras.callbacks.Callback):
    """Writes the model's ``tensorboard_images`` (samples, reconstructions...) to TensorBoard
    at every epoch end, from a fixed seeded choice of evaluation examples."""

    def __init__(self, log_dir: str, x, settings):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.x = x
        self.settings = settings

    def on_epoch_end(self, epoch, logs=None):
        images = self.model.tensorboard_images(self.x, self.settings)
        if not images:
            return
        with self.writer.as_default(step=epoch):
            for name, batch in images.items():
                tf.summary.image(name, batch, max_outputs=len(batch))
        self.writer.flush()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and names the epoch and step."""

    def __init__(self, checkpoint: EpochCheckpoint):
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
                f"step {step}); training stopped. Check the data for extreme or invalid values "
                f"and try a lower train.learning_rate (--resume --learning-rate X continues "
                f"from the last good checkpoint).")
            self.checkpoint.stopped_on_nan = True
            self.model.stop_training = True


class InterruptAtBatchEnd(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) during ``fit`` stops training at the end of the running batch.

    Python's own handler raises KeyboardInterrupt wherever the main thread happens to be, and
    when that is a finalizer (TensorFlow frees iterators and tensors in ``__del__`` all the
    time) the exception is printed as "ignored" and training runs on: a real Ctrl-C was lost
    that way under load. Used as a context manager around ``fit`` (main thread only), this
    records the signal and raises KeyboardInterrupt from the next batch's end instead; a second
    Ctrl-C raises at once."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self._installed = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            # None: the handler before was not set from Python; Python's own is the fallback.
            signal.signal(signal.SIGINT, self._previous if self._previous is not None
                          else signal.default_int_handler)
            self._installed, self._previous = False, None
        return False

    def _check(self):
        if self.requested:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_epoch_begin(self, epoch, logs=None):  # a Ctrl-C during validation
        self._check()


def _validate(model, arrays: dict, split: str) -> None:
    try:
        model.validate_data(arrays)
    except ValueError as err:
        raise ConfigError(f"{split} split: {err}") from None


def _verbose() -> int:
    return 1 if sys.stdout.isatty() else 2


def _prepare_run_dir(run_dir: str) -> None:
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"output directory {run_dir!r} exists and is not a directory")


def train(config: dict, run_dir: str, resume: bool = False, plots: bool = True,
          log=print, callbacks: list | None = None, overrides: dict | None = None
          ) -> RunResult:
    """Train (or resume) a run described by a resolved ``config`` into ``run_dir``.

    ``callbacks`` are added to the run's own (annealing, NaN stop, checkpoints, TensorBoard).
    Ctrl-C keeps the checkpoint of the last finished epoch; ``resume=True`` restarts the
    interrupted epoch from it, so the resumed run equals an uninterrupted one. On resume,
    ``config`` is what the command line resolves to and ``overrides`` the keys the user set
    there: ``train.epochs``, ``train.learning_rate`` and the evaluation sizes may change, any
    other difference is refused (``ConfigError``)."""
    _prepare_run_dir(run_dir)
    config_path = os.path.join(run_dir, "config.json")
    state = read_state(run_dir) if os.path.isdir(run_dir) else None
    if resume:
        if state is None:
            raise ConfigError(f"--resume: no checkpoint in {run_dir!r} (expected "
                              f"{os.path.join(run_dir, 'checkpoints', 'state.json')}); start "
                              f"the run without --resume first")
        from zoo.training.runs import read_config

        saved = read_config(run_dir)
        config, changes = resume_config(saved, config, overrides or {})
        if state["epoch"] >= config["train"]["epochs"] and not _filter_phase_left(config,
                                                                                   state):
            raise ConfigError(f"--resume: the run already trained {state['epoch']} epochs "
                              f"(train.epochs={config['train']['epochs']}); pass --epochs N "
                              f"with N > {state['epoch']} to train more")
        if changes:
            config.setdefault("resumes", []).append({"at_epoch": state["epoch"],
                                                     "changes": changes})
            log("Resuming with " + ", ".join(f"{k}: {v['from']} -> {v['to']}"
                                              for k, v in changes.items()))
    elif state is not None:
        raise ConfigError(f"{run_dir!r} already holds a run; pass --resume to continue it or "
                          f"choose another --output-dir")
    keras.utils.set_random_seed(config["train"]["seed"])
    previous_policy = keras.mixed_precision.global_policy()
    if config["train"]["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _run(config, run_dir, state if resume else None, plots, log, callbacks,
                    config_path)
    finally:  # the policy is global: leave it as the caller had it
        keras.mixed_precision.set_global_policy(previous_policy)


def _filter_phase_left(config: dict, state: dict) -> bool:
    """Whether the run's filter-only phase (``train.filter_epochs``) has still to run."""
    epochs = config["train"]["filter_epochs"]
    return epochs > 0 and state.get("filter_epochs_done", 0) != epochs


def _filter_phase(model, x, config, run_dir, state, log, recompile):
    """``train.filter_epochs`` epochs of ``fit_filter`` after the last epoch of ``fit``: the
    filter network learns alone, everything else frozen. It always starts from the end of
    the last ``fit`` epoch (the checkpoint), so an interrupted phase reruns whole on
    ``--resume`` and ends as an uninterrupted one. Returns its loss per epoch, or None when
    Ctrl-C stopped it."""
    train_cfg = config["train"]
    epochs = train_cfg["filter_epochs"]
    log(f"Training the filter network alone for {epochs} epochs (fit_filter, target "
        f"{model.filter_target!r}, learning rate {train_cfg['filter_learning_rate']}).")
    keras.utils.set_random_seed(train_cfg["seed"] + 1)
    try:
        with InterruptAtBatchEnd() as interrupt:
            history = model.fit_filter(x, epochs=epochs, batch_size=train_cfg["batch_size"],
                                       learning_rate=train_cfg["filter_learning_rate"],
                                       verbose=_verbose(), callbacks=[interrupt])
            if interrupt.requested:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        log(f"\nInterrupted during the filter-only phase: {os.path.join(run_dir, 'last.keras')}"
            f" and the checkpoint hold the model after the last epoch of fit; `--resume` "
            f"reruns the {epochs} filter epochs from there.")
        return None
    recompile()  # fit_filter leaves the model uncompiled (its optimizer saw the filter only)
    atomic_save(os.path.join(run_dir, "last.keras"), model.save)
    atomic_write_json(os.path.join(run_dir, "checkpoints", STATE),
                      {**state, "filter_epochs_done": epochs})
    return [float(v) for v in history.history["loss"]]


def _run(config, run_dir, state, plots, log, callbacks, config_path) -> RunResult:
    from zoo.training.evaluation import evaluate_model
    from zoo.training.pictures import write_plots

    train_cfg = config["train"]
    strategy = strategy_for(train_cfg["strategy"])
    replicas = strategy.num_replicas_in_sync
    if train_cfg["strategy"] != "default":
        log(f"Strategy: {type(strategy).__name__} with {replicas} replicas")
    cls = model_entry(config["model_name"]).load()
    valid_split, test_split = run_data.split_names(config)
    train_arrays = run_data.load_split(config, "train", for_training=True)
    with strategy.scope():
        model = build_model(config, train_arrays)
    if train_cfg["filter_epochs"]:  # the config check made sure the class has fit_filter
        try:
            model.check_filter_network()
        except ValueError as err:
            raise ConfigError(f"train.filter_epochs: {err}") from None
    _validate(model, train_arrays, "train")
    x, y = cls.fit_inputs(train_arrays)
    num_train = len(tf.nest.flatten(x)[0])
    steps_per_epoch = math.ceil(num_train / train_cfg["batch_size"])
    valid_data = None
    if valid_split:
        valid_arrays = run_data.load_split(config, valid_split)
        _validate(model, valid_arrays, valid_split)
        valid_data = run_data.eval_stream(cls, *cls.fit_inputs(valid_arrays),
                                          train_cfg["batch_size"])
    # Inputs are good: only now does the run directory appear.
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(config_path, config)

    def compile_model():
        model.compile(optimizer=optimizer_for(train_cfg, steps_per_epoch),
                      jit_compile=bool(train_cfg["jit"]), **model.compile_kwargs())
        model.optimizer.build(model.trainable_variables)  # so checkpoints can load into it

    with strategy.scope():
        if not model.built:  # models that learn their shapes from the first batch
            first = next(iter(run_data.eval_stream(cls, x, y, 1)))
            model(first[0] if y is not None else first)
        compile_model()
        if train_cfg["strategy"] == "multiworker":
            model.train_step = _rank1_logs(model.train_step)
            model.test_step = _rank1_logs(model.test_step)
    monitor = "val_loss" if valid_data is not None else "loss"
    checkpoint = EpochCheckpoint(run_dir, monitor)
    initial_epoch = 0
    if state is not None:
        restore(model, run_dir, state)
        if train_cfg["schedule"] == "constant":  # a new rate given on resume replaces the old
            model.optimizer.learning_rate.assign(float(train_cfg["learning_rate"]))
        initial_epoch = state["epoch"]
        checkpoint.best = state["best"]
        log(f"Resuming {run_dir} at epoch {initial_epoch + 1} (optimizer step {state['step']})")
    nan_stop = StopOnNaN(checkpoint)
    picked, _ = run_data.subset(valid_arrays if valid_split else train_arrays, config, 8,
                                train_cfg["seed"])
    images = ImageSummaries(os.path.join(run_dir, "tensorboard", "images"),
                            cls.fit_inputs(picked)[0],
                            EvalSettings(seed=train_cfg["seed"]))
    callbacks = [
        *model.default_callbacks(),
        nan_stop,
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        images,
        *(callbacks or []),
    ]
    train_data = run_data.train_stream(cls, x, y, config, initial_epoch)
    stopped, history = None, {}
    try:
        with InterruptAtBatchEnd() as interrupt:
            history = model.fit(train_data, validation_data=valid_data,
                                epochs=train_cfg["epochs"], initial_epoch=initial_epoch,
                                steps_per_epoch=steps_per_epoch,
                                callbacks=[*callbacks, interrupt],
                                verbose=_verbose(), shuffle=False).history
        if interrupt.requested:  # Ctrl-C in the last epoch's validation: training is done
            log(f"\nInterrupted after the last epoch, before the evaluation: the trained "
                f"model is {os.path.join(run_dir, 'last.keras')}; `zoo-evaluate {run_dir} "
                f"--which last` evaluates it.")
            return RunResult(run_dir, history, {}, "interrupted", model)
    except KeyboardInterrupt:
        epoch = nan_stop.epoch
        log(f"\nInterrupted during epoch {epoch + 1}: the checkpoint of the last finished epoch "
            f"({epoch}) is kept in {os.path.join(run_dir, 'checkpoints')}; `--resume` restarts "
            f"epoch {epoch + 1} from it and continues exactly as an uninterrupted run.")
        return RunResult(run_dir, {}, {}, "interrupted", model)
    if nan_stop.message:
        log("Stopped: " + nan_stop.message)
        stopped = "nan"
        good = read_state(run_dir)
        if good is None:
            log("No epoch finished before the loss became non-finite: nothing to evaluate, "
                "draw or export.")
            evaluation = {"stopped": "nan", "message": nan_stop.message}
            atomic_write_json(os.path.join(run_dir, "evaluation.json"), evaluation)
            return RunResult(run_dir, history, evaluation, stopped, None)
        restore(model, run_dir, good)
        log(f"Evaluating the last good checkpoint (end of epoch {good['epoch']}).")
    elif train_cfg["filter_epochs"]:
        done = read_state(run_dir)
        if _filter_phase_left(config, done):
            with strategy.scope():
                losses = _filter_phase(model, x, config, run_dir, done, log, compile_model)
            if losses is None:
                return RunResult(run_dir, history, {}, "interrupted", model)
            history = {**history, "filter_loss": losses}
    test_arrays = run_data.load_split(config, test_split)  # loaded once for both uses
    evaluation = {**evaluate_model(model, config, test_split, log=log, arrays=test_arrays),
                  "replicas": replicas}
    if stopped:
        evaluation["stopped"] = stopped
    atomic_write_json(os.path.join(run_dir, "evaluation.json"), evaluation)
    if plots:
        write_plots(model, config, os.path.join(run_dir, "plots"), log=log, arrays=test_arrays)
    return RunResult(run_dir, history, evaluation, stopped, model)

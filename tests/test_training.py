"""tools/train.py and tools/evaluate.py: smoke runs, exact resume, mirrored, bad input."""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from zoo import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from zoo.cli import evaluate as evaluate_cli  # noqa: E402
from zoo.cli import train as train_cli  # noqa: E402

TINY = {
    "vae": {"hidden_units": [32], "latent_dim": 4},
    "dlgm": {"hidden_units": [32], "latent_dims": [4, 3]},
    "categorical_vae": {"hidden_units": [32], "num_variables": 4, "num_classes": 3},
}


def _config(model, epochs=1, **train):
    return training.resolve_config(
        model, "digits", {"model": TINY[model], "train": {"epochs": epochs, "batch_size": 64,
                                                          "eval_samples": 5, **train}})


def _sets(config):
    return sum([["--set", f"{section}.{k}={json.dumps(v)}"] for section, values in config.items()
                for k, v in values.items()], [])


@pytest.mark.parametrize("model", sorted(training.MODELS))
def test_every_model_trains_evaluates_and_plots_from_the_cli(model, tmp_path):
    smoke = training.MODELS[model].smoke
    assert smoke, f"registry entry {model!r} needs smoke={{dataset, config, pictures}}"
    dataset, config, pictures = smoke["dataset"], smoke["config"], smoke["pictures"]
    run_dir = str(tmp_path / "run")
    code = train_cli.main([model, "--dataset", dataset, "--epochs", "1", "--batch-size", "32",
                           "--set", "train.eval_samples=5", "--set", "train.eval_examples=8",
                           *_sets(config), "--output-dir", run_dir])
    assert code == 0
    for name in ["config.json", "best.keras", "last.keras", "metrics.csv", "evaluation.json",
                 "checkpoints/state.json", *[f"plots/{p}" for p in pictures]]:
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    from zoo.contract import ZooModel

    cls = training.MODELS[model].load()
    if cls.tensorboard_images is not ZooModel.tensorboard_images:  # pictures in TensorBoard
        import glob

        import tensorflow as tf

        tags = {v.tag for path in glob.glob(os.path.join(run_dir, "tensorboard", "images", "*"))
                for event in tf.compat.v1.train.summary_iterator(path)
                for v in event.summary.value}
        assert {"samples", "reconstructions"} <= tags, tags
    result = json.load(open(os.path.join(run_dir, "evaluation.json")))
    assert "evaluation_examples" in result or not any(
        k.startswith(("iwae", "log_likelihood", "rmse")) for k in result)
    if "rmse" in result:  # a supervised filter: rmse on the evaluation subset, loss (MSE)
        # on the whole split
        assert result["rmse"] == pytest.approx(np.sqrt(result["loss"]), rel=0.1)
    elif "elbo" in result and "reconstruction" in result:
        np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"],
                                   rtol=1e-4)
        # The importance-weighted bound (K=5) is at least the ELBO, up to Monte Carlo noise.
        assert result["iwae_log_likelihood_k5"] > result["elbo"] - 0.05 * abs(result["elbo"])
    elif "log_likelihood" in result and "parameters" in result:
        # the Kalman filter: exact log-likelihood (8 sequences of 50 steps); loss = NLL/T
        assert result["nll_per_step"] == pytest.approx(-result["log_likelihood"] / 50, rel=1e-6)
        assert result["nll_per_step"] == pytest.approx(result["loss"], rel=0.1)
    # The resolved config reproduces the run.
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    for section, values in config.items():
        for key, value in values.items():
            assert saved[section][key] == value
    # tools/evaluate.py reloads the run and reports the same loss on the same split.
    out = str(tmp_path / "eval.json")
    assert evaluate_cli.main([run_dir, "--num-samples", "5", "--num-examples", "8",
                              "--output", out]) == 0
    np.testing.assert_allclose(json.load(open(out))["loss"], result["loss"], rtol=1e-5)


@pytest.mark.parametrize("model, dataset, sets", [
    ("vae", "digits", ["model.hidden_units=[32]"]),
    ("dmm", "chorales", ["data.limit=10", "model.rnn_units=16"]),
    ("kalman_filter", "lgssm", ["data.num_sequences=32"]),
    ("lstm_kf", "lgssm", ["data.num_sequences=32", "model.lstm_units=8"]),
])
def test_mixed_precision_and_jit_runs(model, dataset, sets, tmp_path):
    # --jit wherever the model supports it, but not for the DMM and the LSTM-KF here: their
    # XLA compilation doubled this test's CPU (about 25 s and 35 s), and their compiled losses
    # and gradients are compared with uncompiled ones in
    # tests/test_dkf_filtering.py::test_time_loop_gradient_compiles_under_xla and
    # tests/test_lstm_kalman_filter.py.
    jit = (["--jit"] if training.MODELS[model].load().supports_jit
           and model not in ("dmm", "lstm_kf") else [])
    args = [model, "--dataset", dataset, "--epochs", "1", "--no-plots", "--mixed-precision",
            *jit, "--set", "train.eval_samples=5", "--set", "train.eval_examples=4",
            *sum([["--set", s] for s in sets], []), "--output-dir", str(tmp_path / "run")]
    assert train_cli.main(args) == 0
    result = json.load(open(tmp_path / "run" / "evaluation.json"))
    assert all(np.isfinite(v) for v in result.values() if isinstance(v, float))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_export_flag_writes_verified_files(tmp_path):
    run_dir = str(tmp_path / "run")
    code = train_cli.main(["kalman_filter", "--dataset", "lgssm", "--epochs", "1",
                           "--set", "data.num_sequences=32", "--no-plots", "--export",
                           "--output-dir", run_dir])
    assert code == 0
    sidecar = json.load(open(os.path.join(run_dir, "export", "model_float32.tflite.json")))
    assert "filter_step" in sidecar["signatures"]
    assert not any(op.startswith("Flex") for op in sidecar["ops"])
    assert os.path.exists(os.path.join(run_dir, "export", "saved_model", "saved_model.pb"))


def _same_weights(dir_a, dir_b, name="last.keras"):
    import zoo

    zoo.load_all()  # register every zoo class for Keras, whatever ran before in this process
    a = keras.saving.load_model(os.path.join(dir_a, name))
    b = keras.saving.load_model(os.path.join(dir_b, name))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = training.train(_config("vae", epochs=3), str(tmp_path / "a"), plots=False)
    split = _config("vae", epochs=2)
    training.train(split, str(tmp_path / "b"), plots=False)
    with pytest.raises(training.ConfigError, match="--resume"):
        training.train(split, str(tmp_path / "b"), plots=False)
    # A finished run: --resume without more epochs says what to do.
    with pytest.raises(training.ConfigError, match="already trained 2 epochs"):
        training.train(split, str(tmp_path / "b"), resume=True, plots=False)
    # --epochs 3 on resume is honoured and recorded in the run's config.
    resumed = training.train(_config("vae", epochs=3), str(tmp_path / "b"), resume=True,
                             plots=False, overrides={"train.epochs": 3})
    _same_weights(str(tmp_path / "a"), str(tmp_path / "b"))
    assert resumed.evaluation["elbo"] == pytest.approx(straight.evaluation["elbo"], rel=1e-6)
    rows = training.read_metrics(str(tmp_path / "b"))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    saved = training.read_config(str(tmp_path / "b"))
    assert saved["train"]["epochs"] == 3
    assert saved["resumes"] == [{"at_epoch": 2, "changes": {"train.epochs": {"from": 2,
                                                                              "to": 3}}}]


def test_resume_refuses_changes_it_cannot_honour(tmp_path):
    run = str(tmp_path / "run")
    training.train(_config("vae", epochs=1), run, plots=False)
    for key, value, config in [
            ("model.latent_dim", 7, _config("vae", epochs=2)),
            ("train.batch_size", 8, _config("vae", epochs=2, batch_size=8))]:
        if key.startswith("model"):
            config["model"]["latent_dim"] = value
        with pytest.raises(training.ConfigError, match=f"cannot change {key}"):
            training.train(config, run, resume=True, plots=False,
                           overrides={key: value, "train.epochs": 2})
    with pytest.raises(training.ConfigError, match="'vae' run, not 'dlgm'"):
        training.train(_config("dlgm", epochs=2), run, resume=True, plots=False)
    # A new learning rate is accepted and used.
    result = training.train(_config("vae", epochs=2, learning_rate=1e-4), run, resume=True,
                            plots=False, overrides={"train.epochs": 2,
                                                    "train.learning_rate": 1e-4})
    assert result.stopped is None
    assert float(result.model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)


class _InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_then_resume_equals_the_uninterrupted_run(tmp_path):
    training.train(_config("vae", epochs=2), str(tmp_path / "a"), plots=False)
    run_dir = str(tmp_path / "b")
    result = training.train(_config("vae", epochs=2), run_dir, plots=False,
                            callbacks=[_InterruptAt(1, 3)])
    assert result.stopped == "interrupted"
    state = json.load(open(os.path.join(run_dir, "checkpoints", "state.json")))
    assert state["epoch"] == 1 and state["step"] == 23  # the end of epoch 1: 23 batches
    resumed = training.train(_config("vae", epochs=2), run_dir, resume=True, plots=False)
    assert resumed.stopped is None
    _same_weights(str(tmp_path / "a"), run_dir)


TINY_CLI = ["vae", "--dataset", "digits", "--batch-size", "16", "--set",
            "model.hidden_units=[32]", "--set", "model.latent_dim=4", "--set",
            "train.eval_samples=2", "--set", "train.eval_examples=4", "--no-plots"]


def _cli(*args, **popen):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "train.py"), *args],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, **popen)


def test_a_real_sigint_then_resume_equals_the_uninterrupted_run(tmp_path):
    import signal

    epochs = "5"
    proc = _cli(*TINY_CLI, "--epochs", epochs, "--output-dir", str(tmp_path / "b"))
    state = tmp_path / "b" / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out[-2000:]
    assert "Interrupted during epoch" in out and "--resume" in out
    stopped_at = json.load(open(state))["epoch"]
    assert 1 <= stopped_at < 5
    resume = _cli(*TINY_CLI, "--output-dir", str(tmp_path / "b"), "--resume")
    out = resume.communicate(timeout=600)[0]
    assert resume.returncode == 0, out[-2000:]
    straight = _cli(*TINY_CLI, "--epochs", epochs, "--output-dir", str(tmp_path / "a"))
    out = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, out[-2000:]
    _same_weights(str(tmp_path / "a"), str(tmp_path / "b"))


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even `except Exception`."""


def test_a_kill_during_any_file_write_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from zoo.training import checkpoint

    reference = str(tmp_path / "reference")
    training.train(_config("vae", epochs=2), reference, plots=False)
    real_replace = os.replace
    # The resumed run writes config.json, then at the end of epoch 2 metrics.csv, last.keras,
    # best.keras, the weights and state.json, then evaluation.json, each by a rename: kill
    # the run just before each of them in turn.
    import shutil

    base = str(tmp_path / "base")
    training.train(_config("vae", epochs=1), base, plots=False)
    exact = []
    for kill_at in range(7):
        run_dir = str(tmp_path / f"run{kill_at}")
        shutil.copytree(base, run_dir)
        calls = []

        def replace(src, dst, kill_at=kill_at):
            calls.append(os.path.basename(dst))
            if len(calls) == kill_at + 1:
                open(src, "ab").close()  # the temporary file is left half-written
                raise _Killed(os.path.basename(dst))
            return real_replace(src, dst)

        monkeypatch.setattr(checkpoint.os, "replace", replace)
        with pytest.raises(_Killed):
            training.train(_config("vae", epochs=2), run_dir, resume=True, plots=False,
                           overrides={"train.epochs": 2})
        monkeypatch.setattr(checkpoint.os, "replace", real_replace)
        # Whatever was being written, the committed checkpoint is consistent and loads.
        state = training.checkpoint.read_state(run_dir)
        assert state["epoch"] in (1, 2)
        for name in ("best.keras", "last.keras"):
            keras.saving.load_model(os.path.join(run_dir, name))
        json.load(open(os.path.join(run_dir, "config.json")))
        training.read_metrics(run_dir)
        if state["epoch"] == 1:  # killed before the commit: resume redoes epoch 2 exactly
            # (from the same committed checkpoint whichever file the kill hit, so checked
            # at the first kill and at the last before the commit, state.json's)
            if calls[-1] in ("config.json", "state.json"):
                exact.append(calls[-1])
                training.train(_config("vae", epochs=2), run_dir, resume=True, plots=False,
                               overrides={"train.epochs": 2})
                _same_weights(reference, run_dir)
        else:
            _same_weights(reference, run_dir, "last.keras")
    assert exact == ["config.json", "state.json"]


def test_nan_loss_stops_and_evaluates_the_last_good_checkpoint(tmp_path):
    messages = []
    run_dir = str(tmp_path / "run")
    # One good epoch at a normal rate, then a rate that diverges.
    training.train(_config("vae", epochs=1), run_dir, plots=False)
    result = training.train(_config("vae", epochs=3, learning_rate=1e12), run_dir, plots=False,
                            resume=True, log=messages.append,
                            overrides={"train.epochs": 3, "train.learning_rate": 1e12})
    assert result.stopped == "nan"
    stop = [m for m in messages if m.startswith("Stopped")][0]
    assert "optimizer step" in stop and "learning_rate" in stop and "data" in stop
    evaluation = json.load(open(os.path.join(run_dir, "evaluation.json")))
    assert evaluation["stopped"] == "nan"
    assert np.isfinite(evaluation["elbo"]) and np.isfinite(evaluation["iwae_log_likelihood_k5"])
    weights = keras.saving.load_model(os.path.join(run_dir, "last.keras")).get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)


def test_nan_in_the_first_epoch_evaluates_and_exports_nothing(tmp_path):
    run_dir = str(tmp_path / "run")
    code = train_cli.main([*TINY_CLI, "--epochs", "2", "--learning-rate", "1e30", "--set",
                           "train.optimizer=sgd", "--export", "float32",
                           "--output-dir", run_dir])
    assert code == 1
    assert json.load(open(os.path.join(run_dir, "evaluation.json")))["stopped"] == "nan"
    assert not os.path.exists(os.path.join(run_dir, "export"))
    assert not os.path.exists(os.path.join(run_dir, "best.keras"))


def test_mirrored_strategy_on_two_logical_cpus_matches_single_device(tmp_path):
    losses = {}
    for strategy in ["default", "mirrored"]:
        run_dir = str(tmp_path / strategy)
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "vae", "--dataset",
               "digits", "--epochs", "2", "--batch-size", "64", "--set",
               "model.hidden_units=[32]", "--set", "model.latent_dim=4", "--set",
               "train.eval_samples=5", "--no-plots", "--cpu-devices", "2", "--strategy",
               strategy, "--output-dir", run_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        evaluation = json.load(open(os.path.join(run_dir, "evaluation.json")))
        assert evaluation["replicas"] == (2 if strategy == "mirrored" else 1)
        losses[strategy] = float(training.read_metrics(run_dir)[-1]["loss"])
    # Same data, same initial weights; only the replicas' posterior noise differs.
    assert losses["mirrored"] == pytest.approx(losses["default"], rel=0.01)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_workers_over_localhost_agree(tmp_path):
    """The README's MultiWorkerMirroredStrategy example: two workers on this machine."""
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "vae", "--dataset",
               "digits", "--epochs", "1", "--batch-size", "64", "--set",
               "model.hidden_units=[32]", "--set", "model.latent_dim=4", "--set",
               "train.eval_samples=5", "--no-plots", "--strategy", "multiworker",
               "--output-dir", str(tmp_path / f"w{index}")]
        procs.append(subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(tf_config)}))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    results = [json.load(open(tmp_path / f"w{i}" / "evaluation.json")) for i in range(2)]
    assert results[0]["replicas"] == results[1]["replicas"] == 2
    assert results[0]["elbo"] == pytest.approx(results[1]["elbo"], rel=1e-6)


def test_bad_flags_give_the_promised_errors(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["gan"])
    err = capsys.readouterr().err
    assert "unknown model 'gan'; valid: " in err and "categorical_vae, " in err and "vae" in err
    with pytest.raises(SystemExit):
        train_cli.main(["vae", "--dataset", "cifar10"])
    assert "valid: binarized_mnist, digits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["vae", "--set", "model.latent_size=3"])
    err = capsys.readouterr().err
    assert "model.latent_size" in err and "latent_dim" in err
    with pytest.raises(SystemExit):
        train_cli.main(["vae", "--set", "train.epoch=3"])
    assert "train.epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["vae", "--set", "optim.lr=3"])
    assert "unknown config section 'optim'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["vae", "--schedule", "cyclic"])
    with pytest.raises(SystemExit):
        train_cli.main(["particle_filter", "--jit"])
    err = capsys.readouterr().err
    assert "train.jit is not supported for ParticleFilter" in err and "searchsorted" in err
    with pytest.raises(SystemExit):
        train_cli.main(["vae", "--resume"])
    assert "--output-dir" in capsys.readouterr().err


def test_help_lists_models_and_datasets(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    out = capsys.readouterr().out
    for name in [*training.MODELS, "mnist5k", "digits", "chorales", "healing_mnist"]:
        assert name in out


def test_offline_download_fails_fast_naming_alternatives(tmp_path):
    start = time.perf_counter()
    with pytest.raises(Exception, match="mnist5k"):
        training.train(training.resolve_config("vae", "fashion_mnist", {"train": {"epochs": 1}}),
                       str(tmp_path / "run"), plots=False)
    assert time.perf_counter() - start < 30


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"latent_dim": 7}, "train": {"epochs": 2}}))
    config = training.resolve_config("vae", None, training.read_config_file(str(path)),
                                     {"train.epochs": 5, "model.covariance": "lowrank"})
    assert config["model"]["latent_dim"] == 7 and config["model"]["covariance"] == "lowrank"
    assert config["train"]["epochs"] == 5 and config["data"]["name"] == "mnist5k"
    with pytest.raises(training.ConfigError, match="does not exist"):
        training.read_config_file(str(tmp_path / "missing.yaml"))
    assert training.parse_value("[1, 2]") == [1, 2] and training.parse_value("relu") == "relu"


@pytest.mark.parametrize("sets, message", [
    (["train.mixed_precision=maybe"], "train.mixed_precision must be true or false"),
    (["train.learning_rate=inf"], "train.learning_rate must be a finite number > 0"),
    (["train.epochs=true"], "train.epochs must be a positive integer"),
    (["train.decay_rate=-0.5"], "train.decay_rate must be a finite number > 0"),
    (["train.eval_examples=-1"], "train.eval_examples must be an integer >= 0"),
    (["train.bucket_by_length=-2"], "train.bucket_by_length must be an integer >= 0"),
    (["train.bucket_by_length=4"], "train.bucket_by_length is for sequence models; VAE's"),
    (["data.binarize=bogus"], "data.binarize must be one of"),
    (["data.colour=red"], "data.colour"),
    (["model.latent_dim=0"], "model settings for 'vae' are invalid"),
])
def test_bad_config_values_are_one_line_errors_that_leave_nothing(sets, message, tmp_path,
                                                                  capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([*TINY_CLI, *sum([["--set", s] for s in sets], []),
                        "--output-dir", str(run_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not run_dir.exists()  # nothing half-made


def test_bucket_by_length_gives_sequence_models_sortish_batches():
    """train.bucket_by_length reaches the DMM's training stream with the sequences' lengths
    (from the mask): the same examples, batches cut to fewer steps (103 sequences of 1-30
    steps, batches of 10, one epoch)."""
    from zoo import DeepMarkovModel
    from zoo.training.data import train_stream

    config = training.resolve_config("dmm", None, None, {"train.bucket_by_length": 11})
    assert config["train"]["bucket_by_length"] == 11
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 31, 103)
    mask = (np.arange(30)[None] < lengths[:, None]).astype("float32")
    x = {"observations": rng.normal(size=(103, 30, 2)).astype("float32") * mask[..., None],
         "mask": mask}
    widths = {}
    for pool in (0, 11):
        train = {"batch_size": 10, "seed": 0, "epochs": 1, "bucket_by_length": pool}
        batches = list(train_stream(DeepMarkovModel, x, None, {"train": train, "data": {}}, 0))
        assert sum(len(b["mask"]) for b in batches) == 103
        widths[pool] = [b["observations"].shape[1] for b in batches]
        assert all(int(b["mask"].numpy().sum(1).max()) == w
                   for b, w in zip(batches, widths[pool]))
    assert sum(widths[11]) < 0.75 * sum(widths[0]), widths


def test_yes_no_on_off_are_booleans():
    assert training.parse_value("off") is False and training.parse_value("on") is True
    assert training.parse_value("no") is False and training.parse_value("yes") is True
    config = training.resolve_config("vae", "digits", None, {
        "train.mixed_precision": training.parse_value("off"),
        "train.jit": training.parse_value("no")})
    assert config["train"]["mixed_precision"] is False and config["train"]["jit"] is False


@pytest.mark.parametrize("content, suffix, message", [
    ("model: [1, 2", ".yaml", "is not valid YAML"),
    ("{bad json", ".json", "is not valid JSON"),
    ("- 1\n- 2\n", ".yaml", "must hold a mapping"),
    ("model: 3\n", ".yaml", "config section 'model' must be a mapping"),
])
def test_bad_config_files_are_named(content, suffix, message, tmp_path, capsys):
    path = tmp_path / f"c{suffix}"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([*TINY_CLI, "--config", str(path), "--output-dir", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_directory_faults_are_named(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit):
        train_cli.main([*TINY_CLI, "--epochs", "1", "--output-dir", str(afile)])
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing to resume
        train_cli.main([*TINY_CLI, "--resume", "--output-dir", str(tmp_path / "none")])
    assert "no checkpoint" in capsys.readouterr().err
    run = tmp_path / "run"
    assert train_cli.main([*TINY_CLI, "--epochs", "1", "--output-dir", str(run)]) == 0
    (run / "checkpoints" / "state.json").write_text("{trunc")
    with pytest.raises(SystemExit):
        train_cli.main([*TINY_CLI, "--epochs", "2", "--resume", "--output-dir", str(run)])
    assert "unreadable" in capsys.readouterr().err
    (run / "checkpoints" / "state.json").write_text(json.dumps(
        {"epoch": 1, "weights": "epoch-0009.weights.h5", "best": 1.0, "seed_generators": []}))
    with pytest.raises(SystemExit):
        train_cli.main([*TINY_CLI, "--epochs", "2", "--resume", "--output-dir", str(run)])
    assert "is missing" in capsys.readouterr().err
    (run / "best.keras").write_bytes(b"not a zip file")
    with pytest.raises(SystemExit):
        evaluate_cli.main([str(run)])
    assert "not a loadable .keras model file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_cli.main([str(run), "--which", "last", "--num-samples", "0"])
    assert "num_samples must be >= 1" in capsys.readouterr().err


def test_multiworker_without_tf_config_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit):
        train_cli.main([*TINY_CLI, "--strategy", "multiworker", "--output-dir",
                        str(tmp_path / "r")])
    assert "TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_piecewise_schedule_and_optimizer_options_reach_the_optimizer():
    from zoo.training.loop import optimizer_for

    config = training.resolve_config("vae", "digits", {"train": {
        "schedule": "piecewise", "schedule_epochs": [1, 4], "schedule_values": [1e-3, 1e-4, 1e-5],
        "optimizer_options": {"epsilon": 1e-4, "beta_2": 0.99, "clipnorm": 5.0}}})
    optimizer = optimizer_for(config["train"], steps_per_epoch=10)
    schedule = optimizer._learning_rate  # the schedule object (learning_rate is its value)
    rates = [float(schedule(step)) for step in (0, 9, 10, 39, 40, 100)]
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)
    assert optimizer.epsilon == 1e-4 and optimizer.beta_2 == 0.99 and optimizer.clipnorm == 5.0
    for train, message in [
            ({"schedule": "piecewise", "schedule_epochs": [3, 2], "schedule_values": [1, 2, 3]},
             "increasing"),
            ({"schedule": "piecewise", "schedule_epochs": [2], "schedule_values": [1e-3]},
             "must hold 2 rates"),
            ({"schedule_epochs": [2], "schedule_values": [1e-3, 1e-4]}, "need train.schedule"),
            ({"optimizer_options": {"momentum": 0.9}}, "optimizer_options key for adam"),
            ({"optimizer": "sgd", "optimizer_options": {"momentum": -1}}, ">= 0")]:
        with pytest.raises(training.ConfigError, match=message):
            training.resolve_config("vae", "digits", {"train": train})


def test_ctrl_c_is_recorded_and_raised_at_the_next_batch_end():
    """A SIGINT during fit is not raised where it lands (a finalizer would swallow it) but
    at the next batch end or epoch start; a second one raises at once; the handler before
    fit comes back afterwards."""
    import signal

    from zoo.training.loop import InterruptAtBatchEnd

    before = signal.getsignal(signal.SIGINT)
    with InterruptAtBatchEnd() as stop:
        assert signal.getsignal(signal.SIGINT) == stop._handle
        stop.on_train_batch_end(0)  # nothing requested: no-op
        stop._handle(signal.SIGINT, None)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.on_train_batch_end(1)
        with pytest.raises(KeyboardInterrupt):
            stop.on_epoch_begin(2)
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) == before
    with InterruptAtBatchEnd() as stop:
        stop._previous = None  # as when the handler before was set outside Python
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, before)


def _dkf_config(filter_epochs):
    return training.resolve_config("dkf", "lgssm", {
        "model": {"latent_dim": 2, "rnn_units": 8, "emission_units": [8],
                  "transition_units": 8, "inference_units": [8]},
        "data": {"num_sequences": 24},
        "train": {"epochs": 1, "batch_size": 12, "eval_samples": 2, "eval_examples": 4,
                  "filter_epochs": filter_epochs, "filter_learning_rate": 0.01}})


def test_filter_epochs_train_the_filter_alone_and_resume_reruns_the_phase(tmp_path):
    """train.filter_epochs runs fit_filter after fit (the DKF recipe's second step): only
    the filter network's weights move (checked against the checkpoint of fit's last epoch),
    last.keras holds the refined model, and a finished run resumed with filter_epochs set
    runs the phase from that checkpoint and ends with the same weights as a straight run."""
    import zoo

    zoo.load_all()
    straight = training.train(_dkf_config(2), str(tmp_path / "a"), plots=False)
    assert len(straight.history["filter_loss"]) == 2
    assert all(np.isfinite(straight.history["filter_loss"]))
    state = json.load(open(tmp_path / "a" / "checkpoints" / "state.json"))
    assert state["filter_epochs_done"] == 2 and state["epoch"] == 1
    refined = keras.saving.load_model(str(tmp_path / "a" / "last.keras"))
    fitted = keras.saving.load_model(str(tmp_path / "a" / "best.keras"))  # end of fit
    filter_ids = {id(v) for layer in refined._filter_layers() for v in layer.weights}
    moved = [not np.allclose(a.numpy(), b.numpy())
             for a, b in zip(refined.weights, fitted.weights)]
    is_filter = [id(v) in filter_ids for v in refined.weights]
    assert any(m for m, f in zip(moved, is_filter) if f)
    assert not any(m for m, f in zip(moved, is_filter) if not f)
    # A finished run resumed with more filter epochs reruns the phase from the checkpoint
    # of fit's last epoch: its first two epochs repeat the straight run's.
    for filter_epochs in (2, 0):  # nothing left to run: refused, not re-evaluated
        with pytest.raises(training.ConfigError, match="already trained 1 epochs"):
            training.train(_dkf_config(filter_epochs), str(tmp_path / "a"), resume=True,
                           plots=False, overrides={"train.filter_epochs": filter_epochs})
    resumed = training.train(_dkf_config(3), str(tmp_path / "a"), resume=True, plots=False,
                             overrides={"train.filter_epochs": 3})
    np.testing.assert_allclose(resumed.history["filter_loss"][:2],
                               straight.history["filter_loss"], rtol=1e-5)
    assert json.load(open(tmp_path / "a" / "checkpoints" / "state.json"))[
        "filter_epochs_done"] == 3
    # A DKF that filters with its own (causal) inference network refuses it before training.
    causal = _dkf_config(1)
    causal["model"]["inference"] = "rnn"
    with pytest.raises(training.ConfigError, match="filter_epochs: fit_filter needs a separate"):
        training.train(causal, str(tmp_path / "c"), plots=False)
    assert not (tmp_path / "c").exists()
    # A model without a separate filter network refuses the key.
    with pytest.raises(training.ConfigError, match="train.filter_epochs is for models"):
        training.resolve_config("vae", "digits", {"train": {"filter_epochs": 1}})

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


SMOKE = {  # model: (dataset, config, pictures)
    "vae": ("digits", {"model": TINY["vae"]}, ["samples.png", "reconstructions.png"]),
    "dlgm": ("digits", {"model": TINY["dlgm"]}, ["samples.png", "reconstructions.png"]),
    "categorical_vae": ("digits", {"model": TINY["categorical_vae"]},
                        ["samples.png", "reconstructions.png"]),
    "dkf": ("healing_mnist", {"model": {"latent_dim": 4, "rnn_units": 16,
                                        "emission_units": [32]},
                              "data": {"num_sequences": 40}}, ["healing.png"]),
    "dmm": ("chorales", {"model": {"latent_dim": 4, "rnn_units": 16, "emission_units": [16],
                                   "transition_units": 16},
                         "data": {"limit": 15}}, ["piano_rolls.png"]),
    "kalman_filter": ("lgssm", {"data": {"num_sequences": 64}}, ["filter.png"]),
    "lstm_kf": ("lgssm", {"model": {"lstm_units": 8}, "data": {"num_sequences": 64}},
                ["filter.png"]),
}


def _sets(config):
    return sum([["--set", f"{section}.{k}={json.dumps(v)}"] for section, values in config.items()
                for k, v in values.items()], [])


@pytest.mark.parametrize("model", sorted(training.MODELS))
def test_every_model_trains_evaluates_and_plots_from_the_cli(model, tmp_path):
    assert set(SMOKE) == set(training.MODELS)  # every model of the zoo has a smoke run
    dataset, config, pictures = SMOKE[model]
    run_dir = str(tmp_path / "run")
    code = train_cli.main([model, "--dataset", dataset, "--epochs", "1", "--batch-size", "32",
                           "--set", "train.eval_samples=5", "--set", "train.eval_examples=8",
                           *_sets(config), "--output-dir", run_dir])
    assert code == 0
    for name in ["config.json", "best.keras", "last.keras", "metrics.csv", "evaluation.json",
                 "checkpoints/state.json", *[f"plots/{p}" for p in pictures]]:
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    result = json.load(open(os.path.join(run_dir, "evaluation.json")))
    if "rmse" in result:  # a supervised filter, beside the exact Kalman filter
        assert result["rmse"] == pytest.approx(np.sqrt(result["loss"]))
        assert 0 < result["exact_kalman_rmse"] < result["rmse"] * 1.5
    elif "elbo" in result:
        np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"],
                                   rtol=1e-4)
        # The importance-weighted bound (K=5) is at least the ELBO, up to Monte Carlo noise.
        assert result["iwae_log_likelihood_k5"] > result["elbo"] - 0.05 * abs(result["elbo"])
    else:  # the Kalman filter: exact log-likelihood (8 sequences of 50 steps); loss = NLL/T
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
    jit = ["--jit"] if training.MODELS[model].jit else []
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


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = training.train(_config("vae", epochs=3), str(tmp_path / "a"), plots=False)
    split = _config("vae", epochs=2)
    training.train(split, str(tmp_path / "b"), plots=False)
    with pytest.raises(FileExistsError, match="--resume"):
        training.train(split, str(tmp_path / "b"), plots=False)
    path = tmp_path / "b" / "config.json"
    config = json.load(open(path))
    config["train"]["epochs"] = 3
    json.dump(config, open(path, "w"))
    resumed = training.train(config, str(tmp_path / "b"), resume=True, plots=False)
    a = keras.saving.load_model(str(tmp_path / "a" / "last.keras"))
    b = keras.saving.load_model(str(tmp_path / "b" / "last.keras"))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert resumed.evaluation["elbo"] == pytest.approx(straight.evaluation["elbo"], rel=1e-6)
    rows = training.read_metrics(str(tmp_path / "b"))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


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


def test_ctrl_c_leaves_a_checkpoint_that_resume_picks_up(tmp_path):
    run_dir = str(tmp_path / "run")
    result = training.train(_config("vae", epochs=2), run_dir, plots=False,
                            callbacks=[_InterruptAt(1, 3)])
    assert result.stopped == "interrupted"
    state = json.load(open(os.path.join(run_dir, "checkpoints", "state.json")))
    assert state["partial"] and state["epoch"] == 1 and state["step"] == 23 + 3
    resumed = training.train(_config("vae", epochs=2), run_dir, resume=True, plots=False)
    assert resumed.stopped is None and np.isfinite(resumed.evaluation["elbo"])


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    messages = []
    run_dir = str(tmp_path / "run")
    result = training.train(_config("vae", epochs=3, learning_rate=1e12, optimizer="sgd"),
                            run_dir, plots=False, log=messages.append)
    assert result.stopped == "nan"
    stop = [m for m in messages if m.startswith("Stopped")][0]
    assert "optimizer step" in stop and "learning_rate" in stop
    last = os.path.join(run_dir, "last.keras")
    if os.path.exists(last):  # a finite epoch finished before the NaN
        weights = keras.saving.load_model(last).get_weights()
        assert all(np.all(np.isfinite(w)) for w in weights)


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
    assert "unknown model 'gan'; valid: categorical_vae, dkf, dlgm, dmm" in capsys.readouterr().err
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
        train_cli.main(["lstm_kf", "--jit"])
    assert "train.jit is not supported for 'lstm_kf'" in capsys.readouterr().err
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
        training.train(training.resolve_config("vae", "mnist", {"train": {"epochs": 1}}),
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

"""bench_boltzmann's learning-rate schedules: the per-epoch rates, and that a --curve run sets
them on both systems (read back from the models) and refuses to resume under another one."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_boltzmann as bench  # noqa: E402


def test_epoch_learning_rates():
    rate = bench.epoch_learning_rate
    assert [rate(0.05, e) for e in (1, 7)] == [0.05, 0.05]
    np.testing.assert_allclose([rate(0.05, e, "linear", 4) for e in range(1, 5)],
                               [0.05, 0.0375, 0.025, 0.0125], rtol=1e-12)
    np.testing.assert_allclose([rate(0.05, e, "inverse", decay_epochs=2) for e in (1, 3, 5)],
                               [0.05, 0.025, 0.05 / 3], rtol=1e-12)
    with pytest.raises(ValueError, match="unknown learning-rate decay 'cosine'"):
        rate(0.05, 1, "cosine")
    with pytest.raises(ValueError, match="budget of whole epochs >= epoch 5"):
        rate(0.05, 5, "linear", 4)
    with pytest.raises(ValueError, match="decay_epochs > 0"):
        rate(0.05, 1, "inverse")
    with pytest.raises(ValueError, match="epoch must be an integer >= 1"):
        rate(0.05, 0)


def test_curve_sets_the_schedule_on_both_systems_and_resume_checks_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ais_test_log_likelihood",  # AIS is tested elsewhere; fast
                        lambda *a: (-1.0, 0.1, 2.0, 0.1, 0.0))
    rng = np.random.default_rng(0)
    train = (rng.random((60, 12)) < 0.3).astype("float32")
    test = (rng.random((20, 12)) < 0.3).astype("float32")
    state = str(tmp_path / "state")
    args = dict(hidden=3, batch=20, lr=0.05, seed=0, chains=2, betas=2, state_dir=state)
    rows, _, rates = bench.learning_curve(train, test, checkpoints=[2], lr_decay="linear",
                                          **args)
    expected = [0.05, 0.025]
    assert [e for e, _, _ in rates] == [1, 2]
    np.testing.assert_allclose([r for _, r, _ in rates], expected, rtol=1e-6)  # float32 var
    np.testing.assert_allclose([r for _, _, r in rates], expected, rtol=1e-12)
    assert [(r[0], r[1]) for r in rows] == [(2, "zoo.RBM"), (2, "sklearn")]
    again, _, _ = bench.learning_curve(train, test, checkpoints=[2], lr_decay="linear", **args)
    assert again == rows  # resumed: the saved rows as they were (main unpacks six fields)
    with pytest.raises(ValueError, match="learning-rate schedule"):
        bench.learning_curve(train, test, checkpoints=[2], lr_decay="inverse",
                             lr_decay_epochs=2, **args)
    with pytest.raises(SystemExit):  # the command line refuses a schedule without --curve
        bench.main(["--lr-decay", "linear"])


def test_dbm_curve_recipe_flags_reach_the_model_and_resume(tmp_path):
    """--dbm-curve's rates (pretraining rate, then the joint epochs' linear decay), momentum
    and weight decay reach the saved model; a resumed run continues the saved rows and
    refuses other settings; each row's certified floor is below the exact log Z."""
    import keras

    rng = np.random.default_rng(0)
    train = (rng.random((60, 12)) < 0.3).astype("float32")
    test = (rng.random((20, 12)) < 0.3).astype("float32")
    args = dict(hidden_dims=(4, 3), batch=20, lr=0.01, pretrain_epochs=1, chains=2, betas=3,
                seed=0, pretrain_lr=0.05, momentum=0.9, weight_decay=2e-4)
    state = tmp_path / "linear"
    rows = bench.dbm_curve(train, test, checkpoints=[1, 2], lr_decay="linear",
                           state_dir=str(state), **args)
    model = keras.models.load_model(state / "dbm.keras")
    assert model.weight_decay == 2e-4 and model.optimizer.momentum == 0.9
    assert int(model.updates.numpy()) == (2 + 2) * 3  # 3 batches per epoch
    np.testing.assert_allclose(model.optimizer.learning_rate.numpy(), 0.01 / 2, rtol=1e-6)
    assert [r[0] for r in rows] == [1, 2]
    assert rows[-1][5] <= model.exact_log_partition() + 1e-9
    with pytest.raises(ValueError, match="use another --state-dir"):
        bench.dbm_curve(train, test, checkpoints=[1, 2], lr_decay="constant",
                        state_dir=str(state), **args)
    state = tmp_path / "constant"
    first = bench.dbm_curve(train, test, checkpoints=[1, 2], state_dir=str(state), **args)
    both = bench.dbm_curve(train, test, checkpoints=[1, 2, 3], state_dir=str(state), **args)
    assert both[:2] == first and [r[0] for r in both] == [1, 2, 3]
    model = keras.models.load_model(state / "dbm.keras")
    assert int(model.updates.numpy()) == (2 + 3) * 3
    np.testing.assert_allclose(model.optimizer.learning_rate.numpy(), 0.01, rtol=1e-6)


def test_dbm_curve_centered_reaches_the_model_and_keeps_its_state_apart(tmp_path):
    """--dbm-centered trains DBM(centered=True): the saved model is centered, its offsets
    moved off 0 toward the data's pixel means, and the model it describes (the standard
    parameters) is still a DBM whose floor is below its exact log Z; a centered state
    directory refuses an uncentered rerun, and an uncentered one keeps its old settings."""
    import keras

    rng = np.random.default_rng(1)
    train = (rng.random((60, 12)) < 0.3).astype("float32")
    test = (rng.random((20, 12)) < 0.3).astype("float32")
    args = dict(hidden_dims=(4, 3), batch=20, lr=0.01, pretrain_epochs=1, chains=2, betas=3,
                seed=0)
    state = tmp_path / "centered"
    rows = bench.dbm_curve(train, test, checkpoints=[2], state_dir=str(state), centered=True,
                           **args)
    model = keras.models.load_model(state / "dbm.keras")
    assert model.centered
    # 2 joint epochs x 3 batches at offset rate 0.01 from 0: (1 - 0.99^6) of the data's mean
    np.testing.assert_allclose(model.visible_offset.numpy(),
                               (1 - 0.99 ** 6) * train.mean(0), atol=2e-3)
    assert rows[-1][5] <= model.exact_log_partition() + 1e-9
    with pytest.raises(ValueError, match="use another --state-dir"):
        bench.dbm_curve(train, test, checkpoints=[2, 3], state_dir=str(state), **args)
    plain = tmp_path / "plain"
    bench.dbm_curve(train, test, checkpoints=[1], state_dir=str(plain), **args)
    assert "centered" not in json.loads((plain / "dbm_curve.json").read_text())["settings"]
    assert not keras.models.load_model(plain / "dbm.keras").centered
    with pytest.raises(SystemExit):
        bench.main(["--dbm-centered"])


def test_dbm_curve_reverse_ais_sandwiches_the_exact_log_partition(tmp_path, capsys):
    """--reverse-ais and --mixture-ais: each row carries reverse AIS from the persistent
    chains and forward AIS from a mixture of training examples; on a tiny DBM all three agree
    with the enumerated log Z; a resumed run pads older rows."""

    import keras

    rng = np.random.default_rng(1)
    train = (rng.random((60, 12)) < 0.3).astype("float32")
    test = (rng.random((20, 12)) < 0.3).astype("float32")
    args = dict(hidden_dims=(4, 3), batch=20, lr=0.05, pretrain_epochs=1, chains=100,
                betas=300, seed=0)
    state = tmp_path / "state"
    rows = bench.dbm_curve(train, test, checkpoints=[1], reverse_burn_in=50,
                           mixture_examples=30, state_dir=str(state), **args)
    log_z = keras.models.load_model(state / "dbm.keras").exact_log_partition()
    forward, reverse, mixture = rows[0][3], rows[0][6], rows[0][7]
    for estimate in (forward, reverse, mixture):
        assert abs(estimate - log_z) < 0.1, (forward, reverse, mixture, log_z)
    saved = json.loads((state / "dbm_curve.json").read_text())
    saved["rows"] = [r[:6] for r in saved["rows"]]  # a state file written before --reverse-ais
    (state / "dbm_curve.json").write_text(json.dumps(saved))
    both = bench.dbm_curve(train, test, checkpoints=[1, 2], state_dir=str(state), **args)
    assert both[0][6:] == (None, None) and both[1][6:] == (None, None)
    assert both[0][:6] == rows[0][:6]
    # a finished state directory rerun with --check-betas: nothing trained, the forward and
    # reverse checks run on the saved model, and both recover the exact log Z
    finished = keras.models.load_model(state / "dbm.keras")
    updates, log_z = int(finished.updates.numpy()), finished.exact_log_partition()
    capsys.readouterr()
    again = bench.dbm_curve(train, test, checkpoints=[1, 2], state_dir=str(state),
                            check_betas=400, reverse_burn_in=50, **args)
    assert again == both
    assert int(keras.models.load_model(state / "dbm.keras").updates.numpy()) == updates
    lines = capsys.readouterr().out.splitlines()
    checks = [line for line in lines if "AIS check DBM, 400 temperatures" in line]
    assert len(checks) == 2 and checks[1].lstrip().startswith("reverse AIS check")
    for line in checks:
        value = float(line.split("log Z ")[1].split(" ")[0])
        assert abs(value - log_z) < 0.1, (line, log_z)
    assert "within 3 errors" in checks[1]
    from zoo.layers.ais import AISResult

    def estimate(log_z, se):  # the two numbers the remark reads
        return AISResult(log_z, se, None, None, None, None)

    assert "not converged" in bench.sandwich_remark(estimate(1000, 0.1), estimate(1050, 0.9))
    assert "within 3 errors" in bench.sandwich_remark(estimate(1000, 0.1), estimate(1000.2, 0.1))
    assert "below forward" in bench.sandwich_remark(estimate(1000, 0.1), estimate(990, 0.1))


def test_dbm_curve_resumes_a_checkpoint_cut_short_in_its_evaluation(tmp_path, monkeypatch):
    """The model is saved after a checkpoint's training, before its AIS (minutes at real
    sizes): a run stopped during the evaluation resumes by evaluating that checkpoint without
    training it again, and its row equals an uninterrupted run's."""
    import keras

    from zoo.boltzmann.dbm import DBM

    rng = np.random.default_rng(2)
    train = (rng.random((60, 12)) < 0.3).astype("float32")
    test = (rng.random((20, 12)) < 0.3).astype("float32")
    args = dict(hidden_dims=(4, 3), batch=20, lr=0.01, pretrain_epochs=1, chains=2, betas=3,
                seed=0, lr_decay="linear")
    whole = bench.dbm_curve(train, test, checkpoints=[1, 2], state_dir=str(tmp_path / "whole"),
                            **args)
    real = DBM.log_partition

    def stopped(self, *a, **k):
        raise KeyboardInterrupt

    state = tmp_path / "cut"
    monkeypatch.setattr(DBM, "log_partition", stopped)
    with pytest.raises(KeyboardInterrupt):
        bench.dbm_curve(train, test, checkpoints=[1, 2], state_dir=str(state), **args)
    saved = json.loads((state / "dbm_curve.json").read_text())
    assert saved["done"] == 1 and saved["rows"] == []
    monkeypatch.setattr(DBM, "log_partition", real)
    rows = bench.dbm_curve(train, test, checkpoints=[1, 2], state_dir=str(state), **args)
    assert [r[0] for r in rows] == [1, 2]
    model = keras.models.load_model(state / "dbm.keras")
    assert int(model.updates.numpy()) == (2 + 2) * 3  # epoch 1 was not trained twice
    # The cut checkpoint's bound, SE, log Z and floor are the whole run's (the same weights,
    # seeded AIS); the next one trained on another shuffle after resuming, so close only.
    pick = (1, 2, 3, 5)
    np.testing.assert_allclose([rows[0][i] for i in pick], [whole[0][i] for i in pick],
                               rtol=1e-6)
    np.testing.assert_allclose([rows[1][i] for i in pick], [whole[1][i] for i in pick],
                               atol=0.02)

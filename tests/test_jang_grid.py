"""benchmarks/jang_grid.py: the validation search picks by the valid bound (never by test),
and a grid stopped after training but before its evaluations finishes on rerun."""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import jang_grid  # noqa: E402


def test_table_chooses_by_valid_not_test():
    rows = [{"rate": 1e-3, "anneal_every": 500, "anneal_rate": 1e-4, "valid_bound": -110.0,
             "test_bound": -105.0, "test_elbo": -115.0},
            {"rate": 3e-3, "anneal_every": 500, "anneal_rate": 1e-4, "valid_bound": -108.0,
             "test_bound": -109.0, "test_elbo": -117.0}]
    text = jang_grid.table(rows, 1000)
    lines = [ln for ln in text.splitlines() if ln.startswith("| 0.00")]
    assert lines[0].startswith("| 0.003 | 500 | 0.0001 | 108.00 | 109.00 | 117.00 | yes |")
    assert lines[1].endswith("|  |")
    assert "gives 109.00 nats on the test split" in text and "+7.50" in text
    with pytest.raises(KeyError, match="iwae_log_likelihood_k1000"):
        jang_grid.bound_key({"iwae_log_likelihood_k5": -1.0}, 1000)


def test_one_setting_trains_evaluates_and_resumes_a_cut_evaluation(tmp_path):
    """One tiny setting through tools/train.py and tools/evaluate.py; with its test
    evaluation and valid bound deleted (a run stopped after training), a rerun evaluates
    the saved model again without training and gets the same numbers."""
    argv = ["--out", str(tmp_path), "--rates", "3e-3", "--anneal-every", "500",
            "--anneal-rates", "1e-4", "--epochs", "1", "--samples", "2", "--valid-examples",
            "50", "--set", "train.eval_examples=50", "--set", "train.batch_size=5000"]
    jang_grid.main(argv)
    grid = json.loads((tmp_path / "grid.json").read_text())
    (row,) = grid["rows"]
    assert row["valid_examples"] == 50 and row["test_examples"] == 50
    assert -800 < row["test_bound"] < 0 and -800 < row["valid_bound"] < 0
    run = tmp_path / jang_grid.run_name(3e-3, 500, 1e-4)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["learning_rate"] == 3e-3 and config["model"]["anneal_every"] == 500
    weights = sorted(os.listdir(run / "checkpoints"))
    os.remove(run / "evaluation.json")
    os.remove(run / "valid.json")
    jang_grid.main(argv)
    again = json.loads((tmp_path / "grid.json").read_text())["rows"][0]
    assert sorted(os.listdir(run / "checkpoints")) == weights  # not trained again
    for key in ("valid_bound", "test_bound", "test_elbo"):
        assert again[key] == pytest.approx(row[key], abs=1e-9)

"""Smoke run of the benchmark harness (quick mode); the timings themselves are not asserted."""

import re

from benchmarks import run as bench_run

NUMBER = re.compile(r"^[\d,]+ / [\d,]+$")  # "median / p90" in microseconds


def _rows(table: str) -> list[list[str]]:
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_gaussian_quick_table_has_every_row_with_numbers():
    module = bench_run.load("gaussian")
    table = module.main(quick=True)  # ~10 s on 2 idle cores; timings are not asserted
    rows = {(r[1], r[2]): r for r in _rows(table)}
    assert set(rows) == set(module.SYSTEMS), sorted(rows)
    for (label, family), row in rows.items():
        assert row[0] == "16"
        times = row[3:6]
        if label == module.NO_EQUIVALENT:
            assert all(c == "no tfp.layers equivalent" for c in times)
        elif label.startswith("ours"):  # our layer must run in every mode
            assert all(NUMBER.match(c) for c in times), row
            assert all(re.match(r"^\d+\.\d\dx$", c) for c in row[6].split(" / ")), row
        else:  # a reference may fail in a mode, but then the cell says so
            assert all(NUMBER.match(c) or c.startswith("failed (") for c in times), row
    assert rows[("ours", "diag")][6] == "1.00x / 1.00x / 1.00x"


def test_readme_section_replacement_keeps_other_sections():
    text = "a\n<!-- bench:x -->\nold\n<!-- /bench:x -->\n<!-- bench:y -->\nkeep\n<!-- /bench:y -->\n"
    new = bench_run.replace_section(text, "x", "new\n")
    assert new == text.replace("old", "new")


def test_curve_state_restores_a_several_mask_made_mask_choice(tmp_path):
    """``--state-dir`` keeps the SeedGenerator state that ``model.save`` drops, so a resumed
    several-mask MADE draws the same per-batch masks as the uninterrupted run."""
    import keras
    import numpy as np

    from benchmarks import bench_autoregressive as bench
    from zoo.autoregressive import MADE

    model = MADE(input_shape=(6,), hidden_units=(8,), num_masks=4, seed=0)
    model.compile(optimizer="adam")
    x = np.random.RandomState(0).binomial(1, 0.5, (40, 6)).astype("float32")
    model.fit(x, batch_size=10, epochs=1, verbose=0)  # 4 mask draws
    path = str(tmp_path / "made.keras")
    model.save(path)
    states = bench._seed_states(model)
    assert len(states) == 1 and states[0] != [0, 0]

    def draws(m):
        return [m.seed_generator.next().numpy().tolist() for _ in range(3)]

    plain = keras.models.load_model(path)
    restored = keras.models.load_model(path)
    bench._set_seed_states(restored, states)
    expected = draws(model)
    assert draws(restored) == expected
    assert draws(plain) != expected  # what a resumed run drew before the states were saved


def test_curve_vae_rows_resume_to_the_uninterrupted_run(tmp_path):
    """The VAE rows of ``--curve`` (a planar-flow posterior and the diagonal one) report the
    K-sample bound with its standard error, and a run stopped after epoch 1 and resumed from
    ``--state-dir`` prints the uninterrupted run's table to every digit."""
    from benchmarks import bench_autoregressive as bench

    args = ["--only", "VAE planar", "VAE diag", "--train-examples", "300", "--valid-examples",
            "100", "--test-examples", "100", "--hidden", "16", "--latent", "3",
            "--planar-steps", "2", "--iwae-samples", "4", "--batch-size", "50"]
    whole = bench.main(args + ["--curve", "1,2", "--state-dir", str(tmp_path / "whole")])
    bench.main(args + ["--curve", "1", "--state-dir", str(tmp_path / "cut")])
    resumed = bench.main(args + ["--curve", "1,2", "--state-dir", str(tmp_path / "cut")])
    rows = {r[0]: r for r in _rows(whole)}
    assert set(rows) == {"VAE planar k=2 (IWAE bound)", "VAE diagonal (IWAE bound)"}
    for row in rows.values():  # "test ± SE (valid)" after epochs 1 and 2, finite numbers
        assert all(re.match(r"^\d+\.\d\d ± \d+\.\d\d \(\d+\.\d\d\)$", c) for c in row[1:3]), row
    strip = re.compile(r"\| [\d.]+ \|(?= [\d.]* \| [\d.]* \|$)")  # the epoch-time column
    assert ([strip.sub("|", ln) for ln in _rows_text(resumed)]
            == [strip.sub("|", ln) for ln in _rows_text(whole)])


def _rows_text(table: str) -> list[str]:
    return [ln for ln in table.splitlines() if ln.startswith("| VAE")]

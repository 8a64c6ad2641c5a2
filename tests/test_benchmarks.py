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

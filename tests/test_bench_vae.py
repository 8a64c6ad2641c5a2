"""Smoke run of the VAE quality/throughput benchmark (quick mode); numbers are not asserted."""

import re
import time

from benchmarks import run as bench_run

MEAN_SE = re.compile(r"^-?\d+\.\d\d ± \d+\.\d\d$")
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?x?$")


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table of ``markdown`` as rows of stripped cells (header and rule dropped)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current[2:])
            current = []
    return tables


def test_vae_quick_tables_have_every_system_with_numbers():
    start = time.perf_counter()
    module = bench_run.load("vae")
    text = module.main(quick=True)
    assert time.perf_counter() - start < 60, "quick mode should stay a smoke run"
    systems = [name for m in module.MODELS for name in (m, f"{module.REFERENCE} for {m}")]
    quality, comparison, throughput = _tables(text)  # quick mode: one dataset, three tables
    assert [r[0] for r in quality] == systems
    for row in quality:
        assert all(MEAN_SE.match(c) for c in row[1:7]), row
        assert all(NUMBER.match(c) for c in row[7:]), row
        # Jensen: the K-sample bound is at least the mean log-weight of the same samples.
        iwae, mean_log_w = (float(row[i].split(" ± ")[0]) for i in (4, 3))
        assert iwae >= mean_log_w, row
    assert [r[0] for r in comparison] == list(module.MODELS)
    for row in comparison:
        assert all(MEAN_SE.match(c) for c in row[1:3]), row
        assert all(c in ("yes", "**no**") for c in row[3:]), row
    assert [r[0] for r in throughput] == systems
    for row in throughput:
        assert all(NUMBER.match(c) for c in row[1:]), row
    assert "### Verdicts" in text and "Machine:" in text

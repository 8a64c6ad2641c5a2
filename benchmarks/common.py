"""Timing helpers shared by the ``benchmarks/bench_*.py`` scripts.

A benchmark builds a few zero-argument callables ("systems"), then :func:`measure` times
them interleaved: every repeat visits every system once, so a burst of load from another
process lands on all of them alike instead of on whichever happened to be running. The
first call of each system (tracing, XLA compilation) is timed on its own by
:func:`first_call` and never mixed into the steady-state numbers.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from typing import Callable, NamedTuple, Sequence

import numpy as np


class Timing(NamedTuple):
    """Seconds per call over the repeats: median, 90th percentile, and how they were taken."""

    median: float
    p90: float
    repeats: int
    number: int  # calls averaged inside one repeat


class Failed(NamedTuple):
    """A system that could not run in some mode; ``reason`` goes into the table cell."""

    reason: str


def _block(fn: Callable[[], object]) -> None:
    """Run ``fn`` and wait for its result (``.numpy()`` on every returned tensor)."""
    out = fn()
    for t in out if isinstance(out, (tuple, list)) else [out]:
        if hasattr(t, "numpy"):
            t.numpy()


def first_call(fn: Callable[[], object]) -> float | Failed:
    """Seconds taken by the first call (trace + compile + one run), or ``Failed``."""
    start = time.perf_counter()
    try:
        _block(fn)
    except Exception as e:  # noqa: BLE001 - any failure becomes a table cell
        return Failed(f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
    return time.perf_counter() - start


def calls_per_repeat(fn: Callable[[], object], min_seconds: float) -> int:
    """How many calls make one repeat last at least ``min_seconds`` (at least 1)."""
    start = time.perf_counter()
    _block(fn)
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(np.ceil(min_seconds / once)))


def measure(
    systems: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    min_seconds: float = 0.02,
) -> dict[str, Timing | Failed]:
    """Time each system ``repeats`` times, interleaved; a system that fails is reported.

    Each system is warmed up ``warmup`` times (after its first call, which the caller times
    with :func:`first_call`), then every repeat runs ``number`` calls of each system in turn
    and records the mean seconds per call. ``number`` is chosen per system so a repeat lasts
    about ``min_seconds``.
    """
    results: dict[str, Timing | Failed] = {}
    live: dict[str, tuple[Callable[[], object], int]] = {}
    for name, fn in systems.items():
        try:
            for _ in range(warmup):
                _block(fn)
            live[name] = (fn, calls_per_repeat(fn, min_seconds))
        except Exception as e:  # noqa: BLE001
            results[name] = Failed(f"{type(e).__name__}")
    samples: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(repeats):
        for name, (fn, number) in live.items():
            start = time.perf_counter()
            for _ in range(number):
                _block(fn)
            samples[name].append((time.perf_counter() - start) / number)
    for name, (_, number) in live.items():
        xs = samples[name]
        results[name] = Timing(
            median=statistics.median(xs),
            p90=float(np.percentile(xs, 90)),
            repeats=len(xs),
            number=number,
        )
    return {name: results[name] for name in systems}


def fmt_us(t: Timing | Failed | None) -> str:
    """``median / p90`` in microseconds, or the failure reason."""
    if t is None:
        return "n/a"
    if isinstance(t, Failed):
        return f"failed ({t.reason})"
    return f"{t.median * 1e6:,.0f} / {t.p90 * 1e6:,.0f}"


def fmt_ratio(a: Timing | Failed | None, b: Timing | Failed | None) -> str:
    """Median ratio ``a / b`` as ``1.23x``; ``n/a`` when either is missing or failed."""
    if not isinstance(a, Timing) or not isinstance(b, Timing):
        return "n/a"
    return f"{a.median / b.median:.2f}x"


def fmt_seconds_ms(s: float | Failed | None) -> str:
    if s is None:
        return "n/a"
    if isinstance(s, Failed):
        return "failed"
    return f"{s * 1e3:,.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ) + " |"

    rule = "|" + "|".join(
        ":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(cells[0]), rule, *[line(r) for r in cells[1:]]])


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> str:
    """One markdown paragraph describing the CPU, core count and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for ln in out.splitlines():
            if ln.startswith("Model name:"):
                cpu = ln.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        cores = str(os.cpu_count())
    versions = [f"Python {platform.python_version()}"]
    for mod in ("tensorflow", "tensorflow_probability", "keras", "tf_keras"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            pass
    return f"{cpu}, {cores} cores (nproc), {platform.system()}; " + ", ".join(versions) + "."


class UsageError(ValueError):
    """A benchmark's arguments cannot run (for example a --state-dir written with other
    settings): :func:`run_cli` prints it as one line instead of a traceback."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a benchmark's ``main`` as a command: a :class:`UsageError` ends it with its message
    and exit status 2 (argparse's status for bad arguments); any other error keeps its
    traceback."""
    import sys

    try:
        main()
    except UsageError as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2)

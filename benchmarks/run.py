"""Run the benchmarks and print their markdown tables.

    python benchmarks/run.py [NAME ...] [--quick] [--write]

Every ``benchmarks/bench_NAME.py`` module exposes ``main(quick: bool) -> str`` returning a
markdown section. With no NAME all of them run, in name order. ``--write`` replaces the text
between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in ``benchmarks/README.md`` with
the fresh section (the markers must already be there).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"


def available() -> list[str]:
    """Names of the ``bench_*.py`` modules, without the prefix."""
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def load(name: str):
    """Import ``benchmarks/bench_NAME.py`` by path (the repository root goes on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks.bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between the ``bench:NAME`` markers replaced by ``body``."""
    pattern = re.compile(
        rf"(<!-- bench:{re.escape(name)} -->\n).*?(\n<!-- /bench:{re.escape(name)} -->)", re.S
    )
    if not pattern.search(text):
        raise KeyError(f"no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers in README")
    return pattern.sub(lambda m: m.group(1) + body.strip("\n") + m.group(2), text, count=1)


def main(args: argparse.Namespace) -> int:
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    for name in names:
        start = time.perf_counter()
        section = load(name).main(quick=args.quick)
        print(f"## {name}  ({time.perf_counter() - start:.0f} s)\n\n{section}\n", flush=True)
        if args.write:
            try:
                README.write_text(replace_section(README.read_text(), name, section))
                print(f"wrote section '{name}' of {README.relative_to(ROOT)}", flush=True)
            except KeyError as e:  # keep going: the other benchmarks' sections still get written
                print(f"not written: {e.args[0]}", file=sys.stderr, flush=True)
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes (smoke run)")
    parser.add_argument("--write", action="store_true", help="rewrite the sections in README.md")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))

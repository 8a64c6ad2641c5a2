"""The README's Python examples run as written."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_blocks_run():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_ci_runs_exactly_the_readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    for marker in ["main-command", "test-command"]:
        assert f"<!-- {marker} -->" in text and f"<!-- {marker} -->" in ci
        section = text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
        assert re.search(r"^(pip|python)", section, flags=re.M)

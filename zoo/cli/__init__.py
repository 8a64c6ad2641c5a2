"""Command-line entry points: `zoo-train`, `zoo-evaluate`, `zoo-export` (and tools/*.py)."""

"""`python tools/export.py ...` from a checkout: the same as the installed `zoo-export` command."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zoo.cli.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

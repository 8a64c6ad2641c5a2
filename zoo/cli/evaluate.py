"""Evaluate a finished run: Keras metrics and the K-sample importance-weighted bound.

Example:
  python tools/evaluate.py runs/vae-mnist5k-... --split test --num-samples 5000
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="zoo-evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--split", default=None, help="default: test (or valid)")
    parser.add_argument("--which", choices=["best", "last"], default="best")
    parser.add_argument("--num-samples", type=int, default=None, help="K of the IWAE bound")
    parser.add_argument("--num-examples", type=int, default=None)
    parser.add_argument("--output", help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    from zoo import training

    config, model = training.load_run(args.run_dir, args.which)
    split = args.split or training._splits(config)[1]
    result = training.evaluate_model(model, config, split, num_samples=args.num_samples,
                                     num_examples=args.num_examples)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

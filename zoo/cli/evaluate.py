"""Evaluate a finished run: Keras metrics and the K-sample importance-weighted bound.

Example:
  python tools/evaluate.py runs/vae-mnist5k-... --split test --num-samples 5000
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--num-examples", type=int, default=None,
                        help="a seeded random subset of this many examples (0: the whole "
                             "split; default: the run's train.eval_examples)")
    parser.add_argument("--output", help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    from zoo import training

    try:
        config, model = training.load_run(args.run_dir, args.which)
        split = args.split or training.split_names(config)[1]
        result = training.evaluate_model(model, config, split, num_samples=args.num_samples,
                                         num_examples=args.num_examples)
    except (training.ConfigError, FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if args.output:
        from zoo.training.checkpoint import atomic_write_json

        atomic_write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

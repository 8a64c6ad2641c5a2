"""Export a trained zoo model to SavedModel and/or TFLite, and print the verification report.

Examples:
  python tools/export.py runs/vae/best.keras --out exports/vae --what decode encode
  python tools/export.py runs/vae --out exports/vae --tflite --quantize dynamic
  python tools/export.py kf.keras --out exports/kf --tflite --what filter_step
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUANTIZE = ("float32", "dynamic", "float16", "int8")


def build_parser():
    parser = argparse.ArgumentParser(prog="zoo-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras file, or a training run directory (its "
                                      "best.keras, or last.keras with --which last)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--which", default="best", choices=["best", "last"])
    parser.add_argument("--what", nargs="+", help="signatures (default: all the model exports)")
    parser.add_argument("--saved-model", action="store_true", help="write a SavedModel")
    parser.add_argument("--tflite", action="store_true", help="write TFLite files")
    parser.add_argument("--quantize", nargs="+", default=["float32"], choices=QUANTIZE,
                        help="TFLite quantization modes, one file each")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--normalization", type=json.loads, default=None, metavar="JSON",
                        help='how an app must scale inputs, recorded in the sidecar, e.g. '
                             '\'{"x": {"mean": 0.13, "std": 0.31}}\'')
    parser.add_argument("--allow-flex", action="store_true",
                        help="accept Flex (select TF) ops instead of failing")
    return parser


def load_model(path: str, which: str = "best"):
    """A zoo model from a .keras file or a training run directory."""
    import keras

    import zoo; zoo.load_all()  # registers the model classes for load_model

    if os.path.isdir(path):
        path = os.path.join(path, f"{which}.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (give a .keras file or a run directory).")
    return keras.saving.load_model(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from zoo.export import export_all

    model = load_model(args.model, args.which)
    if not args.saved_model and not args.tflite:
        args.saved_model = args.tflite = True
    export_all(model, args.out, saved_model=args.saved_model,
               quantize=args.quantize if args.tflite else (), what=args.what,
               batch_size=args.batch_size, normalization=args.normalization,
               allow_flex=args.allow_flex)
    return 0


if __name__ == "__main__":
    sys.exit(main())

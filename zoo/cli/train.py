"""Train, evaluate and plot a zoo model on a dataset of `zoo.datasets`.

Examples:
  python tools/train.py vae --dataset mnist5k --epochs 5
  python tools/train.py categorical_vae --dataset digits --set model.num_variables=10
  python tools/train.py vae --output-dir runs/vae --resume
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser():
    from zoo import datasets
    from zoo.training import MODELS

    models = "\n".join(f"  {name:16s} {e.describe} (datasets: {', '.join(e.datasets)})"
                       for name, e in MODELS.items())
    data = "\n".join(f"  {name:16s} {text}" for name, text in datasets.describe().items())
    parser = argparse.ArgumentParser(
        prog="zoo-train", description=__doc__,
        epilog=f"models:\n{models}\n\ndatasets:\n{data}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name (listed below)")
    parser.add_argument("--dataset", help="dataset name (default: the model's)")
    parser.add_argument("--config", help="YAML or JSON file with model/data/train sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.latent_dim=10")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--schedule", choices=["constant", "cosine", "exponential", "piecewise"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--jit", action="store_true", help="compile train steps with XLA")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy")
    parser.add_argument("--strategy", choices=["default", "mirrored", "multiworker"])
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="split the CPU into N logical devices (to try --strategy mirrored "
                             "without GPUs)")
    parser.add_argument("--output-dir", help="run directory (default: runs/MODEL-DATASET-TIME)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--export", nargs="*", metavar="MODE",
                        choices=["float32", "dynamic", "float16", "int8"],
                        help="export the best model to RUN/export: a SavedModel and verified "
                             "TFLite files (default mode float32; e.g. --export float32 "
                             "dynamic)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from zoo import training

    if args.cpu_devices:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE, e.g. model.latent_dim=10")
        overrides[key.strip()] = training.parse_value(value.strip())
    for flag, key in [("epochs", "epochs"), ("batch_size", "batch_size"),
                      ("learning_rate", "learning_rate"), ("schedule", "schedule"),
                      ("seed", "seed"), ("strategy", "strategy")]:
        if getattr(args, flag) is not None:
            overrides[f"train.{key}"] = getattr(args, flag)
    if args.jit:
        overrides["train.jit"] = True
    if args.mixed_precision:
        overrides["train.mixed_precision"] = True
    try:
        file_config = training.read_config_file(args.config) if args.config else None
        config = training.resolve_config(args.model, args.dataset, file_config, overrides)
    except training.ConfigError as err:
        parser.error(str(err))
    if args.resume and not args.output_dir:
        parser.error("--resume needs --output-dir naming the run to continue")
    run_dir = args.output_dir or os.path.join(
        "runs", f"{args.model}-{config['data']['name']}-{training.timestamp()}")
    explicit = dict(overrides)  # what this command line asks for, for --resume's check
    for section, values in (file_config or {}).items():
        if isinstance(values, dict):
            explicit.update({f"{section}.{k}": v for k, v in values.items()})
    if args.dataset:
        explicit["data.name"] = args.dataset
    try:
        result = training.train(config, run_dir, resume=args.resume, plots=not args.no_plots,
                                overrides=explicit)
    except (training.ConfigError, FileNotFoundError) as err:
        parser.error(str(err))
    print(f"Run directory: {result.run_dir}")
    if args.export is not None and result.model is not None:
        from zoo.export import export_all

        best = os.path.join(run_dir, "best.keras")
        exported = (training.load_run(run_dir, "best")[1] if os.path.exists(best)
                    else result.model)
        export_all(exported, os.path.join(run_dir, "export"),
                   quantize=tuple(args.export) or ("float32",))
    return 0 if result.stopped is None else 1


if __name__ == "__main__":
    sys.exit(main())

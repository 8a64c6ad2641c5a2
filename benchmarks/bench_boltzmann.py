"""Boltzmann machines on binarized MNIST: our RBM against scikit-learn's BernoulliRBM, and
our DBM, with AIS test log-likelihoods.

One run trains, with one budget (training examples, epochs, batch size, SGD learning rate):

- our ``zoo.RBM`` with PCD-1 and as many persistent chains as the batch size, which is what
  scikit-learn's ``BernoulliRBM`` does (its update is ``learning_rate / batch_size`` times the
  summed statistics, i.e. our SGD on the batch mean): training time as a ratio;
- scikit-learn's ``BernoulliRBM`` with the same hidden size, epochs (``n_iter``), batch size and
  learning rate;
- our ``zoo.DBM`` (doubled-RBM pretraining, then mean field + PCD), when ``--dbm-epochs`` > 0.

Both RBMs are evaluated by the same code: our AIS (Salakhutdinov & Murray 2008: base-rate
model from the training pixels' means, ``--ais-chains`` runs, ``--ais-betas`` temperatures)
for log Z, then log p(v) = -F(v) - log Z averaged over the test examples (a seeded random
subset when ``--test-examples`` is given, else the whole test split), with the standard error
of that mean and the SE of log Z. For the DBM: AIS on log Z (h1 summed out) and the
mean-field variational lower bound per test example, as Salakhutdinov & Hinton 2009 report.

Published context (the papers' budgets are far beyond ``--quick``): RBM, 500 hidden units,
CD-25, -86.34 (Salakhutdinov & Murray 2008, as quoted in the issue; not found in a copy of
the paper in this session); 2-layer DBM 500-1000, -84.62 test / -83.61 train with
ln Z = 356.18 (Salakhutdinov & Hinton 2009, the table of partition-function estimates and
average log-probabilities in the MNIST section, as an early session recorded them; no copy
of the paper could be read here since, so they are unverified).

``--curve`` with ``--lr-decay linear`` or ``inverse``: the SGD rate decreases epoch by epoch,
set identically on both systems before each epoch (our optimizer's rate variable,
scikit-learn's ``learning_rate`` attribute, which ``partial_fit`` reads). ``--dbm-curve``
takes the same schedule over its joint epochs, and ``--dbm-pretrain-learning-rate``,
``--dbm-momentum``, ``--dbm-weight-decay`` (Salakhutdinov's released DBM code: pretraining at
0.05, joint phase at 0.001 with momentum 0.9 and weight cost 2e-4), ``--dbm-centered`` (the
centering trick in the joint phase) and ``--state-dir``; ``--reverse-ais`` and
``--mixture-ais`` add the reverse and sharp-mixture AIS estimates at each checkpoint, and
``--check-betas`` the forward and reverse estimates again at more temperatures at the end.

Every AIS estimate is printed beside a certified floor on log Z (the log-sum-exp of exact or
mean-field log p* over the distinct test examples, the local modes energy descent reaches
from them, and the DBM's chains): AIS below it has lost the model's modes, and the number
computed with it is void whatever its reported error.

Run: ``python benchmarks/bench_boltzmann.py --quick`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import UsageError, run_cli  # noqa: E402
from zoo.training.checkpoint import atomic_save, atomic_write_json  # noqa: E402

PUBLISHED_RBM = -86.34  # S&M 2008, CD-25, 500 hidden (as quoted in issue 16)
PUBLISHED_DBM = -84.62  # S&H 2009, 2-layer BM 500-1000, AIS + variational bound


def load_data(dataset: str, train_examples: int | None, test_examples: int | None,
              seed: int):
    """Flat binary train / test arrays (seeded random subsets when sizes are given)."""
    from zoo.datasets import load_arrays

    try:
        train = load_arrays(dataset, split="train", **_binarize(dataset))["image"]
        test = load_arrays(dataset, split="test", **_binarize(dataset))["image"]
    except Exception as err:  # noqa: BLE001 - fall back to the offline subset
        print(f"{dataset} unavailable ({type(err).__name__}: {err}); using mnist5k static")
        dataset = "mnist5k"
        train = load_arrays(dataset, split="train", binarize="static")["image"]
        test = load_arrays(dataset, split="test", binarize="static")["image"]
    rng = np.random.default_rng(seed)
    train = train.reshape(len(train), -1).astype("float32")
    test = test.reshape(len(test), -1).astype("float32")
    if train_examples and train_examples < len(train):
        train = train[rng.choice(len(train), train_examples, replace=False)]
    if test_examples and test_examples < len(test):
        test = test[rng.choice(len(test), test_examples, replace=False)]
    return dataset, train, test


def _binarize(dataset):
    return {} if dataset == "binarized_mnist" else {"binarize": "static"}


def ais_test_log_likelihood(params, train, test, chains, betas, seed):
    """(mean log p(test), SE of the mean over examples, log Z, SE of log Z, seconds)."""
    import tensorflow as tf

    from zoo.layers import ais
    from zoo.layers.boltzmann_energy import RBMParams, rbm_free_energy

    params = RBMParams(*(tf.constant(np.asarray(p, np.float64)) for p in params))
    start = time.perf_counter()
    result = ais.rbm_ais(params, ais.base_rate_bias(train.mean(0)), chains, betas,
                         seed=(seed, 1))
    seconds = time.perf_counter() - start
    log_p = -rbm_free_energy(tf.constant(test, tf.float64), params).numpy() - float(
        result.log_z)
    return (float(log_p.mean()), float(log_p.std(ddof=1) / math.sqrt(len(log_p))),
            float(result.log_z), float(result.log_z_std_err), seconds)


def train_ours(train, hidden, epochs, batch, lr, seed):
    import keras

    from zoo import RBM

    model = RBM(train.shape[1], hidden_dim=hidden, training="pcd", cd_steps=1,
                num_chains=batch, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr))
    start = time.perf_counter()
    model.fit(train, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    p = model.params()
    return (p.weights.numpy(), p.visible_bias.numpy(), p.hidden_bias.numpy()), seconds


def train_sklearn(train, hidden, epochs, batch, lr, seed):
    from sklearn.neural_network import BernoulliRBM

    model = BernoulliRBM(n_components=hidden, learning_rate=lr, batch_size=batch,
                         n_iter=epochs, random_state=seed)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    return (model.components_.T, model.intercept_visible_, model.intercept_hidden_), seconds


LR_DECAYS = ("constant", "linear", "inverse")


def epoch_learning_rate(lr, epoch, decay="constant", budget=None, decay_epochs=None):
    """The SGD rate of (1-based) ``epoch``: ``constant``: ``lr``; ``linear``: ``lr (budget -
    epoch + 1) / budget``, a straight line from ``lr`` in the first epoch to ``lr / budget``
    in the last (``budget`` epochs), i.e. to 0 after it; ``inverse``: ``lr / (1 + (epoch - 1)
    / decay_epochs)``, halved after ``decay_epochs`` epochs and decreasing as 1/t, so the
    rates sum to infinity and their squares do not (the Robbins-Monro conditions of the
    stochastic-approximation proofs for PCD / SML), whatever the budget."""
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown learning-rate decay {decay!r}; valid: {', '.join(LR_DECAYS)}")
    if not (isinstance(epoch, int) and epoch >= 1):
        raise ValueError(f"epoch must be an integer >= 1, got {epoch!r}")
    if decay == "linear":
        if not (isinstance(budget, int) and budget >= epoch):
            raise ValueError(f"linear decay needs a budget of whole epochs >= epoch {epoch}, "
                             f"got {budget!r}")
        return lr * (budget - epoch + 1) / budget
    if decay == "inverse":
        if not (decay_epochs and decay_epochs > 0 and math.isfinite(decay_epochs)):
            raise ValueError(f"inverse decay needs decay_epochs > 0, got {decay_epochs!r}")
        return lr / (1.0 + (epoch - 1) / decay_epochs)
    return lr


def learning_curve(train, test, hidden, checkpoints, batch, lr, seed, chains, betas,
                   state_dir=None, cd_steps=None, check_betas=None, lr_decay="constant",
                   lr_decay_epochs=None):
    """Both RBMs trained side by side, each evaluated by our AIS after the epochs in
    ``checkpoints``: ours by further one-epoch ``fit`` calls (its chains and optimizer state
    carry on), scikit-learn's by ``partial_fit`` over the same unshuffled mini-batches its
    ``fit`` uses (its persistent hidden samples carry on). The two are timed epoch by epoch
    in turn (interleaved, so a change of load hits both). Returns rows (epoch, system,
    log p, SE, log Z, seconds of training so far).

    The two run the same PCD-1 statistics with one difference in the chains: scikit-learn
    keeps the hidden sample h and draws the negative v ~ p(v | h) with the current
    parameters (h itself was drawn under the previous ones); ours keeps v and runs a full
    sweep h ~ p(h | v), v ~ p(v | h) under the current ones.

    ``cd_steps``: train ours with CD-k from the data instead (scikit-learn has only PCD-1,
    so it is left out). ``state_dir``: after each checkpoint both models and the rows are
    saved there (atomically) and a rerun with the same arguments resumes after the last
    checkpoint saved (the shuffling noise then differs from an unbroken run's).
    ``check_betas``: after the last checkpoint, log Z of both models again with this many
    temperatures (AIS convergence check).

    ``lr_decay`` / ``lr_decay_epochs``: the SGD rate of each epoch (``epoch_learning_rate``,
    with the last checkpoint as the linear decay's budget), set before the epoch on both:
    ours' optimizer variable, scikit-learn's ``learning_rate`` (read by ``partial_fit``).
    The third value returned lists (epoch, our rate, scikit-learn's rate) as read back from
    the two models after that epoch; a resumed run refuses a different schedule."""
    import pickle

    import keras
    from sklearn.neural_network import BernoulliRBM
    from zoo import RBM
    from zoo.boltzmann.rbm import rbm_log_partition_floor

    keras.utils.set_random_seed(seed)
    if cd_steps:
        ours = RBM(train.shape[1], hidden_dim=hidden, training="cd", cd_steps=cd_steps,
                   seed=seed)
    else:
        ours = RBM(train.shape[1], hidden_dim=hidden, training="pcd", cd_steps=1,
                   num_chains=batch, seed=seed)
    ours.compile(optimizer=keras.optimizers.SGD(lr))
    theirs = None if cd_steps else BernoulliRBM(n_components=hidden, learning_rate=lr,
                                                batch_size=batch, random_state=seed)
    budget = max(checkpoints)
    schedule = {"lr": lr, "decay": lr_decay, "budget": budget if lr_decay == "linear" else None,
                "decay_epochs": lr_decay_epochs if lr_decay == "inverse" else None}
    epoch_learning_rate(lr, budget, lr_decay, budget, lr_decay_epochs)  # check the arguments
    rows, done, seconds, rates = [], 0, {"zoo.RBM": 0.0, "sklearn": 0.0}, []
    saved = os.path.join(state_dir, "curve.json") if state_dir else None
    if saved and os.path.exists(saved):
        with open(saved) as f:
            state = json.load(f)
        old = state.get("schedule", {"lr": lr, "decay": "constant", "budget": None,
                                     "decay_epochs": None})  # saved before schedules existed
        if old != schedule:
            raise UsageError(f"{saved} was trained with the learning-rate schedule {old}; this "
                             f"run asks for {schedule}: use another --state-dir")
        rows, done, seconds = [tuple(r) for r in state["rows"]], state["done"], state["seconds"]
        rates = [tuple(r) for r in state.get("rates", [])]
        ours.load_weights(os.path.join(state_dir, "ours.weights.h5"))
        if theirs is not None:
            with open(os.path.join(state_dir, "sklearn.pkl"), "rb") as f:
                theirs = pickle.load(f)
        print(f"  resumed after epoch {done} from {state_dir}", flush=True)
    for epoch in sorted(e for e in checkpoints if e > done):
        for current in range(done + 1, epoch + 1):
            rate = epoch_learning_rate(lr, current, lr_decay, budget, lr_decay_epochs)
            ours.optimizer.learning_rate.assign(rate)
            start = time.perf_counter()
            ours.fit(train, epochs=1, batch_size=batch, shuffle=True, verbose=0)
            seconds["zoo.RBM"] += time.perf_counter() - start
            if theirs is not None:
                theirs.learning_rate = rate
                start = time.perf_counter()
                for i in range(0, len(train), batch):
                    theirs.partial_fit(train[i:i + batch])
                seconds["sklearn"] += time.perf_counter() - start
            rates.append((current, float(ours.optimizer.learning_rate.numpy()),
                          None if theirs is None else float(theirs.learning_rate)))
        done = epoch
        for name, params in _curve_params(ours, theirs):
            ll, se, log_z, log_z_se, _ = ais_test_log_likelihood(params, train, test, chains,
                                                                  betas, seed)
            rows.append((epoch, name, ll, math.hypot(se, log_z_se), log_z, seconds[name]))
            floor = rbm_log_partition_floor(params, test, descent_sweeps=30)
            print(f"  epoch {epoch} {name}: {ll:.2f} ± {rows[-1][3]:.2f} (log Z {log_z:.2f}, "
                  f"certified floor {floor:.2f}{below_floor(log_z, floor)}),"
                  f" trained {seconds[name]:.0f} s, last epoch's rate "
                  f"{rates[-1][1 if name == 'zoo.RBM' else 2]:.4g};"
                  f" load {_load()}", flush=True)
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            atomic_save(os.path.join(state_dir, "ours.weights.h5"), ours.save_weights)
            if theirs is not None:
                atomic_save(os.path.join(state_dir, "sklearn.pkl"),
                            lambda tmp: Path(tmp).write_bytes(pickle.dumps(theirs)))
            atomic_write_json(saved, {"rows": rows, "done": done, "seconds": seconds,
                                      "schedule": schedule, "rates": rates})
    checks = []
    if check_betas:
        for name, params in _curve_params(ours, theirs):
            for num in (betas, check_betas):
                start = time.perf_counter()
                ll, se, log_z, log_z_se, _ = ais_test_log_likelihood(
                    params, train, test, chains, num, seed + 1)
                checks.append((name, num, ll, log_z, log_z_se, time.perf_counter() - start))
                print(f"  AIS check {name}, {num} temperatures (seed {seed + 1}): log Z "
                      f"{log_z:.2f} ± {log_z_se:.3f}, test {ll:.2f}, "
                      f"{checks[-1][-1]:.0f} s", flush=True)
    return rows, checks, rates


def _curve_params(ours, theirs):
    p = ours.params()
    out = [("zoo.RBM", (p.weights.numpy(), p.visible_bias.numpy(), p.hidden_bias.numpy()))]
    if theirs is not None:
        out.append(("sklearn", (theirs.components_.T, theirs.intercept_visible_,
                                theirs.intercept_hidden_)))
    return out


def _load():
    return "%.1f" % os.getloadavg()[0]


def pin_threads(n: int) -> str:
    """Both systems on ``n`` threads: TensorFlow's intra- and inter-op pools and the BLAS /
    OpenMP pools scikit-learn's NumPy calls use; returns a description of what is in force."""
    import tensorflow as tf
    from threadpoolctl import threadpool_info, threadpool_limits

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    threadpool_limits(n)
    pools = ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info())
    return (f"TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, "
            f"inter-op {tf.config.threading.get_inter_op_parallelism_threads()}; "
            f"NumPy/scikit-learn pools: {pools}")


def impossible(bound: float) -> str:
    """A remark for a mean log-likelihood bound of binary data above 0, which no model can
    have: AIS underestimated log Z (its chains missed the modes), so the bound is void."""
    return (" (impossible, above 0: AIS underestimated log Z; not a result)" if bound > 0
            else "")


def make_dbm(train, hidden_dims, batch, lr, pretrain_epochs, seed, momentum=0.0,
             weight_decay=0.0, centered=False):
    """Our DBM as the bench trains it: 100 persistent chains, each doubled RBM pretrained
    ``pretrain_epochs`` whole epochs, SGD at ``lr`` (with ``momentum``), L2 ``weight_decay``
    on both weight matrices in every phase; ``centered``: the centering trick
    (``DBM(centered=True)``, Montavon & Mueller 2012) in the joint phase."""
    import keras
    from zoo import DBM

    steps = -(-len(train) // batch)
    model = DBM(train.shape[1], hidden_dims=hidden_dims, pretrain_steps=pretrain_epochs * steps,
                num_chains=100, weight_decay=weight_decay, centered=centered, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum))
    return model


def floor_cell(log_z: float, floor: float) -> str:
    """A table cell: the certified floor, marked when AIS's log Z fell below it."""
    return f"{floor:.2f}{' (AIS below it: failed)' if log_z < floor else ''}"


def below_floor(log_z: float, floor: float) -> str:
    """A remark for an AIS log Z below the certified floor (``log_partition_floor``): AIS
    lost the modes, so the bound computed with it is void whatever its reported error."""
    return (f"; AIS {floor - log_z:.1f} nats below it: AIS failed, not a result"
            if log_z < floor else "")


def sandwich_remark(forward, reverse) -> str:
    """A remark on the bidirectional sandwich of two ``AISResult``s
    (``zoo.boltzmann.common.sandwich_gap``): reverse above forward by more than three
    combined errors means AIS has not converged, so the forward bound is not yet a result."""
    from zoo.boltzmann.common import sandwich_gap

    gap, se = sandwich_gap(forward, reverse)
    if gap > 3 * se:
        return f"; sandwich gap {gap:.1f} nats (> 3 errors): AIS not converged, not a result"
    if gap < -3 * se:
        return (f"; reverse {-gap:.1f} nats below forward: the chains hold less mass than "
                "forward AIS found (they are not samples of the model)")
    return f"; sandwich gap {gap:.2f} nats: within 3 errors"


def estimate_text(result, unnormalized_mean: float, se_digits: int = 2) -> str:
    """"log Z x ± se, bound b" for an ``AISResult``: b = ``unnormalized_mean`` (the mean
    unnormalized test bound) - log Z."""
    log_z = float(result.log_z)
    return (f"log Z {log_z:.2f} ± {float(result.log_z_std_err):.{se_digits}f}, bound "
            f"{unnormalized_mean - log_z:.2f}")


def dbm_curve(train, test, hidden_dims, checkpoints, batch, lr, pretrain_epochs, chains,
              betas, seed, check_betas=None, pretrain_lr=None, momentum=0.0, weight_decay=0.0,
              lr_decay="constant", lr_decay_epochs=None, state_dir=None, reverse_burn_in=None,
              mixture_examples=None, centered=False):
    """Our DBM after ``pretrain_epochs`` of each doubled RBM, evaluated after the joint
    epochs in ``checkpoints`` (AIS log Z and the mean-field bound per test example); rows
    (joint epochs, bound, SE, log Z, seconds of training so far, certified floor on log Z:
    ``DBM.log_partition_floor`` from the test examples, the modes energy descent reaches
    from them and the chains; AIS below it has failed; reverse AIS log Z or None; mixture
    path log Z or None).
    ``reverse_burn_in``: at each checkpoint, reverse AIS too (``DBM.reverse_log_partition``,
    ``betas`` temperatures) from the persistent chains after this many Gibbs sweeps: the
    upper half of the bidirectional sandwich, so unnormalized - reverse <= bound <=
    unnormalized - forward when both have converged; a gap wider than their errors says the
    forward estimate has not. ``mixture_examples``: at each checkpoint, forward AIS too from
    a sharp mixture of this many random training examples (``DBM.log_partition(base_examples=
    ...)``), another stochastic lower bound on log Z: above the base-rate estimate it shows
    how much that path missed. ``check_betas``: after
    the last checkpoint, log Z again with ``betas`` and with this many temperatures (another
    seed), printed (AIS convergence check), and with ``reverse_burn_in`` reverse AIS at this
    many temperatures too, with the sandwich remark against the forward check. A rerun on a
    finished ``state_dir`` trains nothing and runs only the check, on the saved model.

    Trained one whole epoch per ``fit`` call, the SGD rate set before each: ``pretrain_lr``
    (default ``lr``) in the 2 x ``pretrain_epochs`` pretraining epochs, then joint epoch j at
    ``epoch_learning_rate(lr, j, lr_decay, max(checkpoints), lr_decay_epochs)`` (``linear``:
    to 0 after the last checkpoint). ``momentum``, ``weight_decay`` and ``centered``: see
    ``make_dbm``.
    ``state_dir``: the model (with its chains, update count and optimizer state) and the rows
    are saved there after each checkpoint's training and again after its evaluation
    (atomically); a rerun with the same settings resumes after the last one saved, first
    evaluating a checkpoint whose evaluation was cut short (the shuffling then differs from
    an unbroken run's). Checkpoints may be added or removed on resuming; the last one (the
    linear decay's budget) may not."""
    import keras

    from zoo.boltzmann.common import effective_chains, sandwich_gap

    keras.utils.set_random_seed(seed)
    pretrain_lr = lr if pretrain_lr is None else pretrain_lr
    budget = max(checkpoints)
    epoch_learning_rate(lr, budget, lr_decay, budget, lr_decay_epochs)  # check the arguments
    settings = {"hidden_dims": list(hidden_dims), "batch": batch, "lr": lr,
                "pretrain_epochs": pretrain_epochs, "pretrain_lr": pretrain_lr,
                "momentum": momentum, "weight_decay": weight_decay, "lr_decay": lr_decay,
                "budget": budget if lr_decay == "linear" else None,
                "decay_epochs": lr_decay_epochs if lr_decay == "inverse" else None,
                "seed": seed, "train_examples": len(train)}
    if centered:  # only then, so that state files from before the option still resume
        settings["centered"] = True
    model = make_dbm(train, hidden_dims, batch, pretrain_lr, pretrain_epochs, seed, momentum,
                     weight_decay, centered)
    rows, done, seconds = [], -2 * pretrain_epochs, 0.0
    unnormalized = None  # the last checkpoint's, which the check reuses
    saved = os.path.join(state_dir, "dbm_curve.json") if state_dir else None
    if saved and os.path.exists(saved):
        with open(saved) as f:
            state = json.load(f)
        if state["settings"] != settings:
            raise UsageError(f"{saved} was trained with {state['settings']}; this run asks for "
                             f"{settings}: use another --state-dir")
        rows = [tuple(r) + (None,) * (8 - len(r)) for r in state["rows"]]  # older state files
        done, seconds = state["done"], state["seconds"]
        model = keras.models.load_model(os.path.join(state_dir, "dbm.keras"))
        print(f"  resumed after joint epoch {done} from {state_dir}", flush=True)

    def save_state():  # atomically: a run stopped at any point resumes from the last save
        os.makedirs(state_dir, exist_ok=True)
        atomic_save(os.path.join(state_dir, "dbm.keras"), model.save)
        atomic_write_json(saved, {"settings": settings, "rows": rows, "done": done,
                                  "seconds": seconds})

    # A checkpoint trained and saved but stopped during its evaluation is evaluated first.
    unevaluated = [done] if done in checkpoints and done not in {r[0] for r in rows} else []
    for joint in unevaluated + sorted(e for e in checkpoints if e > done):
        if joint > done:
            start = time.perf_counter()
            for current in range(done + 1, joint + 1):
                model.optimizer.learning_rate.assign(
                    pretrain_lr if current <= 0 else
                    epoch_learning_rate(lr, current, lr_decay, budget, lr_decay_epochs))
                model.fit(train, epochs=1, batch_size=batch, shuffle=True, verbose=0)
                if current > 0 and current % 10 == 0 and current < joint:  # progress
                    print(f"    joint epoch {current} of {joint} (the next checkpoint), "
                          f"{time.perf_counter() - start:.0f} s since the last; load "
                          f"{_load()}", flush=True)
            seconds += time.perf_counter() - start
            done = joint
            if state_dir:  # before the evaluation (AIS takes minutes; the evaluation reads
                save_state()  # the model and leaves its chains as they are)
        ais = model.log_partition(num_chains=chains, num_betas=betas, seed=seed)
        unnormalized = model.unnormalized_bound(test)
        bound = unnormalized - float(ais.log_z)
        se = math.hypot(float(bound.std(ddof=1) / math.sqrt(len(bound))),
                        float(ais.log_z_std_err))
        floor = model.log_partition_floor(test, unnormalized=unnormalized, descent_sweeps=30)
        reverse = (None if reverse_burn_in is None else model.reverse_log_partition(
            num_betas=betas, seed=seed, burn_in=reverse_burn_in))
        mixture = (None if not mixture_examples else model.log_partition(
            num_chains=chains, num_betas=betas, seed=seed, base_examples=train[
                np.random.default_rng(seed).choice(len(train), mixture_examples,
                                                   replace=False)]))
        rows.append((joint, float(bound.mean()), se, float(ais.log_z), seconds, floor,
                     None if reverse is None else float(reverse.log_z),
                     None if mixture is None else float(mixture.log_z)))
        print(f"  DBM joint epoch {joint}: bound {rows[-1][1]:.2f} ± {se:.2f}, log Z "
              f"{rows[-1][3]:.2f} (certified floor {floor:.2f}{below_floor(rows[-1][3], floor)}"
              f"; {effective_chains(ais.log_weights):.0f} effective of {chains} chains"
              f"), {seconds:.0f} s, last rate "
              f"{float(model.optimizer.learning_rate.numpy()):.3g}, |W1| "
              f"{float(np.linalg.norm(model.weights1.numpy())):.1f}, |W2| "
              f"{float(np.linalg.norm(model.weights2.numpy())):.1f}; load {_load()}"
              f"{impossible(rows[-1][1])}", flush=True)
        if reverse is not None:
            print(f"    reverse AIS from the chains after {reverse_burn_in} Gibbs sweeps: "
                  f"{estimate_text(reverse, float(unnormalized.mean()))}"
                  f"{sandwich_remark(ais, reverse)}", flush=True)
        if mixture is not None:
            gap, gap_se = sandwich_gap(ais, mixture)  # mixture minus base-rate
            print(f"    forward AIS from a mixture of {mixture_examples} training examples: log Z "
                  f"{float(mixture.log_z):.2f} ± {float(mixture.log_z_std_err):.2f}"
                  + (f"; {gap:.1f} nats above the base-rate path, which missed that much: the "
                     f"bound is at most {float(unnormalized.mean()) - float(mixture.log_z):.2f}"
                     if gap > 3 * gap_se else "; no higher than the base-rate path's"),
                  flush=True)
        if state_dir:
            save_state()
    if check_betas:
        if unnormalized is None:  # a rerun on a finished --state-dir
            unnormalized = model.unnormalized_bound(test)
        mean = float(unnormalized.mean())
        for num in (betas, check_betas):
            start = time.perf_counter()
            ais = model.log_partition(num_chains=chains, num_betas=num, seed=seed + 1)
            print(f"  AIS check DBM, {num} temperatures (seed {seed + 1}): "
                  f"{estimate_text(ais, mean, 3)}, {time.perf_counter() - start:.0f} s",
                  flush=True)
        if reverse_burn_in is not None:  # the sandwich again, at the check's temperatures
            start = time.perf_counter()
            reverse = model.reverse_log_partition(num_betas=check_betas, seed=seed + 1,
                                                  burn_in=reverse_burn_in)
            print(f"  reverse AIS check DBM, {check_betas} temperatures (seed {seed + 1}), from "
                  f"the chains after {reverse_burn_in} Gibbs sweeps: "
                  f"{estimate_text(reverse, mean, 3)}, {time.perf_counter() - start:.0f} s"
                  f"{sandwich_remark(ais, reverse)}", flush=True)
    return rows


def train_dbm(train, test, hidden_dims, epochs, batch, lr, pretrain_epochs, chains, betas,
              seed, momentum=0.0, weight_decay=0.0):
    model = make_dbm(train, hidden_dims, batch, lr, pretrain_epochs, seed, momentum,
                     weight_decay)
    start = time.perf_counter()
    model.fit(train, epochs=epochs + 2 * pretrain_epochs, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - start
    ais = model.log_partition(num_chains=chains, num_betas=betas, seed=seed)
    unnormalized = model.unnormalized_bound(test)
    bound = unnormalized - float(ais.log_z)
    floor = model.log_partition_floor(test, unnormalized=unnormalized, descent_sweeps=30)
    return (float(bound.mean()), float(bound.std(ddof=1) / math.sqrt(len(bound))),
            float(ais.log_z), float(ais.log_z_std_err), seconds, floor)


def exact_small_comparison(seeds=(0, 1, 2), hidden=16, epochs=20, batch=20, lr=0.05):
    """Our RBM and sklearn's at one budget on 8 x 8 digits with 16 hidden units, where log Z
    is exact (2^16 hidden states): test log-likelihood per seed, no AIS noise."""
    import keras
    import tensorflow as tf

    from zoo.datasets import load_arrays
    from zoo.layers.boltzmann_energy import (
        RBMParams,
        rbm_exact_log_partition_hidden,
        rbm_free_energy,
    )

    train = load_arrays("digits", binarize="static")["image"].reshape(-1, 64).astype("float32")
    test = load_arrays("digits", split="test", binarize="static")["image"].reshape(-1, 64)

    def log_lik(w, b, c):
        p = RBMParams(*(tf.constant(np.asarray(a, np.float64)) for a in (w, b, c)))
        return float(np.mean(-rbm_free_energy(tf.constant(test, tf.float64), p).numpy())
                     - float(rbm_exact_log_partition_hidden(p)))

    ours, theirs = [], []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        (w, b, c), _ = train_ours(train, hidden, epochs, batch, lr, seed)
        ours.append(log_lik(w, b, c))
        (w, b, c), _ = train_sklearn(train, hidden, epochs, batch, lr, seed)
        theirs.append(log_lik(w, b, c))
    return ours, theirs


def litert_latency(params, out_dir, seed, n=500):
    """Median and p99 microseconds per call of the exported float32 ``gibbs_step``,
    ``denoise`` and ``inpaint`` (batch 1) in the LiteRT interpreter, for an RBM with
    ``params``; beside them the Keras model's own compiled call on the same inputs."""
    import tensorflow as tf

    from zoo import RBM
    from zoo.export import export_tflite
    from zoo.export.adapters import adapter_for
    from zoo.export.litert import load_interpreter

    w, b, c = (np.asarray(p, np.float32) for p in params)
    model = RBM(w.shape[0], hidden_dim=w.shape[1], seed=seed)
    model.weights_vh.assign(w)
    model.visible_bias.assign(b)
    model.hidden_bias.assign(c)
    path = os.path.join(out_dir, "rbm_float32.tflite")
    export_tflite(model, path)
    runner = load_interpreter(path)
    spec = adapter_for(model).export_spec(1)
    rng = np.random.default_rng(seed)
    rows = []
    for name, sig in spec.signatures.items():
        example = sig.example(rng)
        run = runner.get_signature_runner(name)
        keras_fn = tf.function(sig.fn)
        tensors = {k: tf.constant(v) for k, v in example.items()}
        lite = _times(lambda: run(**example), n)
        ours = _times(lambda: [np.asarray(v) for v in keras_fn(**tensors).values()], n)
        rows.append([name, f"{lite[0]:,.1f} / {lite[1]:,.1f}",
                     f"{ours[0]:,.1f} / {ours[1]:,.1f}", f"{ours[0] / lite[0]:.2f}x"])
    return rows, os.path.getsize(path)


def _times(fn, n, warmup=20, budget_s=5.0):
    """Median and p99 in microseconds of up to n timed calls after a warm-up."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    n = max(10, min(n, int(budget_s / max(time.perf_counter() - start, 1e-9))))
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - start
    return float(np.median(out)) / 1e3, float(np.percentile(out, 99)) / 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="mnist5k-sized budget: 1 epoch, 1000 AIS temperatures")
    parser.add_argument("--dataset", default="binarized_mnist")
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument("--ais-chains", type=int, default=100)
    parser.add_argument("--ais-betas", type=int, default=None)
    parser.add_argument("--dbm-epochs", type=int, default=None)
    parser.add_argument("--dbm-pretrain-epochs", type=int, default=None)
    parser.add_argument("--dbm-learning-rate", type=float, default=None,
                        help="SGD rate of the DBM's pretraining and joint updates "
                             "(default: --learning-rate / 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    parser.add_argument("--dbm-curve", default=None,
                        help="only the DBM's curve: comma-separated joint epochs, e.g. 1,3,6")
    parser.add_argument("--curve", default=None,
                        help="only the learning curve: comma-separated epochs, e.g. 1,2,5,10")
    parser.add_argument("--state-dir", default=None,
                        help="--curve: save both models after each checkpoint here and resume")
    parser.add_argument("--cd-steps", type=int, default=None,
                        help="--curve: train ours with CD-k (no scikit-learn row)")
    parser.add_argument("--check-betas", type=int, default=None,
                        help="--curve, --dbm-curve: at the end, AIS again with this many "
                             "temperatures (--dbm-curve with --reverse-ais: reverse AIS too); "
                             "on a finished --state-dir only the check runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="pin TensorFlow and scikit-learn's BLAS to this many threads")
    parser.add_argument("--lr-decay", choices=LR_DECAYS, default="constant",
                        help="--curve: the SGD rate per epoch, set on both systems before "
                             "each epoch: linear (--learning-rate x (E - epoch + 1) / E, E the "
                             "last checkpoint: a straight line to 0 after epoch E) or inverse "
                             "(--learning-rate / (1 + (epoch - 1) / --lr-decay-epochs))")
    parser.add_argument("--lr-decay-epochs", type=float, default=None,
                        help="--lr-decay inverse: epochs after which the rate is halved")
    parser.add_argument("--dbm-pretrain-learning-rate", type=float, default=None,
                        help="--dbm-curve: SGD rate of the pretraining epochs (default: the "
                             "DBM's rate)")
    parser.add_argument("--reverse-ais", type=int, default=None, metavar="SWEEPS",
                        help="--dbm-curve: at each checkpoint also reverse AIS (the upper half "
                             "of the bidirectional sandwich) from the persistent chains after "
                             "SWEEPS Gibbs sweeps, with --ais-betas temperatures")
    parser.add_argument("--mixture-ais", type=int, default=None, metavar="N",
                        help="--dbm-curve: at each checkpoint also forward AIS from a sharp "
                             "mixture of N random training examples (another lower bound on "
                             "log Z, for paths the base-rate model misses)")
    parser.add_argument("--dbm-momentum", type=float, default=0.0,
                        help="SGD momentum of the DBM (Salakhutdinov's code: 0.9)")
    parser.add_argument("--dbm-weight-decay", type=float, default=0.0,
                        help="L2 penalty on the DBM's weights (Salakhutdinov's code: 2e-4 "
                             "in the joint phase)")
    parser.add_argument("--dbm-centered", action="store_true",
                        help="--dbm-curve: train the DBM with the centering trick "
                             "(DBM(centered=True))")
    args = parser.parse_args(argv)
    if args.lr_decay != "constant" and not (args.curve or args.dbm_curve):
        parser.error("--lr-decay needs --curve or --dbm-curve (the one-budget comparison "
                     "trains with fit / n_iter at a constant rate)")
    if args.dbm_pretrain_learning_rate is not None and not args.dbm_curve:
        parser.error("--dbm-pretrain-learning-rate applies to --dbm-curve only")
    if args.dbm_centered and not args.dbm_curve:
        parser.error("--dbm-centered applies to --dbm-curve only")
    if not 0 <= args.dbm_momentum < 1:
        parser.error(f"--dbm-momentum must be in [0, 1), got {args.dbm_momentum}")
    if not (math.isfinite(args.dbm_weight_decay) and args.dbm_weight_decay >= 0):
        parser.error(f"--dbm-weight-decay must be >= 0, got {args.dbm_weight_decay}")
    if args.lr_decay == "inverse" and not (args.lr_decay_epochs and args.lr_decay_epochs > 0):
        parser.error("--lr-decay inverse needs --lr-decay-epochs > 0")
    if args.lr_decay_epochs is not None and args.lr_decay != "inverse":
        parser.error("--lr-decay-epochs applies to --lr-decay inverse only")
    quick = args.quick
    epochs = args.epochs or (1 if quick else 20)
    betas = args.ais_betas or (1000 if quick else 14500)
    train_n = args.train_examples or (5000 if quick else None)
    test_n = args.test_examples or (1000 if quick else None)
    dbm_epochs = args.dbm_epochs if args.dbm_epochs is not None else (1 if quick else 20)
    dbm_lr = args.dbm_learning_rate or args.learning_rate / 5
    dbm_pre = (args.dbm_pretrain_epochs if args.dbm_pretrain_epochs is not None
               else (1 if quick else 5))

    from benchmarks.common import load_average, machine, markdown_table

    import keras

    if args.threads:
        print("threads:", pin_threads(args.threads))
    keras.utils.set_random_seed(args.seed)
    dataset, train, test = load_data(args.dataset, train_n, test_n, args.seed)
    print(f"{dataset}: {len(train)} training, {len(test)} test examples; hidden {args.hidden},"
          f" {epochs} epoch(s), batch {args.batch_size}, SGD lr {args.learning_rate}, "
          f"AIS {args.ais_chains} chains x {betas} temperatures; load {load_average()}")
    if args.dbm_curve:
        dims = (args.hidden, 2 * args.hidden)
        pre_lr = (dbm_lr if args.dbm_pretrain_learning_rate is None
                  else args.dbm_pretrain_learning_rate)
        print(f"DBM {dims[0]}-{dims[1]}: SGD lr {pre_lr} pretraining, {dbm_lr} joint ("
              + (f"{args.lr_decay} decay" if args.lr_decay != "constant" else "constant")
              + f"), momentum {args.dbm_momentum}, weight decay {args.dbm_weight_decay}"
              + (", centered" if args.dbm_centered else ""))
        rows = dbm_curve(train, test, dims, [int(e) for e in args.dbm_curve.split(",")],
                         args.batch_size, dbm_lr, dbm_pre, args.ais_chains,
                         betas, args.seed, args.check_betas, pre_lr, args.dbm_momentum,
                         args.dbm_weight_decay, args.lr_decay, args.lr_decay_epochs,
                         args.state_dir, args.reverse_ais, args.mixture_ais, args.dbm_centered)
        print()
        extra = [(i, name) for i, name in ((6, "reverse AIS log Z (chains)"),
                                           (7, "mixture-path AIS log Z"))
                 if any(r[i] is not None for r in rows)]
        print(markdown_table(
            ["joint epochs (after 2 x %d pretraining)" % dbm_pre, "AIS test lower bound",
             "log Z", "certified floor on log Z"] + [name for _, name in extra]
            + ["train s (cumulative)"],
            [[r[0], f"{r[1]:.2f} ± {r[2]:.2f}{impossible(r[1])}", f"{r[3]:.2f}",
              floor_cell(r[3], r[5])]
             + [f"{r[i]:.2f}" if r[i] is not None else "not run" for i, _ in extra]
             + [f"{r[4]:.0f}"] for r in rows]))
        print()
        print(machine())
        return
    if args.curve:
        checkpoints = [int(e) for e in args.curve.split(",")]
        print(f"learning rate: {args.lr_decay}" + (
            f", halved after {args.lr_decay_epochs:g} epochs" if args.lr_decay == "inverse"
            else f", to 0 after epoch {max(checkpoints)}" if args.lr_decay == "linear" else ""))
        rows, checks, rates = learning_curve(
            train, test, args.hidden, checkpoints, args.batch_size, args.learning_rate,
            args.seed, args.ais_chains, betas, args.state_dir, args.cd_steps, args.check_betas,
            args.lr_decay, args.lr_decay_epochs)
        ours_name = f"zoo.RBM (CD-{args.cd_steps})" if args.cd_steps else "zoo.RBM (PCD-1)"
        table = {}
        for epoch, name, ll, se, log_z, secs in rows:
            table.setdefault(epoch, {})[name] = (f"{ll:.2f} ± {se:.2f} (log Z {log_z:.1f})",
                                                 secs)
        names = ["zoo.RBM"] + ([] if args.cd_steps else ["sklearn"])
        rate_of = {e: r for e, r, _ in rates}
        header = ["epochs", "SGD rate (that epoch)", f"{ours_name} AIS test log p(v)", "train s"]
        if not args.cd_steps:
            header += ["sklearn BernoulliRBM AIS test log p(v)", "train s",
                       "zoo s / sklearn s"]
        out = []
        for e, t in table.items():
            row = [e, f"{rate_of[e]:.4g}" if e in rate_of else ""]
            for name in names:
                row += [t[name][0], f"{t[name][1]:.0f}"]
            if not args.cd_steps:
                row.append(f"{t['zoo.RBM'][1] / t['sklearn'][1]:.2f}")
            out.append(row)
        print()
        print(markdown_table(header, out))
        if checks:
            print()
            print(markdown_table(
                ["system (final epoch)", "AIS temperatures", "log Z", "test log p(v)", "AIS s"],
                [[n, k, f"{z:.2f} ± {zse:.3f}", f"{ll:.2f}", f"{s:.0f}"]
                 for n, k, ll, z, zse, s in checks]))
        print()
        print(machine())
        if args.json:
            atomic_write_json(args.json, {"rows": rows, "checks": checks, "rates": rates,
                                          "args": vars(args)})
        return
    budget = (args.hidden, epochs, args.batch_size, args.learning_rate, args.seed)
    ours, t_ours = train_ours(train, *budget)
    theirs, t_theirs = train_sklearn(train, *budget)
    rows, record = [], {}
    for name, params, seconds in (("zoo.RBM (PCD-1, Keras 3)", ours, t_ours),
                                  ("sklearn BernoulliRBM (PCD-1)", theirs, t_theirs)):
        ll, se, log_z, log_z_se, ais_s = ais_test_log_likelihood(
            params, train, test, args.ais_chains, betas, args.seed)
        rows.append([name, f"{seconds:.1f}", f"{t_theirs / seconds:.2f}x",
                     f"{ll:.2f} ± {math.hypot(se, log_z_se):.2f}",
                     f"{log_z:.2f} ± {log_z_se:.3f}", f"{ais_s:.0f}"])
        record[name] = {"train_seconds": seconds, "ais_log_likelihood": ll,
                        "se_examples": se, "log_z": log_z, "log_z_se": log_z_se}
    rows.append(["published RBM 500 CD-25 (S&M 2008)", "", "", f"{PUBLISHED_RBM:.2f}", "",
                 ""])
    print()
    print(markdown_table(["system", "train s", "sklearn time / this", "AIS test log p(v)",
                          "log Z", "AIS s"], rows))
    ours_small, theirs_small = exact_small_comparison()
    print()
    print("digits 8 x 8, RBM 64-16, PCD-1, 20 epochs, batch 20, SGD 0.05; exact test log p(v) "
          "(log Z by enumerating 2^16 hidden states), seeds 0, 1, 2:")
    print(markdown_table(["system", "per seed", "mean"], [
        ["zoo.RBM", ", ".join(f"{v:.2f}" for v in ours_small), f"{np.mean(ours_small):.2f}"],
        ["sklearn BernoulliRBM", ", ".join(f"{v:.2f}" for v in theirs_small),
         f"{np.mean(theirs_small):.2f}"]]))
    record["digits_exact"] = {"ours": ours_small, "sklearn": theirs_small}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        latency, size = litert_latency(ours, tmp, args.seed)
    print()
    print(f"LiteRT, float32, batch 1, RBM {train.shape[1]}-{args.hidden} ({size / 1e6:.1f} MB):")
    print(markdown_table(["signature", "LiteRT us (median / p99)",
                          "Keras tf.function us (median / p99)", "Keras / LiteRT"], latency))
    record["litert"] = latency
    if dbm_epochs > 0:
        dims = (args.hidden, 2 * args.hidden)
        bound, se, log_z, log_z_se, seconds, floor = train_dbm(
            train, test, dims, dbm_epochs, args.batch_size, dbm_lr, dbm_pre,
            args.ais_chains, betas, args.seed, args.dbm_momentum, args.dbm_weight_decay)
        print()
        print(markdown_table(
            ["system", "epochs (pretrain + joint)", "train s", "AIS test lower bound",
             "log Z", "certified floor on log Z"],
            [[f"zoo.DBM {dims[0]}-{dims[1]}", f"2 x {dbm_pre} + {dbm_epochs}", f"{seconds:.0f}",
              f"{bound:.2f} ± {math.hypot(se, log_z_se):.2f}{impossible(bound)}",
              f"{log_z:.2f} ± {log_z_se:.3f}",
              floor_cell(log_z, floor)],
             ["published DBM 500-1000 (S&H 2009)", "", "", f"{PUBLISHED_DBM:.2f}", "356.18",
              ""]]))
        record["zoo.DBM"] = {"train_seconds": seconds, "ais_lower_bound": bound,
                             "se_examples": se, "log_z": log_z, "log_z_se": log_z_se,
                             "log_z_floor": floor}
    print()
    print(machine())
    if args.json:
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    run_cli(main)

"""Particle filters over learned and linear-Gaussian models (issues 15 and 18).

Sections:

1. Pendulum: the DKF trained by the documented recipe (issue 18: ST-R learns the generative
   model from observations only, a q-RNN filter learns from its dreams; the same sizes,
   epochs and data as ``bench_dssm``'s "DKF recipe" row), then ``zoo.ParticleFilter`` over
   that learned model with the bootstrap proposal and the learned ones (``"learned"``: the
   q-RNN's q(z_t | x_1:t); ``"learned_prior"``: q times the transition of each particle), at
   N = 100 and 1000, against the NumPy bootstrap PF on the true model and the EKF started at
   atan2(y_0), on the same test split. The latent space is identified only up to a transform,
   so every DKF row goes through the readout protocol of ``bench_dssm``: an MLP from latent
   means to (sin a, cos a, w) fitted on the TRAINING split; for the PF rows it is applied to
   the PF's filtered particle mean (the weighted mean of the latent particles), read out
   (a) by the readout fitted on the q-RNN's training-split means, as the DKF row, and (b) by a
   readout refitted on the same PF's means over a seeded random subset of training sequences.
2. Speed: our compiled filter against ``tfp.experimental.mcmc.particle_filter`` on the same
   linear-Gaussian model, N and T, interleaved in one process, as a ratio.

The trained DKF's weights are cached under /tmp (``--cache``), so a rerun does not retrain.
``python benchmarks/bench_particle.py [--quick] [--only=pendulum|speed] [--train-only]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import bench_dssm, common, filters, references  # noqa: E402
from zoo import datasets  # noqa: E402
from zoo.deep_state_space import DeepKalmanFilter  # noqa: E402
from zoo.particle_filter import ParticleFilter  # noqa: E402


FULL = dict(
    pendulum=dict(train=1000, test=200, length=100, epochs=80, filter_epochs=20, latent_dim=4,
                  rnn_units=64, readout_epochs=30, numpy_particles=1000,
                  particles=(100, 1000), proposals=("bootstrap", "learned", "learned_prior"),
                  refit_sequences=200, chunk=50, iwae_k=100),
    speed=dict(batch=20, length=100, particles=(100, 1000), repeats=5),
)
QUICK = dict(
    pendulum=dict(train=60, test=20, length=20, epochs=1, filter_epochs=1, latent_dim=2,
                  rnn_units=8, readout_epochs=2, numpy_particles=100, particles=(20,),
                  proposals=("bootstrap", "learned", "learned_prior"), refit_sequences=10,
                  chunk=10, iwae_k=4),
    speed=dict(batch=2, length=10, particles=(20,), repeats=1),
)
CACHE = "/tmp/bench_particle"


def _sizes(cfg):
    return dict(observation_shape=(2,), latent_dim=cfg["latent_dim"], transition="mlp",
                likelihood="gaussian", emission_units=(32,), transition_units=64,
                rnn_units=cfg["rnn_units"], seed=0)


def _data(cfg):
    opts = dict(length=cfg["length"])
    train = datasets.load_arrays("pendulum", "train", num_sequences=cfg["train"], **opts)
    test = datasets.load_arrays("pendulum", "test", num_sequences=cfg["test"], **opts)
    return train, test


def trained_recipe(cfg, train, cache=CACHE):
    """The DKF of issue 18's recipe, trained as bench_dssm's "DKF recipe" row (seed 0, Adam
    3e-3, batch 50, ``epochs`` then ``fit_filter`` for ``filter_epochs``), or loaded from the
    cache that a previous run wrote (atomically). Returns (model, training seconds or None)."""
    key = hashlib.sha1(json.dumps({k: cfg[k] for k in ("train", "length", "epochs",
                                                        "filter_epochs", "latent_dim",
                                                        "rnn_units")},
                                  sort_keys=True).encode()).hexdigest()[:10]
    path = f"{cache}_dkf_{key}.weights.h5"
    keras.utils.set_random_seed(0)
    model = DeepKalmanFilter(**_sizes(cfg))
    if os.path.exists(path):
        model.load_weights(path)
        meta = json.load(open(path + ".json")) if os.path.exists(path + ".json") else {}
        return model, meta.get("seconds")
    start = time.perf_counter()
    bench_dssm._fit(model, {"observations": train["observations"]}, 50, cfg["epochs"],
                    lr=3e-3)
    model.fit_filter({"observations": train["observations"]}, epochs=cfg["filter_epochs"],
                     batch_size=50, learning_rate=3e-3)
    seconds = time.perf_counter() - start
    tmp = f"{path}.{os.getpid()}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)
    with open(path + ".json.tmp", "w") as f:
        json.dump({"seconds": seconds}, f)
    os.replace(path + ".json.tmp", path + ".json")
    return model, seconds


def _pf_means(model, proposal, n, obs, cfg, seed):
    """Filtered latent particle means [batch, time, d] and log Z-hat [batch], by chunks of
    sequences (memory), with the chunk's own seed."""
    pf = ParticleFilter(model, num_particles=n, proposal=proposal)
    means, logz = [], []
    for i in range(0, len(obs), cfg["chunk"]):
        out = pf.filter(obs[i:i + cfg["chunk"]], seed=seed * 100003 + i)
        means.append(np.asarray(out.filtered_means))
        logz.append(np.asarray(out.log_likelihood))
    return np.concatenate(means), np.concatenate(logz)


def pendulum_section(cfg, results, train_only=False):
    train, test = _data(cfg)
    model, train_seconds = trained_recipe(cfg, train)
    if train_only:
        return f"trained and cached ({train_seconds} s)"
    system = filters.pendulum_system(test)
    y, states = test["observations"].astype("float64"), test["states"].astype("float64")
    rows, per_seq = [], {}

    def add(name, angle, velocity, seconds, extra=""):
        ra, rv, sa, _ = bench_dssm._state_errors(angle, velocity, states)
        per_seq[name] = sa
        rows.append([name, f"{ra:.3f}", f"{rv:.3f}", f"{np.median(np.sqrt(sa)):.3f}",
                     f"{np.mean(np.sqrt(sa) > 0.5):.3f}", f"{seconds:.1f}"])

    def add_readout(name, out, seconds, extra=""):
        add(name, np.arctan2(out[..., 0], out[..., 1]), out[..., 2], seconds, extra)

    start = time.perf_counter()
    ekf0 = filters.ekf_from_first_angle(y, system)
    add("EKF started at atan2(y_0) (true model)", ekf0.means[..., 0], ekf0.means[..., 1],
        time.perf_counter() - start)
    start = time.perf_counter()
    npf = filters.bootstrap_particle_filter(
        y, **filters.pf_arguments(system), num_particles=cfg["numpy_particles"], seed=0,
        features=lambda p: np.stack([np.sin(p[..., 0]), np.cos(p[..., 0])], -1))
    add(f"NumPy bootstrap PF, N = {cfg['numpy_particles']} (true model)",
        np.arctan2(npf.feature_means[..., 0], npf.feature_means[..., 1]), npf.means[..., 1],
        time.perf_counter() - start)

    target = bench_dssm._readout_targets(train["states"].astype("float64"))
    start = time.perf_counter()
    q_train = model.filter(train["observations"]).filtered_means.numpy()
    q_test = model.filter(test["observations"]).filtered_means.numpy()
    readout = bench_dssm.mlp_readout(q_train, target, cfg["readout_epochs"])
    add_readout("DKF recipe: q-RNN filter (learned model)", readout(q_test),
                time.perf_counter() - start)

    rng = np.random.default_rng(0)  # a seeded random subset of training sequences
    subset = np.sort(rng.choice(cfg["train"], size=min(cfg["refit_sequences"], cfg["train"]),
                                replace=False))
    logz_rows = []
    for n in cfg["particles"]:
        for proposal in cfg["proposals"]:
            start = time.perf_counter()
            means, logz = _pf_means(model, proposal, n, test["observations"], cfg, seed=1)
            seconds = time.perf_counter() - start
            name = f"PF over the learned DKF, {proposal}, N = {n}"
            add_readout(name + " (q-RNN readout)", readout(means), seconds)
            sub_means, _ = _pf_means(model, proposal, n, train["observations"][subset], cfg,
                                     seed=2)
            own = bench_dssm.mlp_readout(sub_means, target[subset], cfg["readout_epochs"])
            add_readout(name + f" (readout refit on its own means, {len(subset)} train seqs)",
                        own(means), seconds)
            per_step = logz / cfg["length"]
            logz_rows.append([f"{proposal}, N = {n}", f"{np.median(per_step):.3f}",
                              f"{per_step.min():.2f}", f"{np.mean(per_step < 0.0):.3f}",
                              f"{seconds:.1f}"])
            print(f"[bench_particle] {name}: {seconds:.0f} s", file=sys.stderr, flush=True)

    start = time.perf_counter()  # the DKF's own bound on the same sequences, for reference
    k = cfg["iwae_k"]
    iwae = model.log_likelihood({"observations": test["observations"]}, num_samples=k,
                                batch_size=cfg["chunk"], seed=0).log_likelihood / cfg["length"]
    logz_rows.append([f"DKF's IWAE bound, K = {k} (ST-R proposal, no resampling)",
                      f"{np.median(iwae):.3f}", f"{iwae.min():.2f}",
                      f"{np.mean(iwae < 0.0):.3f}", f"{time.perf_counter() - start:.1f}"])
    comparisons = []
    best = min((r for r in rows if r[0].startswith("PF over")), key=lambda r: float(r[1]))
    for other in ("EKF started at atan2(y_0) (true model)",
                  f"NumPy bootstrap PF, N = {cfg['numpy_particles']} (true model)",
                  "DKF recipe: q-RNN filter (learned model)"):
        diff = per_seq[best[0]] - per_seq[other]
        comparisons.append(f"{best[0]} minus {other}: mean squared angle error "
                           f"{diff.mean():+.4f} (+/- {diff.std(ddof=1) / np.sqrt(len(diff)):.5f}"
                           f" SE, paired over the {len(diff)} test sequences)")
    results["pendulum"] = {r[0]: float(r[1]) for r in rows}
    table = common.markdown_table(
        ["Filter (pendulum, test split)", "RMSE angle (wrapped, rad)", "RMSE velocity (rad/s)",
         "median per-sequence angle RMSE", "sequences lost (angle RMSE > 0.5)", "filter s"],
        rows)
    logz_table = common.markdown_table(
        ["PF proposal (learned DKF)", "log Z-hat per step (median over test sequences)",
         "lowest", "fraction below 0", "filter s"], logz_rows)
    note = (
        f"{cfg['train']} training / {cfg['test']} test sequences of {cfg['length']} steps "
        f"(`zoo.datasets.pendulum`, its own constants). Learned from observations only: the "
        f"DKF (latent {cfg['latent_dim']}, MLP transition, Gaussian emission, ST-R message "
        f"posterior for learning, q-RNN GRU {cfg['rnn_units']} filter trained on dreams), "
        f"{cfg['epochs']} epochs + `fit_filter` {cfg['filter_epochs']} epochs, batch 50, Adam "
        f"3e-3, seed 0 (training {'cached' if train_seconds is None else f'{train_seconds:.0f} s'}"
        f"). Given (true model): the EKF and the NumPy PF rows. The PF rows filter with the "
        f"learned generative model (float32, systematic resampling at ESS < N/2); their RMSE "
        f"comes from the readout applied to the PF's filtered particle mean (not the mean of "
        f"the readout over particles). Best PF row: {best[0]} ({best[1]} rad).\n\n"
        + "\n".join(f"- {c}" for c in comparisons) + "\n\n" + logz_table)
    return table + "\n\n" + note


# ---------------------------------------------------------------------------- 2. speed


def speed_section(cfg, results):
    """Ours (``layers.particle_filter.particle_filter``, compiled) vs TFP's particle_filter on
    the Nile local-level model, float64, systematic resampling at ESS < N/2 in both."""
    y = datasets.load_nile()[:cfg["length"]]
    b, length = cfg["batch"], len(y)
    from zoo.kalman_filter import KalmanFilterModel
    from zoo.layers import particle_filter as pf
    from zoo.particle_filter import linear_gaussian_functions

    lg = KalmanFilterModel.from_matrices([[1.0]], [[1.0]], [[1469.1]], [[15099.0]],
                                         initial_mean=[1000.0], initial_cov=[[1e5]])
    init, trans, emit, dim = linear_gaussian_functions(lg.state_space_params())
    obs = np.repeat(y[None, :, None], b, 0)
    f64 = tf.float64
    rows = []
    for n in cfg["particles"]:
        ours_fn = tf.function(lambda noise: pf.scan_filter(
            tf.constant(obs), tf.ones([b, length], f64), noise, init, trans, emit,
            "systematic", 0.5).log_likelihood)
        theirs_fn = references.tfp_nile_particle_filter(np.repeat(y[:, None, None], b, 1), n)

        times = {"ours": [], "tfp": []}
        logz = {"ours": [], "tfp": []}
        for r in range(cfg["repeats"] + 1):  # the first round traces both: not timed
            noise = pf.draw_noise(r, b, length - 1, n, dim, "float64")
            start = time.perf_counter()
            a = ours_fn(noise).numpy()
            t_ours = time.perf_counter() - start
            start = time.perf_counter()
            c = theirs_fn(tf.constant([r, 1])).numpy()
            t_tfp = time.perf_counter() - start
            if r:
                times["ours"].append(t_ours)
                times["tfp"].append(t_tfp)
                logz["ours"].append(a)
                logz["tfp"].append(c)
        med = {k: float(np.median(v)) for k, v in times.items()}
        lo, lt = np.concatenate(logz["ours"]), np.concatenate(logz["tfp"])
        rows.append([f"N = {n}", f"{1e3 * med['ours']:.1f}", f"{1e3 * med['tfp']:.1f}",
                     f"{med['tfp'] / med['ours']:.2f}x",
                     f"{lo.mean():.2f} +/- {lo.std() / np.sqrt(len(lo)):.2f}",
                     f"{lt.mean():.2f} +/- {lt.std() / np.sqrt(len(lt)):.2f}"])
        results.setdefault("speed", {})[n] = med
    table = common.markdown_table(
        ["Particles", "ours ms / call", "TFP ms / call", "TFP / ours",
         "ours log Z-hat (mean +/- SE)", "TFP log Z-hat"], rows)
    note = (f"Nile local-level model (Durbin & Koopman's estimates), T = {length}, a batch of "
            f"{b} independent filters per call, float64, systematic resampling when ESS < N/2 "
            f"in both; each a `tf.function` traced before timing; median of {cfg['repeats']} "
            f"interleaved calls (ours, then TFP's). Ours: `layers.particle_filter.scan_filter` "
            f"(tf.while_loop, searchsorted resampling); TFP: "
            f"`tfp.experimental.mcmc.particle_filter`. The log Z-hat columns check that both "
            f"estimate the same likelihood.")
    return table + "\n\n" + note


def main(quick=False, only=None, train_only=False) -> str:
    cfg = QUICK if quick else FULL
    results: dict = {}
    load = [common.load_average()]
    parts = []
    for title, fn in (("Pendulum: particle filters over the learned DKF",
                       lambda: pendulum_section(cfg["pendulum"], results, train_only)),
                      ("Speed: ours vs TFP's particle_filter",
                       lambda: speed_section(cfg["speed"], results))):
        if only and only.lower() not in title.lower():
            continue
        if train_only and "Pendulum" not in title:
            continue
        start = time.perf_counter()
        body = fn()
        print(f"[bench_particle] {title}: {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)
        load.append(common.load_average())
        parts.append(f"### {title}\n\n{body}")
    header = (f"Machine: {common.machine()} Load averages (1/5/15 min) before and after each "
              f"section: {'; '.join(load)}."
              + (" (quick: toy sizes, numbers meaningless)" if quick else ""))
    return header + "\n\n" + "\n\n".join(parts)


if __name__ == "__main__":
    only = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None)
    print(main(quick="--quick" in sys.argv, only=only, train_only="--train-only" in sys.argv))

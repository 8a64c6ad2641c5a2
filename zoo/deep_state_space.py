"""Deep Kalman Filter (Krishnan et al. 2015) and Deep Markov Model (Krishnan et al. 2017)."""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import BernoulliLikelihood, GaussianLikelihood, GaussianPosterior, KLAnnealing
from zoo.layers.combiner import Combiner
from zoo.layers.common import (
    assert_finite,
    check_choice,
    check_positive,
    check_positive_int,
    math_dtype,
    register,
    standard_normal,
)
from zoo.layers.gaussian_posterior import gaussian_kl_to_diag
from zoo.layers.state_transition import KINDS as TRANSITIONS
from zoo.layers.state_transition import StateTransition
from zoo import sequences
from zoo.base import LatentVariableModel
from zoo.contract import EvalSettings
from zoo.networks import flat_size, mlp
from zoo.vae import apply_with_particles

tfd = tfp.distributions

INFERENCE = ("indep", "lr", "rnn", "brnn", "st-l", "st-r", "st-lr")
CAUSAL = ("indep", "rnn", "st-l")
STRUCTURED = ("st-l", "st-r", "st-lr")
EMISSIONS = ("mlp", "linear")
LIKELIHOODS = ("bernoulli", "gaussian")


class LatentFilterResult(NamedTuple):
    """:meth:`DeepStateSpaceModel.filter`: q(z_t | x_1..x_t) (diagonal Gaussian) and the
    emission of its mean (names as every zoo filter's, :mod:`zoo.sequences`)."""

    filtered_means: tf.Tensor  # [batch, time, latent_dim]
    filtered_scales: tf.Tensor  # [batch, time, latent_dim]: standard deviations
    observation_means: tf.Tensor  # [batch, time, *observation_shape]


class LatentSmootherResult(NamedTuple):
    """:meth:`DeepStateSpaceModel.smooth`: q(z_t | x) of the inference network."""

    smoothed_means: tf.Tensor  # [batch, time, latent_dim]
    smoothed_scales: tf.Tensor  # [batch, time, latent_dim]
    observation_means: tf.Tensor  # [batch, time, *observation_shape]


class DeepStateSpaceModel(LatentVariableModel):
    r"""Nonlinear state-space model with a neural transition, emission and inference network.

    Generative model (Krishnan, Shalit & Sontag 2015, 2017), with conditions
    $c_t = [u_{t-1}; \Delta_t]$ (actions and time gaps, both optional):

    $$z_0 \text{ learned},\quad z_t \sim N(\mu_\theta(z_{t-1}, c_t), \mathrm{diag}\,
    \sigma^2_\theta(z_{t-1}, c_t)),\quad x_t \sim \Pi(F_\theta(z_t))$$

    ($\Pi$ Bernoulli or Gaussian). Inference networks $q_\phi(z_t | \cdot)$, diagonal Gaussian:
    ``"indep"`` (MLP of $x_t$), ``"lr"`` (MLP of $x_{t-1}, x_t, x_{t+1}$), ``"rnn"`` (forward
    RNN: a filter), ``"brnn"`` (bidirectional: a smoother) from the 2015 paper, and the
    structured ``"st-l"``, ``"st-r"``, ``"st-lr"`` of the 2017 paper, where
    $q(z_t | z_{t-1}, x)$ combines $z_{t-1}$ with forward/backward RNN states. ``fit``
    maximizes

    $$\mathcal{L}(x) = \sum_t m_t \left(o_t E_q[\log p(x_t|z_t)] -
    \mathrm{KL}(q(z_t|\cdot) \| p(z_t | z_{t-1}))\right)$$

    with $z_{t-1}$ sampled from q and each KL analytic; $m_t$ masks padding (variable lengths),
    $o_t$ marks observed frames (missing ones add no likelihood term and are hidden from the
    inference network). The KL weight is the posterior layer's ``kl_weight``; with
    ``kl_annealing_steps`` > 0, ``default_callbacks()`` anneals it from
    ``kl_annealing_start`` to 1.

    Inputs are a tensor of observations ``[batch, time, *observation_shape]`` or a dict with
    ``observations`` and optionally ``mask`` ``[batch, time]`` (1 = real step),
    ``observed`` ``[batch, time]`` (1 = frame observed), ``actions``
    ``[batch, time, action_dim]`` (``actions[:, t]`` moves the system from step t to t+1)
    and ``time_gaps`` ``[batch, time]`` (the gap from step t-1 to t).
    """

    default_inference = "rnn"
    default_transition = "mlp"
    inference_choices = INFERENCE
    export_adapter = "deep_state_space"
    binarizes_inputs = False
    # XLA needs compile-time shapes in the gradient of the time loop over variable-length
    # sequences, which TF 2.21 cannot give it.
    supports_jit = False

    def __init__(
        self,
        observation_shape=(88,),
        latent_dim: int = 32,
        inference: str | None = None,
        transition: str | None = None,
        emission: str = "mlp",
        likelihood: str = "bernoulli",
        action_dim: int = 0,
        use_time_gaps: bool = False,
        transition_units: int = 200,
        emission_units=(100, 100),
        rnn_units: int = 256,
        inference_units=(256,),
        kl_weight: float = 1.0,
        kl_annealing_steps: int = 0,
        kl_annealing_start: float = 0.2,
        gaussian_variance: str = "learned",
        seed: int | None = None,
        **kwargs,
    ):
        observation_shape = tuple(int(s) for s in observation_shape)
        super().__init__(observation_shape, **kwargs)
        inference = inference or self.default_inference
        transition = transition or self.default_transition
        check_positive_int("latent_dim", latent_dim)
        check_choice("inference", inference, self.inference_choices)
        check_choice("transition", transition, TRANSITIONS)
        check_choice("emission", emission, EMISSIONS)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        if not isinstance(action_dim, int) or action_dim < 0:
            raise ValueError(f"`action_dim` must be an integer >= 0, got {action_dim!r}.")
        check_positive_int("rnn_units", rnn_units)
        check_positive("kl_annealing_start", kl_annealing_start, allow_zero=True)
        if not isinstance(kl_annealing_steps, int) or kl_annealing_steps < 0:
            raise ValueError(f"`kl_annealing_steps` must be an integer >= 0, got "
                             f"{kl_annealing_steps!r}.")
        self.observation_shape = observation_shape
        self.latent_dim = latent_dim
        self.inference = inference
        self.transition_kind = transition
        self.emission_kind = emission
        self.likelihood = likelihood
        self.action_dim = action_dim
        self.use_time_gaps = bool(use_time_gaps)
        self.transition_units = transition_units
        self.emission_units = tuple(emission_units)
        self.rnn_units = rnn_units
        self.inference_units = tuple(inference_units)
        self.kl_weight = kl_weight
        self.kl_annealing_steps = kl_annealing_steps
        self.kl_annealing_start = kl_annealing_start
        self.gaussian_variance = gaussian_variance
        self.seed = seed
        self.observation_size = flat_size(observation_shape)
        self.condition_size = action_dim + (1 if use_time_gaps else 0)
        self.step_elbo_tracker = keras.metrics.Mean(name="elbo_per_step")

        d, D = latent_dim, self.observation_size
        if likelihood == "bernoulli":
            self.head, per_value = BernoulliLikelihood(event_ndims=1, name="likelihood"), 1
        else:
            self.head = GaussianLikelihood(variance=gaussian_variance, event_ndims=1,
                                           name="likelihood")
            per_value = 2 if gaussian_variance == "per_pixel" else 1
        hidden = self.emission_units if emission == "mlp" else ()
        self.emission = mlp(hidden, "relu", "emission", D * per_value)
        self.transition = StateTransition(d, kind=transition, hidden_units=transition_units,
                                          name="transition")
        self.posterior = GaussianPosterior(d, covariance="diag", add_kl_loss=False,
                                           kl_weight=kl_weight, seed=seed, name="posterior")
        self.rnn_forward = self.rnn_backward = self.combiner = self.inference_net = None
        if inference in ("rnn", "brnn", "st-l", "st-lr"):
            self.rnn_forward = keras.layers.GRU(rnn_units, return_sequences=True,
                                                name="rnn_forward")
        if inference in ("brnn", "st-r", "st-lr"):
            self.rnn_backward = keras.layers.GRU(rnn_units, return_sequences=True,
                                                 go_backwards=True, name="rnn_backward")
        if inference in STRUCTURED:
            self.combiner = Combiner(rnn_units, name="combiner")
        if inference in ("indep", "lr"):
            self.inference_net = mlp(self.inference_units, "relu", "inference")
        self._build_all()

    # ------------------------------------------------------------------ building
    def _build_all(self):
        d, D, c = self.latent_dim, self.observation_size, self.condition_size
        self.z0 = self.add_weight(shape=(d,), initializer="zeros", name="z_0")
        if self.combiner is not None:
            self.zq0 = self.add_weight(shape=(d,), initializer="zeros", name="z_q_0")
            self.combiner.build((None, d))
            self.posterior.build((None, self.rnn_units))
        self.transition.build((None, d), (None, c) if c else None)
        dummy = {"observations": tf.zeros((1, 2, *self.observation_shape))}
        if self.action_dim:
            dummy["actions"] = tf.zeros((1, 2, self.action_dim))
        if self.use_time_gaps:
            dummy["time_gaps"] = tf.ones((1, 2))
        self(dummy)

    def default_callbacks(self) -> list:
        if not self.kl_annealing_steps:
            return []
        return [KLAnnealing(self.kl_annealing_start, 1.0, self.kl_annealing_steps)]

    # ------------------------------------------------------------------ inputs
    def check_input(self, inputs):
        """Normalize inputs to a dict of tensors and check shapes, dtypes and NaNs."""
        if not isinstance(inputs, dict):
            inputs = {"observations": inputs}
        unknown = set(inputs) - {"observations", "mask", "observed", "actions", "time_gaps"}
        if unknown:
            raise ValueError(f"unknown input keys {sorted(unknown)}; expected observations, "
                             f"mask, observed, actions, time_gaps")
        if "observations" not in inputs:
            raise ValueError("inputs must include `observations` [batch, time, "
                             f"{', '.join(map(str, self.observation_shape))}]")
        x = tf.cast(tf.convert_to_tensor(inputs["observations"]), self.compute_dtype)
        if x.shape.rank is not None and tuple(x.shape[2:]) != self.observation_shape:
            raise ValueError(
                f"{type(self).__name__} expects observations of shape [batch, time, "
                f"{', '.join(map(str, self.observation_shape))}] (observation_shape="
                f"{self.observation_shape}), got {tuple(x.shape)}.")
        batch_time = tf.shape(x)[:2]
        out = {"observations": x}
        for key in ("mask", "observed"):
            if inputs.get(key) is not None:
                m = tf.cast(tf.convert_to_tensor(inputs[key]), self.compute_dtype)
                if m.shape.rank is not None and m.shape.rank != 2:
                    raise ValueError(f"`{key}` must be [batch, time], got {tuple(m.shape)}.")
                out[key] = m
        out.setdefault("mask", tf.ones(batch_time, self.compute_dtype))
        out.setdefault("observed", out["mask"])
        if self.action_dim:
            if inputs.get("actions") is None:
                raise ValueError(f"this model was built with action_dim={self.action_dim}: "
                                 f"pass `actions` [batch, time, {self.action_dim}]")
            a = tf.cast(tf.convert_to_tensor(inputs["actions"]), self.compute_dtype)
            if a.shape.rank is not None and (a.shape.rank != 3 or a.shape[-1] != self.action_dim):
                raise ValueError(f"`actions` must be [batch, time, {self.action_dim}], got "
                                 f"{tuple(a.shape)}.")
            out["actions"] = a
        elif inputs.get("actions") is not None:
            raise ValueError("`actions` given but the model has action_dim=0.")
        if self.use_time_gaps:
            if inputs.get("time_gaps") is None:
                raise ValueError("this model uses time gaps: pass `time_gaps` [batch, time]")
            g = tf.cast(tf.convert_to_tensor(inputs["time_gaps"]), self.compute_dtype)
            out["time_gaps"] = tf.reshape(g, batch_time)
        # Missing frames may hold anything (NaN included): they are zeroed before use.
        observed = out["observed"] * out["mask"]
        keep = tf.reshape(observed > 0, tf.concat(
            [batch_time, tf.ones([len(self.observation_shape)], tf.int32)], 0))
        clean = tf.where(keep, x, tf.zeros_like(x))
        with tf.control_dependencies([assert_finite(clean, "observations")]):
            out["observations"] = tf.identity(clean)
        out["observed"] = observed
        return out

    def _conditions(self, inputs):
        """c_t = [u_{t-1}; Delta_t] for the transition into step t, or None."""
        parts = []
        if self.action_dim:
            a = inputs["actions"]
            parts.append(tf.concat([tf.zeros_like(a[:, :1]), a[:, :-1]], 1))
        if self.use_time_gaps:
            parts.append(inputs["time_gaps"][..., None])
        return tf.concat(parts, -1) if parts else None

    def _flat(self, x):
        shape = tf.shape(x)
        return tf.reshape(x, [shape[0], shape[1], self.observation_size])

    # ------------------------------------------------------------------ inference
    def _rnn_states(self, x_in, mask):
        bool_mask = mask > 0
        states = []
        if self.rnn_forward is not None:
            states.append(self.rnn_forward(x_in, mask=bool_mask))
        if self.rnn_backward is not None:
            states.append(tf.reverse(self.rnn_backward(x_in, mask=bool_mask), [1]))
        return states

    def _features(self, x_in, mask):
        if self.inference == "indep":
            return apply_with_particles(self.inference_net, x_in)
        if self.inference == "lr":
            pad = tf.zeros_like(x_in[:, :1])
            prev = tf.concat([pad, x_in[:, :-1]], 1)
            nxt = tf.concat([x_in[:, 1:], pad], 1)
            return apply_with_particles(self.inference_net, tf.concat([prev, x_in, nxt], -1))
        return tf.concat(self._rnn_states(x_in, mask), -1)

    def trajectory(self, inputs, noise=None):
        """One pass of inference and generation; per-step tensors ``[batch, time, ...]``.

        ``noise`` ``[batch, time, latent_dim]`` fixes the posterior draws (zeros give the
        posterior means); None draws from the posterior's seed generator.
        """
        x = self._flat(inputs["observations"])
        mask, observed = inputs["mask"], inputs["observed"]
        x_in = tf.concat([x * observed[..., None], observed[..., None]], -1)
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        d = self.latent_dim
        md = math_dtype(self.posterior)  # float32 under mixed precision
        if noise is None:
            noise = standard_normal([batch, steps, d], self.posterior.seed_generator, md)
        noise = tf.cast(noise, md)
        if self.inference in STRUCTURED:
            states = self._rnn_states(x_in, mask)
            time_major = [tf.transpose(s, [1, 0, 2]) for s in states]

            def step(carry, elems):
                z_prev = carry[0]
                *rnn_t, eps_t = elems
                out = self.posterior(self.combiner(z_prev, list(rnn_t)), noise=eps_t)
                return out["z"], out["loc"], out["scale"], out["log_q"]

            init_z = tf.broadcast_to(tf.cast(self.zq0, md), [batch, d])
            zeros_b = tf.zeros([batch], md)
            scanned = tf.scan(step, (*time_major, tf.transpose(noise, [1, 0, 2])),
                              initializer=(init_z, init_z, init_z, zeros_b))
            z, loc, scale, log_q = [tf.transpose(t, [1, 0, 2] if t.shape.rank == 3 else [1, 0])
                                    for t in scanned]
        else:
            out = self.posterior(self._features(x_in, mask), noise=noise)
            z, loc, scale, log_q = out["z"], out["loc"], out["scale"], out["log_q"]
        z0 = tf.broadcast_to(tf.cast(self.z0, z.dtype)[None, None], [batch, 1, d])
        prior = self.transition(tf.concat([z0, z[:, :-1]], 1), self._conditions(inputs))
        kl = gaussian_kl_to_diag(loc, tf.square(scale), 2.0 * tf.reduce_sum(tf.math.log(scale), -1),
                                 prior["loc"], prior["scale"])
        log_prior = tf.reduce_sum(tfd.Normal(prior["loc"], prior["scale"]).log_prob(z), -1)
        emitted = self.head(apply_with_particles(self.emission, z), x)
        return {"z": z, "loc": loc, "scale": scale, "log_q": log_q, "prior_loc": prior["loc"],
                "prior_scale": prior["scale"], "kl": kl, "log_prior": log_prior,
                "log_px": emitted["log_prob"], "mean": emitted["mean"],
                "mask": tf.cast(mask, md), "observed": tf.cast(observed, md)}

    # ------------------------------------------------------------------ bounds
    def elbo_terms(self, inputs, training=None):
        t = self.trajectory(inputs)
        mask, observed = t["mask"], t["observed"]
        reconstruction = tf.reduce_sum(mask * observed * t["log_px"], 1)
        kl = tf.reduce_sum(mask * t["kl"], 1)
        weight = tf.cast(self.posterior.kl_weight, kl.dtype)
        steps = tf.cast(tf.shape(mask)[1], kl.dtype)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl,
                "objective": (weight * kl - reconstruction) / steps,
                "steps": tf.reduce_sum(mask, 1)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        self.step_elbo_tracker.update_state(y_pred["elbo"] / y_pred["steps"],
                                            sample_weight=y_pred["steps"])
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def log_weights(self, inputs, num_samples, seed):
        tiled = tf.nest.map_structure(lambda a: tf.repeat(a, num_samples, axis=0), inputs)
        batch = tf.shape(inputs["observations"])[0]
        steps = tf.shape(inputs["observations"])[1]
        noise = tf.random.stateless_normal([batch * num_samples, steps, self.latent_dim], seed,
                                           dtype=self.compute_dtype)
        t = self.trajectory(tiled, noise)
        per_step = t["observed"] * t["log_px"] + t["log_prior"] - t["log_q"]
        return tf.reshape(tf.reduce_sum(t["mask"] * per_step, 1), [batch, num_samples])

    def log_likelihood(self, inputs, num_samples: int = 1000, batch_size: int = 20,
                       chunk_size: int = 100, seed: int = 0, **kwargs):
        """Per-sequence importance-weighted bound over whole latent trajectories (other
        arguments as ``LatentVariableModel.log_likelihood``)."""
        return super().log_likelihood(inputs, num_samples, batch_size, chunk_size, seed,
                                      **kwargs)

    # ------------------------------------------------------------------ user methods
    def _posterior_pass(self, inputs):
        inputs = self.check_input(inputs)
        shape = tf.shape(inputs["observations"])
        t = self.trajectory(inputs, tf.zeros([shape[0], shape[1], self.latent_dim]))
        return t["loc"], t["scale"], tf.reshape(t["mean"], shape)

    @property
    def causal(self) -> bool:
        """Whether q(z_t | .) sees only frames up to t (inference ``rnn``, ``st-l``,
        ``indep``): then ``filter`` and ``filter_step`` exist."""
        return self.inference in CAUSAL

    def smooth(self, inputs) -> LatentSmootherResult:
        """Posterior means/scales of z_t from the inference network given the whole sequence
        (a smoother for ``brnn``/``st-r``/``st-lr``/``lr``), and the emission of the means:
        ``smoothed_means``, ``smoothed_scales``, ``observation_means``."""
        return LatentSmootherResult(*self._posterior_pass(inputs))

    def filter(self, inputs) -> LatentFilterResult:
        """Causal estimates E_q[z_t | x_{1:t}] (inference ``rnn``, ``st-l`` or ``indep``): the
        same numbers ``filter_step`` gives frame by frame: ``filtered_means``,
        ``filtered_scales``, ``observation_means``."""
        if not self.causal:
            raise ValueError(
                f"filter() needs a causal inference network ({', '.join(CAUSAL)}); this model "
                f"uses inference={self.inference!r}, which looks at future frames: use smooth().")
        return LatentFilterResult(*self._posterior_pass(inputs))

    def initial_state(self, batch_size: int = 1) -> dict:
        """State of ``filter_step`` before the first frame."""
        dtype = self.compute_dtype
        state = {"z_prev": tf.broadcast_to(tf.cast(getattr(self, "zq0", self.z0), dtype),
                                           [batch_size, self.latent_dim])}
        if self.rnn_forward is not None:
            state["rnn"] = tf.zeros([batch_size, self.rnn_units], dtype)
        return state

    def filter_step(self, state: dict, observation, observed=None):
        """One causal step: (state, x_t) -> (new state, outputs ``filtered_mean``,
        ``filtered_scale`` (of q(z_t | x_1..x_t)) and ``observation_mean`` (its emission)).

        ``observation`` is ``[batch, *observation_shape]``; ``observed`` ``[batch]`` marks
        present frames (default all). Uses posterior means (zero noise), like ``filter``.
        """
        if not self.causal:
            raise ValueError(f"filter_step needs a causal inference network, got "
                             f"{self.inference!r}.")
        x = tf.reshape(tf.cast(observation, self.compute_dtype), [-1, self.observation_size])
        o = tf.ones_like(x[:, 0]) if observed is None else tf.cast(observed, x.dtype)
        x_in = tf.concat([x * o[:, None], o[:, None]], -1)
        new_state = dict(state)
        if self.rnn_forward is not None:
            h, _ = self.rnn_forward.cell(x_in, [state["rnn"]])
            new_state["rnn"] = h
            features = self.combiner(state["z_prev"], [h]) if self.combiner else h
        else:
            features = apply_with_particles(self.inference_net, x_in)
        params = self.posterior.posterior_parameters(features)
        new_state["z_prev"] = params["loc"]
        mean = self.head(apply_with_particles(self.emission, params["loc"]))["mean"]
        return new_state, {"filtered_mean": params["loc"], "filtered_scale": params["scale"],
                           "observation_mean": mean}

    def encode(self, inputs):
        return self.smooth(inputs)

    def decode(self, z):
        """Emission of latents z ``[..., latent_dim]``: ``mean`` (and ``scale``), ``params``."""
        params = apply_with_particles(self.emission, tf.convert_to_tensor(z))
        return {**self.head(params), "params": params}

    def _roll(self, z, steps, conditions, seed):
        """Sample the transition forward from z [n, d] for ``steps`` steps."""
        out = []
        for h in range(steps):
            c = None if conditions is None else conditions[:, h]
            p = self.transition(z, c)
            eps = tf.random.stateless_normal(tf.shape(z), seed + [0, h + 1], dtype=z.dtype)
            z = p["loc"] + p["scale"] * eps
            out.append(z)
        return tf.stack(out, 1)

    def _future_conditions(self, actions, time_gaps, n, steps):
        parts = []
        if self.action_dim:
            if actions is None:
                raise ValueError(f"pass `actions` [batch, {steps}, {self.action_dim}]: "
                                 f"actions[:, 0] moves the last frame to the first new one")
            parts.append(tf.cast(actions, self.compute_dtype))
        if self.use_time_gaps:
            gaps = tf.ones([n, steps]) if time_gaps is None else tf.cast(time_gaps, tf.float32)
            parts.append(tf.reshape(gaps, [n, steps, 1]))
        return tf.concat(parts, -1) if parts else None

    def forecast(self, inputs, steps: int, actions=None, time_gaps=None, num_samples: int = 100,
                 seed: int = 0) -> dict:
        """Predict ``steps`` frames past the end of each sequence (all of the same length):
        posterior draws of the last latent rolled through the transition. Returns the mean
        and standard deviation over ``num_samples`` trajectories of the emission means
        (``observation_means``/``observation_stds`` ``[batch, steps, ...]``) and latents
        (``state_means``/``state_stds``)."""
        check_positive_int("steps", steps)
        inputs = self.check_input(inputs)
        n = tf.shape(inputs["observations"])[0]
        seed_t = tf.constant([seed, 0])
        tiled = tf.nest.map_structure(lambda a: tf.repeat(a, num_samples, axis=0), inputs)
        length = tf.shape(inputs["observations"])[1]
        noise = tf.random.stateless_normal([n * num_samples, length, self.latent_dim], seed_t)
        last = self.trajectory(tiled, noise)["z"][:, -1]
        cond = self._future_conditions(actions, time_gaps, n, steps)
        if cond is not None:
            cond = tf.repeat(cond, num_samples, axis=0)
        z = self._roll(last, steps, cond, seed_t + [1, 0])
        frames = self.decode(z)["mean"]
        frames = tf.reshape(frames, [n, num_samples, steps, *self.observation_shape])
        z = tf.reshape(z, [n, num_samples, steps, self.latent_dim])
        return {"observation_means": tf.reduce_mean(frames, 1),
                "observation_stds": tf.math.reduce_std(frames, 1),
                "state_means": tf.reduce_mean(z, 1), "state_stds": tf.math.reduce_std(z, 1)}

    def impute(self, inputs, observed):
        """Fill the frames where ``observed`` ``[batch, time]`` is 0 with the model's posterior
        emission means; returns ``imputed`` (observations with the gaps filled) and
        ``reconstruction`` (the emission means at every step)."""
        inputs = dict(inputs) if isinstance(inputs, dict) else {"observations": inputs}
        inputs["observed"] = observed
        mean = self.smooth(inputs).observation_means
        x = tf.cast(inputs["observations"], mean.dtype)
        keep = tf.reshape(tf.cast(observed, mean.dtype),
                          [*observed.shape[:2]] + [1] * len(self.observation_shape))
        x = tf.where(keep > 0, x, tf.zeros_like(x))
        return {"imputed": keep * x + (1.0 - keep) * mean, "reconstruction": mean}

    def sample(self, n: int, steps: int = 20, actions=None, time_gaps=None, seed: int | None = 0):
        """Emission means of ``n`` sequences of ``steps`` frames sampled from the prior."""
        seed_t = self.stateless_seed(seed)
        z0 = tf.broadcast_to(tf.cast(self.z0, tf.float32)[None], [n, self.latent_dim])
        z = self._roll(z0, steps, self._future_conditions(actions, time_gaps, n, steps), seed_t)
        return tf.reshape(self.decode(z)["mean"], [n, steps, *self.observation_shape])

    def reconstruct(self, inputs):
        return self.smooth(inputs).observation_means

    def posterior_mean_latent(self, inputs):
        return self.smooth(inputs).smoothed_means

    def prior_sample(self, n, seed=None):
        raise TypeError("use sample(n, steps) for sequence models")

    # ------------------------------------------------------------------ contract
    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        """The frame shape, and the action size / time gaps when the data has them."""
        kwargs = {"observation_shape": tuple(int(s) for s in
                                             np.asarray(arrays["observations"]).shape[2:])}
        if "actions" in arrays:
            kwargs["action_dim"] = int(np.asarray(arrays["actions"]).shape[-1])
        if "time_gaps" in arrays:
            kwargs["use_time_gaps"] = True
        return kwargs

    @classmethod
    def fit_inputs(cls, arrays: dict):
        """``{"observations"[, "mask", "observed", "actions", "time_gaps"]}``; NaN
        observations are missing frames (``observed`` 0)."""
        return sequences.sequence_inputs(arrays), None

    @classmethod
    def prepare_batch(cls, x):
        return sequences.trim_to_longest(x)

    def validate_data(self, arrays: dict) -> None:
        """NaN observations are missing frames (hidden from the inference network, no
        likelihood term); NaN in any other array is an error naming it."""
        sequences.check_finite(arrays, type(self).__name__)

    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """The K-sample importance-weighted bound over whole latent trajectories, per
        sequence and per real step (padding excluded)."""
        report = super().evaluation(x, y, arrays, settings)
        k = settings.num_samples
        total = report[f"iwae_log_likelihood_k{k}"] * report["likelihood_examples"]
        report["nll_per_step"] = float(-total / np.sum(sequences.sequence_steps(x)))
        return report

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        """One sequence and the emission of its posterior means, drawn by what the frames
        are: image frames (with the clean ones when the data has them), piano rolls (with a
        sequence sampled from the model) or trajectories."""
        one, length = sequences.first_sequence(x)
        means = self.smooth(one).observation_means
        obs = np.asarray(one["observations"])
        sample = None
        if obs.ndim == 3 and sequences.looks_binary(obs[0, :length]):
            sample = np.asarray(self.sample(1, steps=length, actions=None if not self.action_dim
                                            else one["actions"][:, :length],
                                            seed=settings.seed))[0]
        clean = {"clean": arrays["clean"][:1]} if "clean" in arrays else {}
        return sequences.picture_sequence(obs, means, length, out_dir, clean, sample=sample,
                                          title="observations and smoothed emission means")

    def get_config(self):
        config = super().get_config()
        config.update(
            observation_shape=self.observation_shape,
            latent_dim=self.latent_dim,
            inference=self.inference,
            transition=self.transition_kind,
            emission=self.emission_kind,
            likelihood=self.likelihood,
            action_dim=self.action_dim,
            use_time_gaps=self.use_time_gaps,
            transition_units=self.transition_units,
            emission_units=self.emission_units,
            rnn_units=self.rnn_units,
            inference_units=self.inference_units,
            kl_weight=self.kl_weight,
            kl_annealing_steps=self.kl_annealing_steps,
            kl_annealing_start=self.kl_annealing_start,
            gaussian_variance=self.gaussian_variance,
            seed=self.seed,
        )
        return config


@register
class DeepKalmanFilter(DeepStateSpaceModel):
    r"""Deep Kalman Filter: Krishnan, Shalit & Sontag, "Deep Kalman Filters" (2015).

    The generative model and bound of ``DeepStateSpaceModel`` with the paper's transition
    ($G$, $S$ as an MLP, ``transition="mlp"``; ``"linear"`` gives the linear-Gaussian special
    case) and its inference networks q-INDEP, q-LR, q-RNN (default; causal, usable as a filter)
    and q-BRNN (``inference`` = ``"indep"``, ``"lr"``, ``"rnn"``, ``"brnn"``). Actions u_t
    (``action_dim``) and time gaps (``use_time_gaps``) condition the transition.

    Args:
        observation_shape: tuple. Shape of one frame, e.g. ``(28, 28, 1)``.
        latent_dim: int. Dimension of z_t.
        inference: str. ``"indep"``, ``"lr"``, ``"rnn"`` or ``"brnn"``.
        transition: str. ``"mlp"``, ``"gated"`` or ``"linear"``.
        emission: str. ``"mlp"`` or ``"linear"``.
        likelihood: str. ``"bernoulli"`` or ``"gaussian"``.
        action_dim: int. Size of the action vector (0: none).
        use_time_gaps: bool. Condition the transition on the gap between steps.
        transition_units: int. Hidden width of the transition.
        emission_units: tuple of int. Hidden widths of the emission MLP.
        rnn_units: int. GRU width of the RNN inference networks.
        inference_units: tuple of int. MLP widths of q-INDEP / q-LR.
        kl_weight: float. Initial KL weight.
        kl_annealing_steps: int. Steps of linear KL warm-up (0: none).
        kl_annealing_start: float. KL weight at step 0 of the warm-up.
        gaussian_variance: str. For ``likelihood="gaussian"``.
        seed: int or None. Seed of the posterior sampler.

    Example:

    >>> import numpy as np
    >>> model = DeepKalmanFilter(observation_shape=(3,), latent_dim=2, rnn_units=8,
    ...                          emission_units=(8,), transition_units=8, seed=0)
    >>> model.compile(optimizer="adam")
    >>> x = (np.random.RandomState(0).rand(16, 5, 3) > 0.5).astype("float32")
    >>> _ = model.fit(x, batch_size=8, epochs=1, verbose=0)
    >>> model.filter(x[:2]).filtered_means.shape
    TensorShape([2, 5, 2])
    """

    default_inference = "rnn"
    default_transition = "mlp"
    inference_choices = ("indep", "lr", "rnn", "brnn")


@register
class DeepMarkovModel(DeepStateSpaceModel):
    r"""Deep Markov Model with a structured inference network: Krishnan, Shalit & Sontag,
    "Structured Inference Networks for Nonlinear State Space Models" (2017).

    Gated transition (``transition="gated"``), and
    $q(z_t | z_{t-1}, x) = N(\mu, \sigma^2)$ from the combiner
    $h = \frac{1}{2}(\tanh(W z_{t-1} + b) + h^{rnn}_t)$ over a backward RNN (ST-R, default),
    a forward RNN (ST-L, causal) or both (ST-LR, $\frac{1}{3}$). Per-step KLs are analytic given
    the sampled $z_{t-1}$; ``kl_annealing_steps`` anneals the KL weight from
    ``kl_annealing_start`` (0.2 in the paper) to 1. Arguments as ``DeepKalmanFilter``, with
    ``inference`` in ``"st-l"``, ``"st-r"``, ``"st-lr"``.

    Example:

    >>> import numpy as np
    >>> model = DeepMarkovModel(observation_shape=(4,), latent_dim=2, rnn_units=8,
    ...                         emission_units=(8,), transition_units=8, seed=0)
    >>> x = (np.random.RandomState(0).rand(3, 6, 4) > 0.5).astype("float32")
    >>> model.smooth(x).smoothed_means.shape
    TensorShape([3, 6, 2])
    """

    default_inference = "st-r"
    default_transition = "gated"
    inference_choices = STRUCTURED

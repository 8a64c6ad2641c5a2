"""Deep Kalman Filter (Krishnan et al. 2015) and Deep Markov Model (Krishnan et al. 2017)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers import BernoulliLikelihood, GaussianLikelihood, GaussianPosterior, KLAnnealing
from zoo.layers.combiner import Combiner, combiner_posterior_scan, fused_posterior_supported
from zoo.layers.common import (
    assert_finite,
    check_choice,
    check_positive,
    check_positive_int,
    math_dtype,
    register,
    standard_normal,
    standard_uniform,
)
from zoo.layers.gaussian_posterior import diag_log_q, gaussian_kl_to_diag
from zoo.layers.relu_rnn import ReluRNN
from zoo.layers import smc_bound
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
INITIAL_STATES = ("learned", "transition")
FILTERS = ("rnn",)
# What the filter network learns from: dreams of the model, or the learning network's
# posterior of the real sequences (issue 18, the pendulum).
FILTER_TARGETS = ("dreams", "posterior")
RNN_CELLS = ("gru", "rnn")  # GRU, or a plain ReLU RNN (torch's nn.RNN(nonlinearity="relu"))
INITIALIZERS = ("glorot", "fan_in")  # Keras' default, or torch's U(+-1/sqrt(fan_in))
MIN_INITIAL_SCALE = 1e-3
DREAM_BOUND = 1e3  # dreamt latents and frames are clipped to +-DREAM_BOUND
LIKELIHOODS = ("bernoulli", "gaussian")


class _Net(NamedTuple):
    """The layers of one inference network (the learning one or the causal filter)."""

    kind: str
    rnn_forward: object
    rnn_backward: object
    combiner: object
    mlp: object
    posterior: object
    zq0: object
    message: bool = False  # q = prior x Gaussian message of the RNN (structured networks)


def _repeat_rows(a, k: int):
    """``tf.repeat(a, k, axis=0)`` by broadcasting: the gradient of tf.repeat's Tile inside a
    tf.scan needs the multiples as a compile-time constant, which XLA cannot get."""
    a = tf.convert_to_tensor(a)
    ones = tf.ones([1, k] + [1] * (a.shape.rank - 1), a.dtype)
    return tf.reshape(a[:, None] * ones, [-1] + a.shape[1:].as_list())


def _step_prior(prior: dict, first: dict, later):
    """``loc``, ``scale`` of z_t's prior: the transition's ``prior`` where ``later`` is 1
    (t > 1), p(z_1) = ``first`` where it is 0."""
    def blend(key):
        return later * prior[key] + (1.0 - later) * tf.cast(first[key], later.dtype)

    return blend("loc"), blend("scale")


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

    $$z_1 \sim N(\mu_0, \mathrm{diag}\,\sigma_0^2),\quad z_t \sim N(\mu_\theta(z_{t-1}, c_t),
    \mathrm{diag}\,\sigma^2_\theta(z_{t-1}, c_t)),\quad x_t \sim \Pi(F_\theta(z_t))$$

    with $\mu_0$ and $\sigma_0 = \mathrm{softplus}(\rho_0) + 10^{-3}$ learned
    (``initial_state="learned"``, the default; ``"transition"`` is the model of files saved
    before it: $z_1$ drawn from the transition applied to a learned point $z_0$).

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

    ``objective="iwae"`` or ``"fivo"`` trains instead on a K-particle bound
    (``num_particles``; :meth:`particle_bound`, :mod:`layers.smc_bound`): the importance-weighted
    bound over K whole trajectories from q (Burda et al. 2016), or the filtering variational
    objective (Maddison et al. 2017; Le et al. 2018), the same K particles resampled
    (``resample``: the scheme) whenever their effective sample size falls below K/2, so
    $\log \hat Z = \sum_t \log \sum_i W_{t-1}^i w_t^i$ with incremental weights
    $w_t = p(x_t|z_t)^{o_t} p(z_t|z_{t-1}) / q(z_t|\cdot)$. Both are $\ge$ the ELBO in
    expectation for K > 1 and equal a sampled ELBO for K = 1; the ELBO and its terms are
    still reported (``elbo_per_step``), the optimized bound as ``iwae_per_step`` /
    ``fivo_per_step``. The KL weight multiplies $\log p(z_t|z_{t-1}) - \log q$ in the
    weights (1: the exact bound).

    Learning and filtering (issue 18): the ELBO with a causal $q(z_t | x_{1:t})$ is loose in
    a way that biases the generative model (it learns a large transition noise so that
    filtering looks like smoothing). So the generative model is learned with an ``inference``
    network that sees the future (``"st-r"``, ``"st-lr"``; the true posterior factorizes as
    $q(z_t | z_{t-1}, x_{t:T})$, Krishnan et al. 2017), and a second, causal
    ``filter_inference`` network $q_\psi(z_t | x_{1:t})$ (a q-RNN) is trained at the same time
    on sequences $(z, x) \sim p_\theta$ dreamt from the generative model (no gradient reaches
    $\theta$ through them):

    $$\text{loss} = -\mathcal{L}_{\theta,\phi}(x) + E_{p_\theta(z, x)}\Big[-\sum_t
    \log q_\psi(z_t | x_{1:t})\Big]$$

    The second term is the sleep phase of wake-sleep (Hinton et al. 1995): its minimizer is the
    model's exact filtering posterior $p_\theta(z_t | x_{1:t})$, which no ELBO-trained causal
    $q$ is (the ELBO's optimal $q$ approximates the smoothing posterior). ``filter``,
    ``filter_step`` and the exported filter use the filter network, ``smooth`` and the
    likelihood bounds the learning one. ``fit_filter`` trains the filter alone afterwards.

    Dreams cover what the learned model generates, not what the data holds. With
    ``filter_target="posterior"`` the filter learns from the real sequences instead, at
    $z \sim q_\phi(z | x_{1:T})$ from the learning network (no gradient to it):
    $E_x E_{q_\phi}[-\sum_t \log q_\psi(z_t | x_{1:t})]$, minimized by
    $E[q_\phi(z_t | x_{1:T}) \mid x_{1:t}]$ over the data's futures, which is the filtering
    posterior when $q_\phi$ is the model's posterior. On the pendulum (benchmarks/README.md,
    issue 18) the learned Gaussian p(z_1) under-covers starts near the top and about 1 % of
    dreamt frames leave the unit circle far behind (99th percentile of the frames' norm 220,
    the data's 1.24): the filter learned from dreams tracked the angle with 0.085 rad RMSE,
    from the posterior 0.063 (the ST-R smoother 0.044, the q-RNN trained on its own ELBO
    0.066), at the cost of one more ST-R pass per batch in ``fit_filter``.

    Inputs are a tensor of observations ``[batch, time, *observation_shape]`` or a dict with
    ``observations`` and optionally ``mask`` ``[batch, time]`` (1 = real step),
    ``observed`` ``[batch, time]`` (1 = frame observed), ``actions``
    ``[batch, time, action_dim]`` (``actions[:, t]`` moves the system from step t to t+1)
    and ``time_gaps`` ``[batch, time]`` (the gap from step t-1 to t).
    """

    default_inference = "st-r"
    default_transition = "mlp"
    default_filter = "rnn"
    default_structured_posterior = "message"
    inference_choices = INFERENCE
    export_adapter = "deep_state_space"
    binarizes_inputs = False
    default_initializer = "glorot"
    # The time loops compile under XLA, gradient included (no tf.broadcast_to / tf.repeat in
    # their bodies: their gradients need forward shapes as compile-time constants).
    supports_jit = True

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
        initial_state: str = "learned",
        filter_inference: str | None = "auto",
        structured_posterior: str | None = None,
        rnn_cell: str = "gru",
        initializer: str | None = None,
        objective: str = "elbo",
        num_particles: int = 4,
        resample: str = "systematic",
        filter_target: str = "dreams",
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
        check_choice("initial_state", initial_state, INITIAL_STATES)
        structured_posterior = structured_posterior or self.default_structured_posterior
        check_choice("structured_posterior", structured_posterior, ("message", "combiner"))
        check_choice("rnn_cell", rnn_cell, RNN_CELLS)
        check_choice("filter_target", filter_target, FILTER_TARGETS)
        initializer = initializer or self.default_initializer
        check_choice("initializer", initializer, INITIALIZERS)
        smc_bound.check_objective(objective, num_particles, resample)
        if filter_inference == "auto":
            filter_inference = None if inference in CAUSAL else self.default_filter
        if filter_inference is not None:
            check_choice("filter_inference", filter_inference, FILTERS)
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
        self.initial_state_kind = initial_state
        self.filter_inference = filter_inference
        self.structured_posterior = structured_posterior
        self.rnn_cell = rnn_cell
        self.initializer = initializer
        self.objective = objective
        self.num_particles = num_particles
        self.resample = resample
        self.filter_target = filter_target
        self.train_filter_only = False  # set by fit_filter
        self.observation_size = flat_size(observation_shape)
        self.condition_size = action_dim + (1 if use_time_gaps else 0)
        self.step_elbo_tracker = keras.metrics.Mean(name="elbo_per_step")
        self.filter_nll_tracker = (keras.metrics.Mean(name="filter_nll_per_step")
                                   if filter_inference else None)
        self.bound_tracker = (keras.metrics.Mean(name=f"{objective}_per_step")
                              if objective != "elbo" else None)

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
            self.rnn_forward = self._rnn_layer(name="rnn_forward")
        if inference in ("brnn", "st-r", "st-lr"):
            self.rnn_backward = self._rnn_layer(go_backwards=True, name="rnn_backward")
        if inference in STRUCTURED and structured_posterior == "combiner":
            self.combiner = Combiner(rnn_units, name="combiner")
        if inference in ("indep", "lr"):
            self.inference_net = mlp(self.inference_units, "relu", "inference")
        self.filter_rnn = self.filter_posterior = None
        if filter_inference is not None:
            self.filter_rnn = self._rnn_layer(name="filter_rnn")
            self.filter_posterior = GaussianPosterior(
                d, covariance="diag", add_kl_loss=False, seed=None if seed is None else seed + 1,
                name="filter_posterior")
        self._build_all()

    # ------------------------------------------------------------------ building
    def _rnn_layer(self, **kwargs):
        """An RNN of the inference/filter networks: ``rnn_cell`` "gru" or "rnn" (ReLU)."""
        if self.rnn_cell == "rnn":
            return ReluRNN(self.rnn_units, return_sequences=True, **kwargs)
        return keras.layers.GRU(self.rnn_units, return_sequences=True, **kwargs)

    def _build_all(self):
        d, c = self.latent_dim, self.condition_size
        self.z0 = self.initial_loc = self.initial_raw_scale = self.zq0 = None
        if self.initial_state_kind == "transition":
            self.z0 = self.add_weight(shape=(d,), initializer="zeros", name="z_0")
        else:  # sigma_0 = softplus(rho_0) + 1e-3 starts at 1
            self.initial_loc = self.add_weight(shape=(d,), initializer="zeros",
                                               name="initial_loc")
            self.initial_raw_scale = self.add_weight(
                shape=(d,), initializer=keras.initializers.Constant(
                    math.log(math.expm1(1.0 - MIN_INITIAL_SCALE))), name="initial_raw_scale")
        if self.combiner is not None:
            self.zq0 = self.add_weight(shape=(d,), initializer="zeros", name="z_q_0")
            self.combiner.build((None, d))
            self.posterior.build((None, self.rnn_units))
        # Posteriors called through posterior_parameters only (message form, the filter).
        for posterior in ((self.posterior,) if self._net().message else ()) + (
                self.filter_posterior,):
            if posterior is not None and not posterior.built:
                posterior.build((None, self.rnn_units))
        self.transition.build((None, d), (None, c) if c else None)
        dummy = {"observations": tf.zeros((1, 2, *self.observation_shape))}
        if self.action_dim:
            dummy["actions"] = tf.zeros((1, 2, self.action_dim))
        if self.use_time_gaps:
            dummy["time_gaps"] = tf.ones((1, 2))
        self._build_by_calling(dummy)
        if self.initializer == "fan_in":
            self._fan_in_init()

    def _fan_in_init(self):
        """``initializer="fan_in"``: every Dense and RNN kernel redrawn from U(-1/sqrt(n),
        1/sqrt(n)), n its fan-in (the RNN's width for RNN kernels): torch's default for
        nn.Linear, nn.RNN and nn.GRU, a third of Glorot's variance. Biases stay 0; the
        transition's linear map keeps its identity start."""
        keep = getattr(self.transition, "linear", None)
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if layer is keep:
                continue
            if isinstance(layer, keras.layers.Dense):
                kernels = [(layer.kernel, layer.kernel.shape[0])]
            elif isinstance(layer, keras.layers.RNN):
                cell = layer.cell
                kernels = [(cell.kernel, cell.units), (cell.recurrent_kernel, cell.units)]
            else:
                continue
            for w, fan_in in kernels:
                bound = 1.0 / math.sqrt(fan_in)
                w.assign(keras.random.uniform(w.shape, -bound, bound, dtype=w.dtype))

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
                if sequences.on_host(inputs[key]):  # 0/1 only and [batch, time] of the observations
                    sequences.check_flags(key, inputs[key], x.shape[1], x.shape[0])
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
            if sequences.on_host(inputs["time_gaps"]):
                sequences.check_time_gaps(inputs["time_gaps"])
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
    def _net(self, which: str = "inference") -> _Net:
        """The learning network (``"inference"``) or the causal one (``"filter"``: the
        separate filter network when there is one, else the inference network)."""
        message = self.structured_posterior == "message"
        if which == "filter" and self.filter_inference is not None:
            return _Net(self.filter_inference, self.filter_rnn, None, None, None,
                        self.filter_posterior, None)
        return _Net(self.inference, self.rnn_forward, self.rnn_backward, self.combiner,
                    self.inference_net, self.posterior, self.zq0,
                    message and self.inference in STRUCTURED)

    def _rnn_states(self, x_in, mask, net=None):
        net = net or self._net()
        bool_mask = mask > 0
        states = []
        for layer in (net.rnn_forward, net.rnn_backward):
            if layer is not None:
                states.append(self._rnn_state(layer, x_in, bool_mask))
        return states

    @staticmethod
    def _rnn_state(layer, x_in, bool_mask):
        """One RNN's states [batch, time, units] in the order of the steps (a backward
        RNN's output reversed back)."""
        h = layer(x_in, mask=bool_mask)
        return tf.reverse(h, [1]) if layer.go_backwards else h

    def _time_major_states(self, x_in, mask, net):
        """``_rnn_states`` time-major, [time, batch, units] each: a ``ReluRNN`` computes them
        so directly (no transposed or reversed copies of the states, forward or backward);
        another RNN's output is transposed."""
        x_tm, m_tm = tf.transpose(x_in, [1, 0, 2]), tf.transpose(tf.cast(mask > 0, x_in.dtype))
        states = []
        for layer in (net.rnn_forward, net.rnn_backward):
            if layer is None:
                continue
            h = layer.time_major_states(x_tm, m_tm) if isinstance(layer, ReluRNN) else None
            if h is None:
                h = tf.transpose(self._rnn_state(layer, x_in, mask > 0), [1, 0, 2])
            states.append(h)
        return states

    def _features(self, x_in, mask, net):
        if net.kind == "indep":
            return apply_with_particles(net.mlp, x_in)
        if net.kind == "lr":
            pad = tf.zeros_like(x_in[:, :1])
            prev = tf.concat([pad, x_in[:, :-1]], 1)
            nxt = tf.concat([x_in[:, 1:], pad], 1)
            return apply_with_particles(net.mlp, tf.concat([prev, x_in, nxt], -1))
        return tf.concat(self._rnn_states(x_in, mask, net), -1)

    def initial_distribution(self) -> dict:
        """``loc`` and ``scale`` of p(z_1) = N(mu_0, diag sigma_0^2) (``initial_state=
        "learned"``; with ``"transition"`` it is the transition from z_0, without conditions)."""
        if self.initial_loc is None:
            out = self.transition(self.z0[None], None if not self.condition_size else
                                  tf.zeros([1, self.condition_size], self.z0.dtype))
            return {"loc": out["loc"][0], "scale": out["scale"][0]}
        return {"loc": tf.convert_to_tensor(self.initial_loc),
                "scale": tf.nn.softplus(self.initial_raw_scale) + MIN_INITIAL_SCALE}

    def _prior(self, z, conditions):
        """p(z_t | z_{t-1}) for every step given posterior draws z [batch, time, d]."""
        batch, d = tf.shape(z)[0], self.latent_dim
        if self.initial_loc is None:
            z0 = tf.broadcast_to(tf.cast(self.z0, z.dtype)[None, None], [batch, 1, d])
            return self.transition(tf.concat([z0, z[:, :-1]], 1), conditions)
        rest = self.transition(z[:, :-1], None if conditions is None else conditions[:, 1:])
        first = self.initial_distribution()
        return {key: tf.concat([tf.broadcast_to(tf.cast(first[key], z.dtype)[None, None],
                                                [batch, 1, d]), rest[key]], 1)
                for key in ("loc", "scale")}

    def _message(self, net, rnn_states):
        """The Gaussian message N(m_t, diag s_t^2) of the RNN states (their mean for ST-LR)."""
        h = rnn_states[0] if len(rnn_states) == 1 else tf.add_n(rnn_states) / len(rnn_states)
        return net.posterior.posterior_parameters(h)

    @staticmethod
    def _combine(prior_loc, prior_scale, message):
        """N(prior) x N(message), normalized: precisions add."""
        prior_var, msg_var = tf.square(prior_scale), tf.square(message["scale"])
        var = prior_var * msg_var / (prior_var + msg_var)
        loc = var * (prior_loc / prior_var + message["loc"] / msg_var)
        return loc, tf.sqrt(var)

    def _message_scan(self, net, inputs, x_in, mask, noise):
        """q(z_t | z_{t-1}, x) proportional to p(z_t | z_{t-1}) N(z_t; m_t, diag s_t^2), the
        message from the RNN(s): the form of the exact posterior of a linear-Gaussian model."""
        md = noise.dtype
        msg = self._message(net, self._rnn_states(x_in, mask, net))
        steps = tf.shape(noise)[1]
        first = {k: tf.cast(v, md) for k, v in self.initial_distribution().items()}
        conditions = self._conditions(inputs)
        elems = [tf.transpose(msg["loc"], [1, 0, 2]), tf.transpose(msg["scale"], [1, 0, 2]),
                 tf.transpose(noise, [1, 0, 2]), tf.cast(tf.range(steps) > 0, md)]
        if conditions is not None:
            elems.append(tf.transpose(tf.cast(conditions, md), [1, 0, 2]))
        def step(carry, e):
            z_prev = carry[0]
            later = e[3]
            prior = self.transition(z_prev, e[4] if len(e) > 4 else None)
            p_loc, p_scale = _step_prior(prior, first, later)
            loc, scale = self._combine(p_loc, p_scale, {"loc": e[0], "scale": e[1]})
            z = loc + scale * e[2]
            log_q = tf.reduce_sum(tfd.Normal(loc, scale).log_prob(z), -1)
            return z, loc, scale, log_q

        batch = tf.shape(noise)[0]
        init = tf.zeros([batch, self.latent_dim], md)
        scanned = tf.scan(step, tuple(elems), initializer=(init, init, init, init[:, 0]))
        return [tf.transpose(t, [1, 0, 2] if t.shape.rank == 3 else [1, 0]) for t in scanned]

    def trajectory(self, inputs, noise=None, network: str = "inference"):
        """One pass of inference and generation; per-step tensors ``[batch, time, ...]``.

        ``noise`` ``[batch, time, latent_dim]`` fixes the posterior draws (zeros give the
        posterior means); None draws from the posterior's seed generator. ``network``:
        ``"inference"`` (the learning network) or ``"filter"`` (the causal one).
        """
        net = self._net(network)
        x = self._flat(inputs["observations"])
        mask, observed = inputs["mask"], inputs["observed"]
        x_in = tf.concat([x * observed[..., None], observed[..., None]], -1)
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        d = self.latent_dim
        md = math_dtype(net.posterior)  # float32 under mixed precision
        if noise is None:
            noise = standard_normal([batch, steps, d], net.posterior.seed_generator, md)
        noise = tf.cast(noise, md)
        if net.message:
            z, loc, scale, log_q = self._message_scan(net, inputs, x_in, mask, noise)
        elif net.kind in STRUCTURED:
            init_z = tf.broadcast_to(tf.cast(net.zq0, md), [batch, d])
            if fused_posterior_supported(net.combiner, net.posterior):
                time_major = self._time_major_states(x_in, mask, net)
                z, loc, scale = combiner_posterior_scan(  # in md: no mixed precision here
                    net.combiner, net.posterior,
                    tf.add_n([tf.cast(s, md) for s in time_major]),
                    tf.transpose(noise, [1, 0, 2]), init_z, num_states=len(time_major),
                    check_features=net.posterior.validate_args)
                z, loc, scale = [tf.transpose(t, [1, 0, 2]) for t in (z, loc, scale)]
                log_q = diag_log_q(noise, scale)
            else:
                time_major = [tf.transpose(s, [1, 0, 2])
                              for s in self._rnn_states(x_in, mask, net)]
                z, loc, scale, log_q = self._combiner_loop(net, time_major, noise, init_z)
        else:
            out = net.posterior(self._features(x_in, mask, net), noise=noise)
            z, loc, scale, log_q = out["z"], out["loc"], out["scale"], out["log_q"]
        return self._finish_trajectory(inputs, x, mask, observed, z, loc, scale, log_q)

    @staticmethod
    def _combiner_loop(net, time_major, noise, init_z):
        """The structured posterior's loop layer by layer (what
        ``combiner_posterior_scan`` computes where it applies)."""
        def step(carry, elems):
            z_prev = carry[0]
            *rnn_t, eps_t = elems
            out = net.posterior(net.combiner(z_prev, list(rnn_t)), noise=eps_t)
            return out["z"], out["loc"], out["scale"], out["log_q"]

        zeros_b = tf.zeros_like(init_z[:, 0])
        scanned = tf.scan(step, (*time_major, tf.transpose(noise, [1, 0, 2])),
                          initializer=(init_z, init_z, init_z, zeros_b))
        return [tf.transpose(t, [1, 0, 2] if t.shape.rank == 3 else [1, 0]) for t in scanned]

    def _finish_trajectory(self, inputs, x, mask, observed, z, loc, scale, log_q):
        md = z.dtype
        prior = self._prior(z, self._conditions(inputs))
        kl = gaussian_kl_to_diag(loc, tf.square(scale), 2.0 * tf.reduce_sum(tf.math.log(scale), -1),
                                 prior["loc"], prior["scale"])
        log_prior = tf.reduce_sum(tfd.Normal(prior["loc"], prior["scale"]).log_prob(z), -1)
        emitted = self.head(apply_with_particles(self.emission, z), x)
        return {"z": z, "loc": loc, "scale": scale, "log_q": log_q, "prior_loc": prior["loc"],
                "prior_scale": prior["scale"], "kl": kl, "log_prior": log_prior,
                "log_px": emitted["log_prob"], "mean": emitted["mean"],
                "mask": tf.cast(mask, md), "observed": tf.cast(observed, md)}

    # ------------------------------------------------------------------ bounds
    @staticmethod
    def _bound(t, weight):
        mask, observed = t["mask"], t["observed"]
        reconstruction = tf.reduce_sum(mask * observed * t["log_px"], 1)
        kl = tf.reduce_sum(mask * t["kl"], 1)
        steps = tf.cast(tf.shape(mask)[1], kl.dtype)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl,
                "objective": (tf.cast(weight, kl.dtype) * kl - reconstruction) / steps,
                "steps": tf.reduce_sum(mask, 1)}

    def particle_bound(self, inputs, num_particles: int | None = None,
                       resample: bool | None = None, noise=None,
                       uniforms=None) -> smc_bound.SMCBound:
        r"""The IWAE (``resample`` False) or FIVO (True) bound with K = ``num_particles``
        trajectories per sequence, proposed by the learning inference network
        (:func:`layers.smc_bound.smc_bound`); ``resample`` None follows ``objective``.

        Particle i draws $z_t^i \sim q(z_t \mid z_{t-1}^i, x)$ (the structured networks see
        its own, resampled, $z_{t-1}$; the others do not depend on it) and weighs it by
        $o_t \log p(x_t|z_t^i) + \beta (\log p(z_t^i|z_{t-1}^i) - \log q)$, $\beta$ the
        KL weight (1, the exact bound, unless annealed). ``inputs`` as ``check_input`` returns
        them; ``noise`` [batch * K, time, latent_dim] (row b * K + k: particle k of sequence
        b, as ``trajectory`` of inputs repeated K times) and ``uniforms`` [time, batch, K] fix
        the draws (None: from the posterior's seed generator). No gradient flows through the
        resampling indices (the FIVO paper's estimator)."""
        k = self.num_particles if num_particles is None else num_particles
        resample = self.objective == "fivo" if resample is None else resample
        net = self._net()
        md = math_dtype(net.posterior)
        x = self._flat(inputs["observations"])
        mask, observed = inputs["mask"], inputs["observed"]
        x_in = tf.concat([x * observed[..., None], observed[..., None]], -1)
        batch, steps, d = tf.shape(x)[0], tf.shape(x)[1], self.latent_dim
        if noise is None:
            noise = standard_normal([batch * k, steps, d], net.posterior.seed_generator, md)
        if resample and uniforms is None:
            uniforms = standard_uniform([steps, batch, k], net.posterior.seed_generator, md)
        if net.message:
            msg = self._message(net, self._rnn_states(x_in, mask, net))
            features = [msg["loc"], msg["scale"]]
        elif net.kind in STRUCTURED:
            features = self._rnn_states(x_in, mask, net)
        else:
            q = net.posterior.posterior_parameters(self._features(x_in, mask, net))
            features = [q["loc"], q["scale"]]

        def time_major(a):
            return tf.transpose(a, [1, 0] + list(range(2, a.shape.rank)))

        noise = tf.reshape(tf.cast(noise, md), [batch, k, steps, d])
        elems = {"features": [time_major(f) for f in features], "x": time_major(x),
                 "observed": tf.transpose(tf.cast(observed, md)),
                 "eps": tf.transpose(noise, [2, 0, 1, 3]),
                 "later": tf.cast(tf.range(steps) > 0, md)}
        conditions = self._conditions(inputs)
        if conditions is not None:
            elems["conditions"] = time_major(tf.cast(conditions, md))
        first = {key: tf.cast(v, md) for key, v in self.initial_distribution().items()}
        beta = tf.cast(self.posterior.kl_weight, md)

        def propose(z_prev, e):
            rep = functools.partial(_repeat_rows, k=k)  # [batch, ...] -> [batch*K, ...]
            z_prev = tf.reshape(z_prev, [-1, d])
            c = rep(e["conditions"]) if "conditions" in e else None
            if self.initial_loc is None:  # the old model: z_1 from the transition of z_0
                start = tf.where(e["later"] > 0, z_prev, tf.cast(self.z0, md)[None])
                prior = self.transition(start, c)
                p_loc, p_scale = prior["loc"], prior["scale"]
            else:
                p_loc, p_scale = _step_prior(self.transition(z_prev, c), first, e["later"])
            if net.message:
                loc, scale = self._combine(p_loc, p_scale, {"loc": rep(e["features"][0]),
                                                            "scale": rep(e["features"][1])})
            elif net.kind in STRUCTURED:
                q = net.posterior.posterior_parameters(
                    net.combiner(z_prev, [rep(h) for h in e["features"]]))
                loc, scale = q["loc"], q["scale"]
            else:
                loc, scale = rep(e["features"][0]), rep(e["features"][1])
            z = loc + scale * tf.reshape(e["eps"], [-1, d])
            log_q = tf.reduce_sum(tfd.Normal(loc, scale).log_prob(z), -1)
            log_prior = tf.reduce_sum(tfd.Normal(p_loc, p_scale).log_prob(z), -1)
            log_px = self.head(apply_with_particles(self.emission, z), rep(e["x"]))["log_prob"]
            log_w = rep(e["observed"]) * log_px + beta * (log_prior - log_q)
            return tf.reshape(z, [batch, k, d]), tf.reshape(log_w, [batch, k])

        start = net.zq0 if net.combiner is not None else tf.zeros([d], md)
        initial = tf.broadcast_to(tf.cast(start, md), [batch, k, d])
        return smc_bound.smc_bound(propose, initial, elems, tf.transpose(tf.cast(mask, md)),
                                   uniforms if resample else None, self.resample)

    def dream(self, inputs, seed=None) -> dict:
        """Sequences drawn from the generative model with the shape, ``mask``, ``observed``
        pattern and conditions (actions, time gaps) of ``inputs``: ``z`` [batch, time, d] and
        ``observations``. No gradient reaches the generative weights through them."""
        x = inputs["observations"]
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        d = self.latent_dim
        md = math_dtype(self.posterior)
        if seed is None:
            seed = self.filter_posterior.seed_generator.next() if self.filter_posterior \
                else self.posterior.seed_generator.next()
        seed = tf.cast(seed, tf.int32)
        eps = tf.random.stateless_normal([steps, batch, d], seed, dtype=md, alg="philox")
        first = {k: tf.cast(v, md) for k, v in self.initial_distribution().items()}
        conditions = self._conditions(inputs)
        elems = [eps, tf.cast(tf.range(steps) > 0, md)]
        if conditions is not None:
            elems.append(tf.transpose(tf.cast(conditions, md), [1, 0, 2]))

        def step(z_prev, e):
            if self.initial_loc is None:  # the old model: z_1 from the transition of z_0
                z_prev = tf.where(e[1] > 0, z_prev, tf.cast(self.z0, md)[None])
                prior = self.transition(z_prev, e[2] if len(e) > 2 else None)
                return prior["loc"] + prior["scale"] * e[0]
            prior = self.transition(z_prev, e[2] if len(e) > 2 else None)
            loc, scale = _step_prior(prior, first, e[1])
            return loc + scale * e[0]

        def bounded(z_prev, e):  # a transition that diverges early in training stays finite
            return tf.clip_by_value(step(z_prev, e), -DREAM_BOUND, DREAM_BOUND)

        z = tf.transpose(tf.scan(bounded, tuple(elems), initializer=tf.zeros([batch, d], md)),
                         [1, 0, 2])
        params = apply_with_particles(self.emission, z)
        frames = self.head.distribution(params).sample(seed=seed + [0, 1])
        frames = tf.reshape(tf.cast(frames, x.dtype), tf.shape(x))
        frames = tf.clip_by_value(tf.where(tf.math.is_finite(frames), frames, 0.0),
                                  -DREAM_BOUND, DREAM_BOUND)
        return {"z": tf.stop_gradient(z), "observations": tf.stop_gradient(frames)}

    def _filter_terms(self, inputs, trajectory=None):
        """The filter network's objective: -log q(z_t | x_1..x_t) at pairs (z, x) from

        - ``filter_target="dreams"``: sequences dreamt from the generative model (the sleep
          phase of wake-sleep, Hinton et al. 1995), whose minimizer over q is the exact
          filtering posterior p(z_t | x_1..x_t) of the model;
        - ``"posterior"``: the real sequences with z drawn from the learning network's
          posterior q_phi(z | x_1..x_T) (``trajectory``: that pass, when the caller has it),
          whose minimizer is E[q_phi(z_t | x_1..x_T) | x_1..x_t] over the data's futures:
          the filtering posterior when q_phi is the model's posterior, learned on the data's
          own sequences where dreams of an imperfect model leave them (the pendulum).

        No gradient reaches the generative model or the learning network through z."""
        if self.filter_target == "posterior":
            if trajectory is None:
                trajectory = self.trajectory(inputs)
            source, z = inputs, tf.stop_gradient(trajectory["z"])
        else:
            dreamt = self.dream(inputs)
            source, z = dict(inputs, observations=dreamt["observations"]), dreamt["z"]
        net = self._net("filter")
        x = self._flat(source["observations"])
        mask, observed = source["mask"], source["observed"]
        x_in = tf.concat([x * observed[..., None], observed[..., None]], -1)
        q = net.posterior.posterior_parameters(self._features(x_in, mask, net))
        z = tf.cast(z, q["loc"].dtype)
        nll = -tf.reduce_sum(tfd.Normal(q["loc"], q["scale"]).log_prob(z), -1)
        mask = tf.cast(mask, nll.dtype)
        total = tf.reduce_sum(mask * nll, 1)
        return {"filter_nll": total,
                "objective": total / tf.cast(tf.shape(mask)[1], nll.dtype)}

    def elbo_terms(self, inputs, training=None):
        if self.train_filter_only:  # fit_filter: the ELBO's terms are not computed (zeros)
            f = self._filter_terms(inputs)
            zeros = tf.zeros_like(f["filter_nll"])
            return {"elbo": zeros, "reconstruction": zeros, "kl": zeros,
                    "objective": f["objective"], "filter_nll": f["filter_nll"],
                    "steps": tf.reduce_sum(tf.cast(inputs["mask"], zeros.dtype), 1)}
        learning = self.trajectory(inputs)
        terms = self._bound(learning, self.posterior.kl_weight)
        if self.objective != "elbo":  # the ELBO's terms stay as metrics, not optimized
            bound = self.particle_bound(inputs).log_marginal
            terms[self.objective] = bound
            terms["objective"] = -bound / tf.cast(tf.shape(inputs["mask"])[1], bound.dtype)
        if self.filter_inference is not None:
            f = self._filter_terms(inputs, learning)
            terms["objective"] = terms["objective"] + f["objective"]
            terms["filter_nll"] = f["filter_nll"]
        return terms

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        self.step_elbo_tracker.update_state(y_pred["elbo"] / y_pred["steps"],
                                            sample_weight=y_pred["steps"])
        if "filter_nll" in y_pred:
            self.filter_nll_tracker.update_state(y_pred["filter_nll"] / y_pred["steps"],
                                                 sample_weight=y_pred["steps"])
        if self.bound_tracker is not None and self.objective in y_pred:
            self.bound_tracker.update_state(y_pred[self.objective] / y_pred["steps"],
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

    # ------------------------------------------------------------------ the filter
    def _filter_layers(self) -> list:
        return [layer for layer in (self.filter_rnn, self.filter_posterior) if layer is not None]

    def check_filter_network(self) -> None:
        """ValueError unless the model has a separate filter network for ``fit_filter``."""
        if self.filter_inference is None:
            raise ValueError("fit_filter needs a separate filter network (filter_inference="
                             "'rnn'); this model filters with its inference network "
                             f"{self.inference!r}.")

    def fit_filter(self, x, epochs: int = 10, batch_size: int = 50, learning_rate: float = 1e-3,
                   target: str | None = None, **fit_kwargs):
        """Train the causal filter network alone (everything else frozen): the second half of
        the recipe, after ``fit`` has learned the generative model (``fit`` already trains the
        filter alongside, for a model still moving; this refines it for the final one).
        ``target``: what it learns from (``_filter_terms``), ``"dreams"`` of the model or the
        learning network's ``"posterior"`` of the real sequences; None: the model's
        ``filter_target``. ``x``: the training sequences as ``fit``'s (a dict of arrays or a
        ``tf.data.Dataset``; for dreams only their shapes, masks and conditions are used);
        returns the History. The model is compiled with a fresh Adam optimizer for this;
        compile it again before training it further."""
        self.check_filter_network()
        if target is not None:
            check_choice("target", target, FILTER_TARGETS)
        saved_target = self.filter_target
        everything = [layer for layer in self._flatten_layers(include_self=False,
                                                              recursive=False)]
        before = {id(layer): layer.trainable for layer in everything}
        own = [v for v in (self.z0, self.initial_loc, self.initial_raw_scale, self.zq0)
               if v is not None]
        own_before = [v.trainable for v in own]
        try:
            for layer in everything:
                layer.trainable = False
            for v in own:
                v.trainable = False
            for layer in self._filter_layers():
                layer.trainable = True
            self.train_filter_only = True
            self.filter_target = target or saved_target
            self.compile(optimizer=keras.optimizers.Adam(learning_rate))
            if not isinstance(x, tf.data.Dataset):
                x = tf.data.Dataset.from_tensor_slices(x).shuffle(
                    len(tf.nest.flatten(x)[0]), seed=self.seed).batch(batch_size)
            return self.fit(x, epochs=epochs, **{"verbose": 0, "shuffle": False, **fit_kwargs})
        finally:
            self.train_filter_only = False
            self.filter_target = saved_target
            for layer in everything:
                layer.trainable = before[id(layer)]
            for v, flag in zip(own, own_before):
                v.trainable = flag
            self.compiled = False  # the optimizer above covers the filter's weights only

    # ------------------------------------------------------------------ user methods
    def _posterior_pass(self, inputs, network="inference"):
        inputs = self.check_input(inputs)
        shape = tf.shape(inputs["observations"])
        t = self.trajectory(inputs, tf.zeros([shape[0], shape[1], self.latent_dim]), network)
        return t["loc"], t["scale"], tf.reshape(t["mean"], shape)

    @property
    def causal(self) -> bool:
        """Whether the model has a causal network (a ``filter_inference`` network, or an
        ``inference`` of ``rnn``, ``st-l``, ``indep``): then ``filter`` and ``filter_step``
        exist."""
        return self.filter_inference is not None or self.inference in CAUSAL

    def smooth(self, inputs) -> LatentSmootherResult:
        """Posterior means/scales of z_t from the inference network given the whole sequence
        (a smoother for ``brnn``/``st-r``/``st-lr``/``lr``), and the emission of the means:
        ``smoothed_means``, ``smoothed_scales``, ``observation_means``."""
        return LatentSmootherResult(*self._posterior_pass(inputs))

    def filter(self, inputs) -> LatentFilterResult:
        """Causal estimates E_q[z_t | x_{1:t}] of the filter network (``filter_inference``,
        or the inference network when it is causal): the same numbers ``filter_step`` gives
        frame by frame: ``filtered_means``, ``filtered_scales``, ``observation_means``."""
        if not self.causal:
            raise ValueError(
                f"filter() needs a causal inference network ({', '.join(CAUSAL)}); this model "
                f"uses inference={self.inference!r}, which looks at future frames, and no "
                f"filter_inference: use smooth().")
        return LatentFilterResult(*self._posterior_pass(inputs, "filter"))

    def initial_state(self, batch_size: int = 1) -> dict:
        """State of ``filter_step`` before the first frame."""
        dtype = self.compute_dtype
        net = self._net("filter")
        start = net.zq0 if net.zq0 is not None else (
            self.z0 if self.z0 is not None else self.initial_loc)
        state = {"z_prev": tf.broadcast_to(tf.cast(start, dtype), [batch_size, self.latent_dim])}
        if net.rnn_forward is not None:
            state["rnn"] = tf.zeros([batch_size, self.rnn_units], dtype)
        if net.message:
            state["started"] = tf.zeros([batch_size, 1], dtype)
        return state

    def filter_step(self, state: dict, observation, observed=None):
        """One causal step of the filter network: (state, x_t) -> (new state, outputs
        ``filtered_mean``, ``filtered_scale`` (of q(z_t | x_1..x_t)) and ``observation_mean``
        (its emission)).

        ``observation`` is ``[batch, *observation_shape]``; ``observed`` ``[batch]`` marks
        present frames (default all). Uses posterior means (zero noise), like ``filter``.
        """
        if not self.causal:
            raise ValueError(f"filter_step needs a causal inference network, got "
                             f"{self.inference!r} and no filter_inference.")
        net = self._net("filter")
        x = tf.reshape(tf.cast(observation, self.compute_dtype), [-1, self.observation_size])
        o = tf.ones_like(x[:, 0]) if observed is None else tf.cast(observed, x.dtype)
        x_in = tf.concat([x * o[:, None], o[:, None]], -1)
        new_state = dict(state)
        if net.rnn_forward is not None:
            h, _ = net.rnn_forward.cell(x_in, [state["rnn"]])
            new_state["rnn"] = h
            features = net.combiner(state["z_prev"], [h]) if net.combiner else h
        else:
            features = apply_with_particles(net.mlp, x_in)
        params = dict(net.posterior.posterior_parameters(features))
        if net.message:  # combine with the prior of the previous mean (p(z_1) at the start)
            first = self.initial_distribution()
            prior = self.transition(state["z_prev"])
            later = state["started"]
            p_loc, p_scale = _step_prior(prior, first, later)
            params["loc"], params["scale"] = self._combine(p_loc, p_scale, params)
            new_state["started"] = tf.ones_like(later)
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
        return tf.stack(out, 1) if out else z[:, None, :][:, :0]

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
        cond = self._future_conditions(actions, time_gaps, n, steps)
        if self.initial_loc is None:
            z0 = tf.broadcast_to(tf.cast(self.z0, tf.float32)[None], [n, self.latent_dim])
            z = self._roll(z0, steps, cond, seed_t)
        else:  # z_1 from p(z_1); the conditions of steps 2.. drive the transition
            p1 = self.initial_distribution()
            eps = tf.random.stateless_normal([n, self.latent_dim], seed_t + [0, 7919])
            z1 = p1["loc"][None] + p1["scale"][None] * eps
            rest = self._roll(z1, steps - 1, None if cond is None else cond[:, 1:], seed_t)
            z = tf.concat([z1[:, None], rest], 1)
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
    def example_lengths(cls, x):
        return sequences.sequence_steps(x)

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
            initial_state=self.initial_state_kind,
            filter_inference=self.filter_inference,
            structured_posterior=self.structured_posterior,
            rnn_cell=self.rnn_cell,
            initializer=self.initializer,
            objective=self.objective,
            num_particles=self.num_particles,
            resample=self.resample,
            filter_target=self.filter_target,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Files saved before the learned initial distribution and the filter network have
        # neither key: they keep their model (z_1 from the transition of z_0), no filter; and
        # their kernels were drawn by Keras' default (the DMM's "fan_in" came later).
        config = {"initial_state": "transition", "filter_inference": None,
                  "structured_posterior": "combiner", "objective": "elbo",
                  "initializer": "glorot", **config}
        return super().from_config(config)


@register
class DeepKalmanFilter(DeepStateSpaceModel):
    r"""Deep Kalman Filter: Krishnan, Shalit & Sontag, "Deep Kalman Filters" (2015).

    The generative model and bound of ``DeepStateSpaceModel`` with the paper's transition
    ($G$, $S$ as an MLP, ``transition="mlp"``; ``"linear"`` gives the linear-Gaussian special
    case) and its inference networks q-INDEP, q-LR, q-RNN (causal, a filter) and q-BRNN
    (``inference`` = ``"indep"``, ``"lr"``, ``"rnn"``, ``"brnn"``), or the structured ones of
    the 2017 paper (``"st-l"``, ``"st-r"``, ``"st-lr"``). Actions u_t (``action_dim``) and time
    gaps (``use_time_gaps``) condition the transition.

    The default is the recipe that filters (see ``DeepStateSpaceModel``): the generative model
    is learned with ``inference="st-r"`` (which sees the future, as the true posterior does)
    and a causal q-RNN (``filter_inference="rnn"``) is trained beside it on sequences dreamt
    from the generative model; ``filter``/``filter_step`` and the exported filter use the
    q-RNN. On linear-Gaussian data its filtered RMSE is within 10 % of the exact Kalman
    filter's (``tests/test_dkf_filtering.py``).

    Args:
        observation_shape: tuple. Shape of one frame, e.g. ``(28, 28, 1)``.
        latent_dim: int. Dimension of z_t.
        inference: str. The network the generative model is learned with: ``"st-r"``
            (default), ``"st-lr"``, ``"brnn"``, ``"lr"``, or a causal ``"rnn"``, ``"st-l"``,
            ``"indep"`` (which then also filters; it biases the generative model).
        transition: str. ``"mlp"``, ``"gated"`` or ``"linear"``.
        emission: str. ``"mlp"`` or ``"linear"``.
        likelihood: str. ``"bernoulli"`` or ``"gaussian"``.
        action_dim: int. Size of the action vector (0: none).
        use_time_gaps: bool. Condition the transition on the gap between steps.
        transition_units: int. Hidden width of the transition.
        emission_units: tuple of int. Hidden widths of the emission MLP.
        rnn_units: int. Width of the RNN inference networks.
        rnn_cell: str. Their cell: ``"gru"`` (default) or ``"rnn"``, a plain ReLU RNN
            $h_t = \mathrm{relu}(W x_t + U h_{t-1} + b)$ (the Pyro DMM example's ``nn.RNN``;
            ``zoo.layers.ReluRNN``, whose loop has a hand-written gradient and runs the
            batch as side-by-side loops on a CPU's threads).
        initializer: str. Kernels of the networks: ``"glorot"`` (Keras' default; the DKF's
            default) or ``"fan_in"``, $U(\pm 1/\sqrt{n_{in}})$ (torch's default, the DMM's:
            on chorales with Pyro's setup, test -ELBO per step after 8 epochs 15.4 against
            23.7 with Glorot's, whose larger initial weights start the KL at 43 instead of
            16 nats per step).
        inference_units: tuple of int. MLP widths of q-INDEP / q-LR.
        kl_weight: float. Initial KL weight.
        kl_annealing_steps: int. Steps of linear KL warm-up (0: none).
        kl_annealing_start: float. KL weight at step 0 of the warm-up.
        gaussian_variance: str. For ``likelihood="gaussian"``.
        seed: int or None. Seed of the posterior sampler.
        initial_state: str. ``"learned"``: z_1 ~ N(mu_0, diag sigma_0^2) with sigma_0 =
            softplus(rho_0) + 1e-3, both learned; ``"transition"``: z_1 from the transition
            of a learned z_0 (the model of files saved before; loading such a file gives it).
        filter_inference: str or None. The causal filter network (``"rnn"``: a q-RNN,
            q(z_t | x_1..x_t)) trained on sequences dreamt from the generative model;
            ``"auto"`` (default): ``"rnn"`` when ``inference`` looks at the future, None when
            it is causal itself (it then filters; the recipe is not used).
        structured_posterior: str. How the structured networks (``st-*``) form
            $q(z_t | z_{t-1}, x)$. ``"message"`` (the DKF's default): the prior times a Gaussian
            message from the RNN states, $q \propto p(z_t | z_{t-1}) N(z_t; m_t, s_t^2)$
            (precisions add), the form of the exact posterior of a linear-Gaussian model, so
            the posterior is as tight as the transition noise without learning to be.
            ``"combiner"``: Krishnan et al.'s $\tanh$ combiner, which with a small
            transition noise cannot follow the dynamics closely, and the ELBO then pays for
            it by learning a larger noise; the DMM's default, since in the message form the
            posterior draws iterate the learned transition itself, and with the DMM's gated
            (unbounded) transition a slightly expansive map early in training makes them run
            away over a long sequence (ELBO spikes of 1e5 nats per step on 120-step sequences),
            while the combiner's draws stay bounded. Files saved before it load with
            ``"combiner"``.
        objective: str. What ``fit`` maximizes: ``"elbo"`` (default; files saved before the
            option load with it), ``"iwae"`` (importance-weighted bound over whole
            trajectories) or ``"fivo"`` (the particle filter's log Z-hat with resampling).
        num_particles: int. K, the trajectories/particles per sequence of ``"iwae"`` and
            ``"fivo"`` (default 4; unused by ``"elbo"``).
        resample: str. The resampling scheme of ``"fivo"``: ``"systematic"`` (default),
            ``"stratified"`` or ``"multinomial"`` (:mod:`layers.resampling`).

    Example:

    >>> import numpy as np
    >>> model = DeepKalmanFilter(observation_shape=(3,), latent_dim=2, rnn_units=8,
    ...                          emission_units=(8,), transition_units=8, seed=0)
    >>> model.compile(optimizer="adam")
    >>> x = (np.random.RandomState(0).rand(16, 5, 3) > 0.5).astype("float32")
    >>> _ = model.fit(x, batch_size=8, epochs=1, verbose=0)
    >>> model.inference, model.filter_inference
    ('st-r', 'rnn')
    >>> model.filter(x[:2]).filtered_means.shape
    TensorShape([2, 5, 2])
    """

    default_inference = "st-r"
    default_transition = "mlp"
    default_filter = "rnn"
    inference_choices = INFERENCE


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
    ``inference`` in ``"st-l"``, ``"st-r"``, ``"st-lr"``; ``filter_inference="auto"`` gives
    the non-causal ST-R/ST-LR a causal q-RNN filter network trained on sequences dreamt from
    the generative model (``None``: no filter, the Pyro example's model).

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
    default_filter = "rnn"
    # The paper's (and Pyro's) tanh combiner: the message form's draws iterate the gated
    # transition and can run away early in training (see ``structured_posterior``).
    default_structured_posterior = "combiner"
    inference_choices = STRUCTURED
    # torch's U(+-1/sqrt(fan_in)) kernels: Glorot's start the KL near 3x higher (issue 17)
    default_initializer = "fan_in"

"""Particle filter over the zoo's state-space models (or user functions): an unbiased
estimate of the log-likelihood and filtered moments from a weighted cloud of states."""

from __future__ import annotations

import importlib
import math

import keras
import numpy as np
import tensorflow as tf

from zoo import sequences
from zoo.contract import EvalSettings, ZooModel
from zoo.layers import particle_filter as pf
from zoo.layers import resampling
from zoo.layers.common import register
from zoo.vae import apply_with_particles


def linear_gaussian_functions(params, dtype="float64"):
    r"""``(initial_sample, transition_sample, emission_log_prob, noise_dim)`` of the
    linear-Gaussian model ``params`` (:class:`layers.kalman_inference.LGSSMParams`):
    $x_0 = m_0 + L_0 \epsilon$, $x_t = A x_{t-1} + b + L_Q \epsilon$ and
    $\log N(y; H x + d, R)$, with $L$ the Cholesky factors."""
    par = [None if t is None else tf.cast(t, dtype) for t in params]
    m0, p0, a, q, h, r, b, d, control = par
    if control is not None:
        raise ValueError("a model with actions (control_matrix) is not supported by the "
                         "particle filter yet")
    l0, lq, lr = (tf.linalg.cholesky(m) for m in (p0, q, r))
    lr_inv = tf.linalg.triangular_solve(lr, tf.eye(tf.shape(r)[0], dtype=r.dtype))
    p = int(r.shape[0])
    log_norm = -tf.reduce_sum(tf.math.log(tf.linalg.diag_part(lr))) - 0.5 * p * math.log(
        2.0 * math.pi)

    def initial_sample(noise):
        return m0 + tf.einsum("bkj,ij->bki", noise, l0)

    def transition_sample(particles, noise):
        out = tf.einsum("bkj,ij->bki", particles, a) + tf.einsum("bkj,ij->bki", noise, lq)
        return out if b is None else out + b

    def emission_log_prob(particles, observation):
        mean = tf.einsum("bkj,ij->bki", particles, h)
        if d is not None:
            mean = mean + d
        z = tf.einsum("bkj,ij->bki", observation[:, None, :] - mean, lr_inv)
        return log_norm - 0.5 * tf.reduce_sum(tf.square(z), axis=-1)

    return initial_sample, transition_sample, emission_log_prob, int(m0.shape[-1])


PROPOSALS = ("bootstrap", "learned", "learned_prior")
STATE_MODELS = {"kalman_filter": ("zoo.kalman_filter", "KalmanFilterModel"),
                "dkf": ("zoo.deep_state_space", "DeepKalmanFilter"),
                "dmm": ("zoo.deep_state_space", "DeepMarkovModel")}


def _diag_normal_log_prob(z, loc, scale):
    return tf.reduce_sum(-0.5 * tf.square((z - loc) / scale) - tf.math.log(scale)
                         - 0.5 * math.log(2.0 * math.pi), -1)


def _product(prior_loc, prior_scale, loc, scale):
    """N(prior) x N(loc, scale^2), normalized (precisions add), diagonal."""
    pv, mv = tf.square(prior_scale), tf.square(scale)
    var = pv * mv / (pv + mv)
    return var * (prior_loc / pv + loc / mv), tf.sqrt(var)


class DeepStateSpaceFunctions:
    r"""The generative model of a :class:`zoo.deep_state_space.DeepStateSpaceModel` (DKF or
    DMM) as the particle filter's callables, reading the model's layers (so its current
    weights) when called: $p(z_1) = N(\mu_0, \sigma_0^2)$, $p(z_t \mid z_{t-1}, c_t)$ its
    transition, $\log p(x_t \mid z_t)$ its emission head, and the proposals

    - ``"learned"``: $r(z_t) = q_\psi(z_t \mid x_{1:t})$, the model's causal filter network
      (a q-RNN: the same Gaussian for every particle; a message-form ST-L network gives its
      own $q \propto p(z_t \mid z_{t-1}^i) N(m_t, s_t^2)$ per particle);
    - ``"learned_prior"``: $r(z_t \mid z_{t-1}^i) \propto p(z_t \mid z_{t-1}^i)\,
      q_\psi(z_t \mid x_{1:t})$, the q-RNN's Gaussian multiplied with the transition of each
      particle (the message form of the structured posterior).

    ``step_inputs(inputs)`` [batch, time, k] holds the conditions $c_t$ (actions, time gaps)
    and the filter network's loc and scale at every frame (the network sees $x_{1:t}$ only).
    The layers compute in the model's dtype; the filter's own arithmetic in ``dtype``.
    """

    def __init__(self, model, proposal: str = "bootstrap", dtype="float32"):
        if proposal not in PROPOSALS:
            raise ValueError(f"`proposal` must be one of {PROPOSALS}, got {proposal!r}")
        self.model, self.proposal_kind, self.dtype = model, proposal, tf.as_dtype(dtype)
        self.c = model.condition_size
        self.d = model.latent_dim
        self.noise_dim = model.latent_dim
        self.net = None
        if proposal != "bootstrap":
            if not model.causal:
                raise ValueError(f"proposal={proposal!r} needs a causal filter network "
                                 f"(filter_inference='rnn', or inference 'rnn'/'st-l'/'indep');"
                                 f" this model has inference={model.inference!r} and none")
            self.net = model._net("filter")
            if self.net.combiner is not None:
                raise ValueError("a learned proposal needs a q-RNN or a message-form filter "
                                 "network (structured_posterior='message'), not the tanh "
                                 "combiner, whose q(z_t | z_t-1, x) has no closed form to "
                                 "sample per particle here")

    # -- model pieces, in the layers' dtype -> the filter's dtype
    def _md(self, x):
        return tf.cast(x, self.model.compute_dtype)

    def _out(self, x):
        return tf.cast(x, self.dtype)

    def _prior(self, particles, step_input):
        cond = None if not self.c else self._md(step_input[:, None, :self.c] + tf.zeros_like(
            particles[..., :1]))
        out = self.model.transition(self._md(particles), cond)
        return self._out(out["loc"]), self._out(out["scale"])

    def _first(self):
        first = self.model.initial_distribution()
        return self._out(first["loc"]), self._out(first["scale"])

    def initial_sample(self, noise):
        loc, scale = self._first()
        return loc + scale * noise

    def transition_sample(self, particles, noise, step_input=None):
        loc, scale = self._prior(particles, step_input)
        return loc + scale * noise

    def transition_log_prob(self, particles, parents, step_input=None):
        loc, scale = self._prior(parents, step_input)
        return _diag_normal_log_prob(particles, loc, scale)

    def emission_log_prob(self, particles, observation):
        params = apply_with_particles(self.model.emission, self._md(particles))
        x = tf.cast(observation, params.dtype)
        return self._out(self.model.head(params, x)["log_prob"])

    def _message(self, step_input):
        loc = step_input[:, None, self.c:self.c + self.d]
        return loc, step_input[:, None, self.c + self.d:]

    def _combine(self, prior_loc, prior_scale, step_input):
        loc, scale = self._message(step_input)
        if self.proposal_kind == "learned_prior" or self.net.message:
            return _product(prior_loc, prior_scale, loc, scale)
        return loc + tf.zeros_like(prior_loc), scale + tf.zeros_like(prior_scale)

    def proposal(self, parents, step_input, noise):
        p_loc, p_scale = self._prior(parents, step_input)
        loc, scale = self._combine(p_loc, p_scale, step_input)
        z = loc + scale * noise
        return z, (_diag_normal_log_prob(z, p_loc, p_scale)
                   - _diag_normal_log_prob(z, loc, scale))

    def initial_proposal(self, step_input, noise):
        p_loc, p_scale = (x[None, None] for x in self._first())
        loc, scale = self._combine(p_loc, p_scale, step_input)
        z = loc + scale * noise
        return z, (_diag_normal_log_prob(z, p_loc, p_scale)
                   - _diag_normal_log_prob(z, loc, scale))

    def step_inputs(self, inputs):
        """[batch, time, k] for :func:`layers.particle_filter.scan_filter` (None when the
        bootstrap filter of a model without conditions needs none)."""
        parts = []
        if self.c:
            parts.append(self._out(self.model._conditions(inputs)))
        if self.net is not None:
            model, net = self.model, self.net
            x = model._flat(inputs["observations"])
            observed, mask = inputs["observed"], inputs["mask"]
            x_in = tf.concat([x * observed[..., None], observed[..., None]], -1)
            if net.message:
                q = model._message(net, model._rnn_states(x_in, mask, net))
            else:
                q = net.posterior.posterior_parameters(model._features(x_in, mask, net))
            parts += [self._out(q["loc"]), self._out(q["scale"])]
        return tf.concat(parts, -1) if parts else None

    def callables(self):
        """``(initial_sample, transition_sample, emission_log_prob, noise_dim)``."""
        return self.initial_sample, self.transition_sample, self.emission_log_prob, self.d


def _state_model_from_spec(spec: dict, observation_shape=None):
    """A state model from ``{"kind": "kalman_filter" | "dkf" | "dmm", **its arguments}`` (what
    a ``tools/train.py`` config can say) or a Keras serialization of one."""
    spec = dict(spec)
    if "class_name" in spec:
        return keras.saving.deserialize_keras_object(spec)
    kind = spec.pop("kind", None)
    if kind not in STATE_MODELS:
        raise ValueError(f"`state_model` as a dict needs kind in {sorted(STATE_MODELS)}, got "
                         f"{kind!r}")
    module, name = STATE_MODELS[kind]
    cls = getattr(importlib.import_module(module), name)
    if kind != "kalman_filter" and observation_shape is not None:
        spec.setdefault("observation_shape", tuple(observation_shape))
    return cls(**spec)


@register
class ParticleFilter(ZooModel, keras.Model):
    r"""Particle filter (sequential Monte Carlo) over a state-space model, bootstrap or with a
    learned proposal; trainable by maximizing its log-likelihood estimate.

    Gordon, Salmond & Smith, "Novel approach to nonlinear/non-Gaussian Bayesian state
    estimation" (1993). For $x_0 \sim p(x_0)$, $x_t \sim f(x_t \mid x_{t-1})$,
    $y_t \sim g(y_t \mid x_t)$ the filter carries $N$ particles with normalized weights $W$;
    each frame resamples when $\mathrm{ESS} < \tau N$, draws from the proposal $r$ (the
    transition $f$ for the bootstrap filter), reweights by $g f / r$, and
    $\log \hat Z = \sum_t \log \sum_i W_{t-1}^i g(y_t \mid x_t^i) f(x_t^i \mid \cdot) /
    r(x_t^i \mid \cdot)$ is an unbiased estimate (in $\hat Z$) of the likelihood $p(y_{0:T-1})$;
    the filtered moments converge to $E[x_t \mid y_{0:t}]$ as $N$ grows. The math lives in
    :mod:`layers.particle_filter` and :mod:`layers.resampling`.

    The model is one of

    - a :class:`zoo.kalman_filter.KalmanFilterModel` (``state_model``): its matrices are read
      when filtering, so the PF follows a trained or known linear-Gaussian model;
    - a :class:`zoo.deep_state_space.DeepKalmanFilter` or ``DeepMarkovModel``: its generative
      model $p(z_1)$, $p(z_t \mid z_{t-1}, c_t)$, $p(x_t \mid z_t)$ (weights read at call
      time, so it follows training), with ``proposal`` ``"bootstrap"``, ``"learned"`` (the
      model's causal filter network $q(z_t \mid x_{1:t})$) or ``"learned_prior"`` (that
      network's Gaussian times the transition of each particle), see
      :class:`DeepStateSpaceFunctions`; actions and time gaps condition the transition;
    - ``{"kind": "kalman_filter" | "dkf" | "dmm", **arguments}``: such a model built from a
      config (what ``tools/train.py`` passes);
    - user callables (``functions`` = ``(initial_sample, transition_sample,
      emission_log_prob, noise_dim)`` with the signatures of :mod:`layers.particle_filter`;
      such a model filters but its config cannot be saved, since functions are never
      pickled).

    Training (``compile`` + ``fit``, or ``tools/train.py particle_filter``) maximizes
    $\log \hat Z / T$ over the state model's weights (and, with a learned proposal, the
    filter network's: the FIVO objective of Maddison et al. 2017), with the noise
    reparameterized and the resampling's ancestor choice not differentiated (as FIVO does).
    Evaluation (``training=False``) draws its noise from a fixed seed, so a saved model reports
    the same loss again.

    Args:
        state_model: a model or spec, as above (or None with ``functions``).
        num_particles: int. N, the default of :meth:`filter`.
        resample: str. "systematic", "stratified" or "multinomial".
        threshold: float. τ in [0, 1]: resample when ESS < τ N (1: every frame, 0: never).
        seed: int or None. Seed of the filter's noise when ``filter`` gets none.
        functions: tuple or None. User callables in place of ``state_model``.
        proposal: str. "bootstrap", or with a DKF/DMM "learned" / "learned_prior".
        observation_shape: tuple or None. Frame shape for a DKF/DMM built from a spec
            (``tools/train.py`` takes it from the data).

    Example:

    >>> import numpy as np
    >>> from zoo.kalman_filter import KalmanFilterModel
    >>> lg = KalmanFilterModel.from_matrices([[1.0]], [[1.0]], [[1.0]], [[4.0]])
    >>> model = ParticleFilter(lg, num_particles=2000, seed=0)
    >>> y = np.cumsum(np.random.default_rng(0).normal(size=(1, 30, 1)), 1)
    >>> exact = float(lg.filter(y).log_likelihood[0])
    >>> estimate = float(model.log_likelihood(y)[0])
    >>> abs(estimate - exact) < 0.2
    True
    """

    export_adapter = "particle_filter"  # zoo.export.adapters_particle_filter
    supports_jit = False  # tf.searchsorted in the loop
    jit_unsupported_reason = ("its resampling (tf.searchsorted inside the time loop) does not "
                              "compile under XLA")

    def __init__(self, state_model=None, num_particles: int = 100,
                 resample: str = "systematic", threshold: float = 0.5,
                 seed: int | None = None, functions=None, proposal: str = "bootstrap",
                 observation_shape=None, **kwargs):
        super().__init__(**kwargs)
        if (state_model is None) == (functions is None):
            raise ValueError("give exactly one of `state_model` (a KalmanFilterModel, "
                             "DeepKalmanFilter or DeepMarkovModel) and `functions` "
                             "(initial_sample, transition_sample, emission_log_prob, "
                             "noise_dim)")
        if isinstance(state_model, dict):
            state_model = _state_model_from_spec(state_model, observation_shape)
        self.deep = state_model is not None and hasattr(state_model, "initial_distribution")
        if state_model is not None and not (self.deep or hasattr(state_model,
                                                                  "state_space_params")):
            raise ValueError(f"`state_model` must be a KalmanFilterModel, DeepKalmanFilter or "
                             f"DeepMarkovModel, got {type(state_model).__name__}")
        if functions is not None and len(functions) != 4:
            raise ValueError("`functions` must be (initial_sample, transition_sample, "
                             "emission_log_prob, noise_dim)")
        if resample not in resampling.SCHEMES:
            raise ValueError(f"`resample` must be one of {resampling.SCHEMES}, got "
                             f"{resample!r}")
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"`num_particles` must be a positive int, got {num_particles!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"`threshold` must be in [0, 1], got {threshold!r}")
        if proposal not in PROPOSALS:
            raise ValueError(f"`proposal` must be one of {PROPOSALS}, got {proposal!r}")
        if proposal != "bootstrap" and not self.deep:
            raise ValueError(f"proposal={proposal!r} needs a DeepKalmanFilter or "
                             f"DeepMarkovModel (its filter network); this filter is bootstrap")
        self.state_model = state_model
        self.functions = functions
        self.num_particles = num_particles
        self.resample = resample
        self.threshold = float(threshold)
        self.seed = seed
        self.proposal = proposal
        self.seed_generator = keras.random.SeedGenerator(seed)
        if self.deep:  # checks the proposal against the model's networks now
            DeepStateSpaceFunctions(state_model, proposal)
        self._compiled = {}  # dtype -> tf.function (retraces per input structure/shape only)

    # ------------------------------------------------------------------------------ filtering
    def _dtype(self, dtype):
        if dtype is not None:
            return dtype
        return self.state_model.compute_dtype if self.deep else "float64"

    def _noise_dim(self):
        if self.functions is not None:
            return self.functions[3]
        if self.deep:
            return self.state_model.latent_dim
        return int(self.state_model.state_space_params().initial_mean.shape[-1])

    def _pieces(self, inputs, dtype):
        """(observations [batch, time, p], observed [batch, time], callables, proposal,
        initial_proposal, step_inputs) of the model for ``inputs`` (a dict of tensors)."""
        if self.deep:
            model = self.state_model
            checked = model.check_input(inputs)
            fns = DeepStateSpaceFunctions(model, self.proposal, dtype)
            y = tf.cast(model._flat(checked["observations"]), dtype)
            seen = tf.cast(checked["observed"], dtype)
            learned = self.proposal != "bootstrap"
            return (y, seen, fns.callables(), fns.proposal if learned else None,
                    fns.initial_proposal if learned else None, fns.step_inputs(checked))
        y = tf.cast(inputs["observations"], dtype)
        seen = _both(inputs.get("observed"), inputs.get("mask"))
        seen = tf.ones(tf.shape(y)[:2], dtype) if seen is None else tf.cast(seen, dtype)
        fns = self.functions or linear_gaussian_functions(
            self.state_model.state_space_params(), dtype)
        return y, seen, fns, None, None, None

    def _scan(self, inputs, noise, dtype):
        y, seen, fns, proposal, initial_proposal, step_inputs = self._pieces(inputs, dtype)
        initial, transition, emission, _ = fns
        return pf.scan_filter(y, seen, noise, initial, transition, emission, self.resample,
                              self.threshold, proposal, initial_proposal, step_inputs)

    def _inputs(self, observations, observed=None, mask=None, actions=None, time_gaps=None):
        inputs = dict(observations) if isinstance(observations, dict) else {
            "observations": observations}
        for key, value in (("observed", observed), ("mask", mask), ("actions", actions),
                           ("time_gaps", time_gaps)):
            if value is not None:
                inputs[key] = value
        return {k: tf.convert_to_tensor(v) for k, v in inputs.items() if v is not None}

    def filter(self, observations, observed=None, *, mask=None, actions=None, time_gaps=None,
               num_particles=None, seed=None, dtype=None) -> pf.ParticleFilterResult:
        """The particle filter on ``observations`` [batch, time, *frame] (or a dict with
        ``observations`` and optionally ``observed``, ``mask``, ``actions``, ``time_gaps``);
        ``observed`` [batch, time] (0: missing frame) and ``mask`` (0: padding) both skip the
        weighting. Returns :class:`layers.particle_filter.ParticleFilterResult`
        (``log_likelihood``, ``log_likelihoods``, ``filtered_means``, ``filtered_covs``,
        ``predicted_means``, ``predicted_covs`` as the Kalman filter's, plus ``ess``,
        ``resampled``, the final ``particles`` and ``log_weights``), of the latent state.
        ``seed``: int or SeedGenerator (default the model's generator). ``dtype``: of the
        filter's arithmetic (default float64 for a linear-Gaussian model, the model's dtype
        for a DKF/DMM, whose layers compute in their own)."""
        inputs = self._inputs(observations, observed, mask, actions, time_gaps)
        dtype = self._dtype(dtype)
        if self.state_model is not None and not self.deep:
            self.state_model._ensure_built(inputs["observations"].shape)
        num_particles = num_particles or self.num_particles
        pf.check_settings(num_particles, self.resample, self.threshold)
        y = inputs["observations"]
        if y.shape.rank is None or y.shape.rank < 3:
            raise ValueError(f"`observations` must be [batch, time, ...], got shape {y.shape}")
        if "observed" in inputs and tuple(inputs["observed"].shape) != tuple(y.shape[:2]):
            raise ValueError(f"`observed` must be [batch, time] = {list(y.shape[:2])}, got "
                             f"{list(inputs['observed'].shape)}")
        if int(y.shape[1]) < 1:
            raise ValueError("`observations` must have at least one time step")
        batch, time = int(y.shape[0]), int(y.shape[1])
        noise = pf.draw_noise(self.seed_generator if seed is None else seed, batch, time - 1,
                              num_particles, self._noise_dim(), dtype)
        if dtype not in self._compiled:  # no autograph: the loop is an explicit while_loop,
            # and autograph would re-read the state model's source from disk while tracing
            self._compiled[dtype] = tf.function(
                lambda inputs, noise: self._scan(inputs, noise, dtype), autograph=False)
        return self._compiled[dtype](inputs, noise)

    def log_likelihood(self, observations, observed=None, *, mask=None, actions=None,
                       time_gaps=None, num_particles=None, seed=None, dtype=None):
        """log Z-hat [batch], the PF's estimate of log p(y_{0:T-1})."""
        return self.filter(observations, observed, mask=mask, actions=actions,
                           time_gaps=time_gaps, num_particles=num_particles, seed=seed,
                           dtype=dtype).log_likelihood

    def call(self, inputs, training=None):
        """``{"log_likelihood" [batch], "filtered_means" [batch, time, n]}`` with noise from
        the seed generator when training, from a fixed seed otherwise (graph-friendly: any
        batch and length)."""
        inputs = self._inputs(inputs)
        dtype = self._dtype(None)
        y = inputs["observations"]
        if self.state_model is not None and not self.deep:
            self.state_model._ensure_built(y.shape)
        batch, time = tf.shape(y)[0], tf.shape(y)[1]
        if training:
            seed = self.seed_generator.next()
        else:
            seed = tf.constant([0 if self.seed is None else int(self.seed), 20260], tf.int32)
        n, d = self.num_particles, self._noise_dim()
        normals = tf.random.stateless_normal(tf.stack([time, batch, n, d]), seed, dtype=dtype,
                                             alg="philox")
        uniforms = tf.random.stateless_uniform(tf.stack([time - 1, batch, n]),
                                               tf.cast(seed, tf.int32) + [0, 1], dtype=dtype,
                                               alg="philox")
        out = self._scan(inputs, (normals[0], normals[1:], uniforms), dtype)
        return {"log_likelihood": out.log_likelihood, "filtered_means": out.filtered_means}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """-log Z-hat / T, the mean over the batch (T: the padded length, as the Kalman
        filter's loss)."""
        log_z = y_pred["log_likelihood"]
        steps = tf.cast(tf.shape(y_pred["filtered_means"])[1], log_z.dtype)
        return tf.cast(-tf.reduce_mean(log_z) / steps, "float32")

    # ------------------------------------------------------------------------------ contract
    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        return {"observation_shape": tuple(int(s) for s in
                                           np.asarray(arrays["observations"]).shape[2:])}

    @classmethod
    def fit_inputs(cls, arrays: dict):
        return sequences.sequence_inputs(arrays, ("observations", "mask", "observed",
                                                  "actions", "time_gaps")), None

    @classmethod
    def example_lengths(cls, x):
        return sequences.sequence_steps(x)

    @classmethod
    def prepare_batch(cls, x):
        return sequences.trim_to_longest(x)

    def validate_data(self, arrays: dict) -> None:
        sequences.check_finite(arrays, type(self).__name__)

    def _exact(self, x):
        """The exact Kalman log-likelihood [batch] (linear-Gaussian state model), else None."""
        if self.deep or self.state_model is None:
            return None
        return np.asarray(self.state_model.log_likelihood(
            x["observations"], x.get("actions"), x.get("observed"), mask=x.get("mask")))

    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """The estimated log-likelihood (mean per sequence and per real step), its spread
        over the sequences, and, for a linear-Gaussian model, the exact Kalman one and the
        mean gap log Z-hat - log Z; for a DKF/DMM, its own K-sample importance-weighted bound
        on the same sequences (both are lower bounds of log p in expectation: the larger is
        the tighter)."""
        log_lik = np.asarray(self.log_likelihood(x, seed=settings.seed), np.float64)
        steps = sequences.sequence_steps(x)
        report = {"log_likelihood": float(np.mean(log_lik)),
                  "nll_per_step": float(-np.sum(log_lik) / np.sum(steps)),
                  "likelihood_examples": int(len(log_lik)),
                  "num_particles": self.num_particles, "proposal": self.proposal}
        exact = self._exact(x)
        if exact is not None:
            gap = log_lik - exact
            report.update(exact_log_likelihood=float(np.mean(exact)),
                          exact_nll_per_step=float(-np.sum(exact) / np.sum(steps)),
                          log_likelihood_gap=float(np.mean(gap)),
                          log_likelihood_gap_sd=float(np.std(gap)))
        if self.deep:
            k = settings.num_samples
            bound = self.state_model.log_likelihood(x, num_samples=k, seed=settings.seed)
            report[f"state_model_iwae_log_likelihood_k{k}"] = float(
                np.mean(bound.log_likelihood))
        return report

    def _signal(self, particles):
        """The emission means of particles [..., n]: H x + d, or the DKF/DMM's decoder."""
        if self.deep:
            z = tf.cast(particles, self.state_model.compute_dtype)
            mean = self.state_model.decode(z)["mean"]
            return np.asarray(tf.reshape(mean, tf.concat([tf.shape(z)[:-1], [-1]], 0)),
                              np.float64)
        params = self.state_model.state_space_params("float64")
        out = np.asarray(particles, np.float64) @ np.asarray(params.observation_matrix).T
        if params.observation_offset is not None:
            out = out + np.asarray(params.observation_offset)
        return out

    def smooth(self, observations, observed=None, *, num_paths: int = 100,
               num_particles=None, seed: int = 0) -> dict:
        """Backward-simulation smoother (Godsill, Doucet & West 2004,
        :mod:`layers.particle_smoother`) over this filter's clouds, for a linear-Gaussian
        ``state_model``: ``smoothed_means`` [batch, time, n], ``smoothed_covs`` [batch, time,
        n, n] (of ``num_paths`` equally weighted trajectories) and the ``paths`` [batch,
        num_paths, time, n]; they converge to the RTS smoother's moments as the particles and
        paths grow. ``observed`` [batch, time]: 0 marks a missing frame."""
        from zoo.layers import particle_smoother as ps

        if self.state_model is None or self.deep:
            raise NotImplementedError(
                "ParticleFilter.smooth needs the transition density: it is wired for a "
                "linear-Gaussian state_model (KalmanFilterModel) only; for other models use "
                "layers.particle_smoother.backward_simulation with your transition_log_prob")
        inputs = self._inputs(observations, observed)
        self.state_model._ensure_built(inputs["observations"].shape)
        y, seen, fns, *_ = self._pieces(inputs, "float64")
        params = self.state_model.state_space_params()
        clouds = ps.filter_clouds(y, *fns, num_particles=num_particles or self.num_particles,
                                  observed=seen, seed=seed, scheme=self.resample,
                                  threshold=self.threshold)
        paths = ps.backward_simulation(clouds.particles, clouds.log_weights,
                                       ps.linear_gaussian_transition_log_prob(params),
                                       num_paths, seed=seed + 1)
        mean, cov = ps.smoothed_moments(paths)
        return {"smoothed_means": mean, "smoothed_covs": cov, "paths": paths}

    def particle_cloud(self, inputs, seed=0, num_particles=None, dtype=None) -> dict:
        """Every frame's particles and weights for a few sequences, by the same step the
        filter scans (eagerly): ``particles`` [batch, time, N, n], ``log_weights`` [batch,
        time, N], ``filtered_means`` [batch, time, n], ``filtered_covs``."""
        inputs = self._inputs(inputs)
        dtype = self._dtype(dtype)
        if self.state_model is not None and not self.deep:
            self.state_model._ensure_built(inputs["observations"].shape)
        y, seen, fns, proposal, initial_proposal, step_inputs = self._pieces(inputs, dtype)
        initial, transition, emission, dim = fns
        n = num_particles or self.num_particles
        batch, time = int(y.shape[0]), int(y.shape[1])
        init_eps, trans_eps, res_u = pf.draw_noise(seed, batch, time - 1, n, dim, dtype)
        at = (lambda t: None) if step_inputs is None else (lambda t: step_inputs[:, t])
        particles, correction = pf.initial_particles(initial, init_eps, seen[:, 0],
                                                     initial_proposal, at(0))
        state, step = pf.initial_step(particles, y[:, 0], emission, seen[:, 0], correction)
        clouds, weights, means, covs = [state.particles], [state.log_weights], [
            step.filtered_mean], [step.filtered_cov]
        for t in range(1, time):
            state, step = pf.particle_filter_step(
                state, y[:, t], transition, emission, trans_eps[t - 1], res_u[t - 1],
                seen[:, t], self.resample, self.threshold, "search", proposal, at(t))
            clouds.append(state.particles)
            weights.append(state.log_weights)
            means.append(step.filtered_mean)
            covs.append(step.filtered_cov)
        stack = lambda xs: np.stack([np.asarray(v) for v in xs], 1)  # noqa: E731
        return {"particles": stack(clouds), "log_weights": stack(weights),
                "filtered_means": stack(means), "filtered_covs": stack(covs)}

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        """One sequence in observation space: the particle cloud's emission means (shade:
        weight), their weighted mean +/- 2 sd, the observations, the clean signal when the
        data has it (H x of the true states, or ``clean``), and the exact Kalman filter's
        mean for a linear-Gaussian model."""
        import os

        from zoo import plots

        one, length = sequences.first_sequence(x)
        cloud = self.particle_cloud(one, seed=settings.seed)
        signal = self._signal(cloud["particles"][0, :length])  # [T, N, p]
        w = np.exp(cloud["log_weights"][0, :length])
        w = w / w.sum(-1, keepdims=True)
        mean = np.einsum("tn,tnp->tp", w, signal)
        std = np.sqrt(np.maximum(np.einsum("tn,tnp->tp", w, (signal - mean[:, None]) ** 2),
                                 0.0))
        obs = np.asarray(one["observations"], np.float64)[0, :length].reshape(length, -1)
        if "observed" in one:
            obs = obs.copy()
            obs[np.asarray(one["observed"])[0, :length] <= 0] = np.nan
        truth = None
        if "clean" in arrays:
            truth = np.asarray(arrays["clean"], np.float64)[:1, :length].reshape(length, -1)
        elif "states" in arrays and "H" in arrays:
            truth = np.asarray(arrays["states"], np.float64)[0, :length] @ np.asarray(
                arrays["H"]).T
        exact = None
        if not self.deep and self.state_model is not None:
            kf = self.state_model.filter(one["observations"], one.get("actions"),
                                         one.get("observed"), mask=one.get("mask"))
            exact = self._signal(np.asarray(kf.filtered_means)[0, :length])
        path = os.path.join(out_dir, "particles.png")
        return [plots.particle_cloud(obs, signal, w, mean, std, path, truth=truth,
                                     exact=exact, title=f"particle filter ({self.proposal}, "
                                     f"N = {self.num_particles}): cloud, mean +/- 2 sd")]

    def get_config(self):
        if self.functions is not None:
            raise NotImplementedError("a ParticleFilter over user `functions` has no config: "
                                      "functions are never pickled")
        config = super().get_config()
        config.update(state_model=keras.saving.serialize_keras_object(self.state_model),
                      num_particles=self.num_particles, resample=self.resample,
                      threshold=self.threshold, seed=self.seed, proposal=self.proposal)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["state_model"] = keras.saving.deserialize_keras_object(config["state_model"])
        return cls(**config)


def _both(observed, mask):
    """Frames to weight on: observed and not padding (None: all)."""
    if observed is None:
        return mask
    if mask is None:
        return observed
    return tf.cast(tf.logical_and(tf.cast(observed, tf.bool), tf.cast(mask, tf.bool)),
                   tf.float64)

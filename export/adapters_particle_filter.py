r"""Export adapter of the particle filter: ``"particle_filter"`` (``zoo.ParticleFilter``).

``init_state() -> particles, log_weights, started`` and
``filter_step(particles, log_weights, started, observation, observed, noise) -> particles,
log_weights, started, estimate, uncertainty, covariance, log_likelihood, ess, resampled``,
traced from the model's own step functions (:func:`layers.particle_filter.initial_step` on
the first frame, :func:`layers.particle_filter.particle_filter_step` after it, over the
model's bootstrap functions, :func:`particle_functions`: the Kalman filter's linear-Gaussian
model, a DKF/DMM's generative model or user functions), with the
adaptive resampling inside the step in TFLite built-in ops only: from ``LINEAR_FROM``
particles on, the systematic and stratified schemes use the O(N) ``"linear"`` method of
:mod:`layers.resampling` (three GATHERs, SCATTER_ND, CUMSUM), below it and for the
multinomial scheme the ``"compare"`` count over an [N, N] grid (CUMSUM, LESS_EQUAL, SUM): the
same ancestors either way (``benchmarks/README.md``: about 4x faster at N = 1000).

Noise is an input, so a step is a deterministic function that an app (or a test) can
reproduce: ``noise`` [b, N, d + 1] holds per particle the d standard normals of the
propagation (frame 0: of the draw from the prior) in ``noise[..., :d]`` and one U(0, 1)
uniform for the resampling in ``noise[..., d]`` (the systematic scheme reads particle 0's
only). The sidecar's ``noise_layout`` says so, and :class:`export.runtime.StreamingFilter`
draws it itself when a frame comes without ``noise``.

State: ``particles`` [b, N, n], ``log_weights`` [b, N] (normalized) and ``started`` [b] (0.0
before the first frame, then 1.0). ``init_state`` returns zeros, ``-log N`` and 0: the first
frame draws the particles from the prior with its noise (the Kalman filter's convention: no
prediction before frame 0). ``observed`` 0 marks a missing frame (its observation may hold
anything, NaN included): the particles move, the weights stay and ``log_likelihood`` is 0.

A DKF/DMM filter with a learned proposal (``proposal="learned"`` or ``"learned_prior"``, from
a q-RNN filter network) also carries that network's state, as ``q_``-prefixed state tensors
(``q_rnn``, ``q_z_prev``): each frame runs the model's own causal ``filter_step`` for
q(z_t | x_1..x_t) and draws the particles from it (or from its product with each particle's
transition), weighting by p / q as :mod:`layers.particle_filter` does.

Outputs beside the state: ``estimate`` [b, n] (the weighted mean), ``uncertainty`` [b, n]
(the weighted standard deviations), ``covariance`` [b, n, n], ``log_likelihood`` [b] (log
p-hat(y_t | y_<t), the increment of the running log Z-hat; sum it for log Z-hat), ``ess`` [b]
(effective sample size after weighting) and ``resampled`` [b] (1.0 where the frame resampled).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from zoo.export.adapters import model_config, register_adapter
from zoo.export.protocol import FILTER_STEP, INIT_STATE, ExportSpec, Signature, spec
from zoo.layers import particle_filter as pf

LINEAR_FROM = 256  # particles from which the O(N) method beats the O(N^2) count (measured)
NOISE_DOC = ("noise [b, N, d + 1] per frame: noise[..., :d] standard normals (the "
             "propagation; frame 0: the draw from the prior), noise[..., d] U(0, 1) (the "
             "resampling; the systematic scheme reads particle 0's only).")


def noise_layout(noise_dim: int) -> dict:
    """``{kind: {"offset", "size", "shape"}}`` of the ``noise`` input's last axis, in the
    format of :func:`export.protocol.state_layout` (the kind names the distribution)."""
    return {"normal": {"offset": 0, "size": int(noise_dim), "shape": [int(noise_dim)]},
            "uniform": {"offset": int(noise_dim), "size": 1, "shape": [1]}}


def observation_dim(model) -> int:
    """The observation size p of a ParticleFilter: its ``observation_dim`` attribute when set
    (needed for user ``functions``), else the state model's (a Kalman filter's R, a deep
    state-space model's ``observation_shape``)."""
    p = getattr(model, "observation_dim", None)
    if p is not None:
        return int(p)
    sm = getattr(model, "state_model", None)
    kalman = getattr(sm, "kalman", None)
    if kalman is not None and getattr(kalman, "built", False):
        return int(kalman.observation_dim)
    shape = getattr(sm, "observation_shape", None)
    if shape is not None:
        return int(np.prod(shape))
    raise ValueError(
        f"cannot tell the observation size of this {type(model).__name__} (user functions, or "
        f"a state model that was never built): set `model.observation_dim = p` before export")


def deep_functions(model, dtype="float32"):
    """A DKF/DMM ParticleFilter's ``DeepStateSpaceFunctions`` (its proposal included), or
    NotImplementedError for what the exported step does not carry yet: conditions (actions,
    time gaps) of the transition, and a learned proposal from a message-form filter network
    (its q is not the network's own ``filter_step`` output)."""
    from zoo.particle_filter import DeepStateSpaceFunctions

    fns = DeepStateSpaceFunctions(model.state_model, getattr(model, "proposal", "bootstrap"),
                                  dtype)
    if fns.c:
        raise NotImplementedError("a DKF/DMM with actions or time gaps (conditions of its "
                                  "transition) is not exported as a particle filter yet")
    if fns.net is not None and fns.net.message:
        raise NotImplementedError(
            f"proposal={model.proposal!r} from a message-form filter network "
            f"(structured_posterior='message') is not exported yet; a q-RNN's is")
    return fns


def particle_functions(model, dtype="float32"):
    """``(initial_sample, transition_sample, emission_log_prob, noise_dim)`` of a
    ParticleFilter's state model in ``dtype``: its user ``functions``, a DKF/DMM's
    generative model (:func:`deep_functions`) or the Kalman model's matrices (read now, so a
    traced step follows the current weights)."""
    if getattr(model, "functions", None) is not None:
        return tuple(model.functions)
    sm = model.state_model
    if getattr(model, "deep", False):
        return deep_functions(model, dtype).callables()
    from zoo.particle_filter import linear_gaussian_functions

    return linear_gaussian_functions(sm.state_space_params(), dtype)


def _std(cov):
    """Standard deviations from covariances [b, n, n] (masked sum: diag_part is Flex)."""
    n = int(cov.shape[-1])
    return tf.sqrt(tf.maximum(tf.reduce_sum(cov * tf.eye(n, dtype=cov.dtype), -1), 0.0))


def moments(particles, log_weights):
    """Weighted mean [b, n] and covariance [b, n, n] of a cloud, as
    :func:`layers.particle_filter.weighted_moments` but with the weights folded into one
    factor, so the covariance is one [n, N] x [N, n] BATCH_MATMUL in TFLite rather than N
    batched outer products."""
    w = tf.exp(log_weights - tf.reduce_logsumexp(log_weights, -1, keepdims=True))
    mean = tf.einsum("bi,bin->bn", w, particles)
    centred = particles - mean[:, None, :]
    return mean, tf.einsum("bin,bim->bnm", w[:, :, None] * centred, centred)


def export_step(functions, particles, log_weights, started, observation, observed, noise,
                scheme: str, threshold: float, method: str = "compare", proposal=None,
                initial_proposal=None, step_input=None) -> dict:
    """One exported frame as a pure function (float32 tensors; see the module docstring):
    frame 0 (``started`` 0) is :func:`layers.particle_filter.initial_step` on the prior draw,
    later frames :func:`layers.particle_filter.particle_filter_step`; both are computed and
    each batch row takes its own (the first frame's part costs O(N)); the moments are taken
    once, of the chosen cloud (:func:`moments`). ``proposal``, ``initial_proposal`` and
    ``step_input`` [b, k]: a learned proposal as in :func:`layers.particle_filter.scan_filter`
    (frame 0 draws from ``initial_proposal`` where the frame is observed).
    """
    initial_sample, transition_sample, emission_log_prob, noise_dim = functions[:4]
    eps, u = noise[..., :noise_dim], noise[..., noise_dim]
    first = started < 0.5  # [b]
    b = tf.shape(log_weights)[0]
    state = pf.ParticleState(particles, log_weights, tf.zeros([b], log_weights.dtype))
    later, out = pf.particle_filter_step(state, observation, transition_sample,
                                         emission_log_prob, eps, u, observed, scheme,
                                         threshold, method, proposal, step_input)
    x0, correction = pf.initial_particles(
        lambda e: tf.cast(initial_sample(e), particles.dtype), eps, observed,
        initial_proposal, step_input)
    start, out0 = pf.initial_step(x0, observation, emission_log_prob, observed, correction)

    def pick(a, b_):
        return tf.where(tf.reshape(first, [-1] + [1] * (a.shape.rank - 1)), a, b_)

    particles = pick(start.particles, later.particles)
    log_weights = pick(start.log_weights, later.log_weights)
    mean, cov = moments(particles, log_weights)
    return {"particles": particles, "log_weights": log_weights,
            "started": tf.ones_like(started), "estimate": mean,
            "uncertainty": _std(cov), "covariance": cov,
            "log_likelihood": pick(out0.log_likelihood, out.log_likelihood),
            "ess": pick(out0.ess, out.ess),
            "resampled": tf.cast(pick(out0.resampled, out.resampled), log_weights.dtype)}


@register_adapter("particle_filter")
class ParticleFilterAdapter:
    """``init_state`` and ``filter_step`` of a :class:`zoo.particle_filter.ParticleFilter` at
    its ``num_particles``, ``resample`` scheme and ``threshold`` (see the module docstring)."""

    def __init__(self, model, method: str = "auto"):
        self.model = model
        self.method = method  # "auto", or a method of layers.resampling (benchmarks)

    @property
    def name(self):
        return self.model.name

    def resample_method(self) -> str:
        """The resampling method traced into the step (see the module docstring)."""
        if self.method != "auto":
            return self.method
        linear = (self.model.resample != "multinomial"
                  and self.model.num_particles >= LINEAR_FROM)
        return "linear" if linear else "compare"

    def functions(self):
        return particle_functions(self.model, "float32")

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        n_part = int(m.num_particles)
        method = self.resample_method()
        p = observation_dim(m)
        sm = getattr(m, "state_model", None)
        if sm is not None and hasattr(sm, "_ensure_built"):
            sm._ensure_built((None, None, p))
        d = int(self.functions()[3])
        n = int(self.functions()[0](tf.zeros([1, 1, d])).shape[-1])
        state = {"particles": spec((b, n_part, n), "particles"),
                 "log_weights": spec((b, n_part), "log_weights"),
                 "started": spec((b,), "started")}
        bernoulli = type(getattr(sm, "head", None)).__name__.startswith("Bernoulli")
        learned = getattr(m, "deep", False) and getattr(m, "proposal", "bootstrap") != "bootstrap"
        if learned:  # the filter network's own state rides along, prefixed q_
            deep_functions(m)  # NotImplementedError for what is not exported
            q0 = {f"q_{k}": v for k, v in sm.initial_state(b).items()}
            state.update({k: spec(v.shape, k) for k, v in q0.items()})
        frame = {"observation": spec((b, p), "observation"), "observed": spec((b,), "observed"),
                 "noise": spec((b, n_part, d + 1), "noise")}

        def init_state():
            out = {"particles": tf.zeros([b, n_part, n]),
                   "log_weights": tf.fill([b, n_part], -math.log(n_part)),
                   "started": tf.zeros([b])}
            if learned:
                out.update({f"q_{k}": tf.identity(v) for k, v in sm.initial_state(b).items()})
            return out

        def filter_step(particles, log_weights, started, observation, observed, noise, **q):
            if not learned:
                return export_step(self.functions(), particles, log_weights, started,
                                   observation, observed, noise, m.resample, m.threshold,
                                   method)
            # q(z_t | x_1..x_t) from the model's own causal step, then the PF step with it as
            # the proposal (the step input [loc | scale] of DeepStateSpaceFunctions)
            fns = deep_functions(m, "float32")
            new_q, out = sm.filter_step({k[2:]: v for k, v in q.items()},
                                        tf.reshape(observation, [b, *sm.observation_shape]),
                                        observed)
            step_input = tf.cast(tf.concat([out["filtered_mean"], out["filtered_scale"]], -1),
                                 tf.float32)
            result = export_step(fns.callables(), particles, log_weights, started, observation,
                                 observed, noise, m.resample, m.threshold, method,
                                 fns.proposal, fns.initial_proposal, step_input)
            return {**result, **{f"q_{k}": v for k, v in new_q.items()}}

        def step_example(rng):
            # A started cloud with uneven weights (some rows resample, the scheme is reached)
            # and the observation near it; uniforms kept off the CDF's float32 rounding.
            w = rng.dirichlet(np.full(n_part, 0.5), size=b)
            noise = rng.standard_normal((b, n_part, d + 1))
            noise[..., d] = rng.uniform(0.01, 0.99, (b, n_part))
            ex = {"particles": rng.standard_normal((b, n_part, n)).astype("float32"),
                  "log_weights": np.log(np.maximum(w, 1e-30)).astype("float32"),
                  "started": np.ones((b,), "float32"),
                  "observation": (rng.uniform(size=(b, p)) < 0.5 if bernoulli else
                                  rng.standard_normal((b, p))).astype("float32"),
                  "observed": np.ones((b,), "float32"), "noise": noise.astype("float32")}
            for k in state:
                if k.startswith("q_"):
                    ex[k] = rng.uniform(-0.5, 0.5, state[k].shape).astype("float32")
            return ex

        signatures = {
            INIT_STATE: Signature(init_state, {}, lambda rng: {},
                                  "the state before the first frame: zeros, -log N, 0"),
            FILTER_STEP: Signature(filter_step, {**state, **frame}, step_example,
                                   "particles, log-weights, started + observation y_t, observed "
                                   "flag, noise -> new cloud, weighted mean, standard "
                                   "deviations and covariance of x_t, log p-hat(y_t | y_<t)"),
        }
        try:
            config = model_config(m)
        except NotImplementedError:  # user functions have no config
            config = {"num_particles": n_part, "resample": m.resample,
                      "threshold": m.threshold}
        metadata = {"model": type(m).__name__, "config": config, "state_dim": n,
                    "observation_dim": p, "num_particles": n_part, "noise_dim": d,
                    "resample": m.resample, "threshold": m.threshold,
                    "resample_method": method,
                    "proposal": getattr(m, "proposal", "bootstrap"),
                    "noise_layout": noise_layout(d), "noise_doc": NOISE_DOC,
                    "estimate": "sum_i W_i x_t^i, the particle estimate of E[x_t | y_0..y_t]",
                    "uncertainty": "sqrt(diag) of the weighted covariance of the particles",
                    "log_likelihood": "log p-hat(y_t | y_<t); 0 on a missing frame"}
        return ExportSpec(signatures, metadata, state=tuple(state))

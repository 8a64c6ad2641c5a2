r"""Particle filter over any transition and emission, as pure functions: the bootstrap
proposal or any other one (a learned proposal such as a DKF's filter network).

Gordon, Salmond & Smith, "Novel approach to nonlinear/non-Gaussian Bayesian state estimation"
(1993); the adaptive scheme and the marginal-likelihood estimate as in Doucet & Johansen, "A
Tutorial on Particle Filtering and Smoothing: Fifteen years later" (2009).

Frame 0 weights draws of $x_0$ from the prior (no prediction before it, as in the Kalman
filter of :mod:`layers.kalman_inference`); each later frame $t$

1. resamples when $\mathrm{ESS} < \tau N$ (:func:`layers.resampling.adaptive_resample`),
2. propagates $x_t^i = f(x_{t-1}^{a_i}, \epsilon_t^i)$ (``transition_sample``),
3. weights $\log \tilde w^i = \log W_{t-1}^i + \log g(y_t \mid x_t^i)$
   (``emission_log_prob``), skipped where ``observed`` is 0 (a missing frame, NaN allowed),

and adds $\log \hat p(y_t \mid y_{<t}) = \operatorname{logsumexp}_i \log \tilde w^i$ to the
running estimate $\log \hat Z_t$. The weights $W_{t-1}$ are normalized, so after a resampling
step ($W = 1/N$) the increment is the log mean of the incremental weights, and without one it
is their $W$-weighted sum: $\hat Z$ is unbiased for $p(y_{0:t})$ either way (Del Moral 2004).

With a ``proposal`` $r$ in place of the transition (step 2), the particles are drawn from
$r(x_t \mid x_{t-1}^{a_i}, \cdot)$ and step 3 adds the correction
$\log f(x_t^i \mid x_{t-1}^{a_i}) - \log r(x_t^i \mid x_{t-1}^{a_i}, \cdot)$ to the
log-weights (Doucet & Johansen, section 4); $\hat Z$ stays unbiased for any $r$ whose support
covers $f g$'s. On a missing frame the proposal (which sees no new data there) is replaced by
the transition, so the weights and the increment are exactly those of the bootstrap filter.

Callables: ``transition_sample(particles [batch, N, n], noise [batch, N, noise_dim]) ->
particles``, ``emission_log_prob(particles [batch, N, n], observation [batch, p]) -> [batch,
N]`` and, for :func:`particle_filter`, ``initial_sample(noise [batch, N, noise_dim]) ->
particles``. They must be traceable by ``tf.function``. A ``proposal(parents [batch, N, n],
step_input [batch, k] or None, noise [batch, N, noise_dim]) -> (particles, log_correction
[batch, N])`` returns its draws and $\log f - \log r$ at them; ``initial_proposal(step_input,
noise)`` does the same for frame 0 against $p(x_0)$. ``step_inputs`` [batch, time, k] are
per-frame inputs handed to the proposal (e.g. the parameters of a filter network's
$q(x_t \mid y_{1:t})$, or actions); when given, ``transition_sample`` is also called with
them, as ``transition_sample(particles, noise, step_input)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import keras
import tensorflow as tf

from zoo.layers import resampling


class ParticleState(NamedTuple):
    """What one frame hands the next."""

    particles: tf.Tensor  # [batch, N, n]
    log_weights: tf.Tensor  # [batch, N]: normalized
    log_marginal_likelihood: tf.Tensor  # [batch]: log Z-hat so far


class ParticleStep(NamedTuple):
    """Outputs of one frame of :func:`particle_filter_step`."""

    filtered_mean: tf.Tensor  # [batch, n]: sum_i W_i x_i
    filtered_cov: tf.Tensor  # [batch, n, n]: sum_i W_i (x_i - m)(x_i - m)^T
    predicted_mean: tf.Tensor  # [batch, n]: the same before weighting by y_t
    predicted_cov: tf.Tensor  # [batch, n, n]
    log_likelihood: tf.Tensor  # [batch]: log p-hat(y_t | y_<t), 0 on missing frames
    ess: tf.Tensor  # [batch]: effective sample size after weighting
    resampled: tf.Tensor  # [batch]: bool, whether this frame resampled
    ancestors: tf.Tensor  # [batch, N]: int32 parent indices


class ParticleFilterResult(NamedTuple):
    """Whole-sequence result of :func:`particle_filter`; the first six fields are those of
    :class:`layers.kalman_inference.FilterResult`."""

    log_likelihood: tf.Tensor  # [batch]: log Z-hat
    log_likelihoods: tf.Tensor  # [batch, time]
    filtered_means: tf.Tensor  # [batch, time, n]
    filtered_covs: tf.Tensor  # [batch, time, n, n]
    predicted_means: tf.Tensor  # [batch, time, n]
    predicted_covs: tf.Tensor  # [batch, time, n, n]
    ess: tf.Tensor  # [batch, time]
    resampled: tf.Tensor  # [batch, time]: bool
    particles: tf.Tensor  # [batch, N, n]: the final cloud
    log_weights: tf.Tensor  # [batch, N]: its normalized log-weights


def weighted_moments(particles, log_weights):
    """Mean [batch, n] and covariance [batch, n, n] of the cloud under normalized weights."""
    w = tf.exp(resampling.normalize_log_weights(log_weights))
    mean = tf.einsum("bi,bin->bn", w, particles)
    centred = particles - mean[:, None, :]
    cov = tf.einsum("bi,bin,bim->bnm", w, centred, centred)
    return mean, cov


def _observed_flags(observed, batch, dtype):
    if observed is None:
        return tf.ones([batch], tf.bool)
    return tf.cast(observed, dtype) > 0.5


def weight_step(particles, log_weights, observation, emission_log_prob: Callable,
                observed=None, log_correction=None):
    """Weight the cloud by y_t: (new normalized log-weights, log p-hat(y_t | y_<t)).

    ``observed`` [batch] 0 leaves the weights as they were and the increment 0; the observation
    there may be anything (NaN included): the emission sees zeros in its place.
    ``log_correction`` [batch, N]: log f - log r of a proposal's draws (None: bootstrap); it
    must be 0 where ``observed`` is 0 (:func:`propose` makes it so).
    """
    dtype = log_weights.dtype
    y = tf.cast(observation, dtype)
    seen = _observed_flags(observed, tf.shape(log_weights)[0], dtype)
    y = tf.where(seen[:, None], y, tf.zeros_like(y))
    log_g = tf.cast(emission_log_prob(particles, y), dtype)
    log_g = tf.where(seen[:, None], log_g, tf.zeros_like(log_g))
    unnormalized = log_weights + log_g
    if log_correction is not None:
        unnormalized = unnormalized + tf.cast(log_correction, dtype)
    increment = tf.reduce_logsumexp(unnormalized, axis=-1)
    return unnormalized - increment[:, None], tf.where(seen, increment,
                                                       tf.zeros_like(increment))


def _transition(transition_sample: Callable, parents, noise, step_input):
    if step_input is None:
        return transition_sample(parents, noise)
    return transition_sample(parents, noise, step_input)


def propose(parents, transition_sample: Callable, noise, observed=None,
            proposal: Optional[Callable] = None, step_input=None):
    """Frame t's particles [batch, N, n] and log-weight correction ([batch, N] or None for the
    bootstrap filter): the ``proposal``'s draws where the frame is observed, the transition's
    (correction 0) where it is missing."""
    prior = _transition(transition_sample, parents, noise, step_input)
    if proposal is None:
        return prior, None
    return _where_observed(observed, *proposal(parents, step_input, noise), prior)


def initial_particles(initial_sample: Callable, noise, observed=None,
                      initial_proposal: Optional[Callable] = None, step_input=None):
    """Frame 0's particles [batch, N, n] and log-weight correction (None for the bootstrap
    filter): ``initial_proposal``'s draws where the frame is observed, p(x_0)'s (correction
    0) where it is missing; as :func:`propose` for the later frames."""
    prior = initial_sample(noise)
    if initial_proposal is None:
        return prior, None
    return _where_observed(observed, *initial_proposal(step_input, noise), prior)


def _where_observed(observed, particles, log_correction, fallback):
    """A proposal's ``particles`` and ``log_correction`` where the frame is observed, the
    ``fallback`` draws (correction 0) where it is missing."""
    seen = _observed_flags(observed, tf.shape(fallback)[0], fallback.dtype)
    particles = tf.where(seen[:, None, None], tf.cast(particles, fallback.dtype), fallback)
    log_correction = tf.cast(log_correction, fallback.dtype)
    return particles, tf.where(seen[:, None], log_correction, tf.zeros_like(log_correction))


def particle_filter_step(state: ParticleState, observation, transition_sample: Callable,
                         emission_log_prob: Callable, transition_noise, resample_noise,
                         observed=None, scheme: str = "systematic",
                         threshold: float = 0.5, method: str = "compare",
                         proposal: Optional[Callable] = None,
                         step_input=None) -> tuple[ParticleState, ParticleStep]:
    """One frame after the first: adaptive resampling, proposal (bootstrap by default),
    weighting.

    ``observation`` [batch, p]; ``observed`` [batch] (0: missing frame); ``transition_noise``
    [batch, N, noise_dim] for ``transition_sample`` (and ``proposal``); ``resample_noise``
    [batch, N] uniforms (:mod:`layers.resampling`; ``method`` "compare" uses TFLite built-ins
    only, "search" is O(N log N) with the same indices). ``proposal`` and ``step_input``
    [batch, k]: see the module docstring (None: the bootstrap filter). Returns the new state
    and the frame's :class:`ParticleStep`.
    """
    chosen = resampling.adaptive_resample(state.log_weights, resample_noise, scheme, threshold,
                                          method)
    parents = resampling.gather_particles(state.particles, chosen.indices)
    particles, log_correction = propose(parents, transition_sample,
                                        tf.cast(transition_noise, parents.dtype), observed,
                                        proposal, step_input)
    if log_correction is None:
        predicted_mean, predicted_cov = weighted_moments(particles, chosen.log_weights)
    else:  # the predictive moments are those of f, not of the proposal's draws
        predicted_mean, predicted_cov = weighted_moments(
            particles, chosen.log_weights + log_correction)
    log_weights, increment = weight_step(particles, chosen.log_weights, observation,
                                         emission_log_prob, observed, log_correction)
    mean, cov = weighted_moments(particles, log_weights)
    new = ParticleState(particles, log_weights, state.log_marginal_likelihood + increment)
    return new, ParticleStep(mean, cov, predicted_mean, predicted_cov, increment,
                             resampling.effective_sample_size(log_weights), chosen.resampled,
                             chosen.indices)


def initial_step(particles, observation, emission_log_prob: Callable,
                 observed=None, log_correction=None) -> tuple[ParticleState, ParticleStep]:
    """Frame 0: weight equally weighted draws of x_0 [batch, N, n] by y_0 (and by
    ``log_correction`` = log p(x_0) - log r(x_0) when they come from a proposal r)."""
    n = tf.shape(particles)[1]
    log_weights = tf.zeros(tf.shape(particles)[:2], particles.dtype) - tf.math.log(
        tf.cast(n, particles.dtype))
    prior_weights = log_weights if log_correction is None else log_weights + log_correction
    predicted_mean, predicted_cov = weighted_moments(particles, prior_weights)
    log_weights, increment = weight_step(particles, log_weights, observation,
                                         emission_log_prob, observed, log_correction)
    mean, cov = weighted_moments(particles, log_weights)
    batch = tf.shape(particles)[0]
    keep = tf.broadcast_to(tf.range(n)[None, :], [batch, n])
    return (ParticleState(particles, log_weights, increment),
            ParticleStep(mean, cov, predicted_mean, predicted_cov, increment,
                         resampling.effective_sample_size(log_weights),
                         tf.zeros([batch], tf.bool), keep))


def draw_noise(seed, batch: int, time: int, num_particles: int, noise_dim: int, dtype):
    """All the noise a filter run needs, drawn up front: (initial [batch, N, d], transition
    [time, batch, N, d] normals, resampling [time, batch, N] uniforms). ``seed``: an int or a
    ``keras.random.SeedGenerator``."""
    if isinstance(seed, int) or seed is None:
        seed = keras.random.SeedGenerator(seed)
    normals = keras.random.normal((time + 1, batch, num_particles, noise_dim), seed=seed,
                                  dtype=dtype)
    uniforms = keras.random.uniform((time, batch, num_particles), seed=seed, dtype=dtype)
    return normals[0], normals[1:], uniforms


def particle_filter(observations, initial_sample: Callable, transition_sample: Callable,
                    emission_log_prob: Callable, num_particles: int, noise_dim: int,
                    observed=None, seed=None, scheme: str = "systematic",
                    threshold: float = 0.5, dtype="float64",
                    noise: Optional[tuple] = None, compile: bool = True,
                    proposal: Optional[Callable] = None,
                    initial_proposal: Optional[Callable] = None, step_inputs=None
                    ) -> ParticleFilterResult:
    """Run the filter over ``observations`` [batch, time, p] (``observed`` [batch, time]: 0 =
    missing frame), compiled (``compile``) as one ``tf.function`` over a ``tf.while_loop``.

    The noise (:func:`draw_noise`) is drawn up front from ``seed`` (int or SeedGenerator), or
    given as ``noise`` = (initial, transition, resampling), so a run is reproducible. ``batch``
    rows are independent filters: replicate one sequence along it for independent runs.
    ``compile=False`` runs :func:`scan_filter` as it is (to call from inside a caller's own
    ``tf.function``, which then traces once). ``proposal``, ``initial_proposal``,
    ``step_inputs`` [batch, time, k]: see the module docstring.
    """
    check_settings(num_particles, scheme, threshold)
    observations, observed, noise = prepare_inputs(observations, observed, num_particles,
                                                   noise_dim, seed, dtype, noise)
    if step_inputs is not None:
        step_inputs = tf.cast(step_inputs, dtype)

    def run(y, seen, noise, inputs):
        return scan_filter(y, seen, noise, initial_sample, transition_sample,
                           emission_log_prob, scheme, threshold, proposal, initial_proposal,
                           inputs)

    return (tf.function(run) if compile else run)(observations, observed, noise, step_inputs)


def scan_filter(observations, observed, noise, initial_sample: Callable,
                transition_sample: Callable, emission_log_prob: Callable,
                scheme: str = "systematic", threshold: float = 0.5,
                proposal: Optional[Callable] = None,
                initial_proposal: Optional[Callable] = None,
                step_inputs=None) -> ParticleFilterResult:
    """The loop of :func:`particle_filter` without its checks or compilation: ``observations``
    [batch, time, p], ``observed`` [batch, time] (float), ``noise`` from :func:`draw_noise`,
    ``step_inputs`` [batch, time, k] or None."""
    init_eps, trans_eps, res_u = noise
    time = tf.shape(observations)[1]
    y_t = tf.transpose(observations, [1, 0, 2])
    seen_t = tf.transpose(observed)
    in_t = None if step_inputs is None else tf.transpose(step_inputs, [1, 0, 2])
    particles, log_correction = initial_particles(initial_sample, init_eps, seen_t[0],
                                                  initial_proposal,
                                                  None if in_t is None else in_t[0])
    state, first = initial_step(particles, y_t[0], emission_log_prob, seen_t[0],
                                log_correction)
    arrays = [tf.TensorArray(x.dtype, size=time).write(0, x) for x in first]

    def body(t, state, arrays):
        state, out = particle_filter_step(state, y_t[t], transition_sample, emission_log_prob,
                                          trans_eps[t - 1], res_u[t - 1], seen_t[t], scheme,
                                          threshold, "search", proposal,
                                          None if in_t is None else in_t[t])
        return t + 1, state, [a.write(t, x) for a, x in zip(arrays, out)]

    _, state, arrays = tf.while_loop(lambda t, *_: t < time, body,
                                     (tf.constant(1), state, arrays))
    out = ParticleStep(*[a.stack() for a in arrays])  # [time, batch, ...]

    def bt(x):
        return tf.transpose(x, [1, 0] + list(range(2, x.shape.rank)))

    return ParticleFilterResult(
        state.log_marginal_likelihood, bt(out.log_likelihood), bt(out.filtered_mean),
        bt(out.filtered_cov), bt(out.predicted_mean), bt(out.predicted_cov), bt(out.ess),
        bt(out.resampled), state.particles, state.log_weights)


def check_settings(num_particles: int, scheme: str, threshold: float) -> None:
    """Errors naming the argument for a bad ``num_particles``, ``scheme`` or ``threshold``."""
    if scheme not in resampling.SCHEMES:
        raise ValueError(f"`scheme` must be one of {resampling.SCHEMES}, got {scheme!r}")
    if not (isinstance(num_particles, int) and num_particles >= 1):
        raise ValueError(f"`num_particles` must be a positive int, got {num_particles!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1], got {threshold!r}")


def prepare_inputs(observations, observed, num_particles: int, noise_dim: int, seed=None,
                   dtype="float64", noise: Optional[tuple] = None):
    """Checked ``(observations, observed, noise)`` for :func:`scan_filter`: the noise drawn
    from ``seed`` unless given, ``observed`` all ones when None."""
    observations = tf.cast(tf.convert_to_tensor(observations), dtype)
    if observations.shape.rank != 3:
        raise ValueError(f"`observations` must be [batch, time, p], got shape "
                         f"{observations.shape}")
    batch, time = int(observations.shape[0]), int(observations.shape[1])
    if time < 1:
        raise ValueError("`observations` must have at least one time step")
    if observed is None:
        observed = tf.ones([batch, time], dtype)
    observed = tf.cast(tf.convert_to_tensor(observed), dtype)
    if tuple(observed.shape) != (batch, time):
        raise ValueError(f"`observed` must be [batch, time] = {[batch, time]}, got "
                         f"{list(observed.shape)}")
    if noise is None:
        noise = draw_noise(seed, batch, time - 1, num_particles, noise_dim, dtype)
    noise = tuple(tf.cast(x, dtype) for x in noise)
    return observations, observed, noise

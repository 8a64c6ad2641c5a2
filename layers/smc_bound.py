r"""Sequential Monte Carlo bounds on log p(x_{1:T}) for training sequence models, as pure
functions: the IWAE bound over whole trajectories and FIVO.

A model supplies one step, ``propose(particles_prev, elems_t) -> (particles_t, log_w_t)``,
that draws $z_t^i \sim r(z_t \mid z_{t-1}^i, x)$ for each of the K particles and returns the
incremental log-weights

$$\log w_t^i = o_t \log p(x_t \mid z_t^i) + \log p(z_t^i \mid z_{t-1}^i)
- \log r(z_t^i \mid z_{t-1}^i, x).$$

:func:`smc_bound` runs it over time and accumulates

$$\log \hat Z = \sum_t m_t \log \sum_i W_{t-1}^i w_t^i,$$

with $W_{t-1}$ the normalized weights before step t. Without resampling (``uniforms`` None)
the sum telescopes to $\log \frac1K \sum_i \prod_t w_t^i$: the importance-weighted bound of
Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (2016), over whole
trajectories. With resampling when the effective sample size falls below ``threshold`` K
(:func:`layers.resampling.adaptive_resample`, the caller's uniforms) it is the filtering
variational objective of Maddison et al., "Filtering Variational Objectives" (2017) (also
Le et al., "Auto-Encoding Sequential Monte Carlo", 2018; Naesseth et al., "Variational
Sequential Monte Carlo", 2018). $\hat Z$ is unbiased for $p(x)$, so $E[\log \hat Z] \le \log
p(x)$ either way (Jensen).

Gradients: the ancestor indices are integers and carry no gradient, and a step that
resamples restarts from the constant weights $1/K$. Automatic differentiation therefore gives
the FIVO paper's gradient estimator, which drops the score-function term of the resampling
distribution (Maddison et al. 2017, section 4: it has high variance and small mean).

Masks: ``mask`` 0 marks padding: such a step adds nothing to $\log \hat Z$, does not
resample and leaves the particles and weights as they were (a padded sequence gives the bound
of the unpadded one given the same noise). Missing frames ($o_t$ = 0) are the caller's
business (no likelihood term in ``log_w``); they do resample when the weights degenerate.

Example (a one-step Gaussian model, $z \sim N(0, 1)$, $x \mid z \sim N(z, 1)$, proposal =
prior, so $\log w = \log N(x; z, 1)$):

>>> import math
>>> import tensorflow as tf
>>> from zoo.layers.smc_bound import smc_bound
>>> def propose(prev, e):
...     z = prev + e["eps"]
...     return z, -0.5 * tf.square(e["x"][:, None] - z) - 0.5 * math.log(2 * math.pi)
>>> elems = {"eps": tf.random.stateless_normal([1, 1, 2000], [0, 1]), "x": tf.constant([[0.5]])}
>>> out = smc_bound(propose, tf.zeros([1, 2000]), elems, mask=tf.ones([1, 1]))
>>> exact = -0.25 / 4 - 0.5 * math.log(2 * math.pi * 2)  # x ~ N(0, 2)
>>> bool(abs(float(out.log_marginal[0]) - exact) < 0.02)
True
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from zoo.layers import resampling

OBJECTIVES = ("elbo", "iwae", "fivo")


class SMCBound(NamedTuple):
    """Result of :func:`smc_bound`."""

    log_marginal: tf.Tensor  # [batch]: log Z-hat, the bound
    log_increments: tf.Tensor  # [batch, time]: log sum_i W_{t-1}^i w_t^i (0 on padding)
    ess: tf.Tensor  # [batch, time]: effective sample size after weighting
    resampled: tf.Tensor  # [batch, time]: bool, whether step t resampled before proposing
    particles: object  # the final particles [batch, K, ...] (a nest, as ``initial``)
    log_weights: tf.Tensor  # [batch, K]: their normalized log-weights


def smc_bound(propose: Callable, initial, elems, mask, uniforms=None,
              scheme: str = "systematic", threshold: float = 0.5) -> SMCBound:
    """IWAE (``uniforms`` None) or FIVO bound over time; see the module docstring.

    Args:
        propose: ``(particles [batch, K, ...], elems_t) -> (particles [batch, K, ...],
            log_w [batch, K])``, traceable; ``particles`` may be a nest of tensors.
        initial: the particles before the first step (a nest of [batch, K, ...]).
        elems: a nest of time-major tensors [time, ...]; step t sees their slice t.
        mask: [time, batch]; 0 marks padding.
        uniforms: [time, batch, K] U(0, 1) draws for :mod:`layers.resampling` (step t
            resamples the weights of step t - 1 with ``uniforms[t]``), or None: never resample.
        scheme: ``"multinomial"``, ``"stratified"`` or ``"systematic"``.
        threshold: resample when ESS < ``threshold`` * K.
    """
    if scheme not in resampling.SCHEMES:
        raise ValueError(f"`scheme` must be one of {resampling.SCHEMES}, got {scheme!r}")
    first = tf.nest.flatten(initial)[0]
    dtype = first.dtype
    batch, k = tf.shape(first)[0], tf.shape(first)[1]
    mask = tf.cast(mask, dtype)
    log_k = tf.math.log(tf.cast(k, dtype))
    log_w0 = tf.fill([batch, k], -log_k)
    no = tf.zeros([batch], tf.bool)
    if uniforms is None:
        seq = (elems, mask)
    else:
        seq = (elems, mask, tf.cast(uniforms, dtype))

    def step(carry, e):
        particles, log_w, log_z = carry[0], carry[1], carry[2]
        e_t, m_t = e[0], e[1]
        real = m_t > 0
        resampled = no
        if uniforms is not None:
            chosen = resampling.adaptive_resample(log_w, e[2], scheme, threshold, "search")
            resampled = tf.logical_and(chosen.resampled, real)
            parents = tf.nest.map_structure(
                lambda p: tf.where(_expand_as(resampled, p),
                                   resampling.gather_particles(p, chosen.indices), p),
                particles)
            log_w = tf.where(resampled[:, None], chosen.log_weights, log_w)
        else:
            parents = particles
        new, log_inc_w = propose(parents, e_t)
        log_inc_w = tf.where(real[:, None], tf.cast(log_inc_w, dtype), tf.zeros_like(log_w))
        unnormalized = log_w + log_inc_w
        increment = tf.reduce_logsumexp(unnormalized, -1)
        log_w = tf.where(real[:, None], unnormalized - increment[:, None], log_w)
        increment = tf.where(real, increment, tf.zeros_like(increment))
        new = tf.nest.map_structure(lambda n, p: tf.where(_expand_as(real, n), n, p),
                                    new, parents)
        return (new, log_w, log_z + increment, increment,
                resampling.effective_sample_size(log_w), resampled)

    init = (initial, log_w0, tf.zeros([batch], dtype), tf.zeros([batch], dtype),
            tf.zeros([batch], dtype), no)
    particles, log_w, log_z, inc, ess, resampled = tf.scan(step, seq, initializer=init)
    last = tf.nest.map_structure(lambda p: p[-1], particles)
    return SMCBound(log_z[-1], tf.transpose(inc), tf.transpose(ess), tf.transpose(resampled),
                    last, log_w[-1])


def _expand_as(flags, x):
    """[batch] flags reshaped to broadcast against x [batch, ...]."""
    return tf.reshape(flags, tf.concat([tf.shape(flags), tf.ones([tf.rank(x) - 1],
                                                                 tf.int32)], 0))


def check_objective(objective: str, num_particles: int, scheme: Optional[str] = None) -> None:
    """Errors naming the argument for a bad ``objective``, ``num_particles`` or ``scheme``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {list(OBJECTIVES)}, got {objective!r}.")
    if not (isinstance(num_particles, int) and not isinstance(num_particles, bool)
            and num_particles >= 1):
        raise ValueError(f"`num_particles` must be a positive int, got {num_particles!r}.")
    if scheme is not None and scheme not in resampling.SCHEMES:
        raise ValueError(f"`resample` must be one of {list(resampling.SCHEMES)}, got "
                         f"{scheme!r}.")

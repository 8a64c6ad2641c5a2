r"""Annealed importance sampling of Boltzmann machines' partition functions (pure functions).

Salakhutdinov & Murray, "On the Quantitative Analysis of Deep Belief Networks", 2008: anneal
from a base-rate model $p_A(v) \propto e^{b_A^\top v}$ (zero weights and hidden biases, so
$Z_A = 2^{H} \prod_i (1 + e^{b_{A,i}})$) to the target $p_B$ along the geometric path

$$p^*_k(x) = p^*_A(x)^{1-\beta_k}\, p^*_B(x)^{\beta_k},\qquad 0 = \beta_0 < \dots < \beta_K = 1,$$

with a Gibbs transition that leaves $p_k$ invariant, and importance weights
$\log w = \sum_{k=1}^{K} \log p^*_k(x_{k-1}) - \log p^*_{k-1}(x_{k-1})$ over $M$ independent
chains; $\hat Z_B = Z_A \cdot \frac1M \sum_m w^{(m)}$ is unbiased. The reported standard error
of $\log \hat Z$ is the delta-method $\mathrm{sd}(w) / (\sqrt{M}\, \bar w)$; the paper's
$\log(\hat Z \pm 3\hat\sigma)$ bracket is ``log_z_low`` / ``log_z_high``.

For the Gaussian-Bernoulli RBM the base model is $N(v; m_A, \operatorname{diag}\sigma^2)$
with the model's own variances and $m_A$ the training data's mean, so every intermediate
$p_\beta(v \mid h) = N((1-\beta) m_A + \beta (b + W h), \operatorname{diag}\sigma^2)$ is
sampled exactly (``gaussian_rbm_ais``).

A second path starts among the data instead (``rbm_mixture_ais``, ``dbm_mixture_ais``):
the base is a mixture of smoothed Bernoulli components, one per example, and the chains carry
the component z as an auxiliary variable, redrawn from $p_\beta(z \mid v)$ each step; the
intermediate models stay sampleable by block Gibbs, and $Z_A = 2^{H}$.

Reverse AIS (``rbm_reverse_ais``, ``dbm_reverse_ais``) runs the same chains backwards, from
samples of the target to the base: from exact samples its weights estimate $Z_A / Z_B$ without
bias, so it errs high where forward AIS errs low, and the two sandwich $\log Z$ (bidirectional
Monte Carlo, Grosse, Ghahramani & Adams 2015). Started from Gibbs chains that miss modes, it
estimates the mass of the modes they cover instead.

Hidden units are summed out analytically wherever they can be: $h$ for the RBM, $h^1$ for the
DBM (Salakhutdinov & Hinton, "Deep Boltzmann Machines", 2009, sec. 4), so the chains carry $v$
(RBM) or $(v, h^2)$ (DBM). All noise is drawn with stateless ops from ``seed``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from zoo.layers.boltzmann_energy import (DBMParams, RBMParams, dbm_free_energy,
                                         gaussian_rbm_hidden_logits, rbm_free_energy)
from zoo.layers.gibbs import DBMState, bernoulli, dbm_gibbs_step


class AISResult(NamedTuple):
    """An AIS estimate of log Z."""

    log_z: tf.Tensor  # [] log of the mean importance weight times Z_A
    log_z_std_err: tf.Tensor  # [] delta-method standard error of log_z
    log_z_low: tf.Tensor  # [] log(Z_hat - 3 sd(Z_hat)) (-inf when the bracket crosses 0)
    log_z_high: tf.Tensor  # [] log(Z_hat + 3 sd(Z_hat))
    log_weights: tf.Tensor  # [chains]
    log_z_base: tf.Tensor  # [] log Z_A


def ais_betas(num_betas: int = 14500) -> np.ndarray:
    """The schedule of Salakhutdinov & Murray 2008 scaled to ``num_betas`` intermediate
    distributions: 500/14500 of them uniform on [0, 0.5], 4000/14500 on [0.5, 0.9] and
    10000/14500 on [0.9, 1] (the paper's 1e-3, 1e-4, 1e-4 spacings at 14,500)."""
    if num_betas < 3:
        raise ValueError(f"`num_betas` must be at least 3, got {num_betas}.")
    n1 = max(1, round(num_betas * 500 / 14500))
    n2 = max(1, round(num_betas * 4000 / 14500))
    n3 = max(1, num_betas - n1 - n2)
    return np.concatenate([np.linspace(0, 0.5, n1, endpoint=False),
                           np.linspace(0.5, 0.9, n2, endpoint=False),
                           np.linspace(0.9, 1.0, n3 + 1)])


def base_rate_bias(data_mean, smoothing: float = 0.05):
    """Visible biases b_A = logit(p) of the base-rate model from the data's pixel means,
    smoothed towards 1/2 as in Salakhutdinov & Murray 2008 so that no bias is infinite."""
    p = np.asarray(data_mean, np.float64)
    p = (p + smoothing) / (1.0 + 2.0 * smoothing)
    return np.log(p) - np.log1p(-p)


def summarize(log_weights, log_z_base) -> AISResult:
    """log Z_hat and its errors from the chains' log-weights."""
    log_weights = tf.convert_to_tensor(log_weights)
    m = tf.cast(tf.size(log_weights), log_weights.dtype)
    top = tf.reduce_max(log_weights)
    w = tf.exp(log_weights - top)
    mean = tf.reduce_mean(w)
    sd = tf.math.reduce_std(w) * tf.sqrt(m / tf.maximum(m - 1.0, 1.0))
    log_mean = tf.math.log(mean) + top + log_z_base
    se_z = sd / tf.sqrt(m)  # standard error of Z_hat / exp(top)
    low = mean - 3.0 * se_z
    log_low = tf.where(low > 0, tf.math.log(tf.maximum(low, 1e-300)) + top + log_z_base,
                       tf.constant(-np.inf, log_weights.dtype))
    return AISResult(log_mean, se_z / mean, log_low,
                     tf.math.log(mean + 3.0 * se_z) + top + log_z_base, log_weights,
                     tf.convert_to_tensor(log_z_base, log_weights.dtype))


def _noise(seed, k, shape, dtype):
    return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, k),
                                       dtype=dtype)


@tf.function(reduce_retracing=True)
def _rbm_ais_loop(params, base_bias, betas, v, seed):
    """The chains' log-weights along ``betas`` (increasing: forward; decreasing: reverse)
    from the visible states ``v``."""
    dtype = params.weights.dtype
    num_chains, n_v = tf.shape(v)[0], tf.shape(v)[1]
    n_h = tf.shape(params.weights)[1]

    def log_p_star(x, beta):  # log p*_beta(v), h summed out; base hiddens are constant
        return (1.0 - beta) * tf.linalg.matvec(x, base_bias) - rbm_free_energy(x, params, beta)

    def body(k, x, log_w):
        beta_prev, beta = betas[k - 1], betas[k]
        log_w = log_w + log_p_star(x, beta) - log_p_star(x, beta_prev)
        seed_k = tf.random.experimental.stateless_fold_in(seed, k)
        h = bernoulli(tf.sigmoid(beta * (tf.matmul(x, params.weights) + params.hidden_bias)),
                      _noise(seed_k, 1, [num_chains, n_h], dtype))
        # Gibbs on p_beta: the base model adds (1 - beta) b_A to the visible logits.
        v_probs = tf.sigmoid(beta * (tf.matmul(h, params.weights, transpose_b=True)
                                     + params.visible_bias) + (1.0 - beta) * base_bias)
        return k + 1, bernoulli(v_probs, _noise(seed_k, 2, [num_chains, n_v], dtype)), log_w

    n = tf.shape(betas)[0]
    _, _, log_w = tf.while_loop(lambda k, *_: k < n, body,
                                (tf.constant(1), v, tf.zeros([num_chains], dtype)))
    return log_w


def _ais_params(params, num_chains: int):
    """The model's dtype and its parameters (``RBMParams`` or ``DBMParams``: weights first)
    as tensors of it, after checking ``num_chains``."""
    if num_chains < 2:
        raise ValueError(f"`num_chains` must be at least 2, got {num_chains}.")
    dtype = tf.as_dtype(params[0].dtype)
    return dtype, type(params)(*(tf.convert_to_tensor(p, dtype) for p in params))


def _base_rate_log_z(base, num_hidden: int):
    """log Z_A of the base-rate model: prod(1 + e^{b_A}) over the visible units times 2^H."""
    return tf.reduce_sum(tf.nn.softplus(base)) + num_hidden * math.log(2.0)


def _uniform_hidden(seed, num_chains: int, num_hidden: int, dtype):
    """The base models' hidden units: fair coins, from ``seed``'s stream 1."""
    return bernoulli(tf.fill([1, num_hidden], tf.constant(0.5, dtype)),
                     _noise(seed, 1, [num_chains, num_hidden], dtype))


def _dbm_hidden(params: DBMParams) -> int:
    return int(params.weights1.shape[1]) + int(params.weights2.shape[1])


def rbm_ais(params: RBMParams, base_visible_bias, num_chains: int = 100,
            num_betas: int = 14500, seed=(0, 0)) -> AISResult:
    """AIS estimate of log Z of a binary RBM (Salakhutdinov & Murray 2008).

    Args:
        params: RBMParams. The target RBM (float32 or float64).
        base_visible_bias: [V]. b_A of the base-rate model (``base_rate_bias(data_mean)``).
        num_chains: int. Independent AIS runs M.
        num_betas: int. Number of inverse temperatures (``ais_betas``).
        seed: two ints. Seed of the stateless noise (same seed, same estimate).
    """
    dtype, params = _ais_params(params, num_chains)
    base = tf.convert_to_tensor(base_visible_bias, dtype)
    log_z_a = _base_rate_log_z(base, int(params.weights.shape[1]))
    seed = tf.constant(seed, tf.int32)
    v = bernoulli(tf.sigmoid(base)[None], _noise(seed, 0, [int(num_chains), base.shape[0]], dtype))
    log_w = _rbm_ais_loop(params, base, tf.constant(ais_betas(num_betas), dtype), v, seed)
    return summarize(log_w, log_z_a)


@tf.function(reduce_retracing=True)
def _dbm_ais_loop(params, base_bias, betas, v, h2, seed):
    """The chains' log-weights along ``betas`` (increasing: forward; decreasing: reverse)
    from the states (v, h2)."""
    dtype = params.weights1.dtype
    num_chains, n_v = tf.shape(v)[0], tf.shape(v)[1]
    n_h1, n_h2 = tf.shape(params.weights1)[1], tf.shape(params.weights2)[1]

    def log_p_star(x, top, beta):  # h1 summed out analytically
        return (1.0 - beta) * tf.linalg.matvec(x, base_bias) - dbm_free_energy(x, top, params,
                                                                              beta)

    def body(k, x, top, log_w):
        beta_prev, beta = betas[k - 1], betas[k]
        log_w = log_w + log_p_star(x, top, beta) - log_p_star(x, top, beta_prev)
        seed_k = tf.random.experimental.stateless_fold_in(seed, k)
        state = dbm_gibbs_step(
            DBMState(x, tf.zeros([num_chains, n_h1], dtype), top), params,
            _noise(seed_k, 1, [num_chains, n_h1], dtype),
            _noise(seed_k, 2, [num_chains, n_v], dtype),
            _noise(seed_k, 3, [num_chains, n_h2], dtype), beta, base_bias)
        return k + 1, state.visible, state.hidden2, log_w

    n = tf.shape(betas)[0]
    _, _, _, log_w = tf.while_loop(lambda k, *_: k < n, body,
                                   (tf.constant(1), v, h2, tf.zeros([num_chains], dtype)))
    return log_w


def dbm_ais(params: DBMParams, base_visible_bias, num_chains: int = 100,
            num_betas: int = 20000, seed=(0, 0)) -> AISResult:
    """AIS estimate of log Z of a two-layer DBM (Salakhutdinov & Hinton 2009, sec. 4): chains
    over (v, h2) with h1 summed out; the base model has Z_A = 2^(H1 + H2) prod(1 + e^{b_A})."""
    dtype, params = _ais_params(params, num_chains)
    base = tf.convert_to_tensor(base_visible_bias, dtype)
    log_z_a = _base_rate_log_z(base, _dbm_hidden(params))
    seed, m = tf.constant(seed, tf.int32), int(num_chains)
    v = bernoulli(tf.sigmoid(base)[None], _noise(seed, 0, [m, base.shape[0]], dtype))
    h2 = _uniform_hidden(seed, m, int(params.weights2.shape[1]), dtype)
    log_w = _dbm_ais_loop(params, base, tf.constant(ais_betas(num_betas), dtype), v, h2, seed)
    return summarize(log_w, log_z_a)


MIXTURE_SMOOTHING = 1e-3


def mixture_base(examples, smoothing: float = MIXTURE_SMOOTHING):
    """The data-mixture base model's components from binary (or grey) ``examples`` [N, V]:
    p_A(v) = (1/N) sum_n prod_i Bernoulli(v_i; m_ni), m = (x + smoothing) / (1 + 2 smoothing),
    so no pixel is certain. Sharp components (the default 1e-3) hold the chains among the
    examples while the model's share of the path is small: on a DBM whose base-rate AIS ends
    in a grey region (benchmarks/README.md), 1e-3 and 1e-4 gave log Z 1037.4 and 1035.7 at
    5,000 temperatures, 0.05 gave 1014.6, the base-rate path 1015.8. Returns the [N, V]
    logits of m and the [N] sums of log(1 - m) (float64)."""
    m = np.asarray(examples, np.float64).reshape(len(examples), -1)
    if len(m) < 1 or not np.all((m >= 0) & (m <= 1)):
        raise ValueError("`examples` must be a non-empty [N, V] array with values in [0, 1].")
    m = (m + smoothing) / (1.0 + 2.0 * smoothing)
    return np.log(m) - np.log1p(-m), np.log1p(-m).sum(1)


def _mixture_log_base(x, component, logits, log1m):
    """log prod_i Bernoulli(x_i; m_z) of each chain's component z: [chains]."""
    return (tf.reduce_sum(x * tf.gather(logits, component), -1)
            + tf.gather(log1m, component))


def _sample_component(x, logits, log1m, beta, seed):
    """z ~ p_beta(z | v), proportional to prod_i Bernoulli(v_i; m_z)^(1 - beta): [chains]."""
    log_lik = tf.matmul(x, logits, transpose_b=True) + log1m  # [chains, N]
    return tf.random.stateless_categorical((1.0 - beta) * log_lik, 1, seed,
                                           dtype=tf.int32)[:, 0]


def _mixture_start(logits, num_chains, seed, dtype):
    """Exact draws of the mixture base: z uniform, then v ~ Bernoulli(m_z)."""
    n = tf.shape(logits)[0]
    z = tf.random.stateless_uniform([num_chains], seed, 0, n, dtype=tf.int32)
    v = bernoulli(tf.sigmoid(tf.gather(logits, z)),
                  _noise(seed, 0, [num_chains, int(logits.shape[1])], dtype))
    return z, v


@tf.function(reduce_retracing=True)
def _rbm_mixture_ais_loop(params, logits, log1m, betas, v, z, seed):
    dtype = params.weights.dtype
    num_chains, n_v = tf.shape(v)[0], tf.shape(v)[1]
    n_h = tf.shape(params.weights)[1]

    def log_p_star(x, comp, beta):  # h summed out; the base's hidden units are uniform
        return ((1.0 - beta) * _mixture_log_base(x, comp, logits, log1m)
                - rbm_free_energy(x, params, beta))

    def body(k, x, comp, log_w):
        beta_prev, beta = betas[k - 1], betas[k]
        log_w = log_w + log_p_star(x, comp, beta) - log_p_star(x, comp, beta_prev)
        seed_k = tf.random.experimental.stateless_fold_in(seed, k)
        comp = _sample_component(x, logits, log1m, beta,
                                 tf.random.experimental.stateless_fold_in(seed_k, 3))
        h = bernoulli(tf.sigmoid(beta * (tf.matmul(x, params.weights) + params.hidden_bias)),
                      _noise(seed_k, 1, [num_chains, n_h], dtype))
        v_probs = tf.sigmoid(beta * (tf.matmul(h, params.weights, transpose_b=True)
                                     + params.visible_bias)
                             + (1.0 - beta) * tf.gather(logits, comp))
        return k + 1, bernoulli(v_probs, _noise(seed_k, 2, [num_chains, n_v], dtype)), comp, log_w

    n = tf.shape(betas)[0]
    *_, log_w = tf.while_loop(lambda k, *_: k < n, body,
                              (tf.constant(1), v, z, tf.zeros([num_chains], dtype)))
    return log_w


def rbm_mixture_ais(params: RBMParams, examples, num_chains: int = 100,
                    num_betas: int = 14500, seed=(0, 0),
                    smoothing: float = MIXTURE_SMOOTHING) -> AISResult:
    """AIS estimate of log Z of a binary RBM from a data-mixture base model
    (``mixture_base``: one smoothed Bernoulli component per example) instead of the base-rate
    model. The chains carry (v, z), z the component, resampled from p_beta(z | v) every step;
    Z_A = 2^H. Still unbiased for Z, so its log is a stochastic lower bound on log Z like the
    base-rate run's; it starts among the examples, so where the model has a region that the
    base-rate path never reaches (a phase transition on its way), this path can: the larger
    of the two estimates is the better lower bound.

    Args:
        params: RBMParams. The target RBM (float32 or float64).
        examples: [N, V]. The components (e.g. a random subset of the training data).
        num_chains, num_betas, seed: as for :func:`rbm_ais`.
        smoothing: float. Pulls each component's pixels towards 1/2 (``mixture_base``).
    """
    dtype, params = _ais_params(params, num_chains)
    logits, log1m = (tf.constant(a, dtype) for a in mixture_base(examples, smoothing))
    seed = tf.constant(seed, tf.int32)
    z, v = _mixture_start(logits, int(num_chains), seed, dtype)
    log_w = _rbm_mixture_ais_loop(params, logits, log1m,
                                  tf.constant(ais_betas(num_betas), dtype), v, z, seed)
    return summarize(log_w, int(params.weights.shape[1]) * math.log(2.0))


@tf.function(reduce_retracing=True)
def _dbm_mixture_ais_loop(params, logits, log1m, betas, v, h2, z, seed):
    dtype = params.weights1.dtype
    num_chains, n_v = tf.shape(v)[0], tf.shape(v)[1]
    n_h1, n_h2 = tf.shape(params.weights1)[1], tf.shape(params.weights2)[1]

    def log_p_star(x, top, comp, beta):  # h1 summed out
        return ((1.0 - beta) * _mixture_log_base(x, comp, logits, log1m)
                - dbm_free_energy(x, top, params, beta))

    def body(k, x, top, comp, log_w):
        beta_prev, beta = betas[k - 1], betas[k]
        log_w = log_w + log_p_star(x, top, comp, beta) - log_p_star(x, top, comp, beta_prev)
        seed_k = tf.random.experimental.stateless_fold_in(seed, k)
        comp = _sample_component(x, logits, log1m, beta,
                                 tf.random.experimental.stateless_fold_in(seed_k, 4))
        state = dbm_gibbs_step(
            DBMState(x, tf.zeros([num_chains, n_h1], dtype), top), params,
            _noise(seed_k, 1, [num_chains, n_h1], dtype),
            _noise(seed_k, 2, [num_chains, n_v], dtype),
            _noise(seed_k, 3, [num_chains, n_h2], dtype), beta, tf.gather(logits, comp))
        return k + 1, state.visible, state.hidden2, comp, log_w

    n = tf.shape(betas)[0]
    *_, log_w = tf.while_loop(lambda k, *_: k < n, body,
                              (tf.constant(1), v, h2, z, tf.zeros([num_chains], dtype)))
    return log_w


def dbm_mixture_ais(params: DBMParams, examples, num_chains: int = 100,
                    num_betas: int = 20000, seed=(0, 0),
                    smoothing: float = MIXTURE_SMOOTHING) -> AISResult:
    """:func:`rbm_mixture_ais` for a two-layer DBM: chains over (v, h2, z) with h1 summed out,
    the base's hidden units uniform, Z_A = 2^(H1 + H2)."""
    dtype, params = _ais_params(params, num_chains)
    logits, log1m = (tf.constant(a, dtype) for a in mixture_base(examples, smoothing))
    seed, m = tf.constant(seed, tf.int32), int(num_chains)
    z, v = _mixture_start(logits, m, seed, dtype)
    h2 = _uniform_hidden(seed, m, int(params.weights2.shape[1]), dtype)
    log_w = _dbm_mixture_ais_loop(params, logits, log1m, tf.constant(ais_betas(num_betas), dtype),
                                  v, h2, z, seed)
    return summarize(log_w, _dbm_hidden(params) * math.log(2.0))


def summarize_reverse(log_weights, log_z_base) -> AISResult:
    """log Z_hat from reverse AIS: the chains' weights estimate Z_A / Z_B, so
    log Z_hat = log Z_A - log(mean w); its bracket mirrors the forward one (``log_z_high`` is
    +inf when the bracket of Z_A / Z_B crosses 0). ``log_weights`` are the reverse weights."""
    r = summarize(log_weights, 0.0)
    log_z_base = tf.convert_to_tensor(log_z_base, r.log_z.dtype)
    return AISResult(log_z_base - r.log_z, r.log_z_std_err, log_z_base - r.log_z_high,
                     log_z_base - r.log_z_low, r.log_weights, log_z_base)


def _chains(states, dtype, names):
    """The start states as [chains, dim] tensors of ``dtype``, at least two chains."""
    out = [tf.convert_to_tensor(np.asarray(s).reshape(len(s), -1), dtype) for s in states]
    if int(out[0].shape[0]) < 2:
        raise ValueError(f"Reverse AIS needs at least 2 chains; `{names[0]}` has "
                         f"{int(out[0].shape[0])}.")
    for s, name in zip(out[1:], names[1:]):
        if s.shape[0] != out[0].shape[0]:
            raise ValueError(f"`{name}` has {s.shape[0]} chains, `{names[0]}` "
                             f"{out[0].shape[0]}.")
    return out


def reverse_betas(num_betas: int, burn_in: int = 0) -> np.ndarray:
    """``ais_betas(num_betas)`` read backwards, after ``burn_in`` sweeps at beta = 1 (their
    weight increments are 0: Gibbs sweeps of the target before the annealing)."""
    if burn_in < 0:
        raise ValueError(f"`burn_in` must be >= 0, got {burn_in}.")
    return np.concatenate([np.ones(int(burn_in)), ais_betas(num_betas)[::-1]])


def rbm_reverse_ais(params: RBMParams, base_visible_bias, visible, num_betas: int = 14500,
                    seed=(0, 0), burn_in: int = 0) -> AISResult:
    """Reverse AIS of a binary RBM: the forward run's mirror, from the model to the base-rate
    model along the same schedule read backwards (the upper half of bidirectional Monte
    Carlo, Grosse, Ghahramani & Adams 2015).

    With ``visible`` exact samples of the RBM, each chain's weight is an unbiased estimate
    of Z_A / Z_B, so ``log_z`` is a stochastic upper bound on log Z (Jensen), as forward
    AIS's is a lower one; the two together sandwich log Z. From approximate samples (e.g.
    long Gibbs chains) that miss modes, it estimates the mass of the modes they cover and
    bounds nothing.

    Args:
        params: RBMParams. The target RBM (float32 or float64).
        base_visible_bias: [V]. b_A of the base-rate model, as for :func:`rbm_ais`.
        visible: [chains, V]. Binary start states, samples of the RBM.
        num_betas: int. Number of inverse temperatures (``ais_betas``, reversed).
        seed: two ints. Seed of the stateless noise.
        burn_in: int. Gibbs sweeps of the RBM from ``visible`` before the annealing (they
            keep exact samples exact and bring a chain's states closer to the model).
    """
    dtype, params = _ais_params(params, 2)  # the chains are counted in ``_chains``
    (v,) = _chains([visible], dtype, ["visible"])
    base = tf.convert_to_tensor(base_visible_bias, dtype)
    log_z_a = _base_rate_log_z(base, int(params.weights.shape[1]))
    log_w = _rbm_ais_loop(params, base, tf.constant(reverse_betas(num_betas, burn_in), dtype),
                          v, tf.constant(seed, tf.int32))
    return summarize_reverse(log_w, log_z_a)


def dbm_reverse_ais(params: DBMParams, base_visible_bias, visible, hidden2,
                    num_betas: int = 20000, seed=(0, 0), burn_in: int = 0) -> AISResult:
    """Reverse AIS of a two-layer DBM (:func:`rbm_reverse_ais` for :func:`dbm_ais`'s chains
    over (v, h2)): from samples (``visible`` [chains, V], ``hidden2`` [chains, H2]) of the
    DBM, after ``burn_in`` Gibbs sweeps, to the base-rate model; a stochastic upper bound on
    log Z from exact samples."""
    dtype, params = _ais_params(params, 2)  # the chains are counted in ``_chains``
    v, h2 = _chains([visible, hidden2], dtype, ["visible", "hidden2"])
    base = tf.convert_to_tensor(base_visible_bias, dtype)
    log_z_a = _base_rate_log_z(base, _dbm_hidden(params))
    log_w = _dbm_ais_loop(params, base, tf.constant(reverse_betas(num_betas, burn_in), dtype),
                          v, h2, tf.constant(seed, tf.int32))
    return summarize_reverse(log_w, log_z_a)


@tf.function(reduce_retracing=True)
def _gaussian_rbm_ais_loop(params, log_variance, base_mean, betas, num_chains, seed):
    dtype = params.weights.dtype
    n_v, n_h = tf.shape(params.weights)[0], tf.shape(params.weights)[1]
    scale = tf.exp(0.5 * log_variance)
    precision = tf.exp(-log_variance)
    v = base_mean[None] + scale * tf.random.stateless_normal([num_chains, n_v], seed,
                                                             dtype=dtype)

    def log_p_star(x, beta):  # h summed out; the base shares the model's variances
        base = -0.5 * tf.reduce_sum(tf.square(x - base_mean) * precision, -1)
        model = -0.5 * tf.reduce_sum(tf.square(x - params.visible_bias) * precision, -1)
        hidden = tf.reduce_sum(tf.nn.softplus(
            beta * gaussian_rbm_hidden_logits(x, params, log_variance)), -1)
        return (1.0 - beta) * base + beta * model + hidden

    def body(k, x, log_w):
        beta_prev, beta = betas[k - 1], betas[k]
        log_w = log_w + log_p_star(x, beta) - log_p_star(x, beta_prev)
        seed_k = tf.random.experimental.stateless_fold_in(seed, k)
        h = bernoulli(tf.sigmoid(beta * gaussian_rbm_hidden_logits(x, params, log_variance)),
                      _noise(seed_k, 1, [num_chains, n_h], dtype))
        mean = (1.0 - beta) * base_mean + beta * (
            tf.matmul(h, params.weights, transpose_b=True) + params.visible_bias)
        noise = tf.random.stateless_normal([num_chains, n_v],
                                           tf.random.experimental.stateless_fold_in(seed_k, 2),
                                           dtype=dtype)
        return k + 1, mean + scale * noise, log_w

    n = tf.shape(betas)[0]
    _, _, log_w = tf.while_loop(lambda k, *_: k < n, body,
                                (tf.constant(1), v, tf.zeros([num_chains], dtype)))
    return log_w


def gaussian_rbm_ais(params: RBMParams, log_variance, base_mean, num_chains: int = 100,
                     num_betas: int = 14500, seed=(0, 0)) -> AISResult:
    """AIS estimate of log Z of a Gaussian-Bernoulli RBM (energy of
    ``zoo.layers.boltzmann_energy``), from the base model N(base_mean, diag sigma^2) with
    Z_A = 2^H prod_i (2 pi sigma_i^2)^(1/2).

    Args:
        params: RBMParams. The target RBM (float32 or float64).
        log_variance: [V]. log sigma^2 of the visible units.
        base_mean: [V]. m_A, e.g. the training data's mean.
        num_chains, num_betas, seed: as for :func:`rbm_ais`.
    """
    dtype, params = _ais_params(params, num_chains)
    log_variance = tf.convert_to_tensor(log_variance, dtype)
    n_h = int(params.weights.shape[1])
    log_z_a = (0.5 * tf.reduce_sum(log_variance + math.log(2.0 * math.pi))
               + n_h * math.log(2.0))
    log_w = _gaussian_rbm_ais_loop(params, log_variance, tf.convert_to_tensor(base_mean, dtype),
                                   tf.constant(ais_betas(num_betas), dtype),
                                   tf.constant(int(num_chains)), tf.constant(seed, tf.int32))
    return summarize(log_w, log_z_a)

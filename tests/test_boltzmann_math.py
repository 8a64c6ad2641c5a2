"""Boltzmann machines' math against exact enumeration: energies, Gibbs, mean field, AIS."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from zoo.layers import ais
from zoo.layers.boltzmann_energy import (
    DBMParams,
    RBMParams,
    binary_states,
    dbm_energy,
    dbm_exact_log_partition,
    dbm_exact_log_partition_hidden1,
    dbm_free_energy,
    dbm_mean_field_bound,
    gaussian_rbm_energy,
    gaussian_rbm_free_energy,
    gaussian_rbm_hidden_marginal,
    rbm_energy,
    rbm_exact_log_partition,
    rbm_exact_log_partition_hidden,
    rbm_free_energy,
    rbm_pseudo_log_likelihood,
)
from zoo.layers.gibbs import dbm_mean_field, rbm_gibbs_step


def random_rbm(rng, v, h, scale=0.5):
    return RBMParams(tf.constant(rng.normal(0, scale, (v, h))),
                     tf.constant(rng.normal(0, scale, v)), tf.constant(rng.normal(0, scale, h)))


def random_dbm(rng, v, h1, h2, scale=0.5):
    n = lambda *s: tf.constant(rng.normal(0, scale, s))  # noqa: E731
    return DBMParams(n(v, h1), n(h1, h2), n(v), n(h1), n(h2))


def test_free_energies_sum_out_the_hidden_units():
    rng = np.random.default_rng(0)
    p = random_rbm(rng, 5, 4)
    v, h = binary_states(5, tf.float64), binary_states(4, tf.float64)
    energies = rbm_energy(tf.repeat(v, 16, 0), tf.tile(h, [32, 1]), p)  # [32 * 16]
    brute = -tf.reduce_logsumexp(-tf.reshape(energies, [32, 16]), 1)
    np.testing.assert_allclose(rbm_free_energy(v, p), brute, rtol=1e-12)
    # DBM: h1 summed out
    d = random_dbm(rng, 3, 4, 2)
    v3, h1, h2 = binary_states(3, tf.float64), binary_states(4, tf.float64), binary_states(2,
                                                                                        tf.float64)
    for a in range(8):
        for c in range(4):
            e = dbm_energy(tf.repeat(v3[a:a + 1], 16, 0), h1, tf.repeat(h2[c:c + 1], 16, 0), d)
            np.testing.assert_allclose(dbm_free_energy(v3[a:a + 1], h2[c:c + 1], d)[0],
                                       -tf.reduce_logsumexp(-e), rtol=1e-12)
    # Gaussian-Bernoulli: free energy and log Z against quadrature (V = 1)
    g = random_rbm(rng, 1, 3)
    log_var = tf.constant([np.log(0.7)])
    grid = tf.constant(np.linspace(-15, 15, 60001)[:, None])
    e = gaussian_rbm_energy(tf.repeat(grid[:3], 8, 0), tf.tile(binary_states(3, tf.float64),
                                                               [3, 1]), g, log_var)
    np.testing.assert_allclose(gaussian_rbm_free_energy(grid[:3], g, log_var),
                               -tf.reduce_logsumexp(-tf.reshape(e, [3, 8]), 1), rtol=1e-12)
    density = np.exp(-gaussian_rbm_free_energy(grid, g, log_var).numpy())
    np.testing.assert_allclose(np.log(np.trapezoid(density, grid[:, 0])),
                               gaussian_rbm_hidden_marginal(g, log_var).log_z, rtol=1e-9)


def test_exact_partition_two_ways_and_pseudo_likelihood():
    rng = np.random.default_rng(1)
    p = random_rbm(rng, 7, 5)
    exact = rbm_exact_log_partition(p)
    np.testing.assert_allclose(exact.log_z, rbm_exact_log_partition_hidden(p), rtol=1e-12)
    np.testing.assert_allclose(np.exp(exact.log_marginal).sum(), 1.0, rtol=1e-12)
    # pseudo-likelihood from the exact p(v): sum_i log p(v_i | v_-i)
    v = exact.states.numpy()
    log_p = exact.log_marginal.numpy()
    index = (v * (2 ** np.arange(7))).sum(1).astype(int)
    expected = np.zeros(len(v))
    for i in range(7):
        flipped = index ^ (1 << i)
        expected += log_p[index] - np.logaddexp(log_p[index], log_p[flipped])
    np.testing.assert_allclose(rbm_pseudo_log_likelihood(exact.states, p), expected, rtol=1e-10)


def test_ais_equals_exact_log_partition_within_its_error():
    """The key number: AIS log Z of a 64 x 16 RBM against enumerating 2^16 hidden states."""
    rng = np.random.default_rng(2)
    p = random_rbm(rng, 64, 16, scale=0.25)
    exact = float(rbm_exact_log_partition_hidden(p))
    data_mean = rng.uniform(0.1, 0.9, 64)
    result = ais.rbm_ais(p, ais.base_rate_bias(data_mean), num_chains=200, num_betas=3000,
                         seed=(3, 4))
    error = float(result.log_z_std_err)
    assert 0 < error < 0.05, error  # informative, not a wide interval
    assert abs(float(result.log_z) - exact) < 3 * error, (float(result.log_z), exact, error)
    assert float(result.log_z_low) < exact < float(result.log_z_high)
    # Too few temperatures: a visibly worse estimate with a larger reported error, and
    # fewer effective chains (Kish's (sum w)^2 / sum w^2, what evaluation reports).
    rough = ais.rbm_ais(p, ais.base_rate_bias(data_mean), num_chains=200, num_betas=30,
                        seed=(3, 4))
    assert float(rough.log_z_std_err) > 3 * error
    from zoo.boltzmann.common import effective_chains

    w = np.exp(result.log_weights.numpy().astype(np.float64))
    assert effective_chains(result.log_weights) == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert 150 < effective_chains(result.log_weights) <= 200
    assert effective_chains(rough.log_weights) < 0.5 * effective_chains(result.log_weights)
    assert effective_chains([0.0, 0.0, 0.0, 0.0]) == pytest.approx(4.0)
    assert effective_chains([0.0, -50.0, -60.0, -np.inf]) == pytest.approx(1.0, abs=1e-20)
    assert effective_chains([-np.inf, np.nan]) == 0.0


def test_dbm_ais_equals_exact_log_partition():
    rng = np.random.default_rng(3)
    d = random_dbm(rng, 10, 6, 4)
    exact = float(dbm_exact_log_partition(d).log_z)
    np.testing.assert_allclose(dbm_exact_log_partition_hidden1(d), exact, rtol=1e-12)
    result = ais.dbm_ais(d, np.zeros(10), num_chains=200, num_betas=2000, seed=(5, 6))
    error = float(result.log_z_std_err)
    assert 0 < error < 0.05, error
    assert abs(float(result.log_z) - exact) < 3 * error, (float(result.log_z), exact, error)


def exact_samples(log_p_star, states, n, seed):
    """n exact draws from the distribution exp(log_p_star) over the enumerated states."""
    probs = np.exp(log_p_star - log_p_star.max())
    return states[np.random.default_rng(seed).choice(len(states), n, p=probs / probs.sum())]


def test_reverse_ais_from_exact_samples_is_the_upper_half_of_the_sandwich():
    """Bidirectional Monte Carlo (Grosse et al. 2015): reverse AIS from exact samples of a
    sharp RBM and DBM recovers the enumerated log Z within its error; with a starved schedule
    it errs high, by more than its error, where forward AIS errs low or not at all."""
    rng = np.random.default_rng(7)
    p = random_rbm(rng, 14, 10, scale=5.0)
    exact = rbm_exact_log_partition(p)
    log_z = float(exact.log_z)
    v = exact_samples(exact.log_marginal.numpy(), exact.states.numpy(), 300, seed=1)
    base = ais.base_rate_bias(v.mean(0))
    reverse = ais.rbm_reverse_ais(p, base, v, num_betas=1000, seed=(3, 4))
    error = float(reverse.log_z_std_err)
    assert 0 < error < 0.08, error
    assert abs(float(reverse.log_z) - log_z) < 3 * error, (float(reverse.log_z), log_z, error)
    assert float(reverse.log_z_low) < log_z < float(reverse.log_z_high)
    starved = ais.rbm_reverse_ais(p, base, v, num_betas=10, seed=(3, 4))
    forward = ais.rbm_ais(p, base, num_chains=300, num_betas=10, seed=(1, 2))
    assert float(starved.log_z) - log_z > 3 * float(starved.log_z_std_err) > 0
    assert float(forward.log_z) < log_z + 3 * float(forward.log_z_std_err)
    # The DBM's chains over (v, h2), h1 summed out.
    d = random_dbm(rng, 8, 6, 4, scale=2.0)
    states = binary_states(12, tf.float64)
    log_p_star = -dbm_free_energy(states[:, :8], states[:, 8:], d).numpy()
    draws = exact_samples(log_p_star, states.numpy(), 300, seed=2)
    reverse = ais.dbm_reverse_ais(d, np.zeros(8), draws[:, :8], draws[:, 8:], num_betas=1000,
                                  seed=(5, 6))
    exact_dbm = float(dbm_exact_log_partition(d).log_z)
    error = float(reverse.log_z_std_err)
    assert 0 < error < 0.08, error
    assert abs(float(reverse.log_z) - exact_dbm) < 3 * error, (float(reverse.log_z), exact_dbm)
    # burn_in: Gibbs sweeps at beta = 1 first (zero weight increments), here from the least
    # likely state of a softer RBM in every chain.
    schedule = ais.reverse_betas(5, burn_in=3)
    np.testing.assert_array_equal(schedule, np.r_[1.0, 1.0, 1.0, ais.ais_betas(5)[::-1]])
    soft = random_rbm(np.random.default_rng(7), 14, 10, scale=2.0)
    enumerated = rbm_exact_log_partition(soft)
    worst = enumerated.states.numpy()[np.argmin(enumerated.log_marginal.numpy())]
    burnt = ais.rbm_reverse_ais(soft, ais.base_rate_bias(np.full(14, 0.3)),
                                np.repeat(worst[None], 300, 0), num_betas=300, seed=(3, 4),
                                burn_in=200)
    assert abs(float(burnt.log_z) - float(enumerated.log_z)) < 3 * float(burnt.log_z_std_err)
    with pytest.raises(ValueError, match="burn_in"):
        ais.rbm_reverse_ais(p, base, v, num_betas=10, burn_in=-1)
    with pytest.raises(ValueError, match="at least 2 chains"):
        ais.rbm_reverse_ais(p, base, v[:1], num_betas=10)
    with pytest.raises(ValueError, match="`hidden2` has 3 chains"):
        ais.dbm_reverse_ais(d, np.zeros(8), draws[:4, :8], draws[:3, 8:], num_betas=10)


def test_mixture_base_ais_equals_exact_log_partition():
    """AIS from a data-mixture base (one smoothed Bernoulli per example, chains over (v, z)
    or (v, h2, z)) is another unbiased path: it recovers the enumerated log Z of an RBM and
    of a DBM within its error."""
    rng = np.random.default_rng(7)
    p = random_rbm(rng, 14, 10, scale=3.0)
    exact = rbm_exact_log_partition(p)
    data = exact_samples(exact.log_marginal.numpy(), exact.states.numpy(), 50, seed=1)
    result = ais.rbm_mixture_ais(p, data, num_chains=200, num_betas=1000, seed=(1, 2))
    error = float(result.log_z_std_err)
    assert 0 < error < 0.05, error
    assert abs(float(result.log_z) - float(exact.log_z)) < 3 * error
    d = random_dbm(rng, 10, 6, 4, scale=2.0)
    log_z = float(dbm_exact_log_partition(d).log_z)
    result = ais.dbm_mixture_ais(d, (rng.random((30, 10)) < 0.4).astype(float),
                                 num_chains=500, num_betas=2000, seed=(3, 2),
                                 smoothing=0.05)  # random components: broad ones overlap more
    error = float(result.log_z_std_err)
    assert 0 < error < 0.05, error
    assert abs(float(result.log_z) - log_z) < 3 * error, (float(result.log_z), log_z, error)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        ais.rbm_mixture_ais(p, data * 2.0)


def test_gaussian_rbm_ais_equals_exact_log_partition():
    """Gaussian-Bernoulli RBM, 20 visible x 12 hidden with unequal learned variances: AIS from
    N(data mean, sigma^2) against log Z by enumerating the 2^12 hidden states."""
    from zoo.layers.boltzmann_energy import gaussian_rbm_hidden_marginal

    rng = np.random.default_rng(7)
    p = random_rbm(rng, 20, 12, scale=0.3)
    log_var = tf.constant(rng.uniform(-1.0, 0.5, 20))
    exact = float(gaussian_rbm_hidden_marginal(p, log_var).log_z)
    result = ais.gaussian_rbm_ais(p, log_var, rng.normal(0, 0.5, 20), num_chains=200,
                                  num_betas=2000, seed=(8, 9))
    error = float(result.log_z_std_err)
    assert 0 < error < 0.05, error
    assert abs(float(result.log_z) - exact) < 3 * error, (float(result.log_z), exact, error)


def test_gibbs_chain_reaches_the_boltzmann_distribution():
    """Chi-square of 20,000 independent chains after 40 sweeps against exact p(v), 8 x 4."""
    rng = np.random.default_rng(4)
    p = random_rbm(rng, 8, 4, scale=0.8)
    exact = np.exp(rbm_exact_log_partition(p).log_marginal.numpy())
    n = 20000
    seed = tf.constant([7, 8])
    v = tf.cast(tf.random.stateless_uniform([n, 8], seed, dtype=tf.float64) < 0.5, tf.float64)

    @tf.function
    def run(v):
        for k in range(40):
            s = tf.random.experimental.stateless_fold_in(seed, k)
            v = rbm_gibbs_step(v, p, tf.random.stateless_uniform([n, 4], s, dtype=tf.float64),
                               tf.random.stateless_uniform([n, 8], s + 1, dtype=tf.float64)
                               ).visible
        return v

    index = (run(v).numpy() * (2 ** np.arange(8))).sum(1).astype(int)
    counts = np.bincount(index, minlength=256)

    def p_value(probs):
        expected = n * probs
        keep = expected >= 5  # pool the rare states into one bin
        obs = np.append(counts[keep], counts[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        return stats.chisquare(obs, exp).pvalue

    assert p_value(exact) > 1e-3
    # The test can fail: the same samples against the model at inverse temperature 0.8.
    hot = np.exp(rbm_exact_log_partition(RBMParams(*(0.8 * t for t in p))).log_marginal.numpy())
    assert p_value(hot) < 1e-6


def test_mean_field_fixed_point_and_the_bound_below_the_exact_likelihood():
    rng = np.random.default_rng(5)
    d = random_dbm(rng, 6, 5, 3, scale=1.0)
    exact = dbm_exact_log_partition(d)
    v = exact.states
    mf = dbm_mean_field(v, d, iterations=200)
    assert float(mf.change) < 1e-12
    mu1 = tf.sigmoid(v @ d.weights1 + tf.transpose(d.weights2 @ tf.transpose(mf.hidden2))
                     + d.hidden1_bias)
    mu2 = tf.sigmoid(mf.hidden1 @ d.weights2 + d.hidden2_bias)
    np.testing.assert_allclose(mf.hidden1, mu1, atol=1e-12)
    np.testing.assert_allclose(mf.hidden2, mu2, atol=1e-12)
    bound = dbm_mean_field_bound(v, mf.hidden1, mf.hidden2, d) - exact.log_z
    gap = exact.log_marginal.numpy() - bound.numpy()
    assert np.all(gap > 0), gap.min()
    # and it is the exact KL(q || p(h|v)): recompute log p(v) - bound by enumerating h
    h1, h2 = binary_states(5, tf.float64), binary_states(3, tf.float64)
    hh1, hh2 = tf.repeat(h1, 8, 0), tf.tile(h2, [32, 1])
    for a in (0, 17, 63):
        va = tf.repeat(v[a:a + 1], 256, 0)
        log_joint = -dbm_energy(va, hh1, hh2, d) - exact.log_z
        log_post = log_joint - exact.log_marginal[a]
        q1, q2 = mf.hidden1[a], mf.hidden2[a]
        log_q = (tf.reduce_sum(tf.math.xlogy(hh1, q1) + tf.math.xlogy(1 - hh1, 1 - q1), -1)
                 + tf.reduce_sum(tf.math.xlogy(hh2, q2) + tf.math.xlogy(1 - hh2, 1 - q2), -1))
        kl = tf.reduce_sum(tf.exp(log_q) * (log_q - log_post))
        np.testing.assert_allclose(gap[a], kl, rtol=1e-9)


def test_ais_rejects_bad_arguments():
    p = random_rbm(np.random.default_rng(0), 3, 2)
    with pytest.raises(ValueError, match="num_chains"):
        ais.rbm_ais(p, np.zeros(3), num_chains=1)
    with pytest.raises(ValueError, match="num_betas"):
        ais.ais_betas(2)


def test_inpainting_mean_field_clamps_the_observed_units_and_solves_for_the_rest():
    rng = np.random.default_rng(6)
    d = random_dbm(rng, 8, 5, 3)
    v = tf.constant((rng.uniform(size=(4, 8)) < 0.5).astype("float64"))
    observed = tf.constant(np.repeat([[1.0] * 4 + [0.0] * 4], 4, 0))
    mf = dbm_mean_field(v, d, iterations=300, observed=observed)
    np.testing.assert_array_equal(mf.visible[:, :4], v[:, :4])
    filled = tf.sigmoid(mf.hidden1 @ tf.transpose(d.weights1) + d.visible_bias)
    np.testing.assert_allclose(mf.visible[:, 4:], filled[:, 4:], atol=1e-10)
    mu1 = tf.sigmoid(mf.visible @ d.weights1 + mf.hidden2 @ tf.transpose(d.weights2)
                     + d.hidden1_bias)
    np.testing.assert_allclose(mf.hidden1, mu1, atol=1e-10)

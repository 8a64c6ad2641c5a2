import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from zoo.layers import sampling
from tests.test_case import assert_mc_mean

N = 20000


def _uniform(seed=0, n=N):
    return tf.constant(np.random.RandomState(seed).rand(n), tf.float64)


@pytest.mark.parametrize(
    "fn, dist",
    [
        (lambda u: sampling.gumbel(u), stats.gumbel_r()),
        (lambda u: sampling.exponential(u, rate=2.0), stats.expon(scale=0.5)),
        (lambda u: sampling.cauchy(u, loc=1.0, scale=2.0), stats.cauchy(1.0, 2.0)),
        (lambda u: sampling.laplace(u, loc=-1.0, scale=0.5), stats.laplace(-1.0, 0.5)),
    ],
    ids=["gumbel", "exponential", "cauchy", "laplace"],
)
def test_inverse_cdf_samplers_follow_their_distribution(fn, dist):
    samples = fn(_uniform()).numpy()
    assert stats.kstest(samples, dist.cdf).pvalue > 1e-3


def test_log_normal_and_rademacher():
    eps = tf.constant(np.random.RandomState(1).randn(N))
    samples = sampling.log_normal(eps, loc=0.3, scale=0.4).numpy()
    assert stats.kstest(samples, stats.lognorm(s=0.4, scale=np.exp(0.3)).cdf).pvalue > 1e-3
    signs = sampling.rademacher(_uniform(2)).numpy()
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert_mc_mean(signs, 0.0)


def test_gumbel_max_and_top_k():
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    logits = tf.constant(np.log(probs))
    u = tf.constant(np.random.RandomState(3).rand(N, 4))
    first = sampling.gumbel_max(logits, u).numpy()
    assert_mc_mean(np.eye(4)[first], probs)
    top2 = sampling.gumbel_top_k(logits, u, k=2).numpy()
    np.testing.assert_array_equal(top2[:, 0], first)  # same noise: the top-1 is the argmax
    assert np.all(top2[:, 0] != top2[:, 1])
    # Without replacement: P(first=3, second=2) = p3 * p2 / (1 - p3).
    pair = (top2[:, 0] == 3) & (top2[:, 1] == 2)
    assert_mc_mean(pair.astype(float), 0.4 * 0.3 / 0.6)


def test_reparameterized_gradients():
    u = _uniform(4, 10)
    loc = tf.constant(0.5, tf.float64)
    scale = tf.constant(2.0, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([loc, scale])
        x = sampling.laplace(u, loc, scale)
    np.testing.assert_allclose(tape.gradient(x, loc).numpy(), 10.0)
    np.testing.assert_allclose(tape.gradient(x, scale).numpy(), ((x - loc) / scale).numpy().sum())


def test_extreme_uniforms_stay_finite():
    u = tf.constant([0.0, 1.0], tf.float32)
    for fn in [sampling.gumbel, sampling.exponential, sampling.cauchy, sampling.laplace]:
        assert np.all(np.isfinite(fn(u).numpy()))

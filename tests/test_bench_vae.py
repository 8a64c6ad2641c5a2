"""Smoke run of the VAE quality/throughput benchmark (quick mode); numbers are not asserted."""

import re
import time

import numpy as np

from benchmarks import run as bench_run

MEAN_SE = re.compile(r"^-?\d+\.\d\d ± \d+\.\d\d$")
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?x?$")


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table of ``markdown`` as rows of stripped cells (header and rule dropped)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current[2:])
            current = []
    return tables


def test_vae_quick_tables_have_every_system_with_numbers():
    start = time.perf_counter()
    module = bench_run.load("vae")
    text = module.main(quick=True)
    assert time.perf_counter() - start < 90, "quick mode should stay a smoke run"
    systems = module.system_names("digits")
    assert systems == ["VAE", "reference for VAE", "DLGM", "reference for DLGM",
                       "Keras VAE for DLGM", "CategoricalVAE", "reference for CategoricalVAE",
                       "Keras VAE for CategoricalVAE"]
    quality, comparison, context, throughput = _tables(text)  # quick: one dataset
    assert [r[0] for r in quality] == systems
    for row in quality:
        assert MEAN_SE.match(row[1]) and MEAN_SE.match(row[2]), row
        assert NUMBER.match(row[3]), row  # one seed: one per-seed value
        assert all(MEAN_SE.match(c) for c in row[4:6]), row
        assert all(NUMBER.match(c) for c in row[6:]), row
        # Jensen: the K-sample bound is at least the mean log-weight of the same samples.
        assert float(row[4].split(" ± ")[0]) >= 0, row
    assert [r[0] for r in comparison] == list(module.MODELS)
    for row in comparison:
        assert NUMBER.match(row[1]) and NUMBER.match(row[3]), row
        assert MEAN_SE.match(row[2]) and MEAN_SE.match(row[4]), row
        assert all(c in ("yes", "**no**") for c in row[5:]), row
    assert [r[0] for r in context] == ["DLGM", "CategoricalVAE"]
    for row in context:
        assert all(MEAN_SE.match(c) for c in row[1:]), row
    assert [r[0] for r in throughput] == systems
    for row in throughput:
        assert all(NUMBER.match(c) for c in row[1:]), row
    assert "### Verdicts" in text and "Machine:" in text


def test_reference_rank_one_precision_matches_dense_gaussian():
    """The plain DLGM reference's rank-one-precision formulas against a dense covariance."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    from benchmarks import references as refs

    rng = np.random.default_rng(0)
    b, k, d = 3, 200_000, 4
    mu, log_d, u = (rng.normal(size=(b, d)) * s for s in (1.0, 0.5, 1.0))
    cov = np.linalg.inv(np.exp(log_d)[:, :, None] * np.eye(d) + u[:, :, None] * u[:, None, :])
    dense = tfp.distributions.MultivariateNormalFullCovariance(mu, cov)
    eps = tf.constant(rng.normal(size=(b, k, d)))
    xi = refs.rank_one_precision_sample(*(tf.constant(v) for v in (mu, log_d, u)), eps)
    np.testing.assert_allclose(
        refs.rank_one_precision_log_prob(xi, *(tf.constant(v) for v in (mu, log_d, u))),
        dense.log_prob(tf.transpose(xi, [1, 0, 2])).numpy().T, rtol=1e-10)
    centred = xi.numpy() - mu[:, None]
    sample_cov = np.einsum("bki,bkj->bij", centred, centred) / k
    np.testing.assert_allclose(sample_cov, cov, atol=0.02)  # Monte Carlo error ~ 0.005
    kl = tfp.distributions.kl_divergence(
        dense, tfp.distributions.MultivariateNormalDiag(np.zeros((b, d)), np.ones((b, d))))
    np.testing.assert_allclose(refs.rank_one_precision_kl(mu, log_d, u), kl, rtol=1e-10)


def test_burda_schedule_stages():
    """Burda et al.'s 3^i passes at 1e-3 * 10^(-i/7), i = 0..7: 3,280 passes in all."""
    from benchmarks import bench_vae

    lr = [bench_vae.burda_learning_rate(e) for e in range(bench_vae.BURDA_PASSES)]
    values, counts = np.unique(np.round(lr, 12), return_counts=True)
    np.testing.assert_allclose(values[::-1], 1e-3 * 10 ** (-np.arange(8) / 7), rtol=1e-7)
    np.testing.assert_array_equal(counts[::-1], 3 ** np.arange(8))

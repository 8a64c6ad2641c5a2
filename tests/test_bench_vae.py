"""The VAE benchmark: its quick-mode tables (shapes of the cells), and its references' math
against dense Gaussians, NumPy and our models (numbers asserted)."""

import re

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
    module = bench_run.load("vae")
    text = module.main(quick=True)
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


def test_reference_iwae_weights_and_learned_categorical_prior():
    """ReferenceVAE's k-sample log-weights (its objective='iwae' training bound) and
    ReferenceCategoricalVAE's learned prior (KL and log-weights) against NumPy."""
    import tensorflow as tf
    from scipy.stats import norm

    from benchmarks import references as refs

    rng = np.random.default_rng(0)
    x = (rng.random((7, 6)) > 0.5).astype("float32")
    vae = refs.ReferenceVAE(6, hidden_units=(5,), latent_dim=3, activation="tanh",
                            objective="iwae", num_samples=4, seed=0)
    eps = rng.normal(size=(7, 4, 3)).astype("float32")
    log_w = vae.log_weights_from_noise(tf.constant(x), tf.constant(eps)).numpy()
    mu, log_var, _ = (t.numpy().astype(np.float64) for t in vae.encoder(x))
    sd = np.exp(0.5 * log_var)[:, None]
    z = mu[:, None] + sd * eps
    p = vae.decoder(z.reshape(-1, 3).astype("float32")).numpy().reshape(7, 4, 6)
    expected = ((x[:, None] * np.log(p) + (1 - x[:, None]) * np.log1p(-p)).sum(-1)
                + norm.logpdf(z).sum(-1) - norm.logpdf(z, mu[:, None], sd).sum(-1))
    np.testing.assert_allclose(log_w, expected, rtol=1e-4)
    loss, kl = vae.losses_per_example(tf.constant(x), training=True)
    assert loss.shape == (7,) and np.all(kl.numpy() == 0) and np.all(np.isfinite(loss))

    cat = refs.ReferenceCategoricalVAE(6, hidden_units=(), num_variables=2, num_classes=3,
                                       prior="learned", seed=0)
    prior = rng.normal(size=(2, 3)).astype("float32")
    cat.prior_logits.assign(prior)
    log_q = cat.log_q(tf.constant(x))
    _, kl = cat.losses_per_example(tf.constant(x))
    log_prior = prior - np.log(np.exp(prior).sum(-1, keepdims=True))
    q = np.exp(log_q.numpy())
    np.testing.assert_allclose(kl, (q * (log_q.numpy() - log_prior)).sum((1, 2)), rtol=1e-5)
    seed = tf.constant([3, 4])
    u = tf.random.stateless_uniform([7, 5, 2, 3], seed, minval=1e-20, maxval=1.0)
    onehot = tf.one_hot(tf.argmax(log_q[:, None] - tf.math.log(-tf.math.log(u)), -1), 3).numpy()
    p = cat.decoder(onehot.reshape(-1, 6)).numpy().reshape(7, 5, 6)
    expected = ((x[:, None] * np.log(p) + (1 - x[:, None]) * np.log1p(-p)).sum(-1)
                + (onehot * (log_prior - log_q.numpy()[:, None])).sum((-2, -1)))
    np.testing.assert_allclose(cat.log_weights(tf.constant(x), 5, seed), expected, rtol=1e-4)


def test_reference_dlgm_is_ours_with_copied_weights_and_trains_step_for_step():
    """ReferenceDLGM (written plainly) against our DLGM with D = exp(raw) and no floor: with
    the reference's weights copied in (``layer_pairs``), the same log-weights; each trained by
    its own ``fit`` on the same batches with the same posterior noise (bench_vae's
    ``feed_noise``, used by ``--same-noise``), the same weights after 18 RMSprop steps."""
    import keras
    import tensorflow as tf

    from benchmarks import bench_vae
    from benchmarks.references import ReferenceDLGM
    from zoo import DLGM

    ours = DLGM(input_shape=(6,), latent_dims=(3, 2), hidden_units=(5,),
                scale_activation="exp", min_scale=0.0, seed=0)
    ref = ReferenceDLGM(6, hidden_units=(5,), latent_dims=(3, 2),
                        noise_map_initializer="identity", seed=1)
    pairs = bench_vae.copy_reference_weights(ref, ours)
    x = (np.random.default_rng(5).random((48, 6)) < 0.4).astype("float32")
    seed = tf.constant([3, 0])
    np.testing.assert_allclose(ours.log_weights(tf.constant(x[:5]), 7, seed),
                               ref.log_weights(tf.constant(x[:5]), 7, seed), rtol=1e-5, atol=1e-4)

    ours_elbo, ref_elbo = bench_vae.feed_noise("DLGM", ours, ref,
                                               bench_vae.noise_stream([(3,), (2,)]),
                                               bench_vae.noise_stream([(3,), (2,)]))
    eps = [tf.random.stateless_normal([48, d], [9, d]) for d in (3, 2)]
    np.testing.assert_allclose(ours_elbo(x, *eps), ref_elbo(x, *eps), rtol=1e-5, atol=1e-4)
    initial = ours.get_weights()
    for model in (ours, ref):
        model.compile(optimizer=keras.optimizers.RMSprop(0.01))
        model.fit(x, batch_size=8, epochs=3, shuffle=False, verbose=0)  # 18 steps
    for source, target in pairs:
        for a, b in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ours.get_weights(), initial))
    assert moved > 0.05, moved
    np.testing.assert_allclose(ours_elbo(x, *eps), ref_elbo(x, *eps), rtol=1e-4, atol=1e-3)


def test_reference_categorical_vae_is_ours_with_copied_weights_and_trains_step_for_step():
    """ReferenceCategoricalVAE against our CategoricalVAE (learned prior, one hidden layer):
    with the reference's weights copied in (``layer_pairs``, the prior's logits included), the
    same log-weights; each trained by its own ``fit`` and its own temperature callback on the
    same batches with the same Gumbel uniforms (``feed_noise``, used by ``--same-noise``), the
    same weights and temperature after 18 SGD-momentum steps."""
    import keras
    import tensorflow as tf

    from benchmarks import bench_vae
    from benchmarks.references import ReferenceCategoricalVAE
    from zoo import CategoricalVAE

    options = dict(hidden_units=(5,), num_variables=2, num_classes=3, prior="learned",
                   anneal_rate=0.05, anneal_every=4, min_temperature=0.3)
    ours = CategoricalVAE(input_shape=(6,), seed=0, **options)
    ref = ReferenceCategoricalVAE(6, seed=1, **options)
    ref.prior_logits.assign(np.random.default_rng(2).normal(size=(2, 3)).astype("float32"))
    pairs = bench_vae.copy_reference_weights(ref, ours)
    x = (np.random.default_rng(5).random((48, 6)) < 0.4).astype("float32")
    seed = tf.constant([3, 0])
    np.testing.assert_allclose(ours.log_weights(tf.constant(x[:5]), 7, seed),
                               ref.log_weights(tf.constant(x[:5]), 7, seed), rtol=1e-5, atol=1e-4)

    shapes, draw = bench_vae.noise_shapes("CategoricalVAE", ours)
    ours_elbo, ref_elbo = bench_vae.feed_noise(
        "CategoricalVAE", ours, ref, bench_vae.noise_stream(shapes, draw),
        bench_vae.noise_stream(shapes, draw))
    u = draw([48, 2, 3], [9, 0])
    np.testing.assert_allclose(ours_elbo(x, u), ref_elbo(x, u), rtol=1e-5, atol=1e-4)
    initial = ours.get_weights()
    for model, callbacks in ((ours, ours.default_callbacks()), (ref, ref.callbacks())):
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        model.fit(x, batch_size=8, epochs=3, shuffle=False, verbose=0,
                  callbacks=callbacks)  # 18 steps, the temperature updated at steps 0, 4, ...
    for source, target in pairs:
        for a, b in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ours.get_weights(), initial))
    assert moved > 0.05, moved
    tau = float(np.exp(-0.05 * 16))  # the last update, at step 16
    np.testing.assert_allclose([float(ours.latent.temperature.numpy()), float(ref.tau.numpy())],
                               [tau, tau], rtol=1e-6)
    np.testing.assert_allclose(ours_elbo(x, u), ref_elbo(x, u), rtol=1e-4, atol=1e-3)


def test_swap_init_copies_ours_into_the_reference_and_tables_the_effects():
    """``--swap-init``'s pieces: ours' weights copied into the reference (every weight, the
    count checked as in the other direction) give the reference ours' log-weights; the
    table's effects are the stated contrasts of the four cells."""
    import tensorflow as tf

    from benchmarks import bench_vae
    from benchmarks.references import ReferenceCategoricalVAE
    from zoo import CategoricalVAE

    options = dict(hidden_units=(5,), num_variables=2, num_classes=3, prior="learned")
    ours = CategoricalVAE(input_shape=(6,), seed=0, **options)
    ours.latent.prior_logits.assign(np.random.default_rng(2).normal(size=(2, 3)))
    ref = ReferenceCategoricalVAE(6, seed=1, **options)
    x = tf.constant((np.random.default_rng(5).random((5, 6)) < 0.4).astype("float32"))
    seed = tf.constant([3, 0])
    before = ref.log_weights(x, 7, seed).numpy()
    bench_vae.copy_reference_weights(ref, ours, into="reference")
    after = ref.log_weights(x, 7, seed).numpy()
    np.testing.assert_allclose(after, ours.log_weights(x, 7, seed), rtol=1e-5, atol=1e-4)
    assert np.max(np.abs(after - before)) > 0.1

    cells = {0: (-10.0, -11.0, -12.0, -13.0), 1: (-20.0, -20.4, -21.0, -22.0)}
    records = {s: dict(zip(bench_vae.SWAP_CELLS, v)) for s, v in cells.items()}
    text = bench_vae.swap_table(records)
    rows = _tables(text)[0]
    assert rows[0] == ["0", "-10.00", "-11.00", "-12.00", "-13.00", "+2.00"]
    assert rows[1][-1] == "+1.00"
    # ours - reference: +2, +1 -> 1.50 ± 0.50; model: (oo + or - rr - ro) / 2 = 2.0, 1.3
    # -> 1.65 ± 0.35; initial weights: (oo + ro - or - rr) / 2 = 0.0, -0.3 -> -0.15 ± 0.15.
    assert "ours − reference, each from its own initial weights: +1.50 ± 0.50 (0 of 2" in text
    assert "model (ours − reference, same initial weights, averaged over both): +1.65 ± 0.35" \
        in text
    assert "averaged over both): -0.15 ± 0.15 (1 of 2 below 0)" in text
    assert "Means over seeds (columns in order): -15.00 / -15.70 / -16.50 / -17.50." in text

"""HierarchicalVAE (Burda et al. 2016's two-stochastic-layer VAE / IWAE): its bound against a
NumPy + TFP computation of log p(x, h1, h2) - log q(h1, h2 | x) on the same weights and noise,
the IWAE bound against the ELBO and in k, the K-sample estimate against log p(x) by
quadrature, the model contract (fit, evaluate, .keras round trip), export parity and the
paper's architecture weight for weight."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import yaml

from zoo.bounds import iwae_bound
from zoo.datasets import load_arrays
from zoo.hierarchical_vae import HierarchicalVAE
from tests.test_case import assert_bound_grows_with_k

tfd = tfp.distributions
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(input_shape=(6,), latent_dims=(3, 2), hidden_units=((5,), (4,)), seed=0)


def _dense(layer, h):
    w, b = [np.asarray(v, np.float64) for v in layer.get_weights()]
    return h @ w + b


def _mlp(net, h):
    """The Dense layers of ``net`` (tanh or linear) in float64; Flatten/Reshape are identities
    on flat vectors."""
    for layer in net.layers:
        if layer.get_weights():
            h = _dense(layer, h)
            h = np.tanh(h) if layer.activation.__name__ == "tanh" else h
    return h


def _gaussian(layer, features):
    """loc, scale of a GaussianPosterior layer (exp of half a log-variance, + min_scale)."""
    raw = _dense(layer.param_denses[0], features)
    return _dense(layer.loc_dense, features), np.exp(0.5 * raw) + layer.min_scale


def _numpy_log_weights(model, x, eps1, eps2):
    """log p(x|h1) + log p(h1|h2) + log p(h2) - log q(h1|x) - log q(h2|h1), float64, with TFP's
    Normal and Bernoulli densities; x [b, D], eps [b, k, d]."""
    x = np.asarray(x, np.float64)[:, None]
    mu1, s1 = _gaussian(model.posteriors[0], _mlp(model.encoders[0], x))
    h1 = mu1 + s1 * eps1
    mu2, s2 = _gaussian(model.posteriors[1], _mlp(model.encoders[1], h1))
    h2 = mu2 + s2 * eps2
    log_q = (tfd.Normal(mu1, s1).log_prob(h1).numpy().sum(-1)
             + tfd.Normal(mu2, s2).log_prob(h2).numpy().sum(-1))
    pm, ps = _gaussian(model.conditional_priors[0], _mlp(model.prior_networks[0], h2))
    log_p = (tfd.Normal(0.0, 1.0).log_prob(h2).numpy().sum(-1)
             + tfd.Normal(pm, ps).log_prob(h1).numpy().sum(-1))
    logits = _mlp(model.decoder, h1)  # p(x|h1): tanh layers, then the logits
    log_px = tfd.Bernoulli(logits=logits).log_prob(np.broadcast_to(x, logits.shape)).numpy()
    return log_px.sum(-1) + log_p - log_q


def test_bound_equals_numpy_tfp_log_joint_minus_log_q():
    model = HierarchicalVAE(**TINY)
    rng = np.random.default_rng(0)
    for w in model.trainable_weights:  # weights away from Glorot's: larger scales, biases
        w.assign(rng.normal(0.0, 0.7, w.shape).astype("float32"))
    x = (rng.random((4, 6)) < 0.5).astype("float32")
    eps1 = rng.standard_normal((4, 7, 3)).astype("float32")
    eps2 = rng.standard_normal((4, 7, 2)).astype("float32")
    want = _numpy_log_weights(model, x, eps1, eps2)
    got = model.log_weights_from_noise(tf.constant(x), [tf.constant(eps1), tf.constant(eps2)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # The training objectives from the same noise: ELBO (one sample, and the mean over k) and
    # the IWAE bound log (1/k) sum_i w_i.
    one = model.terms_from_noise(tf.constant(x), [tf.constant(eps1[:, 0]),
                                                  tf.constant(eps2[:, 0])])
    np.testing.assert_allclose(-one["objective"], want[:, 0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(one["elbo"], want[:, 0], rtol=1e-5, atol=1e-4)
    noises = [tf.constant(eps1), tf.constant(eps2)]
    np.testing.assert_allclose(-model.terms_from_noise(tf.constant(x), noises)["objective"],
                               want.mean(1), rtol=1e-5, atol=1e-4)
    iwae = HierarchicalVAE.from_config({**model.get_config(), "objective": "iwae",
                                        "num_samples": 7})
    iwae.set_weights(model.get_weights())
    top = want.max(1)
    np.testing.assert_allclose(-iwae.terms_from_noise(tf.constant(x), noises)["objective"],
                               top + np.log(np.exp(want - top[:, None]).mean(1)),
                               rtol=1e-5, atol=1e-4)


def test_iwae_bound_is_above_the_elbo_and_grows_with_k():
    model = HierarchicalVAE(input_shape=(64,), latent_dims=(4, 2), hidden_units=((16,), (8,)),
                            seed=1)
    x = load_arrays("digits", "test", binarize="static")["image"].reshape(-1, 64)[:100]
    # E[L_k] grows with k: 1000 particles per example in groups of k, the k-sample bounds
    # averaged within each example, the per-example gains tested in standard errors.
    log_w = model.log_weights(tf.constant(x), 1000, tf.constant([11, 0])).numpy()
    assert_bound_grows_with_k(log_w)
    # Per example, the bound over all 1000 samples is above their mean log-weight (the ELBO).
    assert np.all(iwae_bound(tf.constant(log_w)).numpy() - log_w.mean(1) > 0.1)


def test_k_sample_estimate_converges_to_log_p_x_by_quadrature():
    """One-dimensional h1 and h2: log p(x) = log E_{h2, u}[p(x | mu(h2) + sigma(h2) u)] with
    h2, u ~ N(0, 1), by 2-D Gauss-Hermite quadrature (80 x 80 nodes; 40 and 160 agree to 5e-4)
    through ``decode``. The recognition model is made broad, q(h1|x) = q(h2|h1) = N(0, 2^2),
    so that the importance weights have finite variance (with random recognition weights
    q(h2|h1) is narrower than the posterior and even K = 100,000 is off by 0.5 nats)."""
    model = HierarchicalVAE(input_shape=(5,), latent_dims=(1, 1), hidden_units=((6,), (6,)),
                            seed=2)
    rng = np.random.default_rng(2)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.8, w.shape).astype("float32"))
    for layer in model.posteriors:
        for w in layer.loc_dense.weights + layer.param_denses[0].weights:
            w.assign(np.zeros(w.shape, "float32"))
        layer.param_denses[0].bias.assign([np.log(4.0)])
    x = (rng.random((6, 5)) < 0.5).astype("float32")
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    u, h2 = (a.reshape(-1, 1).astype("float32") for a in np.meshgrid(nodes, nodes))
    logits = model.decode([u, h2])["params"].numpy().astype(np.float64)  # [n, 5]
    log_px = x @ logits.T - np.logaddexp(0.0, logits).sum(-1)  # [6, n]
    log_w = np.log(np.outer(weights, weights).reshape(-1))
    exact = np.logaddexp.reduce(log_px + log_w, axis=1)
    # The K-sample estimate log mean(w) against log p(x), in standard errors of log mean(w)
    # (delta method: std(w) / (mean(w) sqrt(K))).
    k = 20000
    log_w = model.log_weights(tf.constant(x), k, tf.constant([0, 0])).numpy().astype(np.float64)
    estimate = iwae_bound(tf.constant(log_w)).numpy()
    w = np.exp(log_w - estimate[:, None])
    se = w.std(1) / np.sqrt(k)
    assert np.all(se < 0.015), se  # measured 0.007-0.011
    assert np.all(np.abs(estimate - exact) < 4 * se), (estimate - exact) / se
    # The recognition model is not the posterior: the ELBO is well below.
    assert np.all(exact - log_w.mean(1) > 0.5)


def test_config_and_keras_file_round_trip(tmp_path):
    """get_config / from_config rebuild the model; a .keras file reloads with the same
    weights (same log-weights on fixed noise, reconstructions and prior samples). Fit,
    evaluate, pictures and reload from the command line: tests/test_training.py's hvae run."""
    import keras

    model = HierarchicalVAE(objective="iwae", num_samples=3, **TINY)
    config = model.get_config()
    assert HierarchicalVAE.from_config(config).get_config() == config
    rng = np.random.default_rng(3)
    x = (rng.random((4, 6)) < 0.5).astype("float32")
    noises = [rng.standard_normal((4, 5, d)).astype("float32") for d in (3, 2)]

    def outputs(m):
        return [m.log_weights_from_noise(tf.constant(x), noises), m.reconstruct(x),
                m.sample(2, seed=5)]

    before = outputs(model)
    path = str(tmp_path / "hvae.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is HierarchicalVAE and reloaded.get_config() == config
    for a, b in zip(before, outputs(reloaded)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_export_decoder_and_encoder_match_keras_with_builtin_ops(tmp_path):
    from zoo.export.exporter import export_tflite, verify
    from zoo.export.litert import load_interpreter

    model = HierarchicalVAE(**TINY)
    path = str(tmp_path / "hvae.tflite")
    export_tflite(model, path, what=["decode", "encode"])
    report = verify(path, model)
    assert report.ops.builtin_only and not report.ops.flex, report.ops
    assert report.worst_rel() < 1e-5, str(report)
    # The file's decoder against model.decode, and zero noise gives the encoder's mean path.
    runner = load_interpreter(path).get_signature_runner
    rng = np.random.default_rng(5)
    xi_1, xi_2 = (rng.standard_normal((1, d)).astype("float32") for d in (3, 2))
    np.testing.assert_allclose(runner("decode")(xi_1=xi_1, xi_2=xi_2)["probs"],
                               model.decode([xi_1, xi_2])["mean"], rtol=1e-5, atol=1e-6)
    x = (rng.random((1, 6)) < 0.5).astype("float32")
    out = runner("encode")(x=x, noise=np.zeros((1, 5), "float32"))
    np.testing.assert_allclose(np.concatenate([out["h_1"], out["h_2"]], -1),
                               model.posterior_mean_latent(x), rtol=1e-5, atol=1e-6)


def test_burda_two_layer_configs_build_appendix_c_networks():
    for name, objective, k in [("burda2016_vae_2layer_k1.yaml", "elbo", 1),
                               ("burda2016_iwae_2layer_k50.yaml", "iwae", 50)]:
        with open(os.path.join(ROOT, "configs", name)) as f:
            config = yaml.safe_load(f)
        assert config["model_name"] == "hvae"
        model_config = {"objective": "elbo", "num_samples": 1, **config["model"]}
        assert (model_config["objective"], model_config["num_samples"]) == (objective, k)
        assert model_config["scale_activation"] == "exp"
    model = HierarchicalVAE(input_shape=(28, 28, 1), **{
        k: v for k, v in config["model"].items() if k not in ("objective", "num_samples")})
    # q(h1|x) 784-200-200-(100 means, 100 log-variances), q(h2|h1) 100-100-100-(50, 50),
    # p(h1|h2) 50-100-100-(100, 100), p(x|h1) 100-200-200-784.
    q1 = 784 * 200 + 200 + 200 * 200 + 200 + 2 * (200 * 100 + 100)
    q2 = 100 * 100 + 100 + 100 * 100 + 100 + 2 * (100 * 50 + 50)
    p1 = 50 * 100 + 100 + 100 * 100 + 100 + 2 * (100 * 100 + 100)
    px = 100 * 200 + 200 + 200 * 200 + 200 + 200 * 784 + 784
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == q1 + q2 + p1 + px


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"one list of widths per stochastic layer.*\[\[200"):
        HierarchicalVAE(input_shape=(6,), latent_dims=(3, 2), hidden_units=(5, 4))
    with pytest.raises(ValueError, match="2 for latent_dims of length 2, got 1"):
        HierarchicalVAE(input_shape=(6,), latent_dims=(3, 2), hidden_units=((5,),))
    with pytest.raises(ValueError, match="objective"):
        HierarchicalVAE(objective="vae", **TINY)
    with pytest.raises(ValueError, match="latent_dims"):
        HierarchicalVAE(input_shape=(6,), latent_dims=(3, 0), hidden_units=((5,), (4,)))


def _tiny_ours_and_reference(**ours_kwargs):
    """A TINY HierarchicalVAE and benchmarks/references.py's ReferenceHierarchicalVAE of the
    same sizes with ours' weights copied into it; also the (ours, reference) layer pairs."""
    from benchmarks.references import ReferenceHierarchicalVAE

    ours = HierarchicalVAE(**{**TINY, **ours_kwargs})
    ref = ReferenceHierarchicalVAE(6, hidden_units=((5,), (4,)), latent_dims=(3, 2), seed=0)
    pairs = ref.layer_pairs(ours)
    for source, target in pairs:
        target.set_weights(source.get_weights())
    return ours, ref, pairs


def test_plain_reference_gives_the_same_log_weights_with_the_same_weights():
    """benchmarks/references.py's ReferenceHierarchicalVAE, written independently in the Keras
    example's style, against ours with copied weights and the same stateless noise: equal
    log-weights up to our scales' min_scale of 1e-4 (measured 1.4e-3 nats), and within float32
    rounding with min_scale=0."""
    ours, ref, _ = _tiny_ours_and_reference()
    x = tf.constant((np.random.default_rng(4).random((5, 6)) < 0.5).astype("float32"))
    seed = tf.constant([3, 0])
    np.testing.assert_allclose(ours.log_weights(x, 7, seed), ref.log_weights(x, 7, seed),
                               atol=1e-2)
    # Without the floor (min_scale=0, Burda et al.'s sigma) the two are one computation.
    bare = HierarchicalVAE(min_scale=0.0, **TINY)
    bare.set_weights(ours.get_weights())
    assert bare.get_config()["min_scale"] == 0.0
    np.testing.assert_allclose(bare.log_weights(x, 7, seed), ref.log_weights(x, 7, seed),
                               rtol=1e-5, atol=1e-4)


def test_fit_follows_the_reference_step_for_step_with_the_same_noise():
    """Ours and the plain reference, each trained by its own ``fit`` (ours: Keras' train step
    with our compute_loss; the reference: the Keras example's train step) from the same
    weights, on the same batches and the same posterior noise at every step, end with the
    same weights: the two training paths are one computation, so a gap between them at a
    budget comes from their random draws (initial weights, noise), not from the model or
    its training step. (On Burda et al.'s full two-layer model, 4 passes of MNIST this way
    end 0.01 nats apart in test ELBO; benchmarks/README.md.)"""
    import keras

    ours, ref, pairs = _tiny_ours_and_reference(min_scale=0.0)

    from benchmarks import bench_vae  # its --same-noise hooks, exercised here

    # Step c draws seeds [c, 0] and [c, 1], whichever model asks.
    ours_elbo, ref_elbo = bench_vae.feed_noise("HierarchicalVAE", ours, ref,
                                               bench_vae.noise_stream([(3,), (2,)]),
                                               bench_vae.noise_stream([(3,), (2,)]))
    x = (np.random.default_rng(5).random((48, 6)) < 0.4).astype("float32")
    initial = ours.get_weights()
    for model in (ours, ref):
        model.compile(optimizer=keras.optimizers.Adam(0.02, epsilon=1e-4))
        model.fit(x, batch_size=8, epochs=3, shuffle=False, verbose=0)  # 18 Adam steps
    for source, target in pairs:
        for a, b in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ours.get_weights(), initial))
    assert moved > 0.1, moved  # the steps did move the weights
    eps = [tf.random.stateless_normal([48, d], [9, d]) for d in (3, 2)]
    np.testing.assert_allclose(ours_elbo(x, *eps), ref_elbo(x, *eps), rtol=1e-4, atol=1e-3)

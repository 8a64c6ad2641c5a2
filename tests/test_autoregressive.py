"""FVSBN, NADE, MADE (and order-agnostic NADE): normalization over all 2^d binary vectors,
equality with NumPy loops, exact samples and inpainting by enumeration, the model contract."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tests.test_case import run_model_test
from zoo.autoregressive import FVSBN, MADE, NADE
from zoo.autoregressive.base import bernoulli_log_prob

D = 10
ALL = np.array(list(itertools.product([0.0, 1.0], repeat=D)), np.float32)  # 2^10 vectors


def _randomize(model, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    for w in model.trainable_weights:
        w.assign(scale * rng.randn(*w.shape).astype("float32"))
    return model


MODELS = {
    "fvsbn": lambda d=D: FVSBN((d,), input_order="random", seed=1),
    "nade": lambda d=D: NADE((d,), hidden_units=7, input_order="random", seed=2),
    "made": lambda d=D: MADE((d,), hidden_units=(16, 16), input_order="random",
                             hidden_degrees="random", num_masks=3, seed=3),
}


def _log_total(model, member):
    return float(tf.reduce_logsumexp(tf.cast(model.log_prob(ALL, member=member), tf.float64)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_probabilities_of_all_binary_vectors_sum_to_one(name):
    model = _randomize(MODELS[name](), seed=0)
    for member in range(model.num_members):
        assert abs(_log_total(model, member)) < 1e-5, f"member {member}"
    if model.num_members > 1:  # the mask ensemble is a mixture: normalized too
        assert abs(_log_total(model, None)) < 1e-5
        members = np.stack([model.log_prob(ALL, member=k) for k in range(3)])
        assert np.max(np.abs(members[0] - members[1])) > 0.1  # the draws differ


def test_leaky_masks_break_normalization():
    """The sum-to-one check can fail: MADE with its masks all ones is not normalized."""
    model = _randomize(MODELS["made"](), seed=0)
    for layer in model.network.masked:
        layer.set_masks(np.ones(layer.masks.shape))
    assert abs(_log_total(model, 0)) > 0.1


def test_nade_equals_a_numpy_loop():
    model = _randomize(MODELS["nade"](), seed=4, scale=0.5)
    w, c, v, b = (model.w.numpy(), model.c.numpy(), model.v.numpy(), model.b.numpy())
    order = np.argsort(model.degrees.numpy()[0])
    x = ALL[::37]
    expected = np.zeros(len(x))
    for n, xn in enumerate(x.astype(np.float64)):
        a = c.astype(np.float64).copy()
        for i in order:  # Larochelle & Murray's running sum
            p = 1 / (1 + np.exp(-(b[i] + v[i] @ (1 / (1 + np.exp(-a))))))
            expected[n] += np.log(p if xn[i] else 1 - p)
            a += w[i] * xn[i]
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("block_size", [1, 4, 10, 28])
def test_blocked_running_sum_equals_cumsum_and_its_gradient(block_size):
    from zoo.layers.running_sum import exclusive_running_sum

    rng = np.random.RandomState(6)
    x = tf.constant((rng.rand(3, 10) < 0.5).astype(np.float64))
    w = tf.constant(rng.randn(10, 5))
    g = tf.constant(rng.randn(3, 10, 5))
    expected = np.cumsum(x.numpy()[:, :, None] * w.numpy()[None], 1) - (
        x.numpy()[:, :, None] * w.numpy()[None])  # exclusive: sum over j < d
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        a = exclusive_running_sum(x, w, block_size=block_size)
        ref = tf.cumsum(x[:, :, None] * w[None], axis=1, exclusive=True)
        loss, ref_loss = tf.reduce_sum(g * a), tf.reduce_sum(g * ref)
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-12, atol=1e-12)
    for var in (x, w):
        np.testing.assert_allclose(tape.gradient(loss, var).numpy(),
                                   tape.gradient(ref_loss, var).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block_size", [3, 28])  # 3: the last block padded
def test_nade_blockwise_logits_and_hand_written_gradient_equal_the_dense_ones(block_size):
    """``nade_logits`` (block by block, hand-written gradient) gives the numbers of the
    [batch, D, H] formulation and of its autodiff gradient, for every input, in float64."""
    from zoo.layers.running_sum import nade_logits

    rng = np.random.RandomState(7)
    x = tf.constant((rng.rand(3, 10) < 0.5).astype(np.float64))
    w, v = tf.constant(rng.randn(10, 5)), tf.constant(rng.randn(10, 5))
    c, b, g = tf.constant(rng.randn(5)), tf.constant(rng.randn(10)), tf.constant(rng.randn(3, 10))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w, c, v, b])
        new = nade_logits(x, w, c, v, b, block_size=block_size)
        a = c + tf.cumsum(x[:, :, None] * w[None], axis=1, exclusive=True)
        old = tf.reduce_sum(tf.sigmoid(a) * v[None], -1) + b
        loss, ref_loss = tf.reduce_sum(g * new), tf.reduce_sum(g * old)
    np.testing.assert_allclose(new.numpy(), old.numpy(), rtol=1e-12, atol=1e-12)
    for var in (x, w, c, v, b):
        np.testing.assert_allclose(tape.gradient(loss, var).numpy(),
                                   tape.gradient(ref_loss, var).numpy(), rtol=1e-12, atol=1e-12)
    # the model: its log_prob and weight gradients against the dense formulation (float32)
    model = _randomize(NADE((10,), hidden_units=7, input_order="random", seed=2), seed=4)
    model.block_size = block_size
    xs = tf.constant(ALL[::29])
    with tf.GradientTape(persistent=True) as tape:
        blocked = tf.reduce_sum(bernoulli_log_prob(xs, model.conditional_logits(xs)), -1)
        dense = tf.reduce_sum(bernoulli_log_prob(xs, model.conditional_logits_dense(xs)), -1)
        total, dense_total = tf.reduce_sum(blocked), tf.reduce_sum(dense)
    np.testing.assert_allclose(blocked.numpy(), dense.numpy(), rtol=1e-5, atol=1e-4)
    for var in model.trainable_weights:
        np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(total, var)).numpy(),
                                   tf.convert_to_tensor(tape.gradient(dense_total, var)).numpy(),
                                   rtol=1e-4, atol=1e-4)


def test_fvsbn_equals_logistic_regressions_on_the_preceding_pixels():
    model = _randomize(MODELS["fvsbn"](), seed=5, scale=0.5)
    kernel = model.network.masked[0].kernel.numpy()
    bias = model.network.masked[0].bias.numpy()
    deg = model.network.degrees.numpy()[0]
    x = ALL[::41].astype(np.float64)
    logits = bias + x @ (kernel * (deg[:, None] < deg[None, :]))
    expected = np.sum(x * logits - np.logaddexp(0, logits), -1)
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["nade", "made"])
def test_samples_follow_the_exact_distribution(name):
    d, n = 4, 4000
    model = _randomize(MODELS[name](d), seed=6)
    grid = ALL[:16, -d:]
    probs = np.exp(np.asarray(model.log_prob(grid, member=0), np.float64))
    draws = np.asarray(model.sample(n, seed=1, member=0)).reshape(n, d)
    index = draws @ (2 ** np.arange(d - 1, -1, -1))
    counts = np.bincount(index.astype(int), minlength=16)
    chi2 = stats.chisquare(counts, probs / probs.sum() * n)
    assert chi2.pvalue > 1e-3, chi2


def test_inpainting_draws_from_the_exact_conditional():
    """SIR over sequential proposals: observed pixels that come *after* missing ones in the
    ordering are accounted for by the weights, so the draws follow p(x_missing | x_observed)."""
    d, reps = 4, 3000
    model = _randomize(MADE((d,), hidden_units=(12,), input_order="left-to-right", seed=7),
                       seed=8)
    x = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)
    observed = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)  # x_1, x_3 seen; x_0, x_2 drawn
    grid = ALL[:16, -d:]
    consistent = np.all(grid[:, [1, 3]] == x[0, [1, 3]], -1)
    joint = np.exp(np.asarray(model.log_prob(grid), np.float64)) * consistent
    target = joint / joint.sum()
    draws, ess = model.inpaint(np.repeat(x, reps, 0), np.repeat(observed, reps, 0), seed=3,
                               num_proposals=200)
    draws = np.asarray(draws)
    np.testing.assert_array_equal(draws[:, [1, 3]], np.repeat(x[:, [1, 3]], reps, 0))
    index = draws @ (2 ** np.arange(d - 1, -1, -1))
    counts = np.bincount(index.astype(int), minlength=16)[consistent]
    chi2 = stats.chisquare(counts, target[consistent] * reps)
    assert chi2.pvalue > 1e-3, (counts, target[consistent] * reps)
    # The proposal alone (no weights) draws from the wrong distribution: the test can fail.
    naive = np.asarray(model.inpaint(np.repeat(x, reps, 0), np.repeat(observed, reps, 0),
                                     seed=4, num_proposals=1)[0])
    naive_counts = np.bincount((naive @ (2 ** np.arange(d - 1, -1, -1))).astype(int),
                               minlength=16)[consistent]
    assert stats.chisquare(naive_counts, target[consistent] * reps).pvalue < 1e-3


def _digits():
    from zoo.datasets import load_arrays

    arrays = load_arrays("digits", "train", binarize="static")
    pick = np.random.RandomState(0).choice(len(arrays["image"]), 256, replace=False)
    return {k: v[pick] for k, v in arrays.items()}


@pytest.mark.parametrize("name,make", [
    ("fvsbn", lambda: FVSBN((8, 8, 1), seed=0)),
    ("nade", lambda: NADE((8, 8, 1), hidden_units=32, seed=0)),
    ("made", lambda: MADE((8, 8, 1), hidden_units=(64,), num_masks=2, seed=0)),
    ("oanade", lambda: _oanade_image()),
])
def test_model_contract(name, make, tmp_path):
    arrays = _digits()
    bad = [(lambda m: m.log_prob(np.zeros((2, 63), "float32")), ValueError, "`x`"),
           (lambda m: m.validate_data({"image": np.full((2, 8, 8, 1), 2.0, "float32")}),
            ValueError, r"\[0, 1\]"),
           (lambda m: m.validate_data({"image": np.full((2, 8, 8, 1), np.nan, "float32")}),
            ValueError, "NaN")]
    model, report = run_model_test(make, arrays, deterministic=lambda m, x: m.log_prob(x),
                                   tmp_path=tmp_path, bad_inputs=bad, epochs=3,
                                   learning_rate=1e-2)
    x = arrays["image"][:8]
    np.testing.assert_allclose(report["test_nll"], -np.mean(model.log_prob(x, member=0)),
                               rtol=1e-5)
    if model.num_members > 1:
        np.testing.assert_allclose(report["test_nll_ensemble"], -np.mean(model.log_prob(x)),
                                   rtol=1e-5)
    paths = model.pictures(x, arrays, str(tmp_path), _settings())
    assert len(paths) == 2


def _oanade_image():
    from zoo.autoregressive import OrderAgnosticNADE

    return OrderAgnosticNADE((8, 8, 1), hidden_units=(32,), num_orderings=2, seed=0)


def _settings():
    from zoo.contract import EvalSettings

    return EvalSettings(num_samples=1, seed=0, batch_size=8)


def test_fit_honours_sample_weight():
    model = MADE((4,), hidden_units=(8,), seed=0)
    x = ALL[:16, -4:]
    out = model(x)
    w = np.r_[np.ones(8), np.zeros(8)].astype("float32")
    loss = model.compute_loss(x, None, out, sample_weight=w)
    np.testing.assert_allclose(loss, -np.mean(np.asarray(out["log_prob"])[:8]), rtol=1e-6)


@pytest.mark.parametrize("name,make", [
    ("made", lambda: MADE((4, 4, 1), hidden_units=(16,), num_masks=2, seed=0)),
    ("nade", lambda: NADE((4, 4, 1), hidden_units=8, input_order="random", seed=0)),
])
def test_export_parity_and_builtin_ops(name, make, tmp_path):
    from tests.test_case import run_export_test
    from zoo.export.exporter import export_spec_of

    model = _randomize(make(), seed=9, scale=0.5)
    reports = run_export_test(model, tmp_path)
    assert set(reports["float32"].parity) == {"log_prob", "sample_step", "inpaint"}
    # The exported functions are the model's: log_prob equals the Keras ensemble, and
    # D sample_steps along the sidecar's ordering give the model's exact sequential draw.
    es = export_spec_of(model)
    x = (np.random.RandomState(1).rand(1, 16) < 0.5).astype("float32")
    np.testing.assert_allclose(es.signatures["log_prob"].fn(x=x)["log_prob"],
                               model.log_prob(x), rtol=1e-6)
    u = np.random.RandomState(2).rand(1, 16).astype("float32")
    draw = np.zeros((1, 16), "float32")
    for i in es.metadata["ordering"]:
        draw = np.asarray(es.signatures["sample_step"].fn(
            x=draw, position=np.eye(16, dtype="float32")[[i]], noise=u)["x"])
    degrees = np.asarray(model.member_degrees())[:1]
    expected, _, _ = model.fill(np.zeros((1, 16)), np.zeros((1, 16)), u, degrees, 0)
    np.testing.assert_array_equal(draw, expected)


def _oanade(d=D):
    from zoo.autoregressive import OrderAgnosticNADE

    return OrderAgnosticNADE((d,), hidden_units=(16,), num_orderings=3, seed=4)


def test_order_agnostic_nade_is_normalized_in_every_ordering():
    model = _randomize(_oanade(), seed=10, scale=0.5)
    for member in range(3):
        assert abs(_log_total(model, member)) < 1e-5
    assert abs(_log_total(model, None)) < 1e-5
    members = np.stack([model.log_prob(ALL, member=k) for k in range(3)])
    assert np.max(np.abs(members[0] - members[1])) > 0.05  # orderings disagree


def test_order_agnostic_estimator_is_unbiased_for_the_ordering_average():
    """E[D/(D-d) sum_{i not in m} log p(x_i|x_m)] = mean over all D! orderings of log p_o(x)."""
    d = 4
    model = _randomize(_oanade(d), seed=11, scale=0.5)
    x = np.array([[1.0, 0.0, 1.0, 1.0]], np.float32)
    orderings = np.array(list(itertools.permutations(range(1, d + 1))), np.float32)  # 24
    xs = np.repeat(x, len(orderings), 0)
    exact = np.mean(np.sum(_bern(xs, np.asarray(model.logits_for_degrees(xs, orderings))), -1))
    draws = np.asarray(model.order_agnostic_estimate(np.repeat(x, 20000, 0),
                                                     tf.constant([1, 2])))
    assert abs(draws.mean() - exact) < 4 * draws.std() / np.sqrt(len(draws))


def _bern(x, logits):
    return x * logits - np.logaddexp(0, logits)


def test_order_agnostic_inpainting_is_exact_with_one_proposal():
    d, reps = 4, 3000
    model = _randomize(_oanade(d), seed=12, scale=0.7)
    x = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)
    observed = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)
    degrees = np.asarray(model.inpainting_degrees(tf.constant(observed)))
    grid = ALL[:16, -d:]
    joint = np.exp(np.sum(_bern(grid, np.asarray(model.logits_for_degrees(
        grid, np.repeat(degrees, 16, 0)), np.float64)), -1))
    consistent = np.all(grid[:, [1, 3]] == x[0, [1, 3]], -1)
    target = joint * consistent / np.sum(joint * consistent)
    draws = np.asarray(model.inpaint(np.repeat(x, reps, 0), np.repeat(observed, reps, 0),
                                     seed=5, num_proposals=1)[0])
    counts = np.bincount((draws @ (2 ** np.arange(d - 1, -1, -1))).astype(int),
                         minlength=16)[consistent]
    assert stats.chisquare(counts, target[consistent] * reps).pvalue > 1e-3


def _rnade(d, seed=13, scale=0.4):
    from zoo.autoregressive import RNADE

    return _randomize(RNADE((d,), hidden_units=6, components=3, input_order="right-to-left",
                            seed=0), seed=seed, scale=scale)


def test_rnade_density_integrates_to_one_and_samples_follow_it():
    model = _rnade(2)
    step = 0.02
    g = np.arange(-12, 12, step, dtype=np.float32) + step / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(np.concatenate([np.asarray(model.log_prob(grid[i:i + 200000]), np.float64)
                                     for i in range(0, len(grid), 200000)]))
    mass = density.sum() * step**2
    assert abs(mass - 1.0) < 2e-3, mass
    mean = (density[:, None] * grid).sum(0) * step**2
    draws = np.asarray(model.sample(4000, seed=3), np.float64)
    assert_mc = np.abs(draws.mean(0) - mean) / (draws.std(0) / np.sqrt(len(draws)))
    assert np.all(assert_mc < 4), (draws.mean(0), mean)


def test_rnade_equals_a_numpy_loop():
    model = _rnade(3, seed=14)
    w, c, rho = model.w.numpy(), model.c.numpy(), model.rho.numpy()
    v, b = model.v.numpy(), model.b.numpy()
    x = np.random.RandomState(3).randn(5, 3)
    expected = np.zeros(5)
    for n in range(5):
        a = c.astype(np.float64).copy()
        for i in (2, 1, 0):  # right-to-left
            out = (1 / (1 + np.exp(-rho[i] * a))) @ v[i] + b[i]
            logit, mu, scale = out[:3], out[3:6], np.exp(out[6:])
            log_w = logit - np.log(np.sum(np.exp(logit)))
            comp = log_w - 0.5 * ((x[n, i] - mu) / scale) ** 2 - np.log(scale) \
                - 0.5 * np.log(2 * np.pi)
            expected[n] += np.log(np.sum(np.exp(comp)))
            a += w[i] * x[n, i]
    np.testing.assert_allclose(model.log_prob(x.astype("float32")), expected, rtol=1e-5,
                               atol=1e-4)


def test_rnade_contract(tmp_path):
    from zoo.autoregressive import RNADE
    from zoo.datasets import load_arrays

    arrays = load_arrays("digits", "train")
    pick = np.random.RandomState(0).choice(len(arrays["image"]), 256, replace=False)
    arrays = {k: v[pick] for k, v in arrays.items()}
    bad = [(lambda m: m.log_prob(np.zeros((2, 5), "float32")), ValueError, "`x`")]
    run_model_test(lambda: RNADE((8, 8, 1), hidden_units=16, components=2,
                                 dequantization=1 / 16, seed=0),
                   arrays, deterministic=lambda m, x: m.log_prob(x), tmp_path=tmp_path,
                   bad_inputs=bad, learning_rate=3e-3)

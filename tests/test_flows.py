"""Flow layers (IAF, MAF, PlanarFlow): log-determinants equal slogdet of the autodiff
Jacobian, inverse(forward(z)) = z, serialization, compiled / float64 / mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_case import run_layer_test
from zoo.layers import IAF, MAF, PlanarFlow

D, C = 5, 3
RNG = np.random.RandomState(0)

FLOWS = {
    "iaf_gated": lambda **kw: IAF(D, hidden_units=(16,), **kw),
    "iaf_affine_context": lambda **kw: IAF(D, hidden_units=(16,), transform="affine",
                                           context_size=C, input_order="random", seed=1, **kw),
    "maf_affine": lambda **kw: MAF(D, hidden_units=(16, 16), **kw),
    "maf_gated_context": lambda **kw: MAF(D, hidden_units=(16,), transform="gated",
                                          context_size=C, input_order="right-to-left", **kw),
    "planar": lambda **kw: PlanarFlow(D, **kw),
    "planar_context": lambda **kw: PlanarFlow(D, context_size=C, **kw),
}


def _context(flow, n, dtype="float64"):
    return RNG.randn(n, C).astype(dtype) if flow.context_size else None


def _scramble(flow, seed, scale=0.7):
    """Weights far from the identity start, so the test sees a real Jacobian."""
    rng = np.random.RandomState(seed)
    for w in flow.trainable_weights:
        w.assign(scale * rng.randn(*w.shape))
    return flow


def _build(name, dtype="float64"):
    flow = FLOWS[name](dtype=dtype)
    flow(np.zeros((1, D), dtype), context=_context(flow, 1, dtype))
    return _scramble(flow, seed=len(name))


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_log_det_is_slogdet_of_the_jacobian_and_inverse_inverts(name):
    flow = _build(name)
    z = tf.constant(RNG.randn(4, D))
    ctx = _context(flow, 4)
    with tf.GradientTape() as tape:
        tape.watch(z)
        y, log_det = flow.forward(z, ctx)
    jac = tape.batch_jacobian(y, z).numpy()
    sign, logabs = np.linalg.slogdet(jac)
    np.testing.assert_allclose(log_det, logabs, rtol=1e-9, atol=1e-9)
    if name.startswith("planar"):  # u_hat keeps the step orientation-preserving
        assert np.all(sign > 0)
    back, inv_log_det = flow.inverse(y, ctx)
    np.testing.assert_allclose(back, z, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-9, atol=1e-9)
    # ... and the inverse's own Jacobian has the inverse's log-determinant.
    with tf.GradientTape() as tape:
        tape.watch(y)
        back, inv_log_det = flow.inverse(y, ctx)
    np.testing.assert_allclose(np.linalg.slogdet(tape.batch_jacobian(back, y).numpy())[1],
                               inv_log_det, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["iaf_gated", "maf_affine"])
def test_autoregressive_flows_are_triangular_in_their_ordering(name):
    flow = _build(name)
    z = tf.constant(RNG.randn(3, D))
    with tf.GradientTape() as tape:
        tape.watch(z)
        y, _ = flow.forward(z)
    jac = np.abs(tape.batch_jacobian(y, z).numpy()).max(0)
    deg = flow.network.degrees.numpy()[0]
    assert np.all(jac[deg[None, :] > deg[:, None]] == 0)


def test_planar_constraint_holds_for_an_adversarial_u():
    flow = PlanarFlow(D, dtype="float64")
    flow(np.zeros((1, D)))
    w = RNG.randn(D)
    flow.w.assign(w)
    flow.u.assign(-5.0 * w / np.dot(w, w))  # w.u = -5: not invertible without u_hat
    u_hat, w_, _ = flow.parameters(dtype="float64")
    assert float(tf.reduce_sum(u_hat * w_)) > -1.0
    z = RNG.randn(200, D) * 3
    y, log_det = flow.forward(z)
    assert np.all(np.isfinite(log_det))
    np.testing.assert_allclose(flow.inverse(y)[0], z, atol=1e-8)


@pytest.mark.parametrize("name", ["iaf_affine_context", "maf_gated_context", "planar_context"])
def test_config_round_trip(name):
    flow = FLOWS[name]()
    init = {k: v for k, v in flow.get_config().items()
            if k in ("event_size", "context_size", "transform", "hidden_units")}
    x = RNG.randn(2, D).astype("float32")
    run_layer_test(type(flow), init, x, call_kwargs={"context": _context(flow, 2, "float32")},
                   rtol=1e-5)


@pytest.mark.parametrize("name", ["iaf_affine_context", "planar_context"])
def test_compiled_float64_and_mixed_precision(name):
    flow = _build(name, "float32")
    z = RNG.randn(3, D).astype("float32")
    ctx = _context(flow, 3, "float32")
    eager = flow.forward(z, ctx)
    for jit in (False, True):
        compiled = tf.function(lambda: (flow.forward(z, ctx), flow.inverse(z, ctx)),
                               jit_compile=jit)()
        np.testing.assert_allclose(compiled[0][0], eager[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(compiled[0][1], eager[1], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(compiled[1][0], flow.inverse(z, ctx)[0], rtol=1e-4,
                                   atol=1e-4)
    twin = _build(name, "float64")
    twin.set_weights(flow.get_weights())
    out = twin.forward(z.astype("float64"), None if ctx is None else ctx.astype("float64"))
    assert out[0].dtype == tf.float64
    np.testing.assert_allclose(out[1], eager[1], rtol=1e-4, atol=1e-4)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = FLOWS[name]()
        half(z, context=ctx)
        half.set_weights(flow.get_weights())
        y, log_det = half.forward(z, ctx)
        assert y.dtype == tf.float32 and log_det.dtype == tf.float32
        np.testing.assert_allclose(log_det, eager[1], rtol=5e-2, atol=5e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="transform"):
        IAF(3, transform="spline")
    with pytest.raises(ValueError, match="event_size"):
        PlanarFlow(0)
    flow = IAF(3, hidden_units=(4,))
    with pytest.raises(ValueError, match="`z`"):
        flow.forward(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="context"):
        PlanarFlow(3, context_size=2).forward(np.zeros((2, 3), "float32"))


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_posterior_flow_density_by_change_of_variables_integrates_to_one(kind):
    """q(z_K) = q_0(f^{-1}(z_K)) |det d f^{-1}/d z_K|: on a grid it integrates to 1, and at
    the flow's own samples it equals log q_0(z_0) - log_det (what a VAE reports)."""
    from zoo.layers import PosteriorFlow

    flow = PosteriorFlow(2, context_size=C, kind=kind, steps=3, hidden_units=(8,),
                         dtype="float64")
    ctx = np.random.RandomState(5).randn(1, C)
    flow(np.zeros((1, 2)), ctx)
    _scramble(flow, seed=21, scale=0.4)  # w.u_hat well above -1: no near-singular spike
    loc, scale = np.array([0.3, -0.2]), np.array([0.8, 0.5])

    def log_q0(z):
        return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi),
                      -1)

    eps = np.random.RandomState(1).randn(50, 2)
    z0 = loc + scale * eps
    out = flow(z0, np.repeat(ctx, 50, 0))
    back, inv_log_det = flow.inverse(out["z"], np.repeat(ctx, 50, 0))
    np.testing.assert_allclose(back, z0, atol=1e-7)
    np.testing.assert_allclose(log_q0(z0) - out["log_det"], log_q0(back.numpy()) + inv_log_det,
                               atol=1e-7)
    step = 0.025
    g = np.arange(-7, 7, step) + step / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    z_grid, ld = flow.inverse(grid, np.repeat(ctx, len(grid), 0))
    mass = np.sum(np.exp(log_q0(z_grid.numpy()) + ld.numpy())) * step**2
    assert abs(mass - 1.0) < 2e-3, mass
    # Without the log-determinant the "density" is not normalized: the check can fail.
    assert abs(np.sum(np.exp(log_q0(z_grid.numpy()))) * step**2 - 1.0) > 0.02


def test_planar_posterior_flow_runs_its_amortizer_once_per_example():
    """z [batch, particles, d] with a context [batch, c]: the planar steps' (u, w, b) come
    from the context once per example and broadcast over the particles, equal (forward and
    inverse) to each step fed the context repeated for every particle."""
    from zoo.layers import PosteriorFlow

    flow = PosteriorFlow(3, context_size=C, kind="planar", steps=4, dtype="float64")
    rng = np.random.RandomState(7)
    ctx, z0 = rng.randn(5, C), rng.randn(5, 6, 3)
    flow(z0, ctx)
    _scramble(flow, seed=3, scale=0.4)
    calls = []
    for step in flow.flows:  # count the amortizer's rows
        step.amortizer.call = (lambda f: lambda x, *a, **k: calls.append(x.shape[0]) or
                               f(x, *a, **k))(step.amortizer.call)
    out = flow(z0, ctx)
    back, inv_log_det = flow.inverse(out["z"], ctx)
    assert calls == [5] * 8  # 4 steps forward, 4 inverse, on the 5 examples only
    repeated = np.broadcast_to(ctx[:, None], (5, 6, C))
    z, log_det = z0, 0.0
    for step in flow.flows:  # the per-particle reference: the context repeated 6 times
        z, ld = step.forward(z, repeated)
        log_det = log_det + ld
    np.testing.assert_allclose(out["z"], z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["log_det"], log_det, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back, z0, atol=1e-7)
    np.testing.assert_allclose(inv_log_det, -out["log_det"], atol=1e-7)
    fresh = PosteriorFlow(3, context_size=C, kind="planar", steps=2)  # inverse before forward
    back, log_det = fresh.inverse(z0.astype("float32"), ctx.astype("float32"))
    assert back.shape == (5, 6, 3) and log_det.shape == (5, 6)


def _flow_vae(kind, seed=0, scale=0.5):
    from zoo.vae import VAE

    vae = VAE(input_shape=(3,), latent_dim=2, hidden_units=(8,), posterior_flow=kind,
              flow_steps=2, seed=seed)
    return _scramble(vae, seed=31 + seed, scale=scale)


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_vae_flow_posterior_log_q_is_the_density_of_its_samples(kind):
    vae = _flow_vae(kind, scale=0.25)  # well-conditioned steps: the inverse is accurate
    x = np.array([[1.0, 0.0, 1.0]], np.float32)
    features = vae.encoder(x)
    params = vae.encode(x)
    eps = np.random.RandomState(2).randn(40, 2).astype("float32")
    post = vae.sample_posterior(tf.repeat(features, 40, 0), noise=eps)
    z0, inv_log_det = vae.flow.inverse(post["z"], tf.repeat(features, 40, 0))
    loc, sd = np.asarray(params["loc"], np.float64), np.asarray(params["scale"], np.float64)

    def log_q0(z):
        return np.sum(-0.5 * ((z - loc) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), -1)

    np.testing.assert_allclose(z0, loc + sd * eps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(post["log_q"], log_q0(np.asarray(z0)) + inv_log_det,
                               rtol=1e-4, atol=1e-4)
    # The KL the ELBO uses is the single-sample log q - log p of the flowed sample.
    log_prior = -0.5 * np.sum(np.square(post["z"]), -1) - np.log(2 * np.pi)
    np.testing.assert_allclose(post["kl"], np.asarray(post["log_q"]) - log_prior, rtol=1e-5,
                               atol=1e-5)


def test_vae_flow_iwae_is_a_valid_bound_monotone_in_k():
    """Exact log p(x) by integrating p(x|z) N(z; 0, I) on a grid (2-D latent): the ELBO and
    IWAE_K with the flow posterior stay below it and rise with K."""
    vae = _flow_vae("planar", seed=1, scale=0.3)
    x = np.array([[1.0, 0.0, 1.0]], np.float32)
    step = 0.04
    g = np.arange(-7, 7, step, dtype=np.float32) + step / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logits = np.asarray(vae.decode(grid)["params"], np.float64)
    log_px_z = np.sum(x * logits - np.logaddexp(0, logits), -1)
    log_prior = -0.5 * np.sum(grid.astype(np.float64) ** 2, -1) - np.log(2 * np.pi)
    exact = np.log(np.sum(np.exp(log_px_z + log_prior)) * step**2)
    copies = np.repeat(x, 200, 0)
    means, ses = {}, {}
    for k in (1, 16, 256):
        est = vae.log_likelihood(copies, num_samples=k, seed=k).log_likelihood
        means[k], ses[k] = est.mean(), est.std(ddof=1) / np.sqrt(len(est))
    assert means[1] + 3 * ses[1] < means[16] and means[16] < means[256] + 3 * ses[256]
    assert means[256] < exact + 3 * ses[256], (means, exact)
    # (Here q_0 is much narrower than the true posterior, so IWAE_K approaches log p(x)
    # slowly: -3.08, -2.72, -2.36 at K = 256, 4096, 50000 against -1.96.)


def test_vae_flow_contract_and_encode_export(tmp_path):
    from tests.test_case import run_export_test, run_model_test
    from zoo.datasets import load_arrays
    from zoo.vae import VAE

    arrays = load_arrays("digits", "train", binarize="static")
    pick = np.random.RandomState(0).choice(len(arrays["image"]), 128, replace=False)
    arrays = {k: v[pick] for k, v in arrays.items()}
    model, _ = run_model_test(
        lambda: VAE(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(32,),
                    posterior_flow="iaf", flow_steps=2, seed=0),
        arrays, deterministic=lambda m, x: m.log_weights(x, 3, tf.constant([1, 2])),
        tmp_path=tmp_path, epochs=2)
    reports = run_export_test(model, tmp_path, what="encode")
    assert {"z", "log_q", "loc"} <= set(reports["float32"].parity["encode"])
    with pytest.raises(ValueError, match="posterior_flow"):
        VAE(input_shape=(4,), latent_dim=2, posterior_flow="radial")
    with pytest.raises(ValueError, match="free_bits"):
        VAE(input_shape=(4,), latent_dim=2, posterior_flow="iaf", free_bits=0.5)


def _flow_dlgm(kind, seed=0, scale=0.3):
    from zoo.dlgm import DLGM

    model = DLGM(input_shape=(3,), latent_dims=(1, 1), hidden_units=(8,), posterior_flow=kind,
                 flow_steps=2, seed=seed)
    return _scramble(model, seed=41 + seed, scale=scale)


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_dlgm_flow_posterior_density_and_iwae_bound(kind):
    """A DLGM with two 1-D stochastic layers and a flow over (xi_1, xi_2): log q of its
    samples is log q_0 of the flow's inverse plus the inverse log-determinant; the ELBO and
    IWAE_K stay below the exact log p(x) (grid integration over both layers' noise) and rise
    with K."""
    model = _flow_dlgm(kind)
    x = np.array([[1.0, 0.0, 1.0]], np.float32)
    features = model.encoder(x)
    noises = [np.random.RandomState(3 + l).randn(1, 30, 1).astype("float32") for l in range(2)]
    flowed = model.sample_posterior(features, noises=noises, num_samples=30)
    model_flow, model.flow = model.flow, None  # the same draw without the flow: q_0
    try:
        base = model.sample_posterior(features, noises=noises, num_samples=30)
    finally:
        model.flow = model_flow
    z = tf.concat(flowed["xis"], -1)
    z0, inv_log_det = model.flow.inverse(z, features)
    np.testing.assert_allclose(z0, tf.concat(base["xis"], -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(flowed["log_q"], base["log_q"] + inv_log_det, rtol=1e-4,
                               atol=1e-4)
    # exact log p(x): p(x | generate(xi_1, xi_2)) N(xi; 0, I) on a grid
    step = 0.04
    g = np.arange(-7, 7, step, dtype=np.float32) + step / 2
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logits = np.asarray(model.decode([grid[:, :1], grid[:, 1:]])["params"], np.float64)
    log_px_xi = np.sum(x * logits - np.logaddexp(0, logits), -1)
    log_prior = -0.5 * np.sum(grid.astype(np.float64) ** 2, -1) - np.log(2 * np.pi)
    exact = np.log(np.sum(np.exp(log_px_xi + log_prior)) * step**2)
    copies = np.repeat(x, 200, 0)
    elbo = np.asarray(model.elbo_terms(tf.constant(copies))["elbo"])
    means, ses = {}, {}
    for k in (1, 64):
        est = model.log_likelihood(copies, num_samples=k, seed=k).log_likelihood
        means[k], ses[k] = est.mean(), est.std(ddof=1) / np.sqrt(len(est))
    # the ELBO's single-sample KL and IWAE_1 estimate the same bound
    assert abs(elbo.mean() - means[1]) < 3 * np.hypot(ses[1], elbo.std() / np.sqrt(200))
    assert means[1] + 3 * ses[1] < means[64] < exact + 3 * ses[64], (means, exact)


def test_dlgm_flow_contract(tmp_path):
    from tests.test_case import run_model_test
    from zoo.datasets import load_arrays
    from zoo.dlgm import DLGM

    arrays = load_arrays("digits", "train", binarize="static")
    pick = np.random.RandomState(0).choice(len(arrays["image"]), 96, replace=False)
    arrays = {k: v[pick] for k, v in arrays.items()}
    model, report = run_model_test(
        lambda: DLGM(input_shape=(8, 8, 1), latent_dims=(4, 2), hidden_units=(16,),
                     posterior_flow="planar", flow_steps=2, seed=0),
        arrays, deterministic=lambda m, x: m.log_weights(x, 3, tf.constant([1, 2])),
        tmp_path=tmp_path, epochs=2)
    assert model.get_config()["posterior_flow"] == "planar"
    # encode export: the flowed xi_l and log q of the given noise, as the model computes them
    from tests.test_case import run_export_test
    from zoo.export.adapters import adapter_for

    reports = run_export_test(model, tmp_path, what="encode", quantize=("float32",))
    assert {"xi_1", "xi_2", "log_q", "loc_1"} <= set(reports["float32"].parity["encode"])
    x, noise = arrays["image"][:1], np.random.RandomState(3).randn(1, 6).astype("float32")
    out = adapter_for(model).call_encode(tf.constant(x), tf.constant(noise))
    post = model.sample_posterior(model.encoder(x), noises=[noise[:, :4], noise[:, 4:]])
    np.testing.assert_allclose(out["log_q"], post["log_q"], rtol=1e-6)
    np.testing.assert_allclose(out["xi_2"], post["xis"][1], rtol=1e-6)
    with pytest.raises(ValueError, match="posterior_flow"):
        DLGM(input_shape=(4,), latent_dims=(2,), posterior_flow="radial")

"""The exported particle-filter step (issue 15): built-in TFLite ops, the same numbers as the
TF filter given the same noise, streaming through ``StreamingFilter`` (noise given or drawn by
the runner), ``zoo-export``; and backward-simulation smoothing against the exact RTS means.

Bounds (measured, with margin): the float32 LiteRT stream against the float32 TF scan over 25
frames with missing ones within 1e-4 absolute (measured about 1e-6; the particles agree
index for index, so the resampling took the same ancestors).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.export.adapters_particle_filter import particle_functions
from zoo.export.exporter import export_spec_of, export_tflite, read_sidecar
from zoo.export.protocol import validate
from zoo.export.runtime import StreamingFilter
from zoo.kalman_filter import KalmanFilterModel
from zoo.layers import particle_filter as pf
from zoo.layers import resampling
from zoo.particle_filter import ParticleFilter

pytest.importorskip("ai_edge_litert.interpreter")


@pytest.mark.parametrize("scheme", ["systematic", "stratified"])
def test_linear_resampling_gives_the_compare_methods_indices(scheme):
    """The O(N) built-in method equals the O(N^2) count, draw for draw (uniform weights,
    flat and peaked Dirichlet weights, float32 and float64, N from 1 to 500)."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = [1, 2, 7, 64, 500][trial % 5]
        conc = [0.02, 0.5, 50.0][trial % 3]
        dtype = [np.float32, np.float64][trial % 2]
        w = rng.dirichlet(np.full(n, conc), size=2)
        if trial % 7 == 0:
            w[:] = 1.0 / n
        log_w = np.log(np.maximum(w, 1e-300)).astype(dtype)
        u = rng.uniform(size=(2, n)).astype(dtype)
        want = resampling.resample_indices(log_w, u, scheme, "compare").numpy()
        got = resampling.resample_indices(log_w, u, scheme, "linear").numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")
    with pytest.raises(ValueError, match="sorted positions"):
        resampling.resample_indices(np.zeros((1, 3)), np.zeros((1, 3)), "multinomial", "linear")


def _lg(dtype="float32"):
    return KalmanFilterModel.from_matrices([[1.0, 0.1], [0.0, 0.9]], [[1.0, 0.0]],
                                           0.3 * np.eye(2), [[0.5]], dtype=dtype)


def _frames_noise(noise, d):
    """Per-frame ``noise`` [T, batch, N, d + 1] from :func:`pf.draw_noise`'s (initial,
    transition, uniforms): frame 0 uses the initial normals (its uniforms are unused)."""
    init, trans, uni = (np.asarray(x, np.float32) for x in noise)
    normals = np.concatenate([init[None], trans], 0)  # [T, batch, N, d]
    uniforms = np.concatenate([uni[:1], uni], 0)[..., None]  # [T, batch, N, 1]
    return np.concatenate([normals, uniforms], -1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = ParticleFilter(_lg(), num_particles=64, threshold=0.6, seed=0)
    path = str(tmp_path_factory.mktemp("pf") / "pf.tflite")
    meta = export_tflite(model, path)
    return model, path, meta


def test_step_is_builtin_and_streams_like_the_tf_filter_given_the_same_noise(exported):
    model, path, meta = exported
    assert not [o for o in meta["ops"] if o.startswith("Flex")]
    assert {"CUMSUM", "LESS_EQUAL", "GATHER"} <= set(meta["ops"])
    assert max(p["max_rel"] for p in meta["parity"]["filter_step"].values()) < 1e-5
    side = read_sidecar(path)
    assert side["state"] == ["particles", "log_weights", "started"]
    assert side["noise_layout"]["uniform"] == {"offset": 2, "size": 1, "shape": [1]}
    es = export_spec_of(model)
    wide = {"normal": {"offset": 1, "size": 3, "shape": [3]}}
    with pytest.raises(ValueError, match="noise_layout.*within the last axis \\(3\\)"):
        validate(es._replace(metadata={**es.metadata, "noise_layout": wide}))
    t, n = 25, 64
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=(1, t, 1)), 1).astype(np.float32)
    observed = np.ones((1, t), np.float32)
    observed[0, [0, 7, 8, 19]] = 0.0  # frame 0 missing too: the prior cloud, unweighted
    y[0, 8] = np.nan  # a missing frame's observation may hold anything
    noise = pf.draw_noise(1, 1, t - 1, n, 2, "float32")
    init, trans, emit, _ = particle_functions(model)
    want = pf.scan_filter(tf.constant(y), tf.constant(observed), noise, init, trans, emit,
                          model.resample, model.threshold)
    got = StreamingFilter(path).run(y[0], observed=observed[0],
                                    noise=_frames_noise(noise, 2)[:, 0])
    assert np.asarray(want.resampled).sum() >= 3  # the resampling branch is exercised
    np.testing.assert_array_equal(got["resampled"], np.asarray(want.resampled[0], np.float32))
    for key, ref in [("estimate", want.filtered_means[0]), ("covariance", want.filtered_covs[0]),
                     ("log_likelihood", want.log_likelihoods[0]), ("ess", want.ess[0] / n)]:
        out = got[key] / (n if key == "ess" else 1)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(got["particles"][-1], want.particles[0], atol=1e-4)
    np.testing.assert_allclose(got["log_weights"][-1], want.log_weights[0], atol=1e-4)
    assert got["log_likelihood"][[0, 7, 8, 19]].tolist() == [0.0] * 4


def test_runner_draws_the_noise_and_log_z_hat_is_unbiased(exported):
    """A frame without ``noise`` gets the runner's draws (seeded, replayable from
    ``last_noise``), and over runs exp(log Z-hat - log Z) averages 1 within Monte Carlo error
    (log Z from the exact Kalman filter): the drawn noise has the right distribution."""
    model, path, _ = exported
    t = 15
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(size=(1, t, 1)), 1)
    exact = float(_lg("float64").filter(y).log_likelihood[0])
    f = StreamingFilter(path, seed=3)
    first, noises = [], []
    for y_t in y[0]:
        first.append(f.step(observation=y_t))
        noises.append(f.last_noise)
    assert noises[0].shape == (1, 64, 3) and 0.0 <= noises[0][..., 2].min()
    replay = StreamingFilter(path).run(y[0], noise=np.stack(noises)[:, 0])
    np.testing.assert_array_equal(replay["estimate"],
                                  np.stack([o["estimate"][0] for o in first]))
    log_z = np.array([f.run(y[0])["log_likelihood"].sum() for _ in range(60)])
    ratio = np.exp(log_z - exact)
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / np.sqrt(len(ratio)) + 0.02, (
        ratio.mean(), ratio.std())
    assert abs(np.median(log_z) - exact) < 0.5


def _pendulum_functions():
    """A nonlinear model: angle/velocity with sin gravity, observed through sin(angle)."""
    dt = 0.1

    def initial_sample(eps):
        return tf.stack([3.0 * eps[..., 0], 0.5 * eps[..., 1]], -1)

    def transition_sample(x, eps):
        th, om = x[..., 0], x[..., 1]
        om = om - dt * 9.8 * tf.sin(th) + 0.1 * eps[..., 1]
        return tf.stack([th + dt * om + 0.05 * eps[..., 0], om], -1)

    def emission_log_prob(x, y):
        z = (y[:, None, 0] - tf.sin(x[..., 0])) / 0.2
        return -0.5 * z * z - float(np.log(0.2 * np.sqrt(2 * np.pi)))

    return initial_sample, transition_sample, emission_log_prob, 2


def test_user_functions_export_and_stream_a_batch(tmp_path):
    """A nonlinear user model at N = 300 (the O(N) resampling), two sequences at once (batch
    2, the second with missing frames): each row streams like the TF scan."""
    functions = _pendulum_functions()
    model = ParticleFilter(functions=functions, num_particles=300, resample="stratified",
                           threshold=1.0)  # N >= LINEAR_FROM: the O(N) resampling
    with pytest.raises(ValueError, match="observation_dim"):
        export_tflite(model, str(tmp_path / "no.tflite"))
    model.observation_dim = 1
    path = str(tmp_path / "pend.tflite")
    meta = export_tflite(model, path, batch_size=2)
    assert max(p["max_rel"] for p in meta["parity"]["filter_step"].values()) < 1e-5
    assert meta["resample_method"] == "linear" and "SCATTER_ND" in meta["ops"]
    t = 12
    y = np.sin(np.linspace([0.3, -1.0], [2.0, 1.5], t)).T[:, :, None].astype(np.float32)
    observed = np.ones((2, t), np.float32)
    observed[1, [0, 6]] = 0.0
    noise = pf.draw_noise(5, 2, t - 1, 300, 2, "float32")
    want = pf.scan_filter(tf.constant(y), tf.constant(observed), noise, *functions[:3],
                          "stratified", 1.0)
    got = StreamingFilter(path).run(y, observed=observed,
                                    noise=np.moveaxis(_frames_noise(noise, 2), 0, 1))
    np.testing.assert_allclose(got["estimate"], want.filtered_means, atol=1e-4)
    np.testing.assert_allclose(got["log_likelihood"], want.log_likelihoods, atol=1e-4)
    np.testing.assert_allclose(got["particles"][:, -1], want.particles, atol=1e-4)


def test_zoo_export_reaches_a_dkf_particle_filter_with_its_learned_proposal(tmp_path, capsys):
    """``zoo-export`` on a saved ParticleFilter over a (small) DKF with the learned_prior
    proposal (q-RNN x each particle's transition): the file carries the filter network's state
    (``q_*``) and streams like ``ParticleFilter.filter`` given the same noise, missing frames
    (frame 0 included) too; the saved weights (perturbed from the seeded ones) are exported.
    A DKF with actions says it is not exported."""
    from zoo.cli import export as cli
    from zoo.deep_state_space import DeepKalmanFilter

    dkf = DeepKalmanFilter(observation_shape=(3,), latent_dim=2, likelihood="gaussian",
                           inference="rnn", rnn_units=4, seed=0)
    rng = np.random.default_rng(0)
    assert dkf.weights
    for v in dkf.weights:  # not the seeded initial weights: the saved ones must be exported
        v.assign(v + 0.2 * rng.normal(size=v.shape).astype(v.dtype))
    model = ParticleFilter(dkf, num_particles=32, seed=0, proposal="learned_prior")
    model.save(tmp_path / "pf.keras")
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "pf.keras"), "--out", str(out), "--tflite"]) == 0
    printed = capsys.readouterr().out
    assert "built-in only" in printed and "filter_step.estimate" in printed
    path = str(out / "model_float32.tflite")
    meta = read_sidecar(path)
    assert meta["observation_dim"] == 3 and meta["state_dim"] == 2
    assert meta["proposal"] == "learned_prior" and "q_rnn" in meta["state"]
    assert max(p["max_rel"] for p in meta["parity"]["filter_step"].values()) < 1e-5
    t = 10
    y = np.random.default_rng(3).normal(size=(1, t, 3)).astype(np.float32)
    observed = np.ones((1, t), np.float32)
    observed[0, [0, 4]] = 0.0
    want = model.filter(y, observed, seed=5, dtype="float32")
    noise = pf.draw_noise(5, 1, t - 1, 32, 2, "float32")  # what filter(seed=5) draws
    got = StreamingFilter(path).run(y[0], observed=observed[0],
                                    noise=_frames_noise(noise, 2)[:, 0])
    np.testing.assert_allclose(got["estimate"], want.filtered_means[0], atol=1e-4)
    np.testing.assert_allclose(got["log_likelihood"], want.log_likelihoods[0], atol=1e-4)
    acting = DeepKalmanFilter(observation_shape=(3,), latent_dim=2, action_dim=1, seed=0)
    with pytest.raises(NotImplementedError, match="actions"):
        particle_functions(ParticleFilter(acting, num_particles=8))


# ---------------------------------------------------------------------------- smoothing
def test_backward_simulation_converges_to_the_rts_smoother():
    """Backward simulation (Godsill, Doucet & West 2004) on a 2-D linear-Gaussian model with
    missing frames: the paths' mean and variance approach the exact Rauch-Tung-Striebel
    moments as N and M grow; the clouds are the filter's own (same noise, same numbers)."""
    from zoo.layers import particle_smoother as ps
    from zoo.particle_filter import linear_gaussian_functions

    lg = _lg("float64")
    params = lg.state_space_params()
    t = 30
    rng = np.random.default_rng(4)
    y = np.cumsum(rng.normal(size=(1, t, 1)), 1)
    observed = np.ones((1, t))
    observed[0, 10:13] = 0.0
    from zoo.layers import kalman_inference as ki

    exact = ki.rts_smoother(params, ki.kalman_filter(params, y, observed=observed))
    rts_mean = exact.smoothed_means.numpy()[0]
    rts_std = np.sqrt(np.diagonal(exact.smoothed_covs.numpy()[0], axis1=-2, axis2=-1))
    fns = linear_gaussian_functions(params)
    log_f = ps.linear_gaussian_transition_log_prob(params)
    errors = []
    for n, m in [(50, 10), (1000, 300)]:
        noise = pf.draw_noise(n, 1, t - 1, n, 2, "float64")
        clouds = ps.filter_clouds(y, *fns, num_particles=n, observed=observed, noise=noise)
        if n == 50:
            ref = pf.scan_filter(tf.constant(y), tf.constant(observed), noise, *fns[:3])
            np.testing.assert_allclose(clouds.log_likelihood, ref.log_likelihood, rtol=1e-12)
            np.testing.assert_allclose(clouds.particles[:, -1], ref.particles, rtol=1e-12)
        paths = ps.backward_simulation(clouds.particles, clouds.log_weights, log_f, m, seed=n)
        assert paths.shape == (1, m, t, 2)
        mean, cov = ps.smoothed_moments(paths)
        errors.append(np.sqrt(np.mean(((mean.numpy()[0] - rts_mean) / rts_std) ** 2)))
    # RMS error in RTS standard deviations, measured 0.39-0.64 at (50, 10) and 0.08-0.12 at
    # (1000, 300) over three seeds each
    assert errors[1] < 0.2 and errors[1] < 0.5 * errors[0], errors
    std = np.sqrt(np.diagonal(cov.numpy()[0], axis1=-2, axis2=-1))
    assert np.median(np.abs(std / rts_std - 1.0)) < 0.15  # measured 0.03-0.04


class _SegmentFilter:
    """A filter whose step has a dynamic output (UNSORTED_SEGMENT_SUM with data-dependent
    segment ids: TFLite allocates it at invoke), for the runner's fallback."""

    name = "segment_filter"

    def export_spec(self, batch_size=1):
        from zoo.export.protocol import ExportSpec, Signature, spec

        def init_state():
            return {"h": tf.zeros([1, 2])}

        def filter_step(h, observation):
            ids = tf.cast(observation[0] > 0.0, tf.int32)  # [3]: which sum each value joins
            return {"h": h + tf.math.unsorted_segment_sum(observation[0], ids, 2)[None]}

        return ExportSpec(
            {"init_state": Signature(init_state, {}, lambda rng: {}),
             "filter_step": Signature(filter_step, {"h": spec((1, 2), "h"),
                                                    "observation": spec((1, 3), "observation")},
                                      lambda rng: {"h": np.zeros((1, 2), np.float32),
                                                   "observation": rng.normal(size=(1, 3)).astype(
                                                       np.float32)})},
            {"model": "segment filter"}, state=("h",))


def test_runner_falls_back_when_an_output_is_dynamic(tmp_path):
    path = str(tmp_path / "seg.tflite")
    export_tflite(_SegmentFilter(), path)
    f = StreamingFilter(path)
    assert not f._step.direct  # no fixed output buffers: the signature runner's path
    y = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    out = f.run(y)
    want = np.cumsum(np.stack([np.where(y <= 0, y, 0).sum(1), np.where(y > 0, y, 0).sum(1)],
                              1), 0)
    np.testing.assert_allclose(out["h"], want, rtol=1e-6, atol=1e-6)

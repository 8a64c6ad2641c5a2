"""Export: TFLite parity with Keras, built-in ops only, SavedModel reload, quantization quality,
the no-TensorFlow streaming runner against the full-sequence filter, and clear errors.

Bounds (measured, with margin): float32 TFLite vs Keras within 1e-5 relative to each
output's scale (measured <= 7e-7); the float32 Kalman step against the float64 filter within
1e-5 relative over 60 frames with missing ones (measured 3e-7; 4e-7 after 1000 frames, no
drift); dynamic-range / int8 / float16 decoders within 1% of the float32 held-out
log-likelihood; dynamic-range file at most 30% and int8 at most 32% of the float32 one for this
84k-weight decoder (26% at MNIST size, benchmarks/README.md, section export).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.export import adapters, exporter, linalg
from zoo.export.exporter import export_saved_model, export_tflite, read_sidecar, verify
from zoo.export.protocol import ExportSpec, Signature, spec
from zoo.export.runtime import StreamingFilter
from zoo.categorical_vae import CategoricalVAE
from zoo.deep_state_space import DeepKalmanFilter, DeepMarkovModel
from zoo.dlgm import DLGM
from zoo.kalman_filter import KalmanFilterModel
from zoo.lstm_kalman_filter import LSTMKalmanFilter
from zoo.vae import VAE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32_RTOL = 1e-5


# ---------------------------------------------------------------------------- small-matrix algebra
@pytest.mark.parametrize("m", [1, 2, 3, 6])
def test_unrolled_cholesky_and_solves_match_float64(m):
    rng = np.random.default_rng(m)
    a = rng.standard_normal((5, m, m + 2))
    s = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(m)  # condition numbers up to ~1e3
    b = rng.standard_normal((5, m, 3))
    chol = linalg.small_cholesky(tf.constant(s, tf.float32)).numpy()
    ref = np.linalg.cholesky(s)
    np.testing.assert_allclose(chol, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(np.triu(chol, 1), 0.0)
    x = linalg.cholesky_solve(tf.constant(ref, tf.float32), tf.constant(b, tf.float32)).numpy()
    want = np.linalg.solve(s, b)
    cond = np.linalg.cond(s).max()
    np.testing.assert_allclose(x, want, atol=cond * 1e-6 * np.abs(want).max())
    logdet = linalg.log_det_from_cholesky(tf.constant(ref, tf.float32)).numpy()
    np.testing.assert_allclose(logdet, np.linalg.slogdet(s)[1], atol=1e-5 * m)


# ---------------------------------------------------------------------------- VAE family
def _vae_family():
    return {
        "vae_bernoulli": VAE(input_shape=(8,), latent_dim=2, hidden_units=(16,), seed=0),
        "vae_conv_gaussian_full": VAE(input_shape=(8, 8, 1), latent_dim=3, covariance="full",
                                      architecture="conv", conv_filters=(4, 8),
                                      likelihood="gaussian", gaussian_variance="per_pixel",
                                      seed=0),
        "dlgm": DLGM(input_shape=(8,), latent_dims=(3, 2), hidden_units=(16,), seed=0),
        "categorical_vae": CategoricalVAE(input_shape=(8,), num_variables=3, num_classes=4,
                                          hidden_units=(16,), seed=0),
    }


@pytest.fixture(scope="module")
def family():
    keras.utils.set_random_seed(0)
    return _vae_family()


@pytest.mark.parametrize("name", ["vae_bernoulli", "vae_conv_gaussian_full", "dlgm",
                                  "categorical_vae"])
def test_vae_family_tflite_matches_keras_with_builtin_ops(family, name, tmp_path):
    model = family[name]
    path = str(tmp_path / f"{name}.tflite")
    meta = export_tflite(model, path)
    assert set(meta["signatures"]) == {"decode", "sample", "sample_random", "encode"}
    report = verify(path, model)
    assert report.ops.builtin_only and not report.ops.flex, report.ops
    assert report.worst_rel() < F32_RTOL, str(report)
    # The sidecar: name, version, shapes, dtypes, quantization and the parity measured.
    side = read_sidecar(path)
    assert side["model"] == type(model).__name__ and side["package_version"]
    assert side["quantization"] == "float32" and side["parity"]["decode"]
    assert side["signatures"]["encode"]["inputs"]["x"] == {
        "shape": [1, *model.data_shape], "dtype": "float32"}
    # Independently of the adapter: the file's decoder against model.decode itself.
    from zoo.export.litert import load_interpreter

    interp = load_interpreter(path)
    ex = adapters.adapter_for(model).export_spec().signatures["decode"].example(
        np.random.default_rng(5))
    got = interp.get_signature_runner("decode")(**ex)
    latent = [ex[k] for k in sorted(ex)] if name == "dlgm" else ex["z"]
    want = model.decode(latent)["mean"].numpy()
    np.testing.assert_allclose(got["probs" if "probs" in got else "mean"], want,
                               rtol=F32_RTOL, atol=1e-6)


@pytest.mark.parametrize("name", ["vae_bernoulli", "vae_conv_gaussian_full"])
def test_sample_signatures_draw_from_the_likelihood(family, name, tmp_path):
    """Given noise and the runtime's built-in random op both give draws from p(x|z): their
    means and variances agree with the decoder's within 4 Monte Carlo standard errors."""
    model = family[name]
    path = str(tmp_path / "s.tflite")
    export_tflite(model, path, what=["sample", "sample_random"])
    from zoo.export.litert import list_ops, load_interpreter
    from zoo.export.runtime import SignatureCall

    assert {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL"} & set(list_ops(path).builtin)
    interp = load_interpreter(path)
    given, builtin = SignatureCall(interp, "sample"), SignatureCall(interp, "sample_random")
    z = np.random.default_rng(1).standard_normal((1, model.latent_dim)).astype(np.float32)
    shape, n = (1, *model.data_shape), 3000
    rng = np.random.default_rng(0)
    bern = name == "vae_bernoulli"
    noise = (rng.uniform(size=(n, *shape)) if bern else rng.standard_normal((n, *shape)))
    draws = {"sample": np.stack([given(z=z, noise=u.astype(np.float32))["x"] for u in noise]),
             "sample_random": np.stack([builtin(z=z)["x"] for _ in range(n)])}
    out = model.decode(z)
    mean = out["mean"].numpy()
    var = mean * (1 - mean) if bern else np.square(out["scale"].numpy())
    for which, x in draws.items():
        z_mean = (x.mean(0) - mean) / np.sqrt(var / n)
        assert np.abs(z_mean).max() < 4.5, (which, np.abs(z_mean).max())
        if bern:
            assert set(np.unique(x)) <= {0.0, 1.0}
        else:  # sample variance: standard error sqrt(2 / n) var for a Gaussian
            z_var = (x.var(0) - var) / (var * np.sqrt(2.0 / n))
            assert np.abs(z_var).max() < 4.5, (which, np.abs(z_var).max())
    assert not np.array_equal(draws["sample_random"][0], draws["sample_random"][1])


def test_saved_model_reloads_and_serves_the_same_numbers(family, tmp_path):
    model = family["dlgm"]
    path = str(tmp_path / "sm")
    meta = export_saved_model(model, path, normalization={"x": "binary in [0, 1]"})
    loaded = tf.saved_model.load(path)
    assert {"decode", "sample", "sample_random", "encode"} <= set(loaded.signatures)
    rng = np.random.default_rng(3)
    xi1, xi2 = rng.standard_normal((1, 3), "float32"), rng.standard_normal((1, 2), "float32")
    got = loaded.signatures["decode"](xi_1=tf.constant(xi1), xi_2=tf.constant(xi2))
    np.testing.assert_allclose(got["probs"], model.decode([xi1, xi2])["mean"], rtol=1e-6)
    x = rng.uniform(size=(1, 8)).astype("float32")
    enc = loaded.signatures["encode"](x=tf.constant(x))
    np.testing.assert_allclose(enc["loc_2"], model.encode(x)[1]["loc"], rtol=1e-6)
    assert json.load(open(os.path.join(path, "export.json")))["normalization"] == meta[
        "normalization"]


@pytest.fixture(scope="module")
def digits_vae():
    from zoo import datasets

    keras.utils.set_random_seed(0)
    train = datasets.load_arrays("digits", binarize="static")["image"].reshape(-1, 64)
    test = datasets.load_arrays("digits", split="test", binarize="static")["image"].reshape(
        -1, 64)
    model = VAE(input_shape=(64,), latent_dim=8, hidden_units=(256, 256), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(train, batch_size=64, epochs=8, verbose=0)
    return model, train, test


def test_quantized_decoders_keep_held_out_log_likelihood_and_shrink(digits_vae, tmp_path):
    model, train, test = digits_vae
    z = model.encode(test)["loc"].numpy()

    def held_out_log_lik(path):
        from zoo.export.litert import load_interpreter

        run = load_interpreter(path).get_signature_runner("decode")
        p = np.concatenate([run(z=z[i:i + 1])["probs"] for i in range(len(z))])
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.mean(np.sum(test * np.log(p) + (1 - test) * np.log1p(-p), -1))

    calib = {"decode": [{"z": model.encode(train[i:i + 1])["loc"].numpy()}
                        for i in range(0, 640, 10)]}
    sizes, lls = {}, {}
    for mode in (None, "dynamic", "float16", "int8"):
        path = str(tmp_path / f"{mode}.tflite")
        meta = export_tflite(model, path, what="decode", quantize=mode, representative_data=calib)
        assert meta["quantization"] == (mode or "float32")
        assert meta["size_bytes"] == os.path.getsize(path) and not verify(path, model).ops.custom
        sizes[mode], lls[mode] = os.path.getsize(path), held_out_log_lik(path)
    keras_ll = np.mean(model.head(model.decode(z)["params"], test)["log_prob"])
    assert abs(lls[None] - keras_ll) < 1e-4 * abs(keras_ll)
    for mode in ("dynamic", "float16", "int8"):
        assert abs(lls[mode] - lls[None]) < 0.01 * abs(lls[None]), (mode, lls)
    # 84k weights: 25% for the int8 weights plus float biases and the flatbuffer overhead
    assert sizes["dynamic"] <= 0.30 * sizes[None] and sizes["int8"] <= 0.32 * sizes[None], sizes
    assert sizes["float16"] <= 0.55 * sizes[None], sizes


# ---------------------------------------------------------------------------- Kalman filter
@pytest.fixture(scope="module")
def kalman():
    keras.utils.set_random_seed(0)
    model = KalmanFilterModel(4, action_dim=1, use_offsets=True, observation_cov="full",
                              dtype="float64")
    model.build((None, None, 2))
    rng = np.random.default_rng(0)
    for w in model.weights:  # move every parameter off its initial value
        w.assign(w.numpy() + 0.3 * rng.standard_normal(w.shape))
    return model


def test_kalman_stream_reproduces_float64_filter(kalman, tmp_path):
    path = str(tmp_path / "kf.tflite")
    meta = export_tflite(kalman, path)
    assert meta["state"] == ["state"]
    assert not verify(path, kalman).ops.custom
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.standard_normal((1, 60, 2)), 1)
    u = rng.standard_normal((1, 60, 1))
    observed = np.ones((1, 60), "float32")
    observed[0, [0, 7, 8, 30]] = 0.0
    y[0, 8] = np.nan  # a missing frame may hold anything
    ref = kalman.filter(y, actions=u, observed=observed)
    f = StreamingFilter(path)
    out = f.run(y[0], action=u[0], observed=observed[0])

    def close(got, want, name):
        want = np.asarray(want)
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 1e-5, f"{name}: relative error {err:.2e}"

    close(out["estimate"], ref.filtered_means[0], "estimate")
    close(out["uncertainty"], np.sqrt(np.diagonal(ref.filtered_covs[0], 0, -2, -1)),
          "uncertainty")
    state = f.unpack(out)  # the packed state of every frame, [60, 21] -> its pieces
    close(state["mean"], ref.filtered_means[0], "state mean")
    close(state["cov"], ref.filtered_covs[0], "state cov")
    np.testing.assert_array_equal(state["started"], 1.0)
    close(out["log_likelihood"], ref.log_likelihoods[0], "log_likelihood")
    # batch of sequences through a batch-2 export: the same numbers per series
    path2 = str(tmp_path / "kf2.tflite")
    export_tflite(kalman, path2, what="filter_step", batch_size=2)
    y2 = np.concatenate([y, y[:, ::-1]])
    u2, o2 = np.concatenate([u, u[:, ::-1]]), np.concatenate([observed, observed[:, ::-1]])
    f2 = StreamingFilter(path2)
    out2 = f2.run(y2, action=u2, observed=o2)
    ref2 = kalman.filter(y2, actions=u2, observed=o2)
    close(out2["estimate"], ref2.filtered_means, "batch estimate")
    close(f2.unpack(out2)["cov"], ref2.filtered_covs, "batch cov")


def test_kalman_packed_state_layout(kalman, tmp_path):
    """The sidecar documents the packed state; read by hand at its offsets, the state equals
    the model's moments: m_0, P_0, started 0 before the first frame, and the filter's
    filtered mean / covariance frame by frame (float32 within 1e-5 of the float64 filter)."""
    n = 4
    path = str(tmp_path / "kf.tflite")
    export_tflite(kalman, path)
    side = read_sidecar(path)
    assert side["state_layout"] == {"state": {
        "mean": {"offset": 0, "size": n, "shape": [n]},
        "cov": {"offset": n, "size": n * n, "shape": [n, n]},
        "started": {"offset": n + n * n, "size": 1, "shape": []}}}
    assert "row-major" in side["state_layout_doc"]
    step = side["signatures"]["filter_step"]
    assert step["inputs"] == {"state": {"shape": [1, n + n * n + 1], "dtype": "float32"},
                              "observation": {"shape": [1, 2], "dtype": "float32"},
                              "observed": {"shape": [1], "dtype": "float32"},
                              "action": {"shape": [1, 1], "dtype": "float32"}}
    assert set(step["outputs"]) == {"state", "estimate", "uncertainty", "log_likelihood"}
    assert step["outputs"]["state"] == step["inputs"]["state"]
    f = StreamingFilter(path)
    s0 = f.state["state"][0]
    params = kalman.state_space_params()
    np.testing.assert_allclose(s0[:n], params.initial_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s0[n:n + n * n].reshape(n, n), params.initial_cov, rtol=1e-6)
    assert s0[n + n * n] == 0.0
    rng = np.random.default_rng(7)
    y, u = rng.standard_normal((1, 20, 2)), rng.standard_normal((1, 20, 1))
    ref = kalman.filter(y, actions=u)
    for t in range(20):  # one step at a time, float64 frames without the batch axis
        out = f.step(observation=y[0, t], action=u[0, t])
        s = f.state["state"][0]
        np.testing.assert_array_equal(out["estimate"][0], s[:n])
        want_m, want_p = (np.asarray(ref.filtered_means[0, t]),
                          np.asarray(ref.filtered_covs[0, t]))
        assert np.abs(s[:n] - want_m).max() < 1e-5 * np.abs(want_m).max(), t
        assert np.abs(s[n:n + n * n] - want_p.ravel()).max() < 1e-5 * np.abs(want_p).max(), t
        assert s[n + n * n] == 1.0
    # An app may hold the state itself: the same frame from a given state leaves f.state alone.
    held = dict(f.state)
    again = f.step(state=held, observation=y[0, 0], action=u[0, 0])
    assert f.state["state"] is held["state"] and again["state"].shape == (1, n + n * n + 1)
    frame = dict(observation=y[0, 0], action=u[0, 0])
    with pytest.raises(ValueError, match=r"`state` must have shape \[1, 21\].*got \[1, 20\]"):
        f.step(state={"state": np.zeros((1, 20), np.float32)}, **frame)
    with pytest.raises(ValueError, match=r"The state misses \['state'\]"):
        f.step(state={"mean": s[:n], "cov": s[n:-1]}, **frame)
    with pytest.raises(TypeError, match="`observed` must be a float array.*bool"):
        f.step(observed=np.ones(1, bool), **frame)


def test_kalman_saved_model_step_matches(kalman, tmp_path):
    path = str(tmp_path / "kf_sm")
    export_saved_model(kalman, path)
    loaded = tf.saved_model.load(path)
    state = loaded.signatures["init_state"]()
    y = np.array([[0.5, -1.0]], np.float32)
    out = loaded.signatures["filter_step"](observation=tf.constant(y), observed=tf.ones([1]),
                                           action=tf.zeros([1, 1]), **state)
    ref = kalman.filter(y[None].astype("float64"), actions=np.zeros((1, 1, 1)))
    np.testing.assert_allclose(out["estimate"][0], ref.filtered_means[0, 0], rtol=1e-5)


def test_lstm_kalman_filter_streams_like_its_filter(tmp_path):
    """The exported step is the model's own ``filter_step``: streamed frame by frame, with
    missing frames (``observed`` 0, holding NaN), it gives the model's float32 filter with
    the same frames missing (measured 6e-7 relative over 50 frames)."""
    keras.utils.set_random_seed(0)
    model = LSTMKalmanFilter(state_dim=4, observation_dim=2, lstm_units=16,
                             observation_matrix=[[1, 0, 0, 0], [0, 1, 0, 0]])
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(w.numpy() + 0.1 * rng.standard_normal(w.shape))
    path = str(tmp_path / "lkf.tflite")
    meta = export_tflite(model, path)
    assert meta["state"][:2] == ["mean", "cov"] and len(meta["state"]) == 8
    assert list(meta["signatures"]["filter_step"]["inputs"])[-2:] == ["observation",
                                                                        "observed"]
    assert not verify(path, model).ops.custom
    z = np.cumsum(rng.standard_normal((1, 50, 2)), 1).astype("float32")
    observed = np.ones((1, 50), "float32")
    observed[0, [3, 4, 20, 49]] = 0.0
    z[0, 4] = np.nan  # a missing frame may hold anything
    ref = model.filter(z, observed)
    assert np.all(np.asarray(ref.log_likelihoods)[0, [3, 4, 20, 49]] == 0.0)
    out = StreamingFilter(path).run(z[0], observed=observed[0])
    for got, key in [("estimate", "filtered_means"), ("cov", "filtered_covs"),
                     ("log_likelihood", "log_likelihoods"),
                     ("process_variance", "process_variances"),
                     ("observation_variance", "observation_variances")]:
        want = np.asarray(getattr(ref, key)[0])
        err = np.abs(out[got] - want).max() / np.abs(want).max()
        assert err < 1e-5, f"{got}: relative error {err:.2e}"


# ---------------------------------------------------------------------------- DKF / DMM
@pytest.mark.parametrize("cls, inference", [(DeepKalmanFilter, "rnn"),
                                            (DeepMarkovModel, "st-l")])
def test_deep_state_space_stream_reproduces_filter_with_missing_frames(cls, inference, tmp_path):
    keras.utils.set_random_seed(0)
    model = cls(observation_shape=(6,), latent_dim=3, rnn_units=8, emission_units=(8,),
                transition_units=8, inference=inference, seed=0)
    path = str(tmp_path / "dss.tflite")
    meta = export_tflite(model, path)
    assert set(meta["signatures"]) == {"decode", "sample", "sample_random", "init_state",
                                       "filter_step"}
    report = verify(path, model)
    assert report.ops.builtin_only and report.worst_rel() < F32_RTOL, str(report)
    x = (np.random.RandomState(0).rand(1, 15, 6) > 0.5).astype("float32")
    observed = np.ones((1, 15), "float32")
    observed[0, [4, 5, 11]] = 0.0
    ref = model.filter({"observations": x, "observed": observed})
    out = StreamingFilter(path).run(x[0], observed=observed[0])
    for got, key in [("estimate", "filtered_means"), ("uncertainty", "filtered_scales"),
                     ("observation_mean", "observation_means")]:
        np.testing.assert_allclose(out[got], getattr(ref, key)[0], rtol=F32_RTOL, atol=1e-6,
                                   err_msg=got)


def test_smoothing_inference_exports_the_decoder_only():
    model = DeepMarkovModel(observation_shape=(4,), latent_dim=2, rnn_units=8,
                            emission_units=(8,), transition_units=8, inference="st-r",
                            filter_inference=None)  # no causal filter network (issue 18)
    assert set(exporter.export_spec_of(model).signatures) == {"decode", "sample",
                                                              "sample_random"}
    with pytest.raises(ValueError, match=r"Cannot export \['filter_step'\]"):
        exporter.export_spec_of(model, what="filter_step")


# ---------------------------------------------------------------------------- adapter registry
def test_adapter_registry_finds_the_adapter_a_model_names():
    """A model names its adapter (``export_adapter``); the registry maps names to adapters,
    never class paths, and finds the ``adapters_*`` modules by itself."""

    @adapters.register_adapter("test_dummy")
    class DummyAdapter:
        def __init__(self, model):
            self.model = model

        def export_spec(self, batch_size=1):
            n = self.model.size
            return ExportSpec({"decode": Signature(
                lambda z: {"x": 2.0 * z}, {"z": spec((batch_size, n), "z")},
                lambda rng: {"z": rng.standard_normal((batch_size, n)).astype("float32")})},
                {"model": "Fake"})

    class Fake:  # not a Keras model, no zoo base class: only the attribute counts
        export_adapter = "test_dummy"
        size = 3

    try:
        exportable = adapters.as_exportable(Fake())
        assert isinstance(exportable, DummyAdapter)
        es = exporter.export_spec_of(Fake(), what="decode")
        z = np.ones((1, 3), np.float32)
        np.testing.assert_array_equal(es.signatures["decode"].fn(z=z)["x"], 2 * z)
        assert {"latent", "kalman_filter", "lstm_kalman_filter",
                "deep_state_space"} <= set(adapters.registered_adapters())
        with pytest.raises(ValueError, match="already registered"):
            adapters.register_adapter("test_dummy")(type("Other", (), {}))
        Fake.export_adapter = "no_such_adapter"
        with pytest.raises(TypeError, match="no_such_adapter.*registered:"):
            adapters.adapter_for(Fake())
    finally:
        adapters._ADAPTERS.pop("test_dummy", None)
    for model, name in [(KalmanFilterModel, "kalman_filter"),
                        (LSTMKalmanFilter, "lstm_kalman_filter"),
                        (DeepKalmanFilter, "deep_state_space"), (VAE, "latent")]:
        assert model.export_adapter == name


def test_zoo_does_not_import_export_and_protocol_imports_no_adapter():
    """Lower floors never import higher ones: the models load without zoo.export, and
    zoo.export.protocol (what adapters build on) imports no adapter."""
    code = ("import sys; import zoo.export.protocol; "
            "assert 'zoo.export.adapters' not in sys.modules, 'protocol imports adapters'; "
            "import zoo.kalman_filter, zoo.lstm_kalman_filter, zoo.deep_state_space, zoo.vae; "
            "bad = [m for m in sys.modules if m.startswith('zoo.export.adapters')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    import re

    imports_export = re.compile(r"^\s*(from zoo\.export|import zoo\.export|from zoo import .*"
                                r"\bexport\b)", re.M)
    for folder, _, files in os.walk(os.path.join(ROOT, "zoo")):
        if os.path.basename(folder) == "cli":  # the command line calls both floors
            continue
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                assert not imports_export.search(text), os.path.join(folder, name)


# ---------------------------------------------------------------------------- a neural filter
@keras.saving.register_keras_serializable(package="test_export")
class TinyNeuralFilter(keras.Model):
    """Stand-in for a DKF/DMM: h_t = tanh(W [h_{t-1}, y_t, u_t, dt_t]),
    z_t = mu(h_t) + sigma(h_t) eps_t; it implements the export protocol itself."""

    def __init__(self, obs_dim=3, action_dim=2, hidden=8, latent=2, **kwargs):
        super().__init__(**kwargs)
        self.obs_dim, self.action_dim, self.hidden, self.latent = (obs_dim, action_dim,
                                                                    hidden, latent)
        self.cell = keras.layers.Dense(hidden, activation="tanh")
        self.loc = keras.layers.Dense(latent)
        self.scale = keras.layers.Dense(latent, activation="softplus")
        self.h0 = self.add_weight(shape=(hidden,), initializer="random_normal", name="h0")
        self.step(tf.zeros([1, hidden]), tf.zeros([1, obs_dim]), tf.zeros([1, action_dim]),
                  tf.zeros([1, 1]), tf.zeros([1, latent]))

    def step(self, h, y, u, dt, eps):
        h = self.cell(tf.concat([h, y, u, dt], -1))
        loc, scale = self.loc(h), self.scale(h)
        return h, loc + scale * eps, loc, scale

    def filter(self, ys, us, dts, eps):
        h = tf.tile(self.h0[None], [ys.shape[0], 1])
        outs = []
        for t in range(ys.shape[1]):
            h, z, loc, scale = self.step(h, ys[:, t], us[:, t], dts[:, t], eps[:, t])
            outs.append((z, loc, scale))
        return [np.stack([o[i] for o in outs], 1) for i in range(3)]

    def export_spec(self, batch_size=1):
        b = batch_size

        def init_state():
            return {"h": tf.tile(self.h0[None], [b, 1])}

        def filter_step(h, observation, action, time_gap, noise):
            h, z, loc, scale = self.step(h, observation, action, time_gap, noise)
            return {"h": h, "sample": z, "estimate": loc, "uncertainty": scale}

        def example(rng):
            return {"h": rng.uniform(-1, 1, (b, self.hidden)).astype("float32"),
                    **{k: rng.standard_normal((b, d)).astype("float32") for k, d in
                       [("observation", self.obs_dim), ("action", self.action_dim),
                        ("time_gap", 1), ("noise", self.latent)]}}

        inputs = {"h": spec((b, self.hidden), "h"),
                  "observation": spec((b, self.obs_dim), "observation"),
                  "action": spec((b, self.action_dim), "action"),
                  "time_gap": spec((b, 1), "time_gap"), "noise": spec((b, self.latent), "noise")}
        return ExportSpec({"init_state": Signature(init_state, {}, lambda rng: {}),
                           "filter_step": Signature(filter_step, inputs, example)},
                          {"model": "TinyNeuralFilter"}, state=("h",))


@pytest.fixture(scope="module")
def neural_filter_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = TinyNeuralFilter()
    path = str(tmp_path_factory.mktemp("nf") / "nf.tflite")
    export_tflite(model, path)
    return model, path


def test_neural_filter_plugs_in_and_streams_like_its_full_sequence_filter(neural_filter_file):
    model, path = neural_filter_file
    report = verify(path, model)
    assert report.ops.builtin_only and report.worst_rel() < F32_RTOL, str(report)
    rng = np.random.default_rng(2)
    t = 25
    ys, us = rng.standard_normal((1, t, 3), "float32"), rng.standard_normal((1, t, 2), "float32")
    dts, eps = rng.uniform(0.5, 2, (1, t, 1)).astype("float32"), rng.standard_normal(
        (1, t, 2), "float32")
    z, loc, scale = model.filter(ys, us, dts, eps)
    out = StreamingFilter(path).run(ys[0], action=us[0], time_gap=dts[0], noise=eps[0])
    np.testing.assert_allclose(out["sample"], z[0], rtol=F32_RTOL, atol=1e-6)
    np.testing.assert_allclose(out["estimate"], loc[0], rtol=F32_RTOL, atol=1e-6)
    np.testing.assert_allclose(out["uncertainty"], scale[0], rtol=F32_RTOL, atol=1e-6)


def test_runner_rejects_bad_input_clearly(neural_filter_file):
    _, path = neural_filter_file
    f = StreamingFilter(path)
    frame = dict(observation=np.zeros(3), action=np.zeros(2), time_gap=np.ones(1),
                 noise=np.zeros(2))
    f.step(**frame)  # float64 frames without the batch axis are accepted
    with pytest.raises(ValueError, match=r"`observation` must have shape \[1, 3\].*got \[4\]"):
        f.step(**{**frame, "observation": np.zeros(4)})
    with pytest.raises(TypeError, match="`action` must be a float array.*int64"):
        f.step(**{**frame, "action": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match=r"The state misses \['h'\]"):
        f.step(state={}, **frame)
    with pytest.raises(ValueError, match=r"Missing input\(s\) \['noise'\]"):
        f.step(**{k: v for k, v in frame.items() if k != "noise"})
    with pytest.raises(ValueError, match=r"Unknown input\(s\) \['speed'\]"):
        f.step(speed=np.zeros(1), **frame)
    f.state = None
    with pytest.raises(ValueError, match="No filter state: call reset"):
        f.step(**frame)
    with pytest.raises(ValueError, match="has no packed state"):
        f.unpack()
    with pytest.raises(ValueError, match="must have 5 frames"):
        f.run(np.zeros((5, 3)), action=np.zeros((4, 2)), time_gap=np.zeros((5, 1)),
              noise=np.zeros((5, 2)))


def test_runner_imports_no_tensorflow(neural_filter_file):
    _, path = neural_filter_file
    code = ("import sys, numpy as np; from export.runtime import StreamingFilter; "
            f"f = StreamingFilter({path!r}); "
            "o = f.run(np.zeros((3, 3)), action=np.zeros((3, 2)), time_gap=np.ones((3, 1)), "
            "noise=np.zeros((3, 2))); assert o['estimate'].shape == (3, 2); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


# ---------------------------------------------------------------------------- errors, CLI
class _CholeskyStep(keras.Model):
    """A filter whose step uses tf.linalg.cholesky, which TFLite only has as a Flex op."""

    def __init__(self):
        super().__init__(name="cholesky_step")
        self.w = self.add_weight(shape=(2, 2), initializer="identity")

    def export_spec(self, batch_size=1):
        def fn(observation):
            s = tf.matmul(self.w, self.w, transpose_b=True) + tf.eye(2)
            return {"chol": tf.linalg.cholesky(s + observation[:, :, None] * tf.eye(2) ** 2)}

        return ExportSpec({"decode": Signature(
            fn, {"observation": spec((1, 2), "observation")},
            lambda rng: {"observation": np.ones((1, 2), np.float32)})}, {})


def test_flex_ops_are_refused_unless_allowed(tmp_path):
    model = _CholeskyStep()
    with pytest.raises(Exception, match="(?i)cholesky|flex|select|not supported"):
        export_tflite(model, str(tmp_path / "no.tflite"))
    path = str(tmp_path / "flex.tflite")
    raw = exporter.convert(_saved(model, tmp_path), ["decode"], allow_flex=True)
    open(path, "wb").write(raw)
    with pytest.raises(ValueError, match="FlexCholesky"):
        verify(path, model)
    from zoo.export.litert import list_ops

    assert list_ops(path).flex == ("FlexCholesky",)


def _saved(model, tmp_path):
    path = str(tmp_path / "saved")
    export_saved_model(model, path)
    return path


def test_unexportable_model_and_unknown_signature_are_named():
    with pytest.raises(TypeError, match="Dense is not exportable.*export_spec"):
        exporter.export_spec_of(keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"Cannot export \['filter_step'\].*decode"):
        exporter.export_spec_of(VAE(input_shape=(4,), latent_dim=2, hidden_units=(4,)),
                                what="filter_step")


def test_docstring_example_runs():
    import doctest

    result = doctest.testmod(exporter, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_missing_litert_names_the_extra(monkeypatch):
    from zoo.export import litert

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[litert\]"):
        litert.require_litert()


def test_cli_exports_a_keras_file_and_prints_the_report(tmp_path, capsys):
    from zoo.cli import export as cli

    model = VAE(input_shape=(8,), latent_dim=2, hidden_units=(16,), seed=0)
    model.save(tmp_path / "vae.keras")
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "vae.keras"), "--out", str(out), "--what", "decode",
                     "--quantize", "float32", "dynamic",
                     "--normalization", '{"x": "pixels / 255"}']) == 0
    printed = capsys.readouterr().out
    assert "built-in only" in printed and "decode.probs" in printed
    assert (out / "model_float32.tflite").exists() and (out / "model_dynamic.tflite").exists()
    assert read_sidecar(str(out / "saved_model"))["normalization"] == {"x": "pixels / 255"}
    assert read_sidecar(str(out / "model_dynamic.tflite"))["quantization"] == "dynamic"

"""The shipped presets (issue 13 item 5): they load, reproduce the reference outputs stored
with them, refuse unknown names and other models' presets, and their TFLite files equal the
Keras model on fixed inputs."""

import numpy as np
import pytest
import tensorflow as tf

from zoo import VAE, DeepKalmanFilter, KalmanFilter, presets

VAE_PRESET = "vae_mnist_burda_k1"
NILE_PRESET = "nile_kalman"
PENDULUM_PRESET = "pendulum_dkf"


@pytest.fixture(scope="module")
def vae():
    return VAE.from_preset(VAE_PRESET)


def test_unknown_or_foreign_preset_gives_a_clear_error():
    with pytest.raises(ValueError, match=f"Unknown preset 'mnist'; available: .*{VAE_PRESET}"):
        VAE.from_preset("mnist")
    with pytest.raises(ValueError, match=f"is a VAE, not a KalmanFilterModel.*VAE.from_preset"):
        KalmanFilter.from_preset(VAE_PRESET)
    assert {VAE_PRESET, NILE_PRESET, PENDULUM_PRESET} <= set(presets.list_presets())
    files = presets.preset_files(VAE_PRESET)
    for name in ("config.json", "model.weights.h5", "MODEL_CARD.md", "reference.npz",
                 "model_float32.tflite", "model_float32.tflite.json"):
        assert name in files, name


def test_vae_preset_reproduces_its_stored_outputs(vae):
    ref = presets.reference(VAE_PRESET)
    np.testing.assert_allclose(vae.decode(ref["z"])["mean"], ref["probs"], rtol=1e-5, atol=1e-6)
    encoded = vae.encode(ref["x"])
    np.testing.assert_allclose(encoded["loc"], ref["loc"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(encoded["scale"], ref["scale"], rtol=1e-5, atol=1e-6)
    log_w = vae.log_weights(tf.constant(ref["x"]), 16, tf.constant([1, 2], tf.int32))
    np.testing.assert_allclose(log_w, ref["log_weights_seed_1_2_k16"], rtol=1e-5, atol=1e-3)
    # A trained model: the decoded digits are images a trained decoder is sure of, and the
    # card's measured bound is a finite MNIST-scale number.
    metrics = presets.preset_config(VAE_PRESET)["metrics"]
    assert -110 < metrics["iwae_log_likelihood_k5000"] < -80


def test_vae_preset_tflite_decoder_matches_keras(vae):
    from zoo.export.litert import load_interpreter

    ref = presets.reference(VAE_PRESET)
    path = presets.preset_files(VAE_PRESET)["model_float32.tflite"]
    decode = load_interpreter(path).get_signature_runner("decode")
    for i in range(len(ref["z"])):
        out = decode(z=ref["z"][i:i + 1])
        want = vae.decode(ref["z"][i:i + 1])
        np.testing.assert_allclose(out["probs"], want["mean"], atol=1e-5)
        np.testing.assert_allclose(out["logits"], want["params"], rtol=1e-4, atol=1e-4)


def test_nile_preset_filters_like_its_reference_and_its_tflite_step_agrees():
    from zoo.export.litert import load_interpreter

    model = KalmanFilter.from_preset(NILE_PRESET)
    ref = presets.reference(NILE_PRESET)
    out = model.filter(ref["observations"])
    np.testing.assert_allclose(out.filtered_means, ref["filtered_means"], rtol=1e-9)
    np.testing.assert_allclose(out.log_likelihood, ref["log_likelihood"], rtol=1e-9)
    # The exported float32 filter, frame by frame over the whole series.
    interp = load_interpreter(presets.preset_files(NILE_PRESET)["model_float32.tflite"])
    state = interp.get_signature_runner("init_state")()["state"]
    step = interp.get_signature_runner("filter_step")
    estimates = []
    for y in ref["observations"][0, :, :].astype("float32"):
        result = step(state=state, observation=y[None], observed=np.ones(1, "float32"))
        state = result["state"]
        estimates.append(result["estimate"][0, 0])
    np.testing.assert_allclose(estimates, ref["filtered_means"][0, :, 0], rtol=1e-4)


def test_pendulum_dkf_preset_filters_like_its_reference_and_its_tflite_step_agrees():
    """The pendulum DKF (issue 18's recipe, learned from observations alone) reproduces its
    stored filtered and smoothed means on three test sequences with missing frames, and its
    exported q-RNN filter_step, streamed frame by frame in LiteRT, gives the same estimates;
    its card's measured angle RMSE is that of a trained filter."""
    pytest.importorskip("ai_edge_litert")
    from zoo.export.runtime import StreamingFilter

    model = DeepKalmanFilter.from_preset(PENDULUM_PRESET)
    ref = presets.reference(PENDULUM_PRESET)
    inputs = {"observations": ref["observations"], "observed": ref["observed"]}
    out = model.filter(inputs)
    np.testing.assert_allclose(out.filtered_means, ref["filtered_means"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.filtered_scales, ref["filtered_scales"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out.observation_means, ref["observation_means"], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(model.smooth({"observations": ref["observations"]})
                               .smoothed_means, ref["smoothed_means"], rtol=1e-5, atol=1e-5)
    stream = StreamingFilter(presets.preset_files(PENDULUM_PRESET)["model_float32.tflite"])
    for i in range(len(ref["observations"])):
        got = stream.run(ref["observations"][i], observed=ref["observed"][i])
        np.testing.assert_allclose(got["estimate"], ref["filtered_means"][i], rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(got["observation_mean"], ref["observation_means"][i],
                                   rtol=1e-4, atol=1e-4)
    metrics = presets.preset_config(PENDULUM_PRESET)["metrics"]
    assert metrics["filter_angle_rmse"] < 0.1, metrics["filter_angle_rmse"]


def test_every_preset_file_is_package_data():
    """A non-editable install carries the presets: pyproject's package-data globs match every
    file under zoo/presets/ (a wheel built from this tree was checked to list them)."""
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    with open(root / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["zoo"]
    files = [p.relative_to(root / "zoo").as_posix()
             for p in (root / "zoo" / "presets").rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, missing

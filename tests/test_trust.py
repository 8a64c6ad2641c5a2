"""Trust checks across models: verify() refuses non-finite outputs; sample_weight is honoured
or refused; the Kalman family's bad inputs (covariances under tf.function/XLA, flags, empty
sequences, never-called models) and the StreamingFilter's NaN frames and fast path."""

import numpy as np
import pytest

from zoo.export.exporter import export_tflite, verify
from zoo.vae import VAE


def test_verify_fails_on_a_model_with_nan_weights(tmp_path):
    model = VAE(input_shape=(8,), latent_dim=2, hidden_units=(8,), seed=0)
    model.set_weights([np.full_like(w, np.nan) if w.dtype.kind == "f" else w
                       for w in model.get_weights()])
    path = str(tmp_path / "nan.tflite")
    with pytest.raises(ValueError, match="not finite"):
        export_tflite(model, path, what=["decode"])
        verify(path, model)


def test_models_without_sample_weight_support_refuse_it():
    """A model whose loss cannot weight examples says so instead of ignoring the weights."""
    from zoo import KalmanFilterModel

    model = KalmanFilterModel(state_dim=1)
    model.compile(optimizer="adam")
    y = np.random.default_rng(0).normal(size=(4, 10, 1)).astype("float32")
    with pytest.raises(ValueError, match="does not support `sample_weight`"):
        model.fit(y, sample_weight=np.ones(4, "float32"), epochs=1, verbose=0)


# --------------------------------------------------------------------------- Kalman family
def _lgssm(q=None, r=None, conv=np.asarray):
    from zoo.layers import kalman_inference as ki

    q = np.eye(2) if q is None else q
    r = np.eye(1) if r is None else r
    return ki.LGSSMParams(conv(np.zeros(2)), conv(np.eye(2)), conv(0.9 * np.eye(2)), conv(q),
                          conv(np.ones((1, 2))), conv(r))


NOT_PSD_Q = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1


def test_kalman_covariance_checks_hold_under_tf_function_and_xla():
    """A non-PSD Q or a negative R is refused in every mode (issue 12, item 8): on the host
    when its value is known at trace time (a captured constant), by a graph assert when it is
    a tf.function argument, and under jit_compile (asserts dropped) by a NaN log-likelihood,
    never a finite meaningless number; valid arguments give the eager value."""
    import tensorflow as tf

    from zoo.layers import kalman_inference as ki

    y = np.random.default_rng(0).normal(size=(2, 6, 1))
    exact = ki.log_likelihood(_lgssm(), y).numpy()
    for jit in (False, True):
        captured = _lgssm(q=NOT_PSD_Q, conv=tf.constant)
        with pytest.raises(ValueError, match="transition_cov.*positive semi-definite"):
            tf.function(lambda y: ki.log_likelihood(captured, y), jit_compile=jit)(y)
        negative_r = _lgssm(r=-np.eye(1))
        with pytest.raises(ValueError, match="observation_cov.*positive semi-definite"):
            tf.function(lambda y: ki.log_likelihood(negative_r, y), jit_compile=jit)(y)
    fn = tf.function(lambda y, q, r: ki.log_likelihood(_lgssm(q, r, tf.convert_to_tensor), y))
    with pytest.raises(tf.errors.InvalidArgumentError, match="transition_cov"):
        fn(y, NOT_PSD_Q, np.eye(1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="observation_cov"):
        fn(y, np.eye(2), -np.eye(1))
    jit = tf.function(lambda y, q, r: ki.log_likelihood(_lgssm(q, r, tf.convert_to_tensor), y),
                      jit_compile=True)
    assert np.all(np.isnan(jit(y, NOT_PSD_Q, np.eye(1)).numpy()))
    assert np.all(np.isnan(jit(y, np.eye(2), -np.eye(1)).numpy()))
    np.testing.assert_allclose(jit(y, np.eye(2), np.eye(1)).numpy(), exact, rtol=1e-12)


def test_flags_other_than_0_1_are_refused_naming_the_argument():
    """mask / observed values 0.5 or 2 and negative time gaps (issue 12, item 12): the
    Python API (eager), a tf.function (assert), the trainer's host check (sequences.check_finite,
    which every sequence model's validate_data calls), and the pure filter under XLA (NaN)."""
    import tensorflow as tf

    from zoo import KalmanFilterModel, sequences
    from zoo.layers import kalman_inference as ki
    from zoo.lstm_kalman_filter import LSTMKalmanFilter

    y = np.random.default_rng(0).normal(size=(2, 5, 1))
    half = np.full((2, 5), 0.5)
    model = KalmanFilterModel(2, dtype="float64")
    with pytest.raises(ValueError, match="`mask` must hold only 0 and 1, got 0.5"):
        model.filter(y, mask=half)
    with pytest.raises(ValueError, match="`observed` must hold only 0 and 1, got 2.0"):
        model.filter(y, observed=2 * np.ones((2, 5)))
    fn = tf.function(lambda y, m: model.filter(y, mask=m).log_likelihood)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`mask` must hold only 0 and 1"):
        fn(y, half)
    np.testing.assert_allclose(fn(y, np.ones((2, 5))),
                               ki.log_likelihood(model.state_space_params(), y))
    xla = tf.function(lambda y, m: ki.log_likelihood(_lgssm(), y, observed=m), jit_compile=True)
    assert np.all(np.isnan(xla(y, half).numpy()))
    with pytest.raises(ValueError, match="`observed` must hold only 0 and 1"):
        LSTMKalmanFilter(1).filter(y.astype("float32"), 2 * np.ones((2, 5), "float32"))
    for arrays, match in (({"mask": half}, "`mask` must hold only 0 and 1"),
                          ({"observed": half + 1.5}, "`observed` must hold only 0 and 1"),
                          ({"time_gaps": -np.ones((2, 5))}, "`time_gaps` must be finite and >= 0"),
                          ({"time_gaps": np.full((2, 5), np.nan)}, "`time_gaps` must be finite")):
        with pytest.raises(ValueError, match=match):
            sequences.check_finite({"observations": y, **arrays}, "DeepMarkovModel")
        with pytest.raises(ValueError, match=match):
            model.validate_data({"observations": y, **arrays})
    sequences.check_finite({"observations": y, "mask": np.ones((2, 5), bool),
                            "time_gaps": np.zeros((2, 5))}, "DeepMarkovModel")  # valid


def test_dkf_dmm_python_api_refuses_bad_flags_and_time_gaps():
    """The DKF/DMM called directly (not through the trainer) check mask / observed / time gaps
    on the host (issue 12, item 12), and still accept valid 0/1 flags."""
    from zoo import DeepKalmanFilter, DeepMarkovModel

    x = np.random.default_rng(0).normal(size=(2, 5, 2)).astype("float32")
    dkf = DeepKalmanFilter(observation_shape=(2,), latent_dim=2, use_time_gaps=True)
    ones = np.ones((2, 5), "float32")
    with pytest.raises(ValueError, match="`mask` must hold only 0 and 1, got 0.5"):
        dkf({"observations": x, "mask": 0.5 * ones, "time_gaps": ones})
    with pytest.raises(ValueError, match="`observed` has 4 time steps but the observations"):
        dkf({"observations": x, "observed": ones[:, :4], "time_gaps": ones})
    with pytest.raises(ValueError, match="`time_gaps` must be finite and >= 0"):
        dkf({"observations": x, "time_gaps": -ones})
    dmm = DeepMarkovModel(observation_shape=(2,), latent_dim=2)
    with pytest.raises(ValueError, match="`observed` must hold only 0 and 1, got 2.0"):
        dmm({"observations": (x > 0).astype("float32"), "observed": 2 * ones})
    out = dmm({"observations": (x > 0).astype("float32"), "observed": ones, "mask": ones})
    assert np.all(np.isfinite(out["elbo"]))


def test_empty_sequences_and_wrong_length_masks_are_clear_errors():
    from zoo import KalmanFilterModel, sequences
    from zoo.lstm_kalman_filter import LSTMKalmanFilter

    y = np.zeros((2, 5, 1))
    empty = np.zeros((1, 0, 1))
    for call in (lambda: KalmanFilterModel(2).filter(empty),
                 lambda: KalmanFilterModel(2)(empty),
                 lambda: LSTMKalmanFilter(1).filter(empty.astype("float32")),
                 lambda: sequences.check_finite({"observations": empty}, "DKF")):
        with pytest.raises(ValueError, match="0 time steps"):
            call()
    with pytest.raises(ValueError, match="`mask` has 4 time steps but the observations have 5"):
        KalmanFilterModel(2).filter(y, mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="`observed` has 3 sequences"):
        KalmanFilterModel(2).filter(y, observed=np.ones((3, 5)))
    with pytest.raises(ValueError, match="`observed` has 4 time steps"):
        LSTMKalmanFilter(1).filter(y.astype("float32"), np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match="`mask` has 4 time steps"):
        sequences.check_finite({"observations": y, "mask": np.ones((2, 4))}, "DKF")


def test_kalman_filter_with_full_covariances_fits_from_fresh():
    """transition_cov / observation_cov = "full" built inside fit's graph (it used .numpy())."""
    import keras

    from zoo import KalmanFilterModel

    y = np.random.default_rng(0).normal(size=(4, 8, 2)).astype("float32")
    model = KalmanFilterModel(2, transition_cov="full", observation_cov="full")
    model.compile(keras.optimizers.Adam(0.01))
    loss = model.fit(y, epochs=2, batch_size=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss)) and loss[1] < loss[0]
    params = model.state_space_params()
    for cov in (params.transition_cov, params.observation_cov):  # full: off-diagonal terms
        assert np.all(np.linalg.eigvalsh(cov) > 0) and np.any(np.abs(np.triu(cov, 1)) > 0)


def test_never_called_kalman_filter_smooths_forecasts_and_loads_weights(tmp_path):
    """smooth / forecast of a fresh model build it from the observations like filter does
    (the same numbers as the pure functions on its parameters); export of a fresh model says
    it has never seen observations; weights load into fresh KalmanFilter and LSTM-KF models
    (built from the file); a second build is harmless, a different size is refused."""
    from zoo import KalmanFilterModel
    from zoo.export.exporter import export_tflite
    from zoo.layers import kalman_inference as ki
    from zoo.lstm_kalman_filter import LSTMKalmanFilter

    y = np.random.default_rng(0).normal(size=(3, 7, 2))
    fresh = KalmanFilterModel(2, dtype="float64", observation_cov="full")
    smoothed = fresh.smooth(y).smoothed_means.numpy()
    params = fresh.state_space_params()
    filtered = ki.kalman_filter(params, y)
    np.testing.assert_allclose(smoothed, ki.rts_smoother(params, filtered).smoothed_means,
                               rtol=1e-10, atol=1e-12)
    other = KalmanFilterModel(2, dtype="float64", observation_cov="full")
    np.testing.assert_allclose(other.forecast(y, 3).observation_means,
                               ki.forecast(params, filtered, 3).observation_means, rtol=1e-10)
    with pytest.raises(ValueError, match="never seen observations"):
        export_tflite(KalmanFilterModel(2), str(tmp_path / "kf.tflite"))
    fresh.build((None, None, 2))  # again: nothing new, sizes checked
    with pytest.raises(ValueError, match="built for observation_dim=2"):
        fresh.build((None, None, 3))
    # Weights into never-called models.
    rng = np.random.default_rng(1)
    fresh.set_weights([w + 0.1 * rng.normal(size=w.shape) for w in fresh.get_weights()])
    fresh.save_weights(str(tmp_path / "kf.weights.h5"))
    loaded = KalmanFilterModel(2, dtype="float64", observation_cov="full")
    loaded.load_weights(str(tmp_path / "kf.weights.h5"))
    for got, want in zip(loaded.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(ki.log_likelihood(loaded.state_space_params(), y),
                               ki.log_likelihood(fresh.state_space_params(), y), rtol=1e-12)
    lstm = LSTMKalmanFilter(2, lstm_units=4)
    lstm.set_weights([w + 0.1 * rng.normal(size=w.shape) for w in lstm.get_weights()])
    lstm.save_weights(str(tmp_path / "lkf.weights.h5"))
    lstm2 = LSTMKalmanFilter(2, lstm_units=4)
    lstm2.load_weights(str(tmp_path / "lkf.weights.h5"))
    for got, want in zip(lstm2.get_weights(), lstm.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def kalman_stream(tmp_path_factory):
    from zoo import KalmanFilterModel
    from zoo.export.exporter import export_tflite

    rng = np.random.default_rng(0)
    model = KalmanFilterModel.from_matrices(0.9 * np.eye(3), rng.normal(size=(2, 3)),
                                            0.1 * np.eye(3), np.eye(2))
    path = str(tmp_path_factory.mktemp("stream") / "kf.tflite")
    export_tflite(model, path, what=("init_state", "filter_step"))
    return path


def test_streaming_filter_refuses_non_finite_frames(kalman_stream):
    """A NaN or Inf frame is refused naming the frame, and the held state is kept (issue 12,
    item 10); marked missing (observed 0) it is a prediction step like any missing frame."""
    from zoo.export.runtime import StreamingFilter

    ys = np.random.default_rng(2).normal(size=(6, 2))
    f = StreamingFilter(kalman_stream)
    for y in ys[:3]:
        f.step(observation=y)
    held = {k: v.copy() for k, v in f.state.items()}
    for bad in (np.array([np.nan, 0.0]), np.array([0.0, np.inf]), [[np.nan, 1.0]]):
        with pytest.raises(ValueError, match=r"frame 3: `observation` holds NaN or Inf"):
            f.step(observation=bad)
        np.testing.assert_array_equal(f.state["state"], held["state"])
    missing = f.step(observation=np.array([np.nan, np.nan]), observed=np.zeros(1, np.float32))
    assert np.all(np.isfinite(missing["state"])) and missing["log_likelihood"][0] == 0.0
    # The same frames with the missing one given as zeros agree exactly.
    g = StreamingFilter(kalman_stream)
    for y in ys[:3]:
        g.step(observation=y)
    ref = g.step(observation=np.zeros(2), observed=np.zeros(1, np.float32))
    np.testing.assert_array_equal(missing["state"], ref["state"])


def test_streaming_filter_readme_frames_take_the_fast_path(kalman_stream, monkeypatch):
    """Frames shaped [obs_dim] and float64 (the README's loop) go straight into the
    interpreter after one conversion, not through the checked path, with the same numbers."""
    from zoo.export.runtime import StreamingFilter

    ys = np.random.default_rng(3).normal(size=(5, 2))
    ref = StreamingFilter(kalman_stream)
    expected = [ref.step(observation=y.astype(np.float32)[None])["state"] for y in ys]
    f = StreamingFilter(kalman_stream)

    def slow(*args, **kwargs):
        raise AssertionError("took the checked (slow) path")
    monkeypatch.setattr(f, "_feed_checked", slow)
    for layout in (lambda y: y, lambda y: y[None], lambda y: y.astype(np.float32)):
        f.reset()
        got = [f.step(observation=layout(y))["state"] for y in ys]
        np.testing.assert_array_equal(np.stack(got), np.stack(expected))

"""Trust checks across models: verify() refuses non-finite outputs; sample_weight is honoured or refused."""

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

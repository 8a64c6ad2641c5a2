"""verify() refuses non-finite outputs: a diverged model must not pass with parity 0."""

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

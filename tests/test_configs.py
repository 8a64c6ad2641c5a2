"""The published-setup configs in configs/: each resolves through the trainer's config checks,
names its model, builds that model on inputs shaped like its data (MNIST images or 88-key
chorale steps) with the architecture its source states, and has its row in configs/README.md."""

import glob
import os

import numpy as np
import pytest
import yaml

from zoo.registry import model_entry
from zoo.training.config import resolve_config
from zoo.training.data import split_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def test_there_is_a_config_per_published_row():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"burda2016_vae_1layer_k1.yaml", "burda2016_iwae_1layer_k50.yaml",
            "burda2016_vae_2layer_k1.yaml", "burda2016_iwae_2layer_k50.yaml",
            "jang2017_categorical_vae.yaml", "rezende2014_dlgm.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_resolves_builds_its_model_and_is_in_the_readme(path):
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    name = config["model_name"]
    resolved = resolve_config(name, config=config)
    cls = model_entry(name).load()
    if resolved["data"]["name"] == "chorales":  # a sequence model: 88 keys per step
        model = cls(observation_shape=(88,), **resolved["model"])
        x = (np.random.default_rng(0).random((2, 6, 88)) < 0.1).astype("float32")
    else:
        assert resolved["data"]["name"] in ("mnist", "binarized_mnist")
        model = cls(input_shape=(28, 28, 1), **resolved["model"])
        x = (np.random.default_rng(0).random((2, 28, 28, 1)) < 0.5).astype("float32")
    bound = np.asarray(model.log_likelihood(x, num_samples=3).log_likelihood)
    assert bound.shape == (2,) and np.all(np.isfinite(bound)) and np.all(bound < 0)
    with open(os.path.join(ROOT, "configs", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert f"configs/{os.path.basename(path)}" in readme


def test_burda_configs_state_the_papers_setup():
    with open(os.path.join(ROOT, "configs", "burda2016_vae_1layer_k1.yaml")) as f:
        config = yaml.safe_load(f)
    resolved = resolve_config("vae", config=config)
    # Section 5.1: 2 x 200 tanh, 50 latent, minibatch 20, 3,280 passes, L_5000 on the whole
    # test set; MNIST 60,000 / 10,000 with dynamic binarization (footnote 2).
    assert resolved["model"]["hidden_units"] == [200, 200]
    assert resolved["model"]["activation"] == "tanh" and resolved["model"]["latent_dim"] == 50
    assert resolved["train"]["batch_size"] == 20
    assert resolved["train"]["epochs"] == sum(3**i for i in range(8)) == 3280
    assert resolved["train"]["eval_samples"] == 5000 and resolved["train"]["eval_examples"] == 0
    assert resolved["data"] == {"name": "mnist", "split_scheme": "60k", "binarize": "dynamic"}
    # The 60,000 training images include the validation part: no validation split.
    assert split_names(resolved) == (None, "test")
    with open(os.path.join(ROOT, "configs", "burda2016_vae_1layer_k1_fixed.yaml")) as f:
        assert split_names(resolve_config("vae", config=yaml.safe_load(f))) == ("valid", "test")
    # Appendix C's networks, weight for weight: encoder 784-200-200-(50 means, 50 scales),
    # decoder 50-200-200-784.
    model = model_entry("vae").load()(input_shape=(28, 28, 1), **resolved["model"])
    model(np.zeros((1, 28, 28, 1), "float32"))
    encoder = 784 * 200 + 200 + 200 * 200 + 200 + 2 * (200 * 50 + 50)
    decoder = 50 * 200 + 200 + 200 * 200 + 200 + 200 * 784 + 784
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == encoder + decoder

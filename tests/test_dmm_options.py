"""Options that set up our DMM as Pyro's DMM example (issue 17): the plain ReLU RNN cell,
and the benchmark's Keras form of Pyro's ClippedAdam against Pyro's own optimizer."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import DeepMarkovModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _relu_rnn(x, kernel, recurrent, bias):
    """h_t = relu(x_t W + h_{t-1} U + b) from h_0 = 0, NumPy, [batch, time, units]."""
    h = np.zeros((x.shape[0], kernel.shape[1]))
    out = []
    for t in range(x.shape[1]):
        h = np.maximum(x[:, t] @ kernel + h @ recurrent + bias, 0.0)
        out.append(h)
    return np.stack(out, 1)


def test_relu_rnn_cell_is_a_plain_relu_recurrence_and_trains():
    """rnn_cell="rnn": the backward inference RNN of ST-R is h_t = relu(W x_t + U h_{t+1} + b)
    over the reversed sequence (checked against NumPy to 1e-5), the GRU default is unchanged,
    the option survives get_config, and fit lowers the loss."""
    keras.utils.set_random_seed(0)
    kw = dict(observation_shape=(5,), latent_dim=3, rnn_units=6, emission_units=(8,),
              transition_units=8, seed=0, filter_inference=None)
    gru = DeepMarkovModel(**kw)
    model = DeepMarkovModel(rnn_cell="rnn", **kw)
    assert isinstance(gru.rnn_backward, keras.layers.GRU)
    assert isinstance(model.rnn_backward, keras.layers.SimpleRNN)
    assert model.rnn_backward.cell.activation is keras.activations.relu
    assert DeepMarkovModel.from_config(model.get_config()).rnn_cell == "rnn"
    with pytest.raises(ValueError, match="rnn_cell"):
        DeepMarkovModel(rnn_cell="lstm", **kw)

    rng = np.random.default_rng(0)
    x = (rng.random((4, 7, 5)) > 0.6).astype("float32")
    inputs = model.check_input(x)
    x_in = tf.concat([inputs["observations"], inputs["observed"][..., None]], -1)
    states = model._rnn_states(x_in, inputs["mask"])[0].numpy()
    cell = model.rnn_backward.cell
    want = _relu_rnn(x_in.numpy()[:, ::-1], cell.kernel.numpy(), cell.recurrent_kernel.numpy(),
                     cell.bias.numpy())[:, ::-1]
    np.testing.assert_allclose(states, want, atol=1e-5)
    assert (want > 0).any()

    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    xs = (rng.random((32, 7, 5)) < np.linspace(0.1, 0.8, 5)).astype("float32")
    before = model.evaluate(xs, batch_size=32, verbose=0, return_dict=True)["loss"]
    model.fit(xs, batch_size=8, epochs=8, verbose=0)
    after = model.evaluate(xs, batch_size=32, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.1, (before, after)


def test_keras_clipped_adam_matches_pyros_clipped_adam():
    """The benchmark's Keras optimizer with Pyro's settings (lr 3e-4 decayed by lrd before
    each step, betas (0.96, 0.999), elementwise clamp, coupled L2 weight decay, eps 1e-8)
    takes the same steps as pyro.optim.ClippedAdam on the same gradients, the clamp binding
    on some elements (to 1e-6 relative, 5 steps; lrd exaggerated to 0.9 to be visible)."""
    torch = pytest.importorskip("torch")
    clipped_adam = pytest.importorskip("pyro.optim.clipped_adam")
    from benchmarks.bench_pyro_dmm import pyro_optimizer

    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(4, 3))
    grads = [rng.normal(scale=8.0, size=(4, 3)) for _ in range(5)]  # |g| > 10 on some
    assert max(np.abs(g).max() for g in grads) > 10

    p_torch = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    ref = clipped_adam.ClippedAdam([p_torch], lr=3e-4, betas=(0.96, 0.999), clip_norm=10.0,
                                   lrd=0.9, weight_decay=2.0)
    var = keras.Variable(p0, dtype="float64")
    opt = pyro_optimizer(lr=3e-4, lrd=0.9, clip=10.0, weight_decay=2.0)
    for g in grads:
        p_torch.grad = torch.tensor(g, dtype=torch.float64)
        ref.step()
        opt.apply([tf.constant(g, tf.float64)], [var])
    np.testing.assert_allclose(var.numpy(), p_torch.detach().numpy(), rtol=1e-6)
    assert np.abs(var.numpy() - p0).max() > 1e-4  # it moved


def test_fan_in_initializer_is_torchs_and_the_dmm_default():
    """initializer="fan_in" (the DMM's default; the DKF keeps Glorot's): every Dense and RNN
    kernel is U(-1/sqrt(n), 1/sqrt(n)), n its fan-in (the width for recurrent kernels), as
    torch's nn.Linear / nn.RNN: within the bound, variance 1/(3n) to 10 %; the gated
    transition's linear map keeps its identity start."""
    from zoo import DeepKalmanFilter

    keras.utils.set_random_seed(0)
    model = DeepMarkovModel(observation_shape=(88,), latent_dim=100, rnn_units=200,
                            emission_units=(100,), transition_units=200, seed=0,
                            rnn_cell="rnn", filter_inference=None)
    assert model.initializer == "fan_in"
    assert DeepKalmanFilter(observation_shape=(3,), latent_dim=2, rnn_units=4).initializer \
        == "glorot"
    np.testing.assert_array_equal(model.transition.linear.kernel.numpy(), np.eye(100))
    cell = model.rnn_backward.cell
    kernels = [(cell.kernel.numpy(), 200), (cell.recurrent_kernel.numpy(), 200),
               (model.transition.proposal.kernel.numpy(), 200)]
    kernels += [(layer.kernel.numpy(), layer.kernel.shape[0])
                for layer in model.emission.layers if isinstance(layer, keras.layers.Dense)]
    assert len(kernels) == 5
    for w, fan_in in kernels:
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(w).max() <= bound + 1e-7
        assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.1, (w.shape, w.var() * 3 * fan_in)
    glorot = DeepMarkovModel.from_config({**model.get_config(), "initializer": "glorot"})
    assert glorot.transition.proposal.kernel.numpy().var() > 2 * kernels[2][0].var()


def test_pyro_dmm_config_reaches_the_optimizer_and_the_model():
    """configs/pyro_dmm_chorales.yaml (Pyro's example setup through zoo-train): Adam with
    betas (0.96, 0.999), eps 1e-8, the clamp, and lr 3e-4 * 0.99996^k at step k (ClippedAdam's
    lrd per step, to 1e-5 relative (float32) at k = 12 and 1200); the model options reach
    the model."""
    from zoo.training.config import read_config_file, resolve_config
    from zoo.training.loop import optimizer_for

    config = resolve_config("dmm", config=read_config_file(
        str(ROOT / "configs" / "pyro_dmm_chorales.yaml")))
    opt = optimizer_for(config["train"], steps_per_epoch=12)
    assert isinstance(opt, keras.optimizers.Adam)
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.clipvalue) == (0.96, 0.999, 1e-8, 0.0057)
    for k in (12, 1200):
        np.testing.assert_allclose(float(opt._learning_rate(k)), 3e-4 * 0.99996 ** k, rtol=1e-5)
    model = config["model"]
    assert (model["rnn_cell"], model["structured_posterior"], model["initializer"],
            model["rnn_units"], model["latent_dim"]) == ("rnn", "combiner", "fan_in", 600, 100)


def test_bench_summed_loss_is_pyros_scale_and_seed_table_pairs_seeds():
    """The benchmark's summed-loss DMM (Pyro's loss scale, so Pyro's clamp and L2 apply
    unchanged): its loss is the model's per-sequence, per-padded-step mean times B * T of the
    batch. The seed table: both systems per seed, their means over the seeds Pyro finished
    and the difference with the unpaired standard error."""
    from benchmarks.bench_pyro_dmm import seed_table, summed_loss_model

    kw = dict(observation_shape=(5,), latent_dim=2, rnn_units=4, emission_units=(4,),
              transition_units=4, seed=0, filter_inference=None)
    plain, summed = DeepMarkovModel(**kw), summed_loss_model()(**kw)
    x = {"observations": np.zeros((3, 7, 5), "float32"), "mask": np.ones((3, 7), "float32")}
    y_pred = {key: tf.constant([1.0, 2.0, 4.5]) for key in
              ("objective", "elbo", "kl", "reconstruction")}
    y_pred["steps"] = tf.constant([7.0, 5.0, 6.0])
    want = float(plain.compute_loss(x=x, y_pred=y_pred))
    np.testing.assert_allclose(want, 2.5, rtol=1e-6)
    np.testing.assert_allclose(float(summed.compute_loss(x=x, y_pred=y_pred)), want * 21,
                               rtol=1e-6)

    curves = {1: ([(2, 70.0, 900.0), (8, 16.0, 16.5)], 8),
              2: ([(2, 74.0, 60.0), (8, 15.5, 15.0)], 8),
              3: ([(2, 80.0, 60.0)], 3),  # Pyro stopped in its 4th epoch
              4: ([(2, 66.0, 2.5e4), (8, 16.5, 16.4)], 8)}
    table = seed_table(curves, 8)
    assert "| 3 | 80.00 | 60.00 | - | - | - | - | no (3 epochs) |" in table
    assert "| 4 | 66.00 | 2.5e+04 | - | - | 16.50 | 16.40 | yes |" in table
    # Pyro 16.0, 15.5, 16.5: 16.00 +- 0.29; ours 16.5, 15.0, 16.4: 15.97 +- 0.48
    assert "Pyro 16.00 +- 0.29, ours 15.97 +- 0.48; ours - Pyro -0.03 +- 0.56." in table, table


def test_bench_ours_takes_a_mixed_precision_policy_and_restores_the_global_one():
    """``Ours(policy="mixed_bfloat16")`` (a diagnose variant): the DMM's layers compute in
    bfloat16 with float32 weights, one epoch trains to a finite test -ELBO close to the float32
    model's from the same seed, and the global policy is float32 again afterwards."""
    import keras

    from benchmarks.bench_pyro_dmm import Ours, load_chorales

    data = load_chorales(quick=True)
    sizes = dict(latent_dim=3, emission_units=(4, 4), transition_units=4, rnn_units=5)
    runs = {}
    for policy in (None, "mixed_bfloat16"):
        ours = Ours(data, seed=0, sizes=sizes, policy=policy)
        assert keras.mixed_precision.global_policy().name == "float32"
        dense = [layer for layer in ours.model._flatten_layers()
                 if isinstance(layer, keras.layers.Dense)]
        assert {layer.compute_dtype for layer in dense} == {
            "bfloat16" if policy else "float32"}
        assert all(w.dtype == "float32" for w in ours.model.trainable_weights)
        ours.train_epoch()
        runs[policy] = ours.test_nll()
    assert np.isfinite(runs["mixed_bfloat16"])
    np.testing.assert_allclose(runs["mixed_bfloat16"], runs[None], rtol=0.05)

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from zoo.layers import BernoulliLikelihood, CategoricalLikelihood, GaussianLikelihood
from tests.test_case import check_gradients, run_layer_test

RNG = np.random.RandomState(0)


def test_bernoulli_log_prob_matches_formula_and_broadcasts_particles():
    logits = RNG.randn(2, 3, 4, 5).astype("float64")  # [batch, K, 4, 5]
    x = (RNG.rand(2, 4, 5) > 0.5).astype("float64")
    _, out = run_layer_test(BernoulliLikelihood, dict(event_ndims=2, dtype="float64"),
                            logits, call_kwargs=dict(x=x))
    p = special.expit(logits)
    expected = (x[:, None] * np.log(p) + (1 - x[:, None]) * np.log1p(-p)).sum((-2, -1))
    np.testing.assert_allclose(out["log_prob"].numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(out["mean"].numpy(), p, rtol=1e-12)


def test_bernoulli_rejects_data_outside_unit_interval_and_nans():
    head = BernoulliLikelihood()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        head(np.zeros((2, 3), "float32"), np.full((2, 3), 1.5, "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        head(np.zeros((2, 3), "float32"), np.full((2, 3), np.nan, "float32"))
    with pytest.raises(ValueError, match="rank"):
        head(np.zeros((2, 3, 4), "float32"), np.zeros((3,), "float32"))


@pytest.mark.parametrize("variance", ["fixed", "learned", "per_pixel"])
def test_gaussian_log_prob_matches_scipy(variance):
    width = 8 if variance == "per_pixel" else 4
    params = RNG.randn(3, width)
    x = RNG.randn(3, 4)
    _, out = run_layer_test(GaussianLikelihood,
                            dict(variance=variance, scale=0.7, dtype="float64"),
                            params, call_kwargs=dict(x=x))
    if variance == "per_pixel":
        loc, scale = params[:, :4], np.log1p(np.exp(params[:, 4:])) + 1e-3
    else:
        loc, scale = params, np.full_like(params, 0.7)
    expected = stats.norm(loc, scale).logpdf(x).sum(-1)
    np.testing.assert_allclose(out["log_prob"].numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(out["scale"].numpy(), scale, rtol=1e-9)


def test_gaussian_learned_scale_gets_gradients_and_bad_config():
    head = GaussianLikelihood(variance="learned", scale=0.5, dtype="float64")
    x = RNG.randn(5, 3)
    head(np.zeros((5, 3)), x)

    def nll(params):
        return -tf.reduce_sum(head(params, x)["log_prob"])

    check_gradients(nll, [RNG.randn(5, 3)])
    with tf.GradientTape() as tape:
        loss = nll(tf.zeros((5, 3), tf.float64))
    assert float(tape.gradient(loss, head.raw_scale)) != 0.0
    with pytest.raises(ValueError, match="variance"):
        GaussianLikelihood(variance="heteroscedastic")
    with pytest.raises(ValueError, match="even"):
        GaussianLikelihood(variance="per_pixel")(np.zeros((2, 5), "float32"))


def test_categorical_one_hot_and_indices_agree_with_numpy():
    logits = RNG.randn(4, 6, 3)
    labels = RNG.randint(0, 3, size=(4, 6))
    _, out = run_layer_test(CategoricalLikelihood, dict(event_ndims=1, dtype="float64"),
                            logits, call_kwargs=dict(x=labels))
    log_softmax = logits - special.logsumexp(logits, -1, keepdims=True)
    expected = np.take_along_axis(log_softmax, labels[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(out["log_prob"].numpy(), expected, rtol=1e-10)
    one_hot = CategoricalLikelihood(event_ndims=1, dtype="float64")(logits, np.eye(3)[labels])
    np.testing.assert_allclose(one_hot["log_prob"].numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(out["mean"].numpy(), np.exp(log_softmax), rtol=1e-10)


def test_event_ndims_must_be_non_negative():
    with pytest.raises(ValueError, match="event_ndims"):
        BernoulliLikelihood(event_ndims=-1)

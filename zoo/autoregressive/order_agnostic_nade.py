"""Order-agnostic deep NADE: one network for every ordering, ensembles over orderings."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.autoregressive.base import BinaryAutoregressiveModel, bernoulli_log_prob, degrees_first
from zoo.layers.common import check_positive_int, register
from zoo.layers.masked_dense import constant_initializer


@register
class OrderAgnosticNADE(BinaryAutoregressiveModel):
    r"""Order-agnostic deep NADE (Uria, Murray & Larochelle, "A Deep and Tractable Density
    Estimator", 2014).

    One MLP reads the observed part of x and which part that is, $[x \odot m, m]$, and
    returns the logits of every $p(x_i = 1 \mid x_{m})$. Any ordering $o$ defines a normalized
    model $p_o(x) = \prod_d p(x_{o_d} \mid x_{o_{<d}})$ (D passes, one per prefix). Training
    maximizes the ordering-averaged log-likelihood with Uria et al.'s unbiased estimator: draw
    $d \sim U\{0..D-1\}$ and a random set $m$ of d observed dimensions, and score
    $\frac{D}{D-d} \sum_{i \notin m} \log p(x_i \mid x_m)$. The model evaluated is the
    ensemble over ``num_orderings`` fixed random orderings,
    $p(x) = \frac1K \sum_k p_{o_k}(x)$ (``log_prob(x)``; one ordering: ``member=k``).
    Inpainting is exact: the observed pixels are put first in the ordering.

    Keras' ``evaluate`` reports the training estimator (with fixed noise: cheap); the exact
    log-likelihood is :meth:`log_prob` and ``evaluation`` (D passes per ordering).

    Args:
        input_shape: tuple. Shape of one example.
        hidden_units: tuple of int. MLP widths (the paper: 2 layers of 500, ReLU).
        activation: str. Hidden activation.
        num_orderings: int. Orderings of the ensemble (the paper: up to 128).
        seed: int or None. Seed of the orderings and of the training masks.

    Example:

    >>> import numpy as np
    >>> model = OrderAgnosticNADE(input_shape=(4,), hidden_units=(8,), num_orderings=2,
    ...                           seed=0)
    >>> x = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], "float32")
    >>> model.compile(optimizer="adam")
    >>> _ = model.fit(x, epochs=1, verbose=0)
    >>> tuple(model.log_prob(x).shape)
    (2,)
    """

    any_order = True

    def __init__(self, input_shape=(28, 28, 1), hidden_units=(500, 500),
                 activation: str = "relu", num_orderings: int = 8, seed: int | None = None,
                 **kwargs):
        super().__init__(input_shape, seed=seed, **kwargs)
        check_positive_int("num_orderings", num_orderings)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.num_orderings = num_orderings
        layers = [keras.layers.Dense(u, activation=activation, dtype=self.dtype_policy)
                  for u in self.hidden_units]
        self.network = keras.Sequential(
            [keras.Input((2 * self.event_size,)), *layers,
             keras.layers.Dense(self.event_size, dtype=self.dtype_policy)], name="network")
        rng = np.random.RandomState(seed if seed is not None else np.random.randint(2**31))
        orders = np.stack([rng.permutation(self.event_size) + 1
                           for _ in range(num_orderings)])
        self.degrees = self.add_weight(name="degrees", shape=orders.shape, trainable=False,
                                       dtype="float32", autocast=False,
                                       initializer=constant_initializer(orders))

    @property
    def num_members(self) -> int:
        return self.num_orderings

    def member_degrees(self):
        return self.degrees

    def logits_given_observed(self, x, observed):
        """Logits [batch, D] of every p(x_i = 1 | x_observed)."""
        dtype = self.compute_dtype
        observed = tf.cast(observed, dtype)
        inputs = tf.concat([tf.cast(x, dtype) * observed, observed], -1)
        return self.network(inputs)

    def logits_for_degrees(self, x, degrees):
        d = self.event_size
        degrees = tf.broadcast_to(tf.cast(degrees, tf.float32), tf.shape(x))
        # Row i: the dimensions before i in the ordering ([batch, D(i), D(j)]).
        before = tf.cast(degrees[:, None, :] < degrees[:, :, None], self.compute_dtype)
        xs = tf.broadcast_to(tf.cast(x, self.compute_dtype)[:, None, :], tf.shape(before))
        out = self.logits_given_observed(tf.reshape(xs, [-1, d]), tf.reshape(before, [-1, d]))
        out = tf.reshape(out, [-1, d, d])
        return tf.reduce_sum(out * tf.eye(d, dtype=out.dtype), -1)

    def conditional_logits(self, x, member=0):
        return self.logits_for_degrees(x, tf.gather(self.degrees, member))

    def inpainting_degrees(self, observed, member=0):
        """The member's ordering with the observed dimensions moved first: exact draws."""
        return degrees_first(observed, tf.gather(self.degrees, member)[None])

    def order_agnostic_estimate(self, x, seed):
        """Uria et al.'s unbiased estimate of E_o[log p_o(x)] per example (one pass)."""
        x = tf.cast(x, tf.float32)
        b, d = tf.shape(x)[0], self.event_size
        seeds = tf.random.experimental.stateless_split(seed, 2)
        u = tf.random.stateless_uniform([b, d], seeds[0])
        count = tf.random.stateless_uniform([b, 1], seeds[1], 0, d, dtype=tf.int32)
        rank = tf.argsort(tf.argsort(u, axis=-1), axis=-1)
        observed = tf.cast(rank < count, tf.float32)
        logits = tf.cast(self.logits_given_observed(x, observed), tf.float32)
        missing = tf.reduce_sum((1.0 - observed) * bernoulli_log_prob(x, logits), -1)
        return float(d) / tf.cast(d - count[:, 0], tf.float32) * missing

    def training_log_prob(self, x):
        return self.order_agnostic_estimate(x, self.seed_generator.next())

    def call(self, x, training=None):
        x = self.flat_input(x)
        if training:
            return {"log_prob": self.training_log_prob(x)}
        return {"log_prob": self.order_agnostic_estimate(x, tf.constant([0, 0]))}

    def exact_log_likelihood(self, x, member=None, batch_size: int = 100) -> np.ndarray:
        # D network passes per example and ordering: keep about 4096 rows per pass.
        return super().exact_log_likelihood(
            x, member, batch_size=max(1, min(batch_size, 4096 // self.event_size)))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "activation": self.activation, "num_orderings": self.num_orderings}

"""RNADE: NADE for real-valued data, mixture-of-Gaussians conditionals."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from zoo.base import scale_loss_for_distribution
from zoo.contract import EvalSettings, ImageInputs, ZooModel
from zoo.layers.autoregressive_network import input_degrees
from zoo.layers.common import assert_finite, check_positive, check_positive_int, register
from zoo.layers.masked_dense import constant_initializer
from zoo.layers.running_sum import exclusive_running_sum

HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


@register
class RNADE(ImageInputs, ZooModel, keras.Model):
    r"""Real-valued NADE (Uria, Murray & Larochelle, "RNADE: The real-valued neural
    autoregressive density-estimator", 2013).

    $$a_{d+1} = a_d + W_{:, o_d} x_{o_d},\ a_1 = c, \qquad h_d = \sigma(\rho_d\, a_d)$$
    $$p(x_{o_d} \mid x_{o_{<d}}) = \sum_{c=1}^{C} \pi_{dc}\,
      \mathcal N(x_{o_d};\ \mu_{dc}, \sigma_{dc}^2)$$

    with $\pi_d = \mathrm{softmax}(V^\pi_d h_d + b^\pi_d)$, $\mu_d = V^\mu_d h_d + b^\mu_d$,
    $\sigma_d = \exp(V^\sigma_d h_d + b^\sigma_d)$, all C-vectors per dimension. ``log_prob``
    is the exact log-density; ``sample`` draws dimension by dimension. Pixel data stored at 8
    bits has point masses that a density can exploit without bound: ``dequantization`` adds
    U[0, dequantization) noise to x in training and (with a fixed seed) in ``evaluation``,
    whose NLL is then the density of the dequantized data (in nats, not comparable with the
    binary models' NLL).

    Args:
        input_shape: tuple. Shape of one example.
        hidden_units: int. H, the shared hidden layer's width.
        components: int. C, Gaussians per conditional.
        input_order: str or sequence. Ordering of the dimensions.
        dequantization: float. Width of the uniform noise added to the data (0: none).
        seed: int or None. Seed of a random ordering and of the training noise.

    Example:

    >>> import numpy as np
    >>> model = RNADE(input_shape=(3,), hidden_units=8, components=2, seed=0)
    >>> x = np.random.RandomState(0).randn(16, 3).astype("float32")
    >>> model.compile(optimizer="adam")
    >>> _ = model.fit(x, epochs=1, verbose=0)
    >>> tuple(model.log_prob(x).shape), tuple(model.sample(4, seed=0).shape)
    ((16,), (4, 3))
    """

    export_adapter = None

    def __init__(self, input_shape=(28, 28, 1), hidden_units: int = 100, components: int = 10,
                 input_order="left-to-right", dequantization: float = 0.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or any(s < 1 for s in input_shape):
            raise ValueError(f"`input_shape` must be positive sizes, got {input_shape}.")
        check_positive_int("hidden_units", hidden_units)
        check_positive_int("components", components)
        check_positive("dequantization", dequantization, allow_zero=True)
        self.data_shape = input_shape
        self.event_size = d = int(np.prod(input_shape))
        self.hidden_units, self.components = hidden_units, components
        self.dequantization = float(dequantization)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        rng = np.random.RandomState(seed if seed is not None else np.random.randint(2**31))
        degrees = input_degrees(d, input_order, rng)
        self.input_order = (input_order if isinstance(input_order, str)
                            else [int(i) for i in degrees])
        h, c = hidden_units, components
        glorot = "glorot_uniform"
        self.w = self.add_weight(name="w", shape=(d, h), initializer=glorot)
        self.c = self.add_weight(name="c", shape=(h,), initializer="zeros")
        self.rho = self.add_weight(name="rho", shape=(d,), initializer="ones")
        self.v = self.add_weight(name="v", shape=(d, h, 3 * c), initializer=glorot)
        self.b = self.add_weight(name="b", shape=(d, 3 * c), initializer="zeros")
        self.degrees = self.add_weight(name="degrees", shape=(d,), trainable=False,
                                       dtype="float32", autocast=False,
                                       initializer=constant_initializer(degrees))

    # ------------------------------------------------------------------ contract
    @classmethod
    def data_defaults(cls, model_config: dict, data_config: dict, user_data: dict) -> dict:
        """Real-valued data: no binarization unless the user asks for one."""
        data = dict(data_config)
        if "binarize" not in user_data:
            data["binarize"] = None
        return data

    # ------------------------------------------------------------------ math
    def _flat(self, x, check=True):
        x = tf.convert_to_tensor(x)
        shape = tuple(x.shape[1:])
        if x.shape.rank is not None and shape not in (self.data_shape, (self.event_size,)):
            raise ValueError(f"RNADE expects `x` of shape [batch, "
                             f"{', '.join(map(str, self.data_shape))}] or [batch, "
                             f"{self.event_size}], got {tuple(x.shape)}.")
        x = tf.cast(tf.reshape(x, [-1, self.event_size]), self.compute_dtype)
        if not check:
            return x
        with tf.control_dependencies([assert_finite(x, "x")]):
            return tf.identity(x)

    def mixture(self, x):
        """Mixture parameters of every conditional: (log_weights, means, scales), each
        [batch, D, C], dimension i conditioned on the dimensions before it."""
        dtype = self.compute_dtype
        perm = tf.argsort(self.degrees)
        inverse = tf.argsort(perm)
        xo = tf.gather(tf.cast(x, dtype), perm, axis=1)
        a = tf.cast(self.c, dtype) + exclusive_running_sum(
            xo, tf.gather(tf.cast(self.w, dtype), perm))
        h = tf.sigmoid(tf.gather(tf.cast(self.rho, dtype), perm)[None, :, None] * a)
        out = (tf.einsum("bdh,dhk->bdk", h, tf.gather(tf.cast(self.v, dtype), perm))
               + tf.gather(tf.cast(self.b, dtype), perm))
        out = tf.gather(tf.cast(out, tf.float32), inverse, axis=1)
        c = self.components
        return (tf.nn.log_softmax(out[..., :c], -1), out[..., c:2 * c],
                tf.exp(tf.clip_by_value(out[..., 2 * c:], -12.0, 12.0)))

    def log_prob(self, x):
        """Exact log-density per example [batch]."""
        return self._log_prob(self._flat(x))

    def _log_prob(self, x):
        x = tf.cast(x, tf.float32)
        log_w, mu, scale = self.mixture(x)
        z = (x[..., None] - mu) / scale
        per = log_w - 0.5 * tf.square(z) - tf.math.log(scale) - HALF_LOG_2PI
        return tf.reduce_sum(tf.reduce_logsumexp(per, -1), -1)

    def call(self, x, training=None):
        x = self._flat(x)
        if training and self.dequantization > 0:
            u = tf.random.stateless_uniform(tf.shape(x), self.seed_generator.next())
            x = x + tf.cast(self.dequantization * u, x.dtype)
        return {"log_prob": self._log_prob(x)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        log_prob = y_pred["log_prob"]
        if sample_weight is None:
            loss = -tf.reduce_mean(log_prob)
        else:
            w = tf.reshape(tf.cast(sample_weight, log_prob.dtype), [-1])
            loss = -tf.reduce_sum(w * log_prob) / tf.maximum(tf.reduce_sum(w), 1e-12)
        return scale_loss_for_distribution(loss)

    def sample(self, n: int, seed: int = 0):
        """n exact draws [n, *input_shape], one dimension at a time in the ordering."""
        d, c = self.event_size, self.components
        order = tf.argsort(self.degrees)
        gumbel = -tf.math.log(-tf.math.log(
            tf.random.stateless_uniform([n, d, c], [seed, 1], 1e-7, 1.0 - 1e-7)))
        normal = tf.random.stateless_normal([n, d], [seed, 2])

        def body(t, x):
            log_w, mu, scale = self.mixture(x)
            pick = tf.one_hot(tf.argmax(log_w + gumbel, -1), c)
            draw = (tf.reduce_sum(pick * mu, -1) + tf.reduce_sum(pick * scale, -1) * normal)
            position = tf.one_hot(order[t], d)[None]
            return t + 1, x + position * (draw - x)

        _, x = tf.while_loop(lambda t, x: t < d, body, [tf.constant(0), tf.zeros([n, d])])
        return tf.reshape(x, [n, *self.data_shape])

    # ------------------------------------------------------------------ evaluation
    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        x = np.asarray(x, np.float32).reshape(len(x), -1)
        if self.dequantization > 0:
            noise = np.random.RandomState(settings.seed).uniform(size=x.shape)
            x = x + np.float32(self.dequantization) * noise.astype(np.float32)
        fn = tf.function(self._log_prob, reduce_retracing=True)
        lp = np.concatenate([np.asarray(fn(tf.constant(x[i:i + settings.batch_size])))
                             for i in range(0, len(x), settings.batch_size)])
        n = len(lp)
        return {"test_nll": float(-lp.mean()),
                "test_nll_se": float(lp.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                "likelihood_examples": int(n),
                "dequantization": self.dequantization}

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        from zoo import plots

        samples = np.clip(np.asarray(self.sample(32, seed=settings.seed)), 0.0, 1.0)
        return [plots.image_grid(samples, os.path.join(out_dir, "samples.png"),
                                 title="RNADE: exact samples (clipped to [0, 1])")]

    def get_config(self):
        config = super().get_config()
        config.update(input_shape=self.data_shape, hidden_units=self.hidden_units,
                      components=self.components, input_order=self.input_order,
                      dequantization=self.dequantization, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)

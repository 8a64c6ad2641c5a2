"""What every binary autoregressive model of the zoo shares: exact log-likelihood (one member
or the ensemble over orderings / masks), sequential sampling, inpainting, the model contract."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from zoo.base import scale_loss_for_distribution
from zoo.contract import EvalSettings, ImageInputs, ZooModel
from zoo.layers.common import assert_finite


def bernoulli_log_prob(x, logits):
    """log Bern(x; sigmoid(logits)) per dimension, stable: x * l - softplus(l)."""
    return x * logits - tf.math.softplus(logits)


def degrees_first(observed, degrees):
    """Per-example degrees that put the observed dimensions first, keeping ``degrees``' order
    within the observed and within the missing ones: [batch, D] (1-based)."""
    observed = tf.cast(observed, tf.float32)
    d = tf.cast(tf.shape(observed)[-1], tf.float32)
    key = (1.0 - observed) * d + tf.cast(degrees, tf.float32)
    return tf.cast(tf.argsort(tf.argsort(key, axis=-1), axis=-1) + 1, tf.float32)


class BinaryAutoregressiveModel(ImageInputs, ZooModel, keras.Model):
    r"""Base of the fully observed binary models $p(x) = \prod_d p(x_{o_d} \mid x_{o_{<d}})$.

    A subclass gives ``conditional_logits(x, member)``: the logits of every
    $p(x_i = 1 \mid x_{<i})$ in one tensor [batch, D] for the ordering (or mask draw)
    ``member`` of its ``num_members`` (``degrees`` [num_members, D] says which inputs come
    before which). This class turns that into:

    - ``log_prob(x, member=None)``: exact $\log p(x)$ per example; ``member=None`` is the
      ensemble $\log \frac1K \sum_k p_k(x)$ (a mixture, itself normalized);
    - ``sample(n, seed)``: D sequential passes, one dimension each;
    - ``inpaint(x, observed, seed, num_proposals)``: draws of the missing pixels given the
      observed ones by sampling-importance-resampling: the missing dimensions are drawn from
      their conditionals in the model's order (observed ones held), and each proposal is
      weighted by the factors of the observed dimensions it skipped,
      $w = \prod_{i \in obs} p(x_i \mid x_{<i})$, which makes the resampled draw exact as
      ``num_proposals`` grows (exact at any size for models that can put the observed
      dimensions first: order-agnostic NADE);
    - ``fit``: minimizes the mean negative log-likelihood in nats (``sample_weight`` honoured),
      training on a random member per batch when there are several.

    Inputs are images [batch, *input_shape] (or already flat [batch, D]) with values in
    {0, 1} (grey levels in [0, 1] are accepted as the Bernoulli cross-entropy).
    """

    export_adapter = "autoregressive"
    binarizes_inputs = True
    #: Whether the model has a conditional for any ordering (``logits_for_degrees``).
    any_order = False

    def __init__(self, input_shape=(28, 28, 1), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or any(s < 1 for s in input_shape):
            raise ValueError(f"`input_shape` must be positive sizes, got {input_shape}.")
        self.data_shape = input_shape
        self.event_size = int(np.prod(input_shape))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._compiled = {}

    # ------------------------------------------------------------------ subclass API
    @property
    def num_members(self) -> int:
        return 1

    def member_degrees(self):
        """[num_members, D] float tensor: the position (1-based) of each input in each
        member's ordering."""
        raise NotImplementedError

    def conditional_logits(self, x, member=0):
        """[batch, D] logits of p(x_i = 1 | x_before_i) in member ``member``'s ordering."""
        raise NotImplementedError

    def logits_for_degrees(self, x, degrees):
        """Logits for per-example degrees [batch, D]; only models that accept any ordering
        (order-agnostic NADE) implement it, and ``logits_given_observed(x, observed)``."""
        raise NotImplementedError

    def training_log_prob(self, x):
        """Per-example objective of ``fit`` (log-likelihood of a random member)."""
        if self.num_members == 1:
            return self.log_prob_flat(x, member=0)
        member = tf.random.stateless_uniform([], self.seed_generator.next(), 0,
                                             self.num_members, dtype=tf.int32)
        return self.log_prob_flat(x, member=member)

    # ------------------------------------------------------------------ contract
    def validate_data(self, arrays: dict) -> None:
        super().validate_data(arrays)
        image = np.asarray(arrays["image"])
        if image.size and (image.min() < 0 or image.max() > 1):
            raise ValueError(f"{type(self).__name__} models pixels in [0, 1]; the data's "
                             f"'image' array spans [{image.min()}, {image.max()}].")

    # ------------------------------------------------------------------ input
    def flat_input(self, x):
        """x as a [batch, D] float tensor of the compute dtype; ValueError naming ``x`` on a
        wrong shape; NaN/Inf check (a no-op under XLA)."""
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        shape = tuple(x.shape[1:])
        if x.shape.rank is not None and shape not in (self.data_shape, (self.event_size,)):
            raise ValueError(
                f"{type(self).__name__} expects `x` of shape [batch, "
                f"{', '.join(map(str, self.data_shape))}] or [batch, {self.event_size}] "
                f"(input_shape={self.data_shape}), got {tuple(x.shape)}.")
        x = self.as_flat(x)
        with tf.control_dependencies([assert_finite(x, "x")]):
            return tf.identity(x)

    def as_flat(self, x):
        """x as [batch, D] in the compute dtype, unchecked (exported graphs use this)."""
        return tf.cast(tf.reshape(x, [-1, self.event_size]), self.compute_dtype)

    # ------------------------------------------------------------------ likelihood
    def log_prob(self, x, member=None):
        """Exact log p(x) per example [batch]: member ``member``, or (None) the ensemble."""
        return self.log_prob_flat(self.flat_input(x), member)

    def log_prob_flat(self, x, member=None):
        """:meth:`log_prob` of a [batch, D] tensor, without the input checks."""
        if member is not None or self.num_members == 1:
            member = 0 if member is None else member
            logits = tf.cast(self.conditional_logits(x, member), tf.float32)
            return tf.reduce_sum(bernoulli_log_prob(tf.cast(x, tf.float32), logits), -1)
        per = tf.stack([self.log_prob_flat(x, member=k) for k in range(self.num_members)], -1)
        return tf.reduce_logsumexp(per, -1) - tf.math.log(float(self.num_members))

    def call(self, x, training=None):
        x = self.flat_input(x)
        return {"log_prob": self.training_log_prob(x) if training else self.log_prob_flat(x)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        log_prob = y_pred["log_prob"]
        if sample_weight is None:
            loss = -tf.reduce_mean(log_prob)
        else:
            w = tf.reshape(tf.cast(sample_weight, log_prob.dtype), [-1])
            loss = -tf.reduce_sum(w * log_prob) / tf.maximum(tf.reduce_sum(w), 1e-12)
        if self.losses:
            loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in self.losses])
        return scale_loss_for_distribution(loss)

    def _function(self, name, fn):
        if name not in self._compiled:
            self._compiled[name] = tf.function(fn, reduce_retracing=True)
        return self._compiled[name]

    def exact_log_likelihood(self, x, member=None, batch_size: int = 100) -> np.ndarray:
        """log p(x) for every example of ``x`` (NumPy, run in compiled batches)."""
        x = np.asarray(x)
        fn = self._function(f"log_prob_{member}", lambda b: self.log_prob(b, member=member))
        return np.concatenate([np.asarray(fn(x[i:i + batch_size]), np.float64)
                               for i in range(0, len(x), batch_size)])

    # ------------------------------------------------------------------ sampling
    def fill(self, x, observed, uniform, degrees, member=0, any_order: bool = False):
        """One sequential pass: the dimensions with ``observed`` = 0 are drawn in the order
        of ``degrees`` [batch, D] (1-based), each from its conditional given everything
        before it, using ``uniform`` [batch, D] noise (x_i = 1 when u_i < p_i). The
        conditionals are member ``member``'s (whose ordering ``degrees`` must be), or with
        ``any_order`` those of the ordering ``degrees`` itself. Returns the completed x, the
        log-weight sum_{observed i} log p(x_i | x_<i) and the probability p_i each drawn
        dimension was drawn with (0 where observed). Built-in TFLite ops only."""
        x = tf.cast(self.as_flat(x), tf.float32)
        observed = tf.cast(tf.reshape(observed, [-1, self.event_size]), tf.float32)
        uniform = tf.cast(tf.reshape(uniform, [-1, self.event_size]), tf.float32)
        degrees = tf.cast(tf.reshape(degrees, [-1, self.event_size]), tf.float32)
        degrees = tf.broadcast_to(degrees, tf.shape(x))
        x = x * observed
        order = tf.argsort(degrees, axis=-1)

        def logits_of(x):
            if any_order:
                return tf.cast(self.logits_for_degrees(x, degrees), tf.float32)
            return tf.cast(self.conditional_logits(tf.cast(x, self.compute_dtype), member),
                           tf.float32)

        def step_logits(x, t):
            if any_order:  # one pass: condition on the dimensions of degree <= t
                seen = tf.cast(degrees <= tf.cast(t, tf.float32), tf.float32)
                return tf.cast(self.logits_given_observed(x, seen), tf.float32)
            return logits_of(x)

        def body(t, x, drawn_with, log_weight):
            position = tf.one_hot(order[:, t], self.event_size, dtype=tf.float32)
            logits = step_logits(x, t)
            p = tf.sigmoid(logits)
            draw = tf.cast(uniform < p, tf.float32)
            step = position * (1.0 - observed)
            # the factor of an observed dimension, given the (final) dimensions before it
            log_weight = log_weight + tf.reduce_sum(
                position * observed * bernoulli_log_prob(x, logits), -1)
            return t + 1, x + step * (draw - x), drawn_with + step * p, log_weight

        _, x, drawn_with, log_weight = tf.while_loop(
            lambda t, *_: t < self.event_size, body,
            [tf.constant(0), x, tf.zeros_like(x), tf.zeros(tf.shape(x)[:1])])
        return x, log_weight, drawn_with

    def sample(self, n: int, seed: int = 0, member: int = 0):
        """n exact draws from member ``member`` (images [n, *input_shape], values 0/1)."""
        rng = tf.random.stateless_uniform([n, self.event_size], [seed, 1])
        zeros = tf.zeros([n, self.event_size])
        degrees = tf.gather(self.member_degrees(), member)
        fn = self._function("fill", self._fill_member)
        x, _, _ = fn(zeros, zeros, rng, tf.tile(degrees[None], [n, 1]), tf.constant(member))
        return tf.reshape(x, [n, *self.data_shape])

    def _fill_member(self, x, observed, uniform, degrees, member):
        return self.fill(x, observed, uniform, degrees, member)

    def inpainting_degrees(self, observed, member=0):
        """Orderings used to inpaint: the member's own (observed pixels held in place)."""
        degrees = tf.gather(self.member_degrees(), member)
        return tf.broadcast_to(degrees[None], tf.shape(observed))

    def inpaint(self, x, observed, seed: int = 0, num_proposals: int = 16, member: int = 0):
        """Draws of the missing dimensions given the observed ones (``observed`` 1 = seen),
        by sampling-importance-resampling over ``num_proposals`` sequential proposals (see
        the class docstring). Returns (images [batch, *input_shape], effective sample size
        of the weights [batch])."""
        x = self.flat_input(x)
        observed = tf.cast(tf.reshape(observed, [-1, self.event_size]), tf.float32)
        b, m = int(x.shape[0]), int(num_proposals)
        xs = tf.repeat(x, m, axis=0)
        obs = tf.repeat(observed, m, axis=0)
        degrees = self.inpainting_degrees(obs, member)
        uniform = tf.random.stateless_uniform(tf.shape(xs), [seed, 2])
        fn = self._function("inpaint", self._inpaint_fill)
        filled, log_w, _ = fn(xs, obs, uniform, degrees, tf.constant(member))
        filled, log_w = tf.reshape(filled, [b, m, -1]), tf.reshape(log_w, [b, m])
        pick = tf.random.stateless_categorical(log_w, 1, [seed, 3])[:, 0]
        chosen = tf.gather(filled, pick, batch_dims=1)
        w = tf.nn.softmax(log_w, -1)
        ess = 1.0 / tf.reduce_sum(tf.square(w), -1)
        return tf.reshape(chosen, [b, *self.data_shape]), ess

    def _inpaint_fill(self, x, observed, uniform, degrees, member):
        return self.fill(x, observed, uniform, degrees, member, any_order=self.any_order)

    # ------------------------------------------------------------------ evaluation
    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """Exact test NLL in nats (mean and standard error over the examples), one member
        and, for several, the ensemble."""
        single = self.exact_log_likelihood(x, member=0, batch_size=settings.batch_size)
        n = len(single)
        out = {"test_nll": float(-single.mean()),
               "test_nll_se": float(single.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
               "test_bits_per_dim": float(-single.mean() / (self.event_size * np.log(2))),
               "likelihood_examples": int(n), "members": self.num_members}
        if self.num_members > 1:
            ens = self.exact_log_likelihood(x, member=None, batch_size=settings.batch_size)
            out["test_nll_ensemble"] = float(-ens.mean())
            out["test_nll_ensemble_se"] = float(ens.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        return out

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        from zoo import plots

        paths = [plots.image_grid(np.asarray(self.sample(32, seed=settings.seed)),
                                  os.path.join(out_dir, "samples.png"),
                                  title=f"{type(self).__name__}: exact samples")]
        data = np.asarray(x[:8], np.float32).reshape(-1, *self.data_shape)
        observed = top_half_mask(len(data), self.data_shape)
        filled = [np.asarray(self.inpaint(data, observed, seed=settings.seed + k,
                                          num_proposals=8)[0]) for k in range(2)]
        shown = data * observed.reshape(data.shape) + 0.5 * (1 - observed.reshape(data.shape))
        paths.append(plots.image_rows([data, shown, *filled],
                                      ["data", "observed (top half)", "inpainted", "inpainted"],
                                      os.path.join(out_dir, "inpainting.png")))
        return paths

    def get_config(self):
        config = super().get_config()
        config.update(input_shape=self.data_shape, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**{k: tuple(v) if isinstance(v, list) and k in ("input_shape",
                                                                  "hidden_units") else v
                      for k, v in config.items()})


def top_half_mask(n: int, data_shape) -> np.ndarray:
    """[n, D] observed flags: 1 for the top half of each image's rows."""
    mask = np.zeros(data_shape, np.float32)
    mask[: max(1, data_shape[0] // 2)] = 1.0
    return np.tile(mask.reshape(1, -1), [n, 1])

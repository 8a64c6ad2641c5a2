r"""Hopfield networks: associative memory with Hebbian or Storkey storage."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from zoo.boltzmann.common import BoltzmannModel, mean_and_error
from zoo.layers.boltzmann_energy import hopfield_energy
from zoo.layers.common import check_choice, register
from zoo.layers.gibbs import hopfield_update

RULES = ("hebbian", "storkey")
UPDATES = ("synchronous", "asynchronous")


@register
class HopfieldNetwork(BoltzmannModel):
    r"""Hopfield network on states $s \in \{-1, 1\}^d$ (Hopfield, "Neural Networks and Physical
    Systems with Emergent Collective Computational Abilities", 1982).

    $$E(s) = -\tfrac12 s^\top W s,\qquad s_i \leftarrow \operatorname{sign}(W_{i:} s).$$

    Patterns $\xi^\mu$ (images binarized at 1/2, $s = 2x - 1$) are stored by the Hebbian rule
    $W = \frac1d \sum_\mu \xi^\mu {\xi^\mu}^\top$ (zero diagonal), whose capacity is about
    $0.138\,d$ random patterns (Amit, Gutfreund & Sompolinsky 1985), or by Storkey's
    incremental rule ("Increasing the Capacity of a Hopfield Network without Sacrificing
    Functionality", 1997), $\Delta W_{ij} = \frac1d(\xi_i\xi_j - \xi_i h_{ji} - h_{ij}\xi_j)$
    with $h_{ij} = \sum_{k \ne i, j} W_{ik}\xi_k$. Recall iterates synchronous (all units at
    once) or asynchronous (one unit at a time, random order; the energy never rises) updates.
    ``fit`` stores the first ``max_patterns`` training examples it sees (``loss``: the fraction
    of bits wrong when the stored patterns are recalled from cues with ``cue_noise`` of their
    bits flipped).

    Args:
        visible_dim: int. Number of units d.
        rule: str. ``"hebbian"`` or ``"storkey"``.
        update: str. ``"synchronous"`` or ``"asynchronous"``.
        max_iterations: int. Recall sweeps.
        cue_noise: float. Fraction of flipped bits in the cues of ``loss`` and ``evaluation``.
        max_patterns: int. How many examples ``fit`` stores (kept in ``memory``).
        image_shape, seed: as for :class:`zoo.RBM`.

    Example:

    >>> import numpy as np
    >>> patterns = np.sign(np.random.default_rng(0).normal(size=(3, 64))).astype("float32")
    >>> net = HopfieldNetwork(visible_dim=64)
    >>> net.store(patterns)
    >>> cue = patterns.copy(); cue[:, :6] *= -1
    >>> bool(np.all(net.recall(cue) == patterns))
    True
    """

    export_adapter = "hopfield"

    def __init__(self, visible_dim: int, rule: str = "hebbian", update: str = "synchronous",
                 max_iterations: int = 20, cue_noise: float = 0.1, max_patterns: int = 100,
                 image_shape=None, seed: int | None = None, **kwargs):
        super().__init__(visible_dim, image_shape=image_shape, seed=seed, **kwargs)
        check_choice("rule", rule, RULES)
        check_choice("update", update, UPDATES)
        if int(max_iterations) < 1:
            raise ValueError(f"`max_iterations` must be >= 1, got {max_iterations}.")
        if not 0 <= cue_noise < 0.5:
            raise ValueError(f"`cue_noise` must be in [0, 0.5), got {cue_noise}.")
        if int(max_patterns) < 1:
            raise ValueError(f"`max_patterns` must be >= 1, got {max_patterns}.")
        self.max_patterns = int(max_patterns)
        self.rule = rule
        self.update = update
        self.max_iterations = int(max_iterations)
        self.cue_noise = float(cue_noise)
        self.coupling = self.add_weight(shape=(visible_dim, visible_dim), initializer="zeros",
                                        trainable=False, name="coupling")
        self.stored = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                      name="stored")
        # the patterns ``fit`` stored (the first ``max_patterns`` examples it saw)
        self.memory = self.add_weight(shape=(self.max_patterns, visible_dim),
                                      initializer="zeros", trainable=False, name="memory")
        self.built = True

    # ------------------------------------------------------------------ the model's math
    def spins(self, x):
        """Values in [0, 1] or {-1, 1} -> states in {-1, 1} [batch, d] (+1 above 1/2)."""
        x = tf.reshape(tf.cast(x, self.compute_dtype), [-1, self.visible_dim])
        return tf.where(x > 0.5, 1.0, -1.0)

    def store(self, patterns):
        """Add patterns ({-1, 1} or [0, 1] values, [n, d]) to the couplings (any number;
        ``fit`` stops at ``max_patterns`` and keeps them in ``memory``)."""
        self.coupling.assign(self._stored_weights(self.spins(patterns)))
        self.stored.assign_add(tf.cast(tf.shape(patterns)[0], self.stored.dtype))

    def memorize(self, xi):
        """Store as many of the patterns xi [n, d] as ``max_patterns`` leaves room for."""
        count = tf.cast(self.stored, tf.int32)
        take = tf.minimum(tf.shape(xi)[0], tf.maximum(self.max_patterns - count, 0))
        new = xi[:take]
        self.coupling.assign(self._stored_weights(new))
        rows = count + tf.range(take)
        self.memory.assign(tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.memory),
                                                       rows[:, None], new))
        self.stored.assign_add(tf.cast(take, self.stored.dtype))

    def stored_patterns(self):
        """The patterns ``fit`` stored, [stored, d] in {-1, 1}."""
        return tf.convert_to_tensor(self.memory)[: tf.cast(self.stored, tf.int32)]

    def _stored_weights(self, xi):
        d = float(self.visible_dim)
        w = tf.convert_to_tensor(self.coupling)
        if self.rule == "hebbian":
            w = w + tf.matmul(xi, xi, transpose_a=True) / d
            return tf.linalg.set_diag(w, tf.zeros([self.visible_dim], w.dtype))

        def body(k, w):
            p = xi[k]
            h = tf.linalg.matvec(w, p)  # local fields h_i = sum_k W_ik p_k
            # h_ij = h_i - W_ii p_i - W_ij p_j (W_ii = 0)
            hij = h[:, None] - w * p[None, :]
            dw = (p[:, None] * p[None, :] - p[:, None] * tf.transpose(hij) - hij * p[None, :]) / d
            return k + 1, tf.linalg.set_diag(w + dw, tf.zeros([self.visible_dim], w.dtype))

        _, w = tf.while_loop(lambda k, _: k < tf.shape(xi)[0], body, (tf.constant(0), w))
        return w

    def energy(self, s):
        """E(s) per state [batch]."""
        return hopfield_energy(self.spins(s), tf.convert_to_tensor(self.coupling))

    def recall(self, cue, seed: int = 0, iterations: int | None = None):
        """States reached from ``cue`` after ``max_iterations`` updates ({-1, 1}, NumPy)."""
        s = self.spins(cue)
        fn = tf.function(self._recall, reduce_retracing=True)
        return np.asarray(fn(s, tf.constant([int(seed), 23]), iterations or self.max_iterations))

    def _recall(self, s, seed, iterations: int):
        w = tf.convert_to_tensor(self.coupling)
        for k in range(iterations):
            order = None
            if self.update == "asynchronous":
                order = tf.argsort(tf.random.stateless_uniform(
                    [self.visible_dim], tf.random.experimental.stateless_fold_in(seed, k)))
            s = hopfield_update(s, w, order=order)
        return s

    def corrupt(self, s, fraction: float, seed):
        flips = tf.random.stateless_uniform(tf.shape(s), seed, dtype=s.dtype) < fraction
        return tf.where(flips, -s, s)

    def recall_error(self, s, seed):
        """Fraction of bits wrong per example after recall from a corrupted cue."""
        if tf.executing_eagerly():
            return tf.function(self._recall_error)(s, seed)
        return self._recall_error(s, seed)

    def _recall_error(self, s, seed):
        out = self._recall(self.corrupt(s, self.cue_noise, seed), seed + 1, self.max_iterations)
        return tf.reduce_mean(tf.cast(tf.not_equal(out, s), s.dtype), -1)

    def call(self, x, training=None):
        return self._recall(self.spins(x), tf.constant([0, 23]), self.max_iterations)

    # ------------------------------------------------------------------ training
    def train_step(self, data):
        x = self.visible(data)
        self.memorize(tf.where(x > 0.5, 1.0, -1.0))
        seed = tf.cast(keras.random.randint([2], 0, 2 ** 30, seed=self.seed_generator), tf.int32)
        self.loss_tracker.update_state(self.recall_error(self.stored_patterns(), seed))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        xi = tf.where(self.visible(data) > 0.5, 1.0, -1.0)
        self.loss_tracker.update_state(self.recall_error(xi, tf.constant([0, 29])))
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------------------------ evaluation
    def evaluation(self, x, y, arrays, settings) -> dict:
        """Recall of the stored patterns from cues with ``cue_noise`` of their bits flipped,
        the load alpha = patterns / d (Hebbian capacity about 0.138), and how far each test
        example's recall lands from its nearest stored pattern (fraction of bits)."""
        memory = self.stored_patterns()
        seed = tf.constant([settings.seed, 31])
        err, err_se = mean_and_error(self.recall_error(memory, seed)) if len(memory) else (
            float("nan"), float("nan"))
        out = {"stored_recall_error": err, "stored_recall_error_se": err_se,
               "stored_patterns": int(self.stored.numpy()),
               "load": float(self.stored.numpy()) / self.visible_dim,
               "mean_energy_per_unit": float(np.mean(self.energy(memory))) / self.visible_dim
               if len(memory) else float("nan")}
        if len(memory):
            recalled = self.recall(np.asarray(x), seed=settings.seed)
            overlap = recalled @ np.asarray(memory).T / self.visible_dim  # in [-1, 1]
            out["test_distance_to_memory"] = float(np.mean((1 - overlap.max(1)) / 2))
        return out

    def pictures(self, x, arrays, out_dir, settings) -> list:
        from zoo import plots

        if not self.image_shape:
            return []
        s = self.stored_patterns()[:8]
        if len(s) == 0:
            return []
        seed = tf.constant([settings.seed, 37])
        cue = self.corrupt(s, self.cue_noise, seed)
        out = self._recall(cue, seed + 1, self.max_iterations)
        as_img = lambda t: self.as_images((np.asarray(t) + 1.0) / 2.0)  # noqa: E731
        return [plots.image_rows([as_img(s), as_img(cue), as_img(out)],
                                 ["pattern", f"cue ({self.cue_noise:.0%} flipped)", "recalled"],
                                 os.path.join(out_dir, "recall.png"))]

    def get_config(self):
        return {**super().get_config(), "rule": self.rule, "update": self.update,
                "max_iterations": self.max_iterations, "cue_noise": self.cue_noise,
                "max_patterns": self.max_patterns}

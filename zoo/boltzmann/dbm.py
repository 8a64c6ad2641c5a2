r"""Deep Boltzmann machine with two hidden layers: pretraining, mean field, PCD, centering."""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf

from zoo.boltzmann.common import (REVERSE_BURN_IN, BoltzmannModel, ais_report, batched,
                                  check_visible_shape, examples_floor, filter_images,
                                  floor_report, log_partition_floor, mean_and_error,
                                  sandwich_report)
from zoo.layers import ais as ais_lib
from zoo.layers.boltzmann_energy import (
    DBMParams,
    dbm_energy,
    dbm_exact_log_partition_hidden1,
    dbm_mean_field_bound,
)
from zoo.layers.common import register
from zoo.layers.gibbs import DBMState, bernoulli, dbm_gibbs_step, dbm_mean_field
from zoo.layers.persistent_chains import PersistentChains


def _cross_entropy(labels, logits):
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits),
                         -1)


@register
class DBM(BoltzmannModel):
    r"""Two-hidden-layer deep Boltzmann machine (Salakhutdinov & Hinton, "Deep Boltzmann
    Machines", 2009).

    $$E(v, h^1, h^2) = -v^\top W^1 h^1 - {h^1}^\top W^2 h^2 - b^\top v - {c^1}^\top h^1
    - {c^2}^\top h^2,\qquad p(v) = \tfrac1Z \textstyle\sum_{h^1, h^2} e^{-E}.$$

    Training (``fit``): the first ``pretrain_steps`` updates train the bottom RBM with doubled
    visible-to-hidden input, the next ``pretrain_steps`` the top RBM with doubled
    hidden-to-h1 input on samples of h1, both by CD-1; the two are then composed
    (the h1 biases averaged). After that, each update follows the variational lower bound's
    gradient: the positive phase from the mean-field posterior $q(h^1, h^2 \mid v)$
    (``mean_field_steps`` fixed-point sweeps), the negative phase from persistent chains
    (``gibbs_steps`` block Gibbs sweeps each update; stochastic maximum likelihood).
    ``centered=True`` writes the energy in offsets $(v - \beta)$, $(h^k - \mu^k)$ that track
    the data and mean-field means (Montavon & Müller, "Deep Boltzmann Machines and the
    Centering Trick", 2012); the biases are compensated whenever the offsets move, so the
    distribution is unchanged and only the gradient's coordinates differ.

    ``evaluation`` reports, as the paper does, AIS on log Z (h1 summed out analytically) and
    the mean-field lower bound on log p(v) per test example.

    Args:
        visible_dim: int. Number of visible units V.
        hidden_dims: two ints. Sizes of h1 and h2 (the paper: 500, 1000).
        mean_field_steps: int. Fixed-point sweeps of the positive phase.
        gibbs_steps: int. Gibbs sweeps of the persistent chains per update (the paper: 5).
        num_chains: int. Persistent chains (the paper: 100).
        pretrain_steps: int. Updates of each doubled RBM before joint training (0: none).
        centered: bool. Centering trick.
        offset_rate: float. Moving-average rate of the centering offsets.
        ais_chains: int. AIS runs in ``evaluation``.
        ais_betas: int. Intermediate distributions of AIS (the paper: 20,000).
        weight_decay: float. L2 penalty on W1 and W2 in every phase: ``weight_decay * W``
            is added to their gradients (Salakhutdinov's released DBM code uses 2e-4 in the
            joint phase, its ``weightcost``).
        image_shape, seed: as for :class:`zoo.RBM`.

    Example:

    >>> import numpy as np
    >>> x = (np.random.default_rng(0).uniform(size=(64, 6)) < 0.3).astype("float32")
    >>> dbm = DBM(visible_dim=6, hidden_dims=(4, 3), num_chains=8, pretrain_steps=4, seed=0)
    >>> dbm.compile(optimizer=keras.optimizers.SGD(0.05))
    >>> history = dbm.fit(x, epochs=2, batch_size=16, verbose=0)
    >>> bool(np.all(dbm.lower_bound(x) <= dbm.exact_log_likelihood(x)))
    True
    """

    export_adapter = "boltzmann"

    def __init__(self, visible_dim: int, hidden_dims=(500, 1000), mean_field_steps: int = 10,
                 gibbs_steps: int = 5, num_chains: int = 100, pretrain_steps: int = 0,
                 centered: bool = False, offset_rate: float = 0.01, ais_chains: int = 100,
                 ais_betas: int = 20000, weight_decay: float = 0.0, image_shape=None,
                 seed: int | None = None, **kwargs):
        super().__init__(visible_dim, image_shape=image_shape, seed=seed, **kwargs)
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"`weight_decay` must be a finite number >= 0, got {weight_decay}.")
        hidden_dims = [int(h) for h in hidden_dims]
        if len(hidden_dims) != 2 or min(hidden_dims) < 1:
            raise ValueError(f"`hidden_dims` must be two positive sizes, got {hidden_dims}.")
        for name, value, low in (("mean_field_steps", mean_field_steps, 1),
                                 ("gibbs_steps", gibbs_steps, 1), ("num_chains", num_chains, 1),
                                 ("pretrain_steps", pretrain_steps, 0),
                                 ("ais_chains", ais_chains, 2), ("ais_betas", ais_betas, 3)):
            if int(value) < low:
                raise ValueError(f"`{name}` must be >= {low}, got {value}.")
        if not 0 < offset_rate <= 1:
            raise ValueError(f"`offset_rate` must be in (0, 1], got {offset_rate}.")
        self.hidden_dims = hidden_dims
        self.mean_field_steps = int(mean_field_steps)
        self.gibbs_steps = int(gibbs_steps)
        self.num_chains = int(num_chains)
        self.pretrain_steps = int(pretrain_steps)
        self.centered = bool(centered)
        self.offset_rate = float(offset_rate)
        self.ais_chains = int(ais_chains)
        self.ais_betas = int(ais_betas)
        self.weight_decay = float(weight_decay)
        h1, h2 = hidden_dims
        init = lambda: keras.initializers.RandomNormal(0.0, 0.01, seed=seed)  # noqa: E731
        self.weights1 = self.add_weight(shape=(visible_dim, h1), initializer=init(),
                                        name="weights1")
        self.weights2 = self.add_weight(shape=(h1, h2), initializer=init(), name="weights2")
        zeros = lambda n, name, **kw: self.add_weight(  # noqa: E731
            shape=(n,), initializer="zeros", name=name, **kw)
        self.visible_bias = zeros(visible_dim, "visible_bias")
        self.hidden1_bias = zeros(h1, "hidden1_bias")
        self.hidden2_bias = zeros(h2, "hidden2_bias")
        # the top pretraining RBM's own bias on h1, averaged into hidden1_bias on composing
        self.top_rbm_bias = zeros(h1, "top_rbm_bias")
        self.visible_offset = zeros(visible_dim, "visible_offset", trainable=False)
        self.hidden1_offset = zeros(h1, "hidden1_offset", trainable=False)
        self.hidden2_offset = zeros(h2, "hidden2_offset", trainable=False)
        self.updates = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                       name="updates", dtype="int64")
        self.add_data_statistics()
        self.chains = PersistentChains(self.num_chains, [visible_dim, h1, h2], name="chains")
        self.energy_gap = keras.metrics.Mean(name="energy_gap")
        self.built = True

    # ------------------------------------------------------------------ the model's math
    def params(self) -> DBMParams:
        """Standard (uncentered) parameters; differentiable in the centered ones."""
        w1, w2 = tf.convert_to_tensor(self.weights1), tf.convert_to_tensor(self.weights2)
        beta, mu1, mu2 = self.visible_offset, self.hidden1_offset, self.hidden2_offset
        return DBMParams(
            w1, w2,
            self.visible_bias - tf.linalg.matvec(w1, mu1),
            self.hidden1_bias - tf.linalg.matvec(w1, beta, transpose_a=True)
            - tf.linalg.matvec(w2, mu2),
            self.hidden2_bias - tf.linalg.matvec(w2, mu1, transpose_a=True))

    def params64(self) -> DBMParams:
        return DBMParams(*(tf.cast(p, tf.float64) for p in self.params()))

    def flat(self, v):
        check_visible_shape(v, self.visible_dim, type(self).__name__)
        return tf.reshape(tf.cast(v, self.compute_dtype), [-1, self.visible_dim])

    def mean_field(self, v, iterations: int | None = None):
        """Mean-field q(h1, h2 | v): ``MeanField(hidden1, hidden2, change)``."""
        return dbm_mean_field(self.flat(v), self.params(), iterations or self.mean_field_steps)

    def reconstruct(self, v, observed=None, iterations: int | None = None):
        """E[v | mu1] after ``iterations`` mean-field sweeps (default ``mean_field_steps``);
        with ``observed`` [batch, V] (1 = known), the missing units are mean-field variables
        too and the known ones stay clamped (inpainting)."""
        v = self.flat(v)
        p = self.params()
        mf = dbm_mean_field(v, p, iterations or self.mean_field_steps, observed=observed)
        probs = tf.sigmoid(tf.matmul(mf.hidden1, p.weights1, transpose_b=True) + p.visible_bias)
        return probs if observed is None else observed * v + (1.0 - observed) * probs

    def reconstruction_error(self, v):
        """Cross-entropy of v under E[v | mean-field mu1], per example."""
        v = self.flat(v)
        p = self.params()
        mf = dbm_mean_field(v, p, self.mean_field_steps)
        return _cross_entropy(v, tf.matmul(mf.hidden1, p.weights1, transpose_b=True)
                              + p.visible_bias)

    def gibbs_step(self, state: DBMState, hidden1_noise, visible_noise, hidden2_noise):
        """One sweep of the chains with the given uniform noise."""
        return dbm_gibbs_step(state, self.params(), hidden1_noise, visible_noise, hidden2_noise)

    def call(self, x, training=None):
        return self.mean_field(x).hidden1

    # ------------------------------------------------------------------ training
    def _sweep(self, state: DBMState):
        n = tf.shape(state.visible)[0]
        h1, h2 = self.hidden_dims
        return self.gibbs_step(state, self.uniform(tf.stack([n, h1])),
                               self.uniform(tf.stack([n, self.visible_dim])),
                               self.uniform(tf.stack([n, h2])))

    def _pretrain_bottom(self, x):
        """CD-1 gradients of the bottom RBM, p(h1|v) = sigmoid(2 v W1 + c1)."""
        w, b, c = self.weights1, self.visible_bias, self.hidden1_bias
        h_pos = tf.sigmoid(2.0 * tf.matmul(x, w) + c)
        h = bernoulli(h_pos, self.uniform(tf.shape(h_pos)))
        logits = tf.matmul(h, w, transpose_b=True) + b
        v_neg = tf.sigmoid(logits)
        h_neg = tf.sigmoid(2.0 * tf.matmul(v_neg, w) + c)
        n = tf.cast(tf.shape(x)[0], x.dtype)
        return {"weights1": -(tf.matmul(x, h_pos, transpose_a=True)
                              - tf.matmul(v_neg, h_neg, transpose_a=True)) / n,
                "visible_bias": -tf.reduce_mean(x - v_neg, 0),
                "hidden1_bias": -tf.reduce_mean(h_pos - h_neg, 0)}, _cross_entropy(x, logits)

    def _pretrain_top(self, x):
        """CD-1 gradients of the top RBM on h1 samples, p(h1|h2) = sigmoid(2 W2 h2 + b')."""
        h1 = bernoulli(tf.sigmoid(2.0 * tf.matmul(x, self.weights1) + self.hidden1_bias),
                       self.uniform(tf.stack([tf.shape(x)[0], self.hidden_dims[0]])))
        w, b, c = self.weights2, self.top_rbm_bias, self.hidden2_bias
        h_pos = tf.sigmoid(tf.matmul(h1, w) + c)
        h = bernoulli(h_pos, self.uniform(tf.shape(h_pos)))
        logits = 2.0 * tf.matmul(h, w, transpose_b=True) + b
        v_neg = tf.sigmoid(logits)
        h_neg = tf.sigmoid(tf.matmul(v_neg, w) + c)
        n = tf.cast(tf.shape(x)[0], x.dtype)
        return {"weights2": -(tf.matmul(h1, h_pos, transpose_a=True)
                              - tf.matmul(v_neg, h_neg, transpose_a=True)) / n,
                "top_rbm_bias": -tf.reduce_mean(h1 - v_neg, 0),
                "hidden2_bias": -tf.reduce_mean(h_pos - h_neg, 0)}, _cross_entropy(h1, logits)

    def _joint(self, x):
        """Gradients of the variational bound: mean field (+) against the chains (-)."""
        mf = dbm_mean_field(x, self.params(), self.mean_field_steps)
        mu1, mu2 = tf.stop_gradient(mf.hidden1), tf.stop_gradient(mf.hidden2)
        state = DBMState(*self.chains.read())
        for _ in range(self.gibbs_steps):
            state = self._sweep(state)
        state = DBMState(*(tf.stop_gradient(s) for s in state))
        self.chains.write(list(state))
        with tf.GradientTape() as tape:
            p = self.params()
            gap = (tf.reduce_mean(dbm_energy(x, mu1, mu2, p))
                   - tf.reduce_mean(dbm_energy(*state, p)))
        names = ["weights1", "weights2", "visible_bias", "hidden1_bias", "hidden2_bias"]
        grads = tape.gradient(gap, [getattr(self, k) for k in names])
        if self.centered:
            self.move_offsets(x, mu1, mu2)
        self.energy_gap.update_state(gap)
        return dict(zip(names, grads)), self.reconstruction_error(x)

    def move_offsets(self, x, mu1, mu2):
        """Offsets toward the batch means, biases compensated so that p is unchanged."""
        r = self.offset_rate
        t = tf.convert_to_tensor
        offsets = (self.visible_offset, self.hidden1_offset, self.hidden2_offset)
        old = [t(o) for o in offsets]
        new = [(1 - r) * o + r * tf.reduce_mean(m, 0) for o, m in zip(old, (x, mu1, mu2))]
        d_beta, d_mu1, d_mu2 = (n - o for n, o in zip(new, old))
        w1, w2 = t(self.weights1), t(self.weights2)
        self.visible_bias.assign(t(self.visible_bias) + tf.linalg.matvec(w1, d_mu1))
        self.hidden1_bias.assign(t(self.hidden1_bias)
                                 + tf.linalg.matvec(w1, d_beta, transpose_a=True)
                                 + tf.linalg.matvec(w2, d_mu2))
        self.hidden2_bias.assign(t(self.hidden2_bias)
                                 + tf.linalg.matvec(w2, d_mu1, transpose_a=True))
        for var, value in zip(offsets, new):
            var.assign(value)

    def train_step(self, data):
        x = self.visible(data)
        variables = self.trainable_variables
        names = {id(v): v.path.split("/")[-1] for v in variables}
        k = self.pretrain_steps

        def apply(grads_and_loss):
            grads, loss = grads_and_loss
            if self.weight_decay:  # only the weights a phase trains; biases are not decayed
                for key in ("weights1", "weights2"):
                    if key in grads:
                        grads[key] = grads[key] + self.weight_decay * tf.convert_to_tensor(
                            getattr(self, key))
            self.optimizer.apply(
                [grads.get(names[id(v)], tf.zeros_like(v)) for v in variables], variables)
            return tf.reduce_mean(loss)

        def compose():  # start of joint training: average the two RBMs' h1 biases
            self.hidden1_bias.assign(0.5 * (self.hidden1_bias + self.top_rbm_bias))
            return tf.constant(0.0)

        if k > 0:
            tf.cond(tf.equal(self.updates, 2 * k), compose, lambda: tf.constant(0.0))
            phase = tf.cast(tf.minimum(self.updates // k, 2), tf.int32)
            loss = tf.switch_case(phase, [lambda: apply(self._pretrain_bottom(x)),
                                          lambda: apply(self._pretrain_top(x)),
                                          lambda: apply(self._joint(x))])
        else:
            loss = apply(self._joint(x))
        self.updates.assign_add(1)
        self.track_data(x)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x = self.visible(data)
        self.loss_tracker.update_state(self.reconstruction_error(x))
        return {"loss": self.loss_tracker.result()}

    def extra_trackers(self):
        return [self.energy_gap]

    # ------------------------------------------------------------------ evaluation
    def log_partition(self, num_chains: int | None = None, num_betas: int | None = None,
                      seed: int = 0, base_examples=None) -> ais_lib.AISResult:
        """AIS estimate of log Z (float64), base-rate model from the training data, or with
        ``base_examples`` [N, V] from their smoothed mixture (``ais.dbm_mixture_ais``: a
        path that starts among the data, for models whose base-rate path misses them)."""
        chains, betas = num_chains or self.ais_chains, num_betas or self.ais_betas
        if base_examples is not None:
            examples = self.flat(np.asarray(base_examples)).numpy()
            return ais_lib.dbm_mixture_ais(self.params64(), examples, chains, betas,
                                           seed=(int(seed), 23))
        return ais_lib.dbm_ais(self.params64(), ais_lib.base_rate_bias(self.data_mean()),
                               chains, betas, seed=(int(seed), 19))

    def reverse_log_partition(self, states=None, num_betas: int | None = None,
                              seed: int = 0, burn_in: int = 0) -> ais_lib.AISResult:
        """Reverse AIS estimate of log Z (float64; ``ais.dbm_reverse_ais``), the upper half
        of a bidirectional check of :meth:`log_partition`: from ``states`` = (v [chains, V],
        h2 [chains, H2]), samples of the model (default: the persistent chains, left as they
        are), after ``burn_in`` Gibbs sweeps, to the same base-rate model. From exact
        samples it errs high where forward AIS errs low; from chains that miss modes it
        estimates the mass of the modes they hold."""
        if states is None:
            chain = self.chains.read()
            states = (chain[0].numpy(), chain[2].numpy())
        visible, hidden2 = (np.asarray(s, np.float64) for s in states)
        return ais_lib.dbm_reverse_ais(self.params64(), ais_lib.base_rate_bias(self.data_mean()),
                                       visible, hidden2, num_betas or self.ais_betas,
                                       seed=(int(seed), 21), burn_in=burn_in)

    def exact_log_partition(self) -> float:
        """log Z by enumerating h1 (hidden_dims[0] <= 24)."""
        return float(dbm_exact_log_partition_hidden1(self.params64()))

    def unnormalized_bound(self, x, iterations: int = 30):
        """E_q[-E] + H(q) per example with q from ``iterations`` mean-field sweeps (float64)."""
        p = self.params64()

        def one(b):
            v = tf.reshape(tf.cast(b, tf.float64), [-1, self.visible_dim])
            mf = dbm_mean_field(v, p, iterations)
            return dbm_mean_field_bound(v, mf.hidden1, mf.hidden2, p)

        return batched(one, np.asarray(x))

    def energy_descent(self, v, sweeps: int = 30) -> DBMState:
        """Zero-temperature block updates from the visible states ``v`` (h2 starting at 0):
        each sweep sets h1, then h2, then v to the mode of its conditional, which never raises
        the energy; returns the float64 state after ``sweeps`` sweeps, near a local minimum
        of E (a mode of p)."""
        from zoo.layers.boltzmann_energy import dbm_energy_descent

        v = tf.reshape(tf.cast(np.asarray(v), tf.float64), [-1, self.visible_dim])
        return DBMState(*dbm_energy_descent(v, self.params64(), sweeps))

    def log_partition_floor(self, x=None, states=None, unnormalized=None,
                            descent_sweeps: int = 0) -> float:
        """Certified lower bound on log Z: the largest of the floors (``log_partition_floor``)
        from the distinct examples of ``x`` (when they are binary) with their mean-field
        bounds on log p*(v) (``unnormalized``, when already computed), from the distinct
        (v, h2) pairs of
        ``states`` (default: the persistent chains) with their exact log p*(v, h2) (h1
        summed out), and, with ``descent_sweeps`` > 0, from the (v, h2) pairs that
        ``energy_descent`` reaches from ``x`` (local modes: usually the tightest). The sets
        are taken apart, not pooled: the same v may be in two of them."""
        from zoo.layers.boltzmann_energy import dbm_free_energy

        def pairs_floor(v, h2):
            v, h2 = (np.asarray(s, np.float64) for s in (v, h2))
            log_p = -dbm_free_energy(tf.constant(v), tf.constant(h2), self.params64()).numpy()
            return log_partition_floor(np.concatenate([v, h2], 1), log_p)

        floors = []
        if x is not None:
            x = np.asarray(x).reshape(len(x), -1)
            floors.append(examples_floor(x, self.unnormalized_bound if unnormalized is None
                                         else unnormalized))
            if descent_sweeps > 0:
                modes = self.energy_descent(x, descent_sweeps)
                floors.append(pairs_floor(modes.visible.numpy(), modes.hidden2.numpy()))
        if states is None:
            chain = self.chains.read()
            states = (chain[0].numpy(), chain[2].numpy())
        floors.append(pairs_floor(*states))
        return max(f for f in floors if f is not None)

    def lower_bound(self, x, log_z: float | None = None):
        """Variational lower bound on log p(x) per example (log Z exact unless given)."""
        return self.unnormalized_bound(x) - (self.exact_log_partition() if log_z is None
                                             else log_z)

    def exact_log_likelihood(self, x):
        """log p(x) per example by enumeration (small models only)."""
        from zoo.layers.boltzmann_energy import binary_states, dbm_free_energy

        p = self.params64()
        h2 = binary_states(self.hidden_dims[1], tf.float64)
        v = tf.reshape(tf.cast(np.asarray(x), tf.float64), [-1, self.visible_dim])
        n, m = tf.shape(v)[0], tf.shape(h2)[0]
        f = dbm_free_energy(tf.repeat(v, m, 0), tf.tile(h2, [n, 1]), p)
        return (tf.reduce_logsumexp(-tf.reshape(f, [n, m]), 1).numpy()
                - self.exact_log_partition())

    def evaluation(self, x, y, arrays, settings) -> dict:
        x = np.asarray(x)
        ais = self.log_partition(num_chains=max(int(settings.num_samples), 2),
                                 seed=settings.seed)
        recon, recon_se = mean_and_error(batched(self.reconstruction_error, x))
        unnormalized = self.unnormalized_bound(x)
        return {
            **ais_report("ais_lower_bound", unnormalized, ais, self.ais_betas),
            **floor_report(self.log_partition_floor(x, unnormalized=unnormalized,
                                                    descent_sweeps=30), ais),
            **sandwich_report(ais, self.reverse_log_partition(seed=settings.seed,
                                                               burn_in=REVERSE_BURN_IN)),
            "reconstruction_error": recon,
            "reconstruction_error_se": recon_se,
            "likelihood_examples": int(len(x)),
        }

    # ------------------------------------------------------------------ pictures
    def sample(self, num_chains: int, steps: int = 1000, seed: int = 0, record=()):
        """Gibbs chains from uniform random states with stateless noise from ``seed``;
        returns the final p(v | h1) and the same at the sweeps in ``record``."""
        seed = tf.constant([int(seed), 41], tf.int32)
        h1, h2 = self.hidden_dims
        dtype = self.compute_dtype
        init = lambda n, s: tf.cast(  # noqa: E731
            tf.random.stateless_uniform([num_chains, n], seed + s) < 0.5, dtype)
        state = DBMState(init(self.visible_dim, 0), init(h1, 1), init(h2, 2))

        @tf.function
        def step(state, s):
            noise = lambda n, k: tf.random.stateless_uniform(  # noqa: E731
                [num_chains, n], s + k, dtype=dtype)
            new = self.gibbs_step(state, noise(h1, 0), noise(self.visible_dim, 1), noise(h2, 2))
            p = self.params()
            return new, tf.sigmoid(tf.matmul(new.hidden1, p.weights1, transpose_b=True)
                                   + p.visible_bias)

        snapshots, probs = [], None
        for k in range(1, steps + 1):
            state, probs = step(state, tf.random.experimental.stateless_fold_in(seed, k))
            if k in record:
                snapshots.append(np.asarray(probs))
        return np.asarray(probs), snapshots

    def pictures(self, x, arrays, out_dir, settings) -> list:
        from zoo import plots

        if not self.image_shape:
            return []
        path = lambda name: os.path.join(out_dir, name)  # noqa: E731
        record = (1, 10, 100, 1000)
        _, snapshots = self.sample(8, steps=1000, seed=settings.seed, record=record)
        x = np.asarray(x)[:16]
        observed = np.ones((len(x), self.visible_dim), "float32")
        observed[:, self.visible_dim // 2:] = 0.0  # the bottom half is unknown
        cue = self.flat(x) * observed
        return [
            plots.image_grid(filter_images(self.weights1.numpy(), self.image_shape),
                             path("filters.png"), title="First-layer filters"),
            plots.image_rows([self.as_images(s) for s in snapshots],
                             [f"Gibbs sweep {k}" for k in record], path("chains.png")),
            plots.image_rows([x, self.as_images(cue),
                              self.as_images(self.reconstruct(x, observed, iterations=30))],
                             ["data", "bottom half hidden", "mean-field inpainting"],
                             path("inpainting.png")),
        ]

    def get_config(self):
        return {**super().get_config(), "hidden_dims": self.hidden_dims,
                "mean_field_steps": self.mean_field_steps, "gibbs_steps": self.gibbs_steps,
                "num_chains": self.num_chains, "pretrain_steps": self.pretrain_steps,
                "centered": self.centered, "offset_rate": self.offset_rate,
                "ais_chains": self.ais_chains, "ais_betas": self.ais_betas,
                "weight_decay": self.weight_decay}

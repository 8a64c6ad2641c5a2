r"""Restricted Boltzmann machines trained by CD-k or PCD with ``model.fit``."""

from __future__ import annotations

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
    RBMParams,
    gaussian_rbm_free_energy,
    gaussian_rbm_hidden_logits,
    gaussian_rbm_hidden_marginal,
    rbm_exact_log_partition_hidden,
    rbm_free_energy,
    rbm_hidden_logits,
    rbm_energy_descent,
    rbm_pseudo_log_likelihood,
    rbm_visible_logits,
)
from zoo.contract import ZooModel
from zoo.layers.common import check_choice, register
from zoo.layers.gibbs import gaussian_rbm_gibbs_step, rbm_gibbs_step, rbm_mean_field
from zoo.layers.persistent_chains import PersistentChains

TRAINING = ("cd", "pcd")


def rbm_log_partition_floor(params: RBMParams, x=None, states=None, unnormalized=None,
                            descent_sweeps: int = 0) -> float:
    """Certified lower bound on the log Z of an RBM with ``params`` (``log_partition_floor``):
    the largest of the floors from the distinct examples of ``x`` (when they are binary;
    ``unnormalized``: their -F, when already computed), from ``states`` [n, V] and, with
    ``descent_sweeps`` > 0, from the visible states ``rbm_energy_descent`` reaches from ``x``
    (local modes), each with its exact -F(v) in float64. Serves any RBM's weights (the bench
    gives it scikit-learn's)."""
    params = RBMParams(*(tf.constant(np.asarray(p, np.float64)) for p in params))

    def log_p(v):
        return -rbm_free_energy(tf.constant(np.asarray(v, np.float64)), params).numpy()

    floors = []
    if x is not None:
        x = np.asarray(x).reshape(len(x), -1)
        floors.append(examples_floor(x, log_p if unnormalized is None else unnormalized))
        if descent_sweeps > 0:
            modes = rbm_energy_descent(tf.constant(x, tf.float64), params, descent_sweeps)[0]
            floors.append(log_partition_floor(modes.numpy(), log_p(modes)))
    if states is not None:
        floors.append(log_partition_floor(states, log_p(states)))
    floors = [f for f in floors if f is not None]
    if not floors:
        raise ValueError("log_partition_floor needs `x` or `states` (binary examples, or a "
                         "model with persistent chains).")
    return max(floors)


@register
class RBM(BoltzmannModel):
    r"""Bernoulli-Bernoulli restricted Boltzmann machine.

    $$p(v, h) = \frac{1}{Z} e^{-E(v, h)},\quad E(v, h) = -v^\top W h - b^\top v - c^\top h,
    \quad \log p(v) = -F(v) - \log Z,$$

    with $F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j})$. ``fit``
    follows the log-likelihood gradient $-\nabla F(v_{data}) + \mathbb{E}_{model}\nabla F(v)$,
    the model expectation taken at the end of ``cd_steps`` block Gibbs sweeps started at the
    data (CD-k; Hinton, "Training Products of Experts by Minimizing Contrastive Divergence",
    2002) or continued from persistent chains (PCD; Tieleman 2008). ``evaluation`` reports
    the test log-likelihood with log Z from annealed importance sampling (Salakhutdinov &
    Murray, "On the Quantitative Analysis of Deep Belief Networks", 2008), the pseudo-
    likelihood and the reconstruction error.

    Args:
        visible_dim: int. Number of visible units V (pixels).
        hidden_dim: int. Number of hidden units H.
        training: str. ``"cd"`` (CD-k from the data) or ``"pcd"`` (persistent chains).
        cd_steps: int. Gibbs sweeps k per update.
        num_chains: int. Persistent chains (``"pcd"``).
        weight_decay: float. L2 penalty on W (Hinton's practical guide uses 1e-4).
        ais_chains: int. AIS runs in ``evaluation`` (the paper: 100).
        ais_betas: int. Intermediate distributions of AIS (the paper: 14,500).
        image_shape: list of int or None. Shape of one image, for pictures.
        seed: int or None. Seed of the sampling noise.

    Example:

    >>> import numpy as np
    >>> rbm = RBM(visible_dim=6, hidden_dim=3, training="pcd", num_chains=8, seed=0)
    >>> rbm.compile(optimizer=keras.optimizers.SGD(0.05))
    >>> x = (np.random.default_rng(0).uniform(size=(32, 6)) < 0.3).astype("float32")
    >>> history = rbm.fit(x, epochs=2, batch_size=16, verbose=0)
    >>> round(float(rbm.exact_log_likelihood(x).mean()), 1) < 0
    True
    """

    export_adapter = "boltzmann"

    def __init__(self, visible_dim: int, hidden_dim: int = 500, training: str = "cd",
                 cd_steps: int = 1, num_chains: int = 100, weight_decay: float = 0.0,
                 ais_chains: int = 100, ais_betas: int = 14500, image_shape=None,
                 seed: int | None = None, **kwargs):
        super().__init__(visible_dim, image_shape=image_shape, seed=seed, **kwargs)
        check_choice("training", training, TRAINING)
        for name, value in (("hidden_dim", hidden_dim), ("cd_steps", cd_steps),
                            ("num_chains", num_chains), ("ais_chains", ais_chains),
                            ("ais_betas", ais_betas)):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        self.hidden_dim = int(hidden_dim)
        self.training_mode = training
        self.cd_steps = int(cd_steps)
        self.num_chains = int(num_chains)
        self.weight_decay = float(weight_decay)
        self.ais_chains = int(ais_chains)
        self.ais_betas = int(ais_betas)
        self.weights_vh = self.add_weight(
            shape=(self.visible_dim, self.hidden_dim), name="weights",
            initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=seed))
        self.visible_bias = self.add_weight(shape=(self.visible_dim,), initializer="zeros",
                                            name="visible_bias")
        self.hidden_bias = self.add_weight(shape=(self.hidden_dim,), initializer="zeros",
                                           name="hidden_bias")
        self.add_extra_weights()
        self.add_data_statistics()  # for AIS's base-rate model
        self.chains = (PersistentChains(self.num_chains, [self.visible_dim], name="chains")
                       if training == "pcd" else None)
        self.free_energy_gap = keras.metrics.Mean(name="free_energy_gap")
        self.built = True

    def add_extra_weights(self):
        """Subclasses add parameters here (before the non-trainable state)."""

    # ------------------------------------------------------------------ the model's math
    def params(self) -> RBMParams:
        return RBMParams(tf.convert_to_tensor(self.weights_vh),
                         tf.convert_to_tensor(self.visible_bias),
                         tf.convert_to_tensor(self.hidden_bias))

    def free_energy(self, v):
        """F(v) per example [batch] of visible vectors (or images)."""
        return rbm_free_energy(self.flat(v), self.params())

    def hidden_probs(self, v):
        """p(h = 1 | v) [batch, H]: the RBM's features of ``v``."""
        return tf.sigmoid(rbm_hidden_logits(self.flat(v), self.params()))

    def gibbs_step(self, v, hidden_noise, visible_noise):
        """One block Gibbs sweep with the given uniform noise (see ``zoo.layers.gibbs``)."""
        return rbm_gibbs_step(self.flat(v), self.params(), hidden_noise, visible_noise)

    def reconstruct(self, v, iterations: int = 1, observed=None):
        """Mean-field reconstruction E[v | E[h | v]] iterated; ``observed`` clamps known units."""
        return rbm_mean_field(self.flat(v), self.params(), iterations, observed)

    def reconstruction_error(self, v):
        """Cross-entropy of v under its one-step mean-field reconstruction, per example."""
        v = self.flat(v)
        logits = rbm_visible_logits(tf.sigmoid(rbm_hidden_logits(v, self.params())),
                                    self.params())
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=v, logits=logits),
                             -1)

    def flat(self, v):
        check_visible_shape(v, self.visible_dim, type(self).__name__)
        return tf.reshape(tf.cast(v, self.compute_dtype), [-1, self.visible_dim])

    def call(self, x, training=None):
        return self.hidden_probs(x)

    # ------------------------------------------------------------------ training
    def visible_noise(self, shape):
        """The noise a Gibbs sweep draws the visible units with: uniform (normal for the
        Gaussian-Bernoulli RBM), from the model's seed generator."""
        return self.uniform(shape)

    def stateless_visible_noise(self, shape, seed, dtype):
        """The same noise drawn statelessly from ``seed``."""
        return tf.random.stateless_uniform(shape, seed, dtype=dtype)

    def sample_chain(self, v, steps: int):
        """``steps`` Gibbs sweeps from ``v`` with the model's noise; the last sweep's v."""
        for _ in range(steps):
            v = self.gibbs_step(v, self.uniform(tf.stack([tf.shape(v)[0], self.hidden_dim])),
                                self.visible_noise(tf.shape(v))).visible
        return v

    def negative_start(self, x):
        return self.chains.read()[0] if self.chains is not None else x

    def train_step(self, data):
        x = self.visible(data)
        negative = tf.stop_gradient(self.sample_chain(self.negative_start(x), self.cd_steps))
        with tf.GradientTape() as tape:
            gap = tf.reduce_mean(self.free_energy(x)) - tf.reduce_mean(self.free_energy(negative))
            objective = gap + 0.5 * self.weight_decay * tf.reduce_sum(tf.square(self.weights_vh))
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(objective, variables), variables)
        if self.chains is not None:
            self.chains.write([negative])
        self.track_data(x)
        self.loss_tracker.update_state(self.reconstruction_error(x))
        self.free_energy_gap.update_state(gap)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x = self.visible(data)
        self.loss_tracker.update_state(self.reconstruction_error(x))
        return {m.name: m.result() for m in self.metrics if m is not self.free_energy_gap}

    def extra_trackers(self):
        return [self.free_energy_gap]

    # ------------------------------------------------------------------ evaluation
    def log_partition(self, num_chains: int | None = None, num_betas: int | None = None,
                      seed: int = 0, base_examples=None) -> ais_lib.AISResult:
        """AIS estimate of log Z (float64), from the base-rate model of the training data, or
        with ``base_examples`` [N, V] from their smoothed mixture (``ais.rbm_mixture_ais``:
        a path that starts among the data)."""
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        chains, betas = num_chains or self.ais_chains, num_betas or self.ais_betas
        if base_examples is not None:
            examples = self.flat(np.asarray(base_examples)).numpy()
            return ais_lib.rbm_mixture_ais(params, examples, chains, betas,
                                           seed=(int(seed), 22))
        return ais_lib.rbm_ais(params, ais_lib.base_rate_bias(self.data_mean()), chains, betas,
                               seed=(int(seed), 16))

    def reverse_log_partition(self, visible=None, num_betas: int | None = None,
                              seed: int = 0, burn_in: int = 0) -> ais_lib.AISResult:
        """Reverse AIS estimate of log Z (float64; ``ais.rbm_reverse_ais``), the upper half of
        a bidirectional check of :meth:`log_partition`: from ``visible`` [chains, V], samples
        of the model (default: the persistent chains, left as they are), after ``burn_in``
        Gibbs sweeps, to the same base-rate model. From exact samples it errs high where
        forward AIS errs low; from chains that miss modes it estimates the mass of the modes
        they hold."""
        if visible is None:
            if self.chains is None:
                raise ValueError("This RBM has no persistent chains (cd training): pass "
                                 "`visible`, e.g. training examples with a long `burn_in`.")
            visible = self.chains.read()[0].numpy()
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        return ais_lib.rbm_reverse_ais(params, ais_lib.base_rate_bias(self.data_mean()),
                                       np.asarray(visible, np.float64),
                                       num_betas or self.ais_betas, seed=(int(seed), 20),
                                       burn_in=burn_in)

    def _reverse_start(self, x, count: int, seed: int):
        """Reverse AIS's start states: the persistent chains, or (CD training) ``count``
        examples of ``x`` drawn at random, grey values sampled to binary."""
        if self.chains is not None:
            return None
        rng = np.random.default_rng(int(seed))
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        picked = x[rng.choice(len(x), min(len(x), count), replace=False)]
        return (rng.random(picked.shape) < picked).astype(np.float64)

    def exact_log_partition(self) -> float:
        """log Z by enumerating the hidden layer (hidden_dim <= 24)."""
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        return float(rbm_exact_log_partition_hidden(params))

    def unnormalized_log_prob(self, x):
        """-F(x) per example (float64)."""
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        return batched(lambda b: -rbm_free_energy(tf.reshape(tf.cast(b, tf.float64),
                                                             [-1, self.visible_dim]), params), x)

    def energy_descent(self, v, sweeps: int = 30):
        """Zero-temperature block updates from ``v`` (h, then v, to the mode of their
        conditionals), which never raise the energy: float64 (v, h) near a local minimum of
        E (a mode of p)."""
        v = tf.reshape(tf.cast(np.asarray(v), tf.float64), [-1, self.visible_dim])
        return rbm_energy_descent(v, RBMParams(*(tf.cast(p, tf.float64) for p in self.params())),
                                  sweeps)

    def log_partition_floor(self, x=None, states=None, unnormalized=None,
                            descent_sweeps: int = 0) -> float:
        """Certified lower bound on log Z: ``rbm_log_partition_floor`` of this model, with
        ``states`` defaulting to the persistent chains' visible states (when it has chains)."""
        if states is None and self.chains is not None:
            states = self.chains.read()[0].numpy()
        return rbm_log_partition_floor(RBMParams(*(tf.cast(p, tf.float64)
                                                   for p in self.params())),
                                       x, states, unnormalized, descent_sweeps)

    def exact_log_likelihood(self, x):
        """log p(x) per example with log Z by enumeration (small hidden layers only)."""
        return self.unnormalized_log_prob(x) - self.exact_log_partition()

    def pseudo_log_likelihood(self, x):
        """sum_i log p(x_i | x_-i) per example (every bit)."""
        return batched(lambda b: rbm_pseudo_log_likelihood(self.flat(b), self.params()), x, 20)

    def evaluation(self, x, y, arrays, settings) -> dict:
        x = np.asarray(x)
        ais = self.log_partition(num_chains=max(int(settings.num_samples), 2),
                                 seed=settings.seed)
        pll, pll_se = mean_and_error(self.pseudo_log_likelihood(x))
        recon, recon_se = mean_and_error(batched(self.reconstruction_error, x))
        unnormalized = self.unnormalized_log_prob(x)
        return {
            **ais_report("ais_log_likelihood", unnormalized, ais, self.ais_betas),
            **floor_report(self.log_partition_floor(x, unnormalized=unnormalized,
                                                    descent_sweeps=30), ais),
            **sandwich_report(ais, self.reverse_log_partition(
                self._reverse_start(x, max(int(settings.num_samples), 2), settings.seed),
                seed=settings.seed, burn_in=REVERSE_BURN_IN)),
            "pseudo_log_likelihood": pll,
            "pseudo_log_likelihood_se": pll_se,
            "reconstruction_error": recon,
            "reconstruction_error_se": recon_se,
            "likelihood_examples": int(len(x)),
        }

    # ------------------------------------------------------------------ pictures
    def sample(self, num_chains: int, steps: int = 1000, seed: int = 0, record=()):
        """Run ``num_chains`` Gibbs chains ``steps`` sweeps from uniform random visibles with
        stateless noise from ``seed``; returns the final visible probabilities and the
        probabilities at the sweeps in ``record``."""
        seed = tf.constant([int(seed), 17], tf.int32)
        dtype = self.compute_dtype
        v = tf.cast(tf.random.stateless_uniform([num_chains, self.visible_dim], seed) < 0.5,
                    dtype)
        step_fn = tf.function(self._noisy_step)
        snapshots = []
        probs = v
        for k in range(1, steps + 1):
            v, probs = step_fn(v, tf.random.experimental.stateless_fold_in(seed, k))
            if k in record:
                snapshots.append(np.asarray(probs))
        return np.asarray(probs), snapshots

    def _noisy_step(self, v, seed):
        n = tf.shape(v)[0]
        hidden = tf.random.stateless_uniform([n, self.hidden_dim], seed, dtype=v.dtype)
        visible = self.stateless_visible_noise(tf.shape(v), seed + 1, v.dtype)
        step = self.gibbs_step(v, hidden, visible)
        return step.visible, step.visible_probs

    def pictures(self, x, arrays, out_dir, settings) -> list:
        from zoo import plots

        if not self.image_shape:
            return []
        path = lambda name: os.path.join(out_dir, name)  # noqa: E731
        record = (1, 10, 100, 1000)
        final, snapshots = self.sample(8, steps=1000, seed=settings.seed, record=record)
        x = np.asarray(x)[:16]
        return [
            plots.image_grid(filter_images(self.weights_vh.numpy(), self.image_shape),
                             path("filters.png"), title="Filters (first 64 hidden units)"),
            plots.image_rows([self.as_images(s) for s in snapshots],
                             [f"Gibbs sweep {k}" for k in record], path("chains.png")),
            plots.image_rows([x, self.as_images(self.reconstruct(x))],
                             ["data", "reconstruction"], path("reconstructions.png")),
        ]

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim,
                "training": self.training_mode, "cd_steps": self.cd_steps,
                "num_chains": self.num_chains, "weight_decay": self.weight_decay,
                "ais_chains": self.ais_chains, "ais_betas": self.ais_betas}


@register
class GaussianBernoulliRBM(RBM):
    r"""Gaussian-Bernoulli RBM for real-valued data with a learned variance per visible unit.

    Cho, Ilin & Raiko, "Improved Learning of Gaussian-Bernoulli Restricted Boltzmann
    Machines", 2011 (the energy in ``zoo.layers.boltzmann_energy``):

    $$p(v \mid h) = N(b + W h, \operatorname{diag}(\sigma^2)),\quad
    p(h_j = 1 \mid v) = \sigma\big(c_j + \textstyle\sum_i W_{ij} v_i / \sigma_i^2\big),$$

    with $\log \sigma_i^2$ learned beside W, b, c by CD-k or PCD. ``evaluation`` reports the
    squared reconstruction error and the test log-density: exact for at most 20 hidden units
    (the hidden layer enumerated), else with log Z from AIS (``zoo.layers.ais.
    gaussian_rbm_ais``: from N(training mean, diag sigma^2) to the model).

    Args:
        visible_dim, hidden_dim, training, cd_steps, num_chains, weight_decay, ais_chains,
        ais_betas, image_shape, seed: as for :class:`RBM`.
        initial_log_variance: float. Starting log sigma^2 of every visible unit.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(2.0, 0.5, size=(256, 1)).astype("float32")
    >>> rbm = GaussianBernoulliRBM(visible_dim=1, hidden_dim=2, seed=0)
    >>> rbm.compile(optimizer=keras.optimizers.Adam(0.05))
    >>> rbm.fit(x, epochs=3, batch_size=32, verbose=0).history["loss"][-1] < 1.0
    True
    """

    binarizes_inputs = False
    #: Largest hidden layer whose 2^H states ``evaluation`` enumerates (AIS beyond).
    exact_hidden_limit = 20

    def __init__(self, visible_dim: int, hidden_dim: int = 500, training: str = "pcd",
                 cd_steps: int = 1, num_chains: int = 100, weight_decay: float = 0.0,
                 initial_log_variance: float = 0.0, ais_chains: int = 100,
                 ais_betas: int = 14500, image_shape=None, seed: int | None = None, **kwargs):
        self.initial_log_variance = float(initial_log_variance)
        super().__init__(visible_dim, hidden_dim, training, cd_steps, num_chains, weight_decay,
                         ais_chains=ais_chains, ais_betas=ais_betas, image_shape=image_shape,
                         seed=seed, **kwargs)

    def add_extra_weights(self):
        self.log_variance = self.add_weight(
            shape=(self.visible_dim,), name="log_variance",
            initializer=keras.initializers.Constant(self.initial_log_variance))

    def variance_log(self):
        """log sigma^2, kept in [-9, 9] so a unit cannot collapse onto its data."""
        return tf.clip_by_value(tf.convert_to_tensor(self.log_variance), -9.0, 9.0)

    def free_energy(self, v):
        return gaussian_rbm_free_energy(self.flat(v), self.params(), self.variance_log())

    def hidden_probs(self, v):
        return tf.sigmoid(gaussian_rbm_hidden_logits(self.flat(v), self.params(),
                                                     self.variance_log()))

    def gibbs_step(self, v, hidden_noise, visible_noise):
        """One sweep; ``visible_noise`` is standard normal here."""
        return gaussian_rbm_gibbs_step(self.flat(v), self.params(), self.variance_log(),
                                       hidden_noise, visible_noise)

    def visible_noise(self, shape):
        return self.normal(shape)

    def stateless_visible_noise(self, shape, seed, dtype):
        return tf.random.stateless_normal(shape, seed, dtype=dtype)

    def reconstruct(self, v, iterations: int = 1, observed=None):
        v0 = self.flat(v)
        v = v0
        for _ in range(int(iterations)):
            v = (tf.matmul(self.hidden_probs(v), self.weights_vh, transpose_b=True)
                 + self.visible_bias)
            if observed is not None:
                v = observed * v0 + (1.0 - observed) * v
        return v

    def reconstruction_error(self, v):
        """Squared error of the one-step mean reconstruction, per example."""
        v = self.flat(v)
        return tf.reduce_sum(tf.square(self.reconstruct(v) - v), -1)

    def hidden_marginal(self):
        """Exact p(h) and log Z by enumerating h (hidden_dim <= 24), float64."""
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        return gaussian_rbm_hidden_marginal(params, tf.cast(self.variance_log(), tf.float64))

    def marginal_moments(self):
        """Exact mean [V] and covariance [V, V] of the model's p(v) (a mixture over h)."""
        marginal = self.hidden_marginal()
        p_h = np.exp(marginal.log_marginal.numpy())
        w = self.weights_vh.numpy().astype(np.float64)
        means = self.visible_bias.numpy().astype(np.float64) + marginal.states.numpy() @ w.T
        mean = p_h @ means
        centered = means - mean
        cov = (centered.T * p_h) @ centered + np.diag(np.exp(self.variance_log().numpy()))
        return mean, cov

    def exact_log_likelihood(self, x):
        return self.unnormalized_log_prob(x) - float(self.hidden_marginal().log_z)

    def log_partition(self, num_chains: int | None = None, num_betas: int | None = None,
                      seed: int = 0) -> ais_lib.AISResult:
        """AIS estimate of log Z (float64), from N(training data mean, diag sigma^2)."""
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        count = float(self.data_count.numpy())
        base_mean = (np.asarray(self.data_sum.numpy()) / count if count
                     else self.visible_bias.numpy().astype(np.float64))
        return ais_lib.gaussian_rbm_ais(params, tf.cast(self.variance_log(), tf.float64),
                                        base_mean, num_chains or self.ais_chains,
                                        num_betas or self.ais_betas, seed=(int(seed), 18))

    def exact_log_partition(self) -> float:
        return float(self.hidden_marginal().log_z)

    def unnormalized_log_prob(self, x):
        params = RBMParams(*(tf.cast(p, tf.float64) for p in self.params()))
        log_var = tf.cast(self.variance_log(), tf.float64)
        return batched(lambda b: -gaussian_rbm_free_energy(
            tf.reshape(tf.cast(b, tf.float64), [-1, self.visible_dim]), params, log_var), x)

    def validate_data(self, arrays: dict) -> None:
        ZooModel.validate_data(self, arrays)  # real values: any range

    def log_partition_floor(self, x=None, states=None, unnormalized=None,
                            descent_sweeps: int = 0) -> float:
        raise TypeError("GaussianBernoulliRBM has no certified floor on log Z: its visible "
                        "units are real, and densities at points do not bound an integral.")

    def energy_descent(self, v, sweeps: int = 30):
        raise TypeError("GaussianBernoulliRBM.energy_descent is not defined: the binary "
                        "units' step rule does not apply to its real-valued visibles.")

    def evaluation(self, x, y, arrays, settings) -> dict:
        x = np.asarray(x)
        recon, recon_se = mean_and_error(batched(self.reconstruction_error, x))
        out = {"reconstruction_error": recon, "reconstruction_error_se": recon_se,
               "mean_variance": float(np.mean(np.exp(self.variance_log().numpy())))}
        if self.hidden_dim <= self.exact_hidden_limit:
            out["exact_log_likelihood"], out["exact_log_likelihood_se"] = mean_and_error(
                self.exact_log_likelihood(x))
        else:
            ais = self.log_partition(num_chains=max(int(settings.num_samples), 2),
                                     seed=settings.seed)
            out.update(ais_report("ais_log_likelihood", self.unnormalized_log_prob(x), ais,
                                  self.ais_betas))
        return out

    def pictures(self, x, arrays, out_dir, settings) -> list:
        from zoo import plots

        if not self.image_shape:
            return []
        path = lambda name: os.path.join(out_dir, name)  # noqa: E731
        x = np.asarray(x)[:16]
        return [
            plots.image_grid(filter_images(self.weights_vh.numpy(), self.image_shape),
                             path("filters.png"), title="Filters (first 64 hidden units)"),
            plots.image_rows([x, np.clip(self.as_images(self.reconstruct(x)), 0, 1)],
                             ["data", "reconstruction"], path("reconstructions.png")),
        ]

    def get_config(self):
        return {**super().get_config(), "initial_log_variance": self.initial_log_variance}

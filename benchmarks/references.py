"""Plain models written the way the Keras examples write them: the benchmark's references.

``ReferenceVAE`` follows keras.io's "Variational AutoEncoder" example (``Sampling`` layer,
functional encoder returning ``z_mean, z_log_var, z``, a ``keras.Model`` subclass whose
``train_step`` computes ``binary_crossentropy * input_dim`` as the summed reconstruction term
plus the analytic KL) with the MLP widths passed in, so it can mirror the zoo's models.
``ReferenceDLGM``, ``ReferenceHierarchicalVAE`` and ``ReferenceCategoricalVAE`` are the same
kind of code for the other architectures: Rezende et al.'s two-level model with a
rank-one-precision recognition model (formulas of the paper's appendix, written out here),
Burda et al.'s two-stochastic-layer VAE (q(h1|x) q(h2|h1), Gaussian p(h1|h2)) and Jang et
al.'s Gumbel-softmax VAE (the structure of the authors' notebook). The module is deliberately independent of the zoo:
nothing from ``zoo/`` or ``layers/`` is imported, and the ELBO and importance-weighted (IWAE)
evaluations are written from the equations:

    log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x),
    IWAE_K(x) = log (1/K) sum_k exp(log w_k)       (Burda, Grosse & Salakhutdinov 2016).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

LOG_2PI = math.log(2.0 * math.pi)


class Sampling(layers.Layer):
    """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit (Keras example)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def dense_stack(inputs, hidden_units, activation, prefix):
    h = inputs
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"{prefix}_{i}")(h)
    return h


def build_encoder(input_dim, hidden_units, latent_dim, activation, seed=None):
    inputs = keras.Input(shape=(input_dim,))
    h = dense_stack(inputs, hidden_units, activation, "enc")
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    z = Sampling(seed=seed)([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(input_dim, hidden_units, latent_dim, activation):
    latent_inputs = keras.Input(shape=(latent_dim,))
    h = dense_stack(latent_inputs, list(reversed(hidden_units)), activation, "dec")
    outputs = layers.Dense(input_dim, activation="sigmoid", name="x_mean")(h)
    return keras.Model(latent_inputs, outputs, name="decoder")


def bernoulli_log_prob(x, probs):
    """Summed log p(x | probs) for [n, D] rows, as the Keras example writes it."""
    return -x.shape[-1] * keras.losses.binary_crossentropy(x, probs)


def check_objective(objective, num_samples) -> None:
    """The references' training bound: the one-sample ELBO or the k-sample IWAE bound."""
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}.")
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples!r}.")
    if objective == "elbo" and num_samples != 1:
        raise ValueError("the Keras example's ELBO uses one sample: num_samples=1 "
                         "(num_samples > 1 needs objective='iwae').")


def iwae_losses(log_w, k: int):
    """(-log (1/k) sum_k w_k, 0) per example from log-weights [b, k]: the k-sample bound in the
    reconstruction-loss slot, the KL slot empty (the KL is inside w)."""
    bound = tf.reduce_logsumexp(log_w, 1) - math.log(k)
    return -bound, tf.zeros_like(bound)


def cached_function(model, key, make):
    """One ``tf.function`` of ``make()`` per model and key, kept in the model's ``__dict__``
    (outside Keras' attribute tracking): a new one per evaluation call retraced every time
    (TensorFlow's retracing warning at each evaluation). Used for ours and the references."""
    cache = model.__dict__.setdefault("_eval_functions", {})
    if key not in cache:
        cache[key] = tf.function(make())
    return cache[key]


class ReferenceModel(keras.Model):
    """Training and evaluation loops shared by the references (Keras-example ``train_step``).

    Subclasses define ``losses_per_example(x)`` -> (reconstruction loss, KL) for one posterior
    sample per example, ``log_weights(x, k, seed)`` -> [b, k] importance log-weights, and may
    define ``callbacks()`` (schedules run during ``fit``).
    """

    def __init__(self, input_dim, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def callbacks(self) -> list:
        return []

    def flatten(self, data):
        return ops.reshape(data, (-1, self.input_dim))

    def train_step(self, data):
        x = self.flatten(data)
        with tf.GradientTape() as tape:
            reconstruction_loss, kl_loss = self.losses_per_example(x, training=True)
            reconstruction_loss = ops.mean(reconstruction_loss)
            kl_loss = ops.mean(kl_loss)
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        reconstruction_loss, kl_loss = self.losses_per_example(self.flatten(data))
        self.total_loss_tracker.update_state(ops.mean(reconstruction_loss + kl_loss))
        self.reconstruction_loss_tracker.update_state(ops.mean(reconstruction_loss))
        self.kl_loss_tracker.update_state(ops.mean(kl_loss))
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------------------------ evaluation
    def elbo(self, data, batch_size: int = 500) -> np.ndarray:
        """Per-example one-sample ELBO, -(reconstruction loss + KL), float64 [n]."""
        data = np.asarray(data, np.float32)
        fn = cached_function(
            self, "elbo", lambda: lambda x: ops.add(*self.losses_per_example(self.flatten(x))))
        return np.concatenate([
            -np.asarray(fn(tf.constant(data[i:i + batch_size])), np.float64)
            for i in range(0, len(data), batch_size)
        ])

    def iwae(self, data, num_samples: int = 5000, batch_size: int = 100, chunk_size: int = 500,
             seed: int = 0):
        """Per-example (IWAE_K bound, mean log w over the same K samples), float64 arrays."""
        data = np.asarray(data, np.float32)
        fn = cached_function(self, "iwae", lambda: self.log_weights)
        bounds, elbos = [], []
        for b, start in enumerate(range(0, len(data), batch_size)):
            x = tf.constant(self.flatten(data[start:start + batch_size]))
            chunks = []
            for c, done in enumerate(range(0, num_samples, chunk_size)):
                k = min(chunk_size, num_samples - done)
                chunks.append(np.asarray(fn(x, k, tf.constant([seed + 104729 * b, c])),
                                         np.float64))
            log_w = np.concatenate(chunks, axis=1)  # [b, K]
            top = log_w.max(axis=1)
            bounds.append(top + np.log(np.mean(np.exp(log_w - top[:, None]), axis=1)))
            elbos.append(log_w.mean(axis=1))
        return np.concatenate(bounds), np.concatenate(elbos)


class ReferenceVAE(ReferenceModel):
    """Keras-example VAE: MLP encoder/decoder, diagonal Gaussian q, Bernoulli p(x|z).

    Inputs of any shape ``[batch, ...]`` are flattened to ``[batch, input_dim]``.
    ``objective="iwae"`` trains on Burda et al.'s k-sample bound instead (k =
    ``num_samples``): the loss is -log (1/k) sum_k w_k with the log-weights of
    ``log_weights``, put in the reconstruction-loss slot (the KL is inside w; the KL slot is 0).
    """

    def __init__(self, input_dim, hidden_units=(500,), latent_dim=20, activation="relu",
                 objective="elbo", num_samples=1, seed=None, **kwargs):
        super().__init__(input_dim, **kwargs)
        check_objective(objective, num_samples)
        self.hidden_units = tuple(hidden_units)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.objective, self.num_samples = objective, int(num_samples)
        self.iwae_seed = keras.random.SeedGenerator(None if seed is None else seed + 1)
        self.encoder = build_encoder(self.input_dim, self.hidden_units, self.latent_dim,
                                     activation, seed)
        self.decoder = build_decoder(self.input_dim, self.hidden_units, self.latent_dim,
                                     activation)

    def losses_per_example(self, x, training=False):
        """Per-example (reconstruction loss, KL) for one z ~ q(z|x): the Keras example's terms
        (training with ``objective="iwae"``: (-IWAE_k, 0))."""
        if training and self.objective == "iwae":
            eps = keras.random.normal([ops.shape(x)[0], self.num_samples, self.latent_dim],
                                      seed=self.iwae_seed)
            return iwae_losses(self.log_weights_from_noise(x, eps), self.num_samples)
        z_mean, z_log_var, z = self.encoder(x)
        reconstruction = self.decoder(z)
        reconstruction_loss = keras.losses.binary_crossentropy(x, reconstruction) * self.input_dim
        kl_loss = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
        return reconstruction_loss, kl_loss

    def call(self, data):
        return self.decoder(self.encoder(self.flatten(data))[2])

    def log_weights(self, x, num_samples, seed):
        """[b, k] log p(x, z_k) - log q(z_k | x), z_k = mu + sigma * eps_k."""
        eps = tf.random.stateless_normal([tf.shape(x)[0], num_samples, self.latent_dim], seed)
        return self.log_weights_from_noise(x, eps)

    def log_weights_from_noise(self, x, eps):
        """``log_weights`` with the standard normal noise ``eps`` [b, k, d] given."""
        b, num_samples, d = tf.shape(x)[0], tf.shape(eps)[1], self.latent_dim
        z_mean, z_log_var, _ = self.encoder(x)
        z = z_mean[:, None, :] + tf.exp(0.5 * z_log_var)[:, None, :] * eps
        probs = self.decoder(tf.reshape(z, [-1, d]))  # [b * k, D], the sigmoid's own output
        x_rep = tf.repeat(x, num_samples, axis=0)  # row i*k + j is x_i, as z's reshape
        log_px = bernoulli_log_prob(x_rep, probs)
        log_pz = -0.5 * tf.reduce_sum(tf.square(z), -1) - 0.5 * d * LOG_2PI
        log_qz = (-0.5 * tf.reduce_sum(tf.square(eps), -1)
                  - 0.5 * tf.reduce_sum(z_log_var, -1)[:, None] - 0.5 * d * LOG_2PI)
        return tf.reshape(log_px, [b, num_samples]) + log_pz - log_qz


# ---------------------------------------------------------------------------------- DLGM
def rank_one_precision_sample(mu, log_d, u, eps):
    """xi = mu + R eps with R R^T = (D + u u^T)^-1 (Rezende et al. 2014, appendix):
    R = D^-1/2 - gamma D^-1 u u^T D^-1/2, eta = u^T D^-1 u, gamma = (1 - (1+eta)^-1/2) / eta,
    written as 1 / (s (s + 1)) with s = (1 + eta)^1/2 (the same number, finite at eta = 0).
    ``mu, log_d, u``: [b, d]; ``eps``: [b, d] or [b, k, d]."""
    if eps.shape.rank == 3:
        mu, log_d, u = mu[:, None], log_d[:, None], u[:, None]
    inv_sqrt_d = tf.exp(-0.5 * log_d)
    w = u * inv_sqrt_d  # D^-1/2 u
    s = tf.sqrt(1.0 + tf.reduce_sum(tf.square(w), -1, keepdims=True))
    gamma = 1.0 / (s * (s + 1.0))
    return mu + inv_sqrt_d * (eps - gamma * w * tf.reduce_sum(w * eps, -1, keepdims=True))


def rank_one_precision_log_prob(xi, mu, log_d, u):
    """log N(xi; mu, (D + u u^T)^-1) with det(D + u u^T) = det D (1 + u^T D^-1 u)."""
    if xi.shape.rank == 3:
        mu, log_d, u = mu[:, None], log_d[:, None], u[:, None]
    delta = xi - mu
    eta = tf.reduce_sum(tf.square(u) * tf.exp(-log_d), -1)
    quad = tf.reduce_sum(tf.exp(log_d) * tf.square(delta), -1) + tf.square(
        tf.reduce_sum(u * delta, -1))
    d = xi.shape[-1]
    return 0.5 * (tf.reduce_sum(log_d, -1) + tf.math.log1p(eta) - quad - d * LOG_2PI)


def rank_one_precision_kl(mu, log_d, u):
    """KL(N(mu, C) || N(0, I)), C = (D + u u^T)^-1: 0.5 (tr C + mu^T mu - d - log det C) with
    tr C = tr D^-1 - |D^-1 u|^2 / (1 + eta) (Sherman-Morrison)."""
    inv_d = tf.exp(-log_d)
    eta = tf.reduce_sum(tf.square(u) * inv_d, -1)
    trace = tf.reduce_sum(inv_d, -1) - tf.reduce_sum(tf.square(u * inv_d), -1) / (1.0 + eta)
    log_det_c = -(tf.reduce_sum(log_d, -1) + tf.math.log1p(eta))
    return 0.5 * (trace + tf.reduce_sum(tf.square(mu), -1) - mu.shape[-1] - log_det_c)


class ReferenceDLGM(ReferenceModel):
    """Rezende et al.'s deep latent Gaussian model, written plainly.

    Generative: h_L = G_L xi_L, h_l = T_l(h_{l+1}) + G_l xi_l, x ~ Bernoulli(T_0(h_1)), xi_l ~
    N(0, I); G_l linear maps (``noise_map_initializer``: Keras' default Glorot, or the
    identity), T_l MLPs of ``hidden_units``. Recognition: one MLP of x gives, for every
    layer, mu_l, log D_l and u_l of q(xi_l | x) = N(mu_l, (D_l + u_l u_l^T)^-1).
    """

    def __init__(self, input_dim, hidden_units=(200,), latent_dims=(20, 10), activation="tanh",
                 noise_map_initializer="glorot_uniform", seed=None, **kwargs):
        super().__init__(input_dim, **kwargs)
        self.hidden_units = tuple(hidden_units)
        self.latent_dims = tuple(int(d) for d in latent_dims)
        self.seed_generator = keras.random.SeedGenerator(seed)
        inputs = keras.Input(shape=(self.input_dim,))
        h = dense_stack(inputs, self.hidden_units, activation, "rec")
        outputs = [layers.Dense(d, name=f"{name}_{l + 1}")(h)
                   for l, d in enumerate(self.latent_dims) for name in ("mu", "log_d", "u")]
        self.recognition = keras.Model(inputs, outputs, name="recognition")
        self.noise_maps = [layers.Dense(d, use_bias=False, name=f"G_{l + 1}",
                                        kernel_initializer=noise_map_initializer)
                           for l, d in enumerate(self.latent_dims)]
        self.transitions = []
        for l in range(len(self.latent_dims) - 1):
            h_in = keras.Input(shape=(self.latent_dims[l + 1],))
            out = layers.Dense(self.latent_dims[l], name=f"T_{l + 1}_out")(
                dense_stack(h_in, self.hidden_units, activation, f"T_{l + 1}"))
            self.transitions.append(keras.Model(h_in, out, name=f"T_{l + 1}"))
        self.decoder = build_decoder(self.input_dim, self.hidden_units, self.latent_dims[0],
                                     activation)

    def posterior(self, x):
        out = self.recognition(x)
        return [tuple(out[3 * l:3 * l + 3]) for l in range(len(self.latent_dims))]

    def generate(self, xis):
        h = self.noise_maps[-1](xis[-1])
        for l in reversed(range(len(self.latent_dims) - 1)):
            h = self.transitions[l](h) + self.noise_maps[l](xis[l])
        return self.decoder(h)

    def noise(self, b):
        """One standard-normal draw per layer, [b, d_l], from the model's seed generator."""
        return [keras.random.normal((b, d), seed=self.seed_generator) for d in self.latent_dims]

    def terms(self, x, *eps):
        """(log p(x|xi), sum_l KL(q(xi_l|x) || N(0, I))) per example, xi_l from the noise
        ``eps`` (one [b, d_l] tensor per layer)."""
        posterior = self.posterior(x)
        xis = [rank_one_precision_sample(mu, log_d, u, e) for (mu, log_d, u), e in
               zip(posterior, eps)]
        log_px = bernoulli_log_prob(x, self.generate(xis))
        return log_px, tf.add_n([rank_one_precision_kl(*p) for p in posterior])

    def losses_per_example(self, x, training=False):
        log_px, kl_loss = self.terms(x, *self.noise(ops.shape(x)[0]))
        return -log_px, kl_loss

    def call(self, data):
        x = self.flatten(data)
        return self.generate([mu for mu, _, _ in self.posterior(x)])

    def log_weights(self, x, num_samples, seed):
        b = tf.shape(x)[0]
        log_w = 0.0
        xis = []
        for l, (d, (mu, log_d, u)) in enumerate(zip(self.latent_dims, self.posterior(x))):
            eps = tf.random.stateless_normal([b, num_samples, d], seed + [0, 1000 * (l + 1)])
            xi = rank_one_precision_sample(mu, log_d, u, eps)
            log_prior = -0.5 * tf.reduce_sum(tf.square(xi), -1) - 0.5 * d * LOG_2PI
            log_w += log_prior - rank_one_precision_log_prob(xi, mu, log_d, u)
            xis.append(tf.reshape(xi, [-1, d]))
        probs = self.generate(xis)  # [b * k, D]
        log_px = bernoulli_log_prob(tf.repeat(x, num_samples, axis=0), probs)
        return tf.reshape(log_px, [b, num_samples]) + log_w

    def layer_pairs(self, ours) -> list:
        """(our layer, this model's layer) for every Dense layer of the same role in a zoo
        ``DLGM`` of the same sizes, for copying weights between them (the raw precision
        diagonal is log D here: ours must use ``scale_activation="exp"``, ``min_scale=0``
        for the copy to be the same model)."""
        self.generate([tf.zeros((1, d)) for d in self.latent_dims])  # builds the G_l
        dense = lambda net: [layer for layer in net.layers if layer.get_weights()]  # noqa: E731
        pairs = list(zip(dense(ours.encoder), dense(self.recognition)[:len(self.hidden_units)]))
        for l, gauss in enumerate(ours.posteriors):
            pairs += [(gauss.loc_dense, self.recognition.get_layer(f"mu_{l + 1}")),
                      (gauss.param_denses[0], self.recognition.get_layer(f"log_d_{l + 1}")),
                      (gauss.param_denses[1], self.recognition.get_layer(f"u_{l + 1}"))]
        pairs += list(zip(ours.noise_maps, self.noise_maps))
        for mine, theirs in zip(ours.transitions, self.transitions):
            pairs += list(zip(dense(mine), dense(theirs)))
        return pairs + list(zip(dense(ours.decoder), dense(self.decoder)))


# ------------------------------------------------------------------ two-stochastic-layer VAE
def gaussian_net(input_dim, hidden_units, latent_dim, activation, name):
    """inputs -> Dense stack -> (mean, log_var), the Keras example's encoder head."""
    inputs = keras.Input(shape=(input_dim,))
    h = dense_stack(inputs, hidden_units, activation, name)
    return keras.Model(inputs, [layers.Dense(latent_dim, name=f"{name}_mean")(h),
                                layers.Dense(latent_dim, name=f"{name}_log_var")(h)], name=name)


def normal_log_prob(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis."""
    return -0.5 * tf.reduce_sum(LOG_2PI + log_var + tf.square(z - mean) / tf.exp(log_var), -1)


class ReferenceHierarchicalVAE(ReferenceModel):
    """Burda et al. 2016's two-stochastic-layer VAE, written plainly in the Keras example's style.

    q(h1|x) and q(h2|h1) are Keras-example encoders (Dense tanh stack, ``mean`` and
    ``log_var`` heads); p(h2) = N(0, I); p(h1|h2) is the same kind of network with the mirrored
    widths of q(h2|h1); p(x|h1) the Keras example's sigmoid decoder. Training loss, one sample
    (h1, h2) ~ q per example: the binary cross-entropy * D as the reconstruction loss and
    log q(h1|x) + log q(h2|h1) - log p(h1|h2) - log p(h2) in the KL slot (no analytic KL, as
    the paper's Eqn. 7). ``objective="iwae"`` trains on the k-sample bound instead (k =
    ``num_samples``), -log (1/k) sum_k w_k in the reconstruction-loss slot, as ReferenceVAE.
    """

    def __init__(self, input_dim, hidden_units=((200, 200), (100, 100)), latent_dims=(100, 50),
                 activation="tanh", objective="elbo", num_samples=1, seed=None, **kwargs):
        super().__init__(input_dim, **kwargs)
        check_objective(objective, num_samples)
        (u1, u2), (d1, d2) = hidden_units, latent_dims
        self.latent_dims = (int(d1), int(d2))
        self.objective, self.num_samples = objective, int(num_samples)
        self.q_h1 = gaussian_net(self.input_dim, u1, d1, activation, "q_h1")
        self.q_h2 = gaussian_net(d1, u2, d2, activation, "q_h2")
        self.p_h1 = gaussian_net(d2, list(reversed(u2)), d1, activation, "p_h1")
        self.decoder = build_decoder(self.input_dim, u1, d1, activation)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def noise(self, b, k=None):
        lead = [b] if k is None else [b, k]
        return [keras.random.normal(lead + [d], seed=self.seed_generator)
                for d in self.latent_dims]

    def terms(self, x, eps1, eps2):
        """(log p(x|h1), log q(h1, h2|x) - log p(h1, h2)) per sample; ``eps1`` [b, k, d1] and
        ``eps2`` [b, k, d2] standard normal, or [b, d] for one sample per example."""
        d1, d2 = self.latent_dims
        k = None if eps1.shape.rank == 2 else tf.shape(eps1)[1]
        m1, lv1 = self.q_h1(x)
        if k is not None:  # rows i * k + j: example i, sample j
            m1, lv1, x = (tf.repeat(t, k, axis=0) for t in (m1, lv1, x))
            eps1, eps2 = tf.reshape(eps1, [-1, d1]), tf.reshape(eps2, [-1, d2])
        h1 = m1 + tf.exp(0.5 * lv1) * eps1
        m2, lv2 = self.q_h2(h1)
        h2 = m2 + tf.exp(0.5 * lv2) * eps2
        pm1, plv1 = self.p_h1(h2)
        log_px = bernoulli_log_prob(x, self.decoder(h1))
        log_q = normal_log_prob(h1, m1, lv1) + normal_log_prob(h2, m2, lv2)
        log_p = normal_log_prob(h1, pm1, plv1) + normal_log_prob(h2, 0.0, 0.0)
        if k is None:
            return log_px, log_q - log_p
        return tf.reshape(log_px, [-1, k]), tf.reshape(log_q - log_p, [-1, k])

    def losses_per_example(self, x, training=False):
        b = ops.shape(x)[0]
        if training and self.objective == "iwae":
            log_px, kl = self.terms(x, *self.noise(b, self.num_samples))
            return iwae_losses(log_px - kl, self.num_samples)
        log_px, kl = self.terms(x, *self.noise(b))
        return -log_px, kl

    def call(self, data):
        return self.decoder(self.q_h1(self.flatten(data))[0])

    def log_weights(self, x, num_samples, seed):
        b = tf.shape(x)[0]
        eps = [tf.random.stateless_normal([b, num_samples, d], seed + [0, 1000 * (l + 1)])
               for l, d in enumerate(self.latent_dims)]
        log_px, kl = self.terms(x, *eps)
        return log_px - kl

    def layer_pairs(self, ours) -> list:
        """(our layer, this model's layer) for every Dense layer of the same role in a zoo
        ``HierarchicalVAE`` of the same sizes (the two name their layers differently), for
        copying weights between them."""
        pairs = []
        for net, gauss, name in [(ours.encoders[0], ours.posteriors[0], "q_h1"),
                                 (ours.encoders[1], ours.posteriors[1], "q_h2"),
                                 (ours.prior_networks[0], ours.conditional_priors[0], "p_h1")]:
            target = getattr(self, name)
            dense = [layer for layer in net.layers if layer.get_weights()]
            pairs += [(dense[i], target.get_layer(f"{name}_{i}")) for i in range(len(dense))]
            pairs += [(gauss.loc_dense, target.get_layer(f"{name}_mean")),
                      (gauss.param_denses[0], target.get_layer(f"{name}_log_var"))]
        pairs += zip([layer for layer in ours.decoder.layers if layer.get_weights()],
                     [layer for layer in self.decoder.layers if layer.get_weights()])
        return pairs


# ------------------------------------------------------------------------- categorical VAE
class ReferenceCategoricalVAE(ReferenceModel):
    """Jang et al.'s Gumbel-softmax VAE, written as the authors' notebook does.

    N x K categorical latents with a uniform prior (``prior="learned"``: trainable prior logits
    [N, K] from zeros, Jang et al.'s paper); training feeds the decoder relaxed samples
    softmax((logits + g) / tau), g ~ Gumbel(0, 1), and subtracts KL(q(z|x) || p(z)) of the
    discrete distributions; tau = max(tau_min, tau_0 exp(-r t)) with t updated every
    ``anneal_every`` steps (``callbacks()``). Evaluation decodes hard one-hot samples of q.
    """

    def __init__(self, input_dim, hidden_units=(512, 256), num_variables=20, num_classes=10,
                 activation="relu", temperature=1.0, min_temperature=0.5, anneal_rate=3e-5,
                 anneal_every=500, prior="uniform", seed=None, **kwargs):
        super().__init__(input_dim, **kwargs)
        if prior not in ("uniform", "learned"):
            raise ValueError(f"prior must be 'uniform' or 'learned', got {prior!r}.")
        self.num_variables, self.num_classes = int(num_variables), int(num_classes)
        self.prior_logits = (self.add_weight(shape=(self.num_variables, self.num_classes),
                                             initializer="zeros", name="prior_logits")
                             if prior == "learned" else None)
        self.schedule = (float(temperature), float(min_temperature), float(anneal_rate),
                         int(anneal_every))
        self.seed_generator = keras.random.SeedGenerator(seed)
        inputs = keras.Input(shape=(self.input_dim,))
        logits = layers.Dense(self.num_variables * self.num_classes, name="logits")(
            dense_stack(inputs, hidden_units, activation, "enc"))
        self.encoder = keras.Model(inputs, logits, name="encoder")
        self.decoder = build_decoder(self.input_dim, hidden_units,
                                     self.num_variables * self.num_classes, activation)
        self.tau = tf.Variable(float(temperature), trainable=False, name="tau")

    def callbacks(self):
        tau0, tau_min, rate, every = self.schedule

        def anneal(batch, logs=None):
            step = int(self.optimizer.iterations.numpy())
            if step % every == 0:
                self.tau.assign(max(tau_min, tau0 * math.exp(-rate * step)))

        return [keras.callbacks.LambdaCallback(on_train_batch_begin=anneal)]

    def log_q(self, x):
        logits = tf.reshape(self.encoder(x), [-1, self.num_variables, self.num_classes])
        return tf.nn.log_softmax(logits)

    def log_prior(self):
        """log p(z_n = c), [N, K] (uniform: -log K)."""
        if self.prior_logits is None:
            return tf.fill([self.num_variables, self.num_classes], -math.log(self.num_classes))
        return tf.nn.log_softmax(self.prior_logits)

    def sample(self, log_q, uniform, hard):
        gumbel = -tf.math.log(-tf.math.log(uniform))
        if hard:
            return tf.one_hot(tf.argmax(log_q + gumbel, -1), self.num_classes)
        return tf.nn.softmax((log_q + gumbel) / self.tau)

    def noise(self, b):
        """The uniforms of one Gumbel draw, [[b, N, K]] (a list, one entry per latent layer as
        the other references' ``noise``), from the model's seed generator."""
        return [keras.random.uniform((b, self.num_variables, self.num_classes), minval=1e-20,
                                     maxval=1.0, seed=self.seed_generator)]

    def terms(self, x, u, hard=True):
        """(log p(x|z), KL(q(z|x) || p(z))) per example, z from the uniforms ``u`` [b, N, K]:
        one-hot (``hard``) or relaxed at the current temperature."""
        log_q = self.log_q(x)
        y = self.sample(log_q, u, hard=hard)
        probs = self.decoder(tf.reshape(y, [-1, self.num_variables * self.num_classes]))
        kl = tf.reduce_sum(tf.exp(log_q) * (log_q - self.log_prior()), [1, 2])
        return bernoulli_log_prob(x, probs), kl

    def losses_per_example(self, x, training=False):
        log_px, kl_loss = self.terms(x, *self.noise(ops.shape(x)[0]), hard=not training)
        return -log_px, kl_loss

    def call(self, data):
        x = self.flatten(data)
        mode = tf.one_hot(tf.argmax(self.log_q(x), -1), self.num_classes)
        return self.decoder(tf.reshape(mode, [-1, self.num_variables * self.num_classes]))

    def log_weights(self, x, num_samples, seed):
        b, n, k = tf.shape(x)[0], self.num_variables, self.num_classes
        log_q = self.log_q(x)[:, None]  # [b, 1, N, K]
        u = tf.random.stateless_uniform([b, num_samples, n, k], seed, minval=1e-20, maxval=1.0)
        z = self.sample(log_q, u, hard=True)  # [b, k, N, K] one-hot
        log_qz = tf.reduce_sum(z * log_q, [2, 3])
        log_pz = tf.reduce_sum(z * self.log_prior(), [2, 3])
        probs = self.decoder(tf.reshape(z, [-1, n * k]))
        log_px = bernoulli_log_prob(tf.repeat(x, num_samples, axis=0), probs)
        return tf.reshape(log_px, [b, num_samples]) + log_pz - log_qz

    def layer_pairs(self, ours) -> list:
        """(our layer, this model's layer) for every weight of a zoo ``CategoricalVAE`` of the
        same sizes (the learned prior's logits as a pair of ``WeightView``), for copying
        weights between them."""
        dense = lambda net: [layer for layer in net.layers if layer.get_weights()]  # noqa: E731
        pairs = list(zip(dense(ours.encoder), dense(self.encoder)[:-1]))
        pairs.append((ours.latent.logits_dense, self.encoder.get_layer("logits")))
        if self.prior_logits is not None:
            pairs.append((WeightView(ours.latent.prior_logits), WeightView(self.prior_logits)))
        return pairs + list(zip(dense(ours.decoder), dense(self.decoder)))


class WeightView:
    """One variable with a layer's ``get_weights`` / ``set_weights``, for ``layer_pairs``."""

    def __init__(self, variable):
        self.variable = variable

    def get_weights(self) -> list:
        return [self.variable.numpy()]

    def set_weights(self, weights) -> None:
        (value,) = weights
        self.variable.assign(value)


def tfp_nile_particle_filter(observations, num_particles: int):
    """TFP's ``tfp.experimental.mcmc.particle_filter`` on the Nile local-level model (Durbin &
    Koopman's estimates: sigma_eta^2 1469.1, sigma_eps^2 15099; x_0 ~ N(1000, 1e5)), float64,
    systematic resampling at ESS < N/2 (TFP's defaults, as ours). ``observations``
    [time, batch, 1]; returns a ``tf.function(seed) -> log Z-hat [batch]``."""
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    obs = tf.constant(observations, tf.float64)
    b = int(obs.shape[1])
    f64 = tf.float64

    @tf.function
    def run(seed):
        out = tfp.experimental.mcmc.particle_filter(
            observations=obs,
            initial_state_prior=tfd.MultivariateNormalDiag(
                tf.fill([b, 1], tf.constant(1000.0, f64)),
                tf.fill([b, 1], tf.constant(1e5**0.5, f64))),
            transition_fn=lambda _, x: tfd.MultivariateNormalDiag(
                x, tf.constant([1469.1**0.5], f64)),
            observation_fn=lambda _, x: tfd.MultivariateNormalDiag(
                x, tf.constant([15099.0**0.5], f64)),
            num_particles=num_particles, seed=seed)
        return tf.reduce_sum(out[3], 0)

    return run

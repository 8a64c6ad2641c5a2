"""A plain VAE written the way the Keras examples write one: the benchmark's reference.

It follows keras.io's "Variational AutoEncoder" example (``Sampling`` layer, functional
encoder returning ``z_mean, z_log_var, z``, a ``keras.Model`` subclass whose ``train_step``
computes ``binary_crossentropy * input_dim`` as the summed reconstruction term plus the
analytic KL) with the MLP widths passed in, so it can mirror the zoo's models. It is
deliberately independent of the zoo: nothing from ``zoo/`` or ``layers/`` is imported, and the
ELBO and importance-weighted (IWAE) evaluations below are written from the equations:

    log w_k = log p(x | z_k) + log N(z_k; 0, I) - log N(z_k; mu(x), diag(sigma(x)^2)),
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


def build_encoder(input_dim, hidden_units, latent_dim, activation, seed=None):
    inputs = keras.Input(shape=(input_dim,))
    h = inputs
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"enc_{i}")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    z = Sampling(seed=seed)([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(input_dim, hidden_units, latent_dim, activation):
    latent_inputs = keras.Input(shape=(latent_dim,))
    h = latent_inputs
    for i, units in enumerate(reversed(hidden_units)):
        h = layers.Dense(units, activation=activation, name=f"dec_{i}")(h)
    outputs = layers.Dense(input_dim, activation="sigmoid", name="x_mean")(h)
    return keras.Model(latent_inputs, outputs, name="decoder")


class ReferenceVAE(keras.Model):
    """Keras-example VAE: MLP encoder/decoder, diagonal Gaussian q, Bernoulli p(x|z).

    Inputs of any shape ``[batch, ...]`` are flattened to ``[batch, input_dim]``.
    """

    def __init__(self, input_dim, hidden_units=(500,), latent_dim=20, activation="relu",
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.hidden_units = tuple(hidden_units)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.encoder = build_encoder(self.input_dim, self.hidden_units, self.latent_dim,
                                     activation, seed)
        self.decoder = build_decoder(self.input_dim, self.hidden_units, self.latent_dim,
                                     activation)
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def flatten(self, data):
        return ops.reshape(data, (-1, self.input_dim))

    def losses_per_example(self, x):
        """Per-example (reconstruction loss, KL) for one z ~ q(z|x): the Keras example's terms."""
        z_mean, z_log_var, z = self.encoder(x)
        reconstruction = self.decoder(z)
        reconstruction_loss = keras.losses.binary_crossentropy(x, reconstruction) * self.input_dim
        kl_loss = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
        return reconstruction_loss, kl_loss

    def call(self, data):
        return self.decoder(self.encoder(self.flatten(data))[2])

    def train_step(self, data):
        x = self.flatten(data)
        with tf.GradientTape() as tape:
            reconstruction_loss, kl_loss = self.losses_per_example(x)
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
        """Per-example one-sample ELBO, -(reconstruction loss + analytic KL), float64 [n]."""
        data = np.asarray(data, np.float32)
        fn = tf.function(lambda x: ops.add(*self.losses_per_example(self.flatten(x))))
        return np.concatenate([
            -np.asarray(fn(tf.constant(data[i:i + batch_size])), np.float64)
            for i in range(0, len(data), batch_size)
        ])

    def _log_weights(self, x, num_samples, seed):
        """[b, k] log p(x, z_k) - log q(z_k | x), z_k = mu + sigma * eps_k."""
        b, d = tf.shape(x)[0], self.latent_dim
        z_mean, z_log_var, _ = self.encoder(x)
        eps = tf.random.stateless_normal([b, num_samples, d], seed)
        z = z_mean[:, None, :] + tf.exp(0.5 * z_log_var)[:, None, :] * eps
        probs = self.decoder(tf.reshape(z, [-1, d]))  # [b * k, D], the sigmoid's own output
        x_rep = tf.repeat(x, num_samples, axis=0)  # row i*k + j is x_i, as z's reshape
        log_px = -self.input_dim * keras.losses.binary_crossentropy(x_rep, probs)
        log_pz = -0.5 * tf.reduce_sum(tf.square(z), -1) - 0.5 * d * LOG_2PI
        log_qz = (-0.5 * tf.reduce_sum(tf.square(eps), -1)
                  - 0.5 * tf.reduce_sum(z_log_var, -1)[:, None] - 0.5 * d * LOG_2PI)
        return tf.reshape(log_px, [b, num_samples]) + log_pz - log_qz

    def iwae(self, data, num_samples: int = 5000, batch_size: int = 100, chunk_size: int = 500,
             seed: int = 0):
        """Per-example (IWAE_K bound, mean log w over the same K samples), float64 arrays."""
        data = np.asarray(data, np.float32)
        fn = tf.function(self._log_weights)
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

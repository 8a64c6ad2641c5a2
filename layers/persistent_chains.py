"""Persistent Markov chains held as non-trainable state (stochastic maximum likelihood)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import register


@register
class PersistentChains(keras.layers.Layer):
    """The fantasy particles of persistent contrastive divergence.

    Tieleman, "Training Restricted Boltzmann Machines using Approximations to the Likelihood
    Gradient", 2008 (PCD); Younes 1989 (stochastic maximum likelihood). The negative phase of
    each update continues the chains of the previous one instead of restarting them at the
    data, so they follow the slowly changing model distribution. The states are
    non-trainable weights: they are saved with the model and restored by ``.keras`` loading.

    Args:
        num_chains: int. Number of chains.
        sizes: list of int. Width of each state tensor (e.g. ``[V]`` for an RBM,
            ``[V, H1, H2]`` for a DBM). States start at zero.

    Example:

    >>> chains = PersistentChains(4, [3, 2])
    >>> [tuple(s.shape) for s in chains.read()]
    [(4, 3), (4, 2)]
    >>> chains.write([tf.ones([4, 3]), tf.ones([4, 2])])
    >>> float(tf.reduce_sum(chains.read()[0]))
    12.0
    """

    def __init__(self, num_chains: int, sizes, **kwargs):
        super().__init__(**kwargs)
        if int(num_chains) < 1:
            raise ValueError(f"`num_chains` must be >= 1, got {num_chains}.")
        sizes = [int(s) for s in sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"`sizes` must be positive widths, got {sizes}.")
        self.num_chains = int(num_chains)
        self.sizes = sizes
        self.states = [self.add_weight(shape=(self.num_chains, s), initializer="zeros",
                                       trainable=False, name=f"state_{i}")
                       for i, s in enumerate(sizes)]
        self.built = True

    def read(self) -> list:
        """The current states, [num_chains, size] each."""
        return [tf.convert_to_tensor(s) for s in self.states]

    def write(self, states) -> None:
        """Replace the states (the chains' positions after this update's Gibbs steps)."""
        if len(states) != len(self.states):
            raise ValueError(f"`states` must hold {len(self.states)} tensors, got {len(states)}.")
        for var, value in zip(self.states, states):
            var.assign(tf.cast(value, var.dtype))

    def call(self, inputs=None):
        return self.read()

    def get_config(self):
        return {**super().get_config(), "num_chains": self.num_chains, "sizes": self.sizes}

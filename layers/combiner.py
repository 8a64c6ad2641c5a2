"""Combiner of the structured inference network (Krishnan, Shalit & Sontag 2017)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import check_positive_int, register


@register
class Combiner(keras.layers.Layer):
    r"""Mixes the previous latent with RNN summaries of the observations.

    Krishnan, Shalit & Sontag, "Structured Inference Networks for Nonlinear State Space
    Models" (2017): $h = \frac{1}{1 + J}\left(\tanh(W z_{t-1} + b) + \sum_{j=1}^{J} h_j\right)$,
    with $J = 1$ for ST-L (forward RNN) or ST-R (backward RNN) and $J = 2$ for ST-LR. The result
    parameterizes $q(z_t | z_{t-1}, x)$ (through a ``GaussianPosterior``).

    ``call(z_prev, rnn_states)`` takes ``z_prev`` ``[..., latent_dim]`` and a list of RNN
    states ``[..., units]``, and returns ``[..., units]``.

    Args:
        units: int. Width of the RNN states and of the output.

    Example:

    >>> import numpy as np
    >>> combiner = Combiner(4)
    >>> combiner(np.zeros((2, 3), "float32"), [np.ones((2, 4), "float32")]).shape
    TensorShape([2, 4])
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        self.units = units
        self.dense = keras.layers.Dense(units, activation="tanh", name="z_to_hidden",
                                        dtype=self.dtype_policy)

    def build(self, z_prev_shape, rnn_states_shape=None):
        self.dense.build(z_prev_shape)

    def call(self, z_prev, rnn_states):
        if not rnn_states:
            raise ValueError("`rnn_states` must hold at least one RNN state.")
        for state in rnn_states:
            if state.shape[-1] is not None and state.shape[-1] != self.units:
                raise ValueError(f"RNN states must have {self.units} units, got {state.shape}.")
        total = self.dense(z_prev) + tf.add_n([tf.cast(s, self.compute_dtype)
                                               for s in rnn_states])
        return total / float(1 + len(rnn_states))

    def compute_output_spec(self, z_prev, rnn_states):
        return keras.KerasTensor((*z_prev.shape[:-1], self.units), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "units": self.units}

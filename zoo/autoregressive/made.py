"""MADE as a density model, with connectivity-agnostic training and mask ensembles."""

from __future__ import annotations

from zoo.autoregressive.base import BinaryAutoregressiveModel
from zoo.layers.autoregressive_network import AutoregressiveNetwork
from zoo.layers.common import register


@register
class MADE(BinaryAutoregressiveModel):
    r"""Masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle,
    "MADE: Masked Autoencoder for Distribution Estimation", 2015).

    An MLP whose weight masks (see :class:`zoo.layers.AutoregressiveNetwork`) make output d a
    function of the inputs before d in an ordering, so that
    $p(x) = \prod_d \mathrm{Bern}(x_d; \sigma(\mathrm{out}_d(x_{<d})))$ is exact and costs one
    pass. With ``num_masks`` > 1 the connectivity (hidden degrees, and the ordering when
    ``input_order="random"``) is resampled from that many draws, one per training batch
    (connectivity-agnostic training); the ensemble
    $p(x) = \frac1K \sum_k p_{M_k}(x)$ over the masks is the model evaluated
    (``log_prob(x)``; ``log_prob(x, member=k)`` is one mask).

    ``direct_connections=True`` adds a masked linear input -> output connection beside the
    hidden layers (each output sees every input before it directly, as in a fully visible
    sigmoid belief net); the authors' code (github mgermain/MADE) has it on
    (``direct_input_connect="Output"``) in every command its README gives for the paper's
    results. Off by default.

    Args:
        input_shape: tuple. Shape of one example.
        hidden_units: tuple of int. Hidden widths (default one layer of 500; the command the
            authors' README gives for their best MNIST result uses two layers of 8000).
        input_order: str or sequence. ``"left-to-right"``, ``"right-to-left"``, ``"random"``
            or explicit degrees.
        hidden_degrees: str. ``"random"`` (the paper) or ``"equal"``.
        num_masks: int. Mask draws for connectivity-agnostic training and the ensemble.
        activation: str. Hidden activation.
        direct_connections: bool. Add the masked direct input -> output connection.
        kernel_initializer: str. Initializer of the kernels (the authors' MNIST command:
            orthogonal).
        seed: int or None. Seed of the masks and of the per-batch mask choice.

    Example:

    >>> import numpy as np
    >>> model = MADE(input_shape=(4,), hidden_units=(8,), num_masks=2, seed=0)
    >>> x = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], "float32")
    >>> model.compile(optimizer="adam")
    >>> _ = model.fit(x, epochs=1, verbose=0)
    >>> tuple(model.log_prob(x).shape), tuple(model.log_prob(x, member=1).shape)
    ((2,), (2,))
    """

    def __init__(self, input_shape=(28, 28, 1), hidden_units=(500,),
                 input_order="left-to-right", hidden_degrees: str = "random",
                 num_masks: int = 1, activation: str = "relu",
                 direct_connections: bool = False, kernel_initializer="glorot_uniform",
                 seed: int | None = None, **kwargs):
        super().__init__(input_shape, seed=seed, **kwargs)
        self.network = AutoregressiveNetwork(
            self.event_size, params=1, hidden_units=tuple(hidden_units),
            input_order=input_order, hidden_degrees=hidden_degrees, num_masks=num_masks,
            activation=activation, direct_connections=direct_connections,
            kernel_initializer=kernel_initializer, seed=seed, dtype=self.dtype_policy,
            name="network")
        self.hidden_units = self.network.hidden_units
        self.input_order = self.network.input_order
        self.hidden_degrees = hidden_degrees
        self.num_masks = num_masks
        self.activation = activation
        self.direct_connections = self.network.direct_connections
        self.kernel_initializer = kernel_initializer
        self.network.build((None, self.event_size))

    @property
    def num_members(self) -> int:
        return self.num_masks

    def member_degrees(self):
        return self.network.degrees

    def conditional_logits(self, x, member=0):
        return self.network(x, mask_index=member)[..., 0]

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "input_order": self.input_order, "hidden_degrees": self.hidden_degrees,
                "num_masks": self.num_masks, "activation": self.activation,
                "direct_connections": self.direct_connections,
                "kernel_initializer": self.kernel_initializer}

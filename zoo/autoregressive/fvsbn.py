"""Fully visible sigmoid belief network: logistic regressions on the preceding pixels."""

from __future__ import annotations

from zoo.autoregressive.base import BinaryAutoregressiveModel
from zoo.layers.autoregressive_network import AutoregressiveNetwork
from zoo.layers.common import register


@register
class FVSBN(BinaryAutoregressiveModel):
    r"""Fully visible sigmoid belief network (Frey 1998, "Graphical Models for Machine Learning
    and Digital Communication"; the baseline of Larochelle & Murray 2011, "The Neural
    Autoregressive Distribution Estimator").

    $$p(x) = \prod_d p(x_{o_d} \mid x_{o_{<d}}), \qquad
      p(x_{o_d} = 1 \mid x_{o_{<d}}) = \sigma\Big(b_{o_d} + \sum_{j<d} W_{o_d o_j} x_{o_j}\Big)$$

    one logistic regression per pixel on the pixels before it; $W$ is a masked
    strictly-triangular (in the ordering) matrix, i.e. a MADE with no hidden layer.
    Trained by maximum likelihood; ``log_prob`` is exact.

    Args:
        input_shape: tuple. Shape of one example, e.g. ``(28, 28, 1)``.
        input_order: str or sequence. ``"left-to-right"``, ``"right-to-left"``, ``"random"``
            or explicit degrees (a permutation of 1..D).
        seed: int or None. Seed of a random ordering and of the training noise.

    Example:

    >>> import numpy as np
    >>> model = FVSBN(input_shape=(4,), seed=0)
    >>> x = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], "float32")
    >>> model.compile(optimizer="adam")
    >>> _ = model.fit(x, epochs=1, verbose=0)
    >>> tuple(model.log_prob(x).shape)
    (2,)
    """

    def __init__(self, input_shape=(28, 28, 1), input_order="left-to-right",
                 seed: int | None = None, **kwargs):
        super().__init__(input_shape, seed=seed, **kwargs)
        self.network = AutoregressiveNetwork(
            self.event_size, params=1, hidden_units=(), input_order=input_order,
            kernel_initializer="zeros", seed=seed, dtype=self.dtype_policy, name="network")
        self.input_order = self.network.input_order
        self.network.build((None, self.event_size))

    def member_degrees(self):
        return self.network.degrees

    def conditional_logits(self, x, member=0):
        return self.network(x, mask_index=member)[..., 0]

    def get_config(self):
        return {**super().get_config(), "input_order": self.input_order}

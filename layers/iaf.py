"""Inverse autoregressive flow step (Kingma et al. 2016)."""

from __future__ import annotations

from zoo.layers.affine_autoregressive_flow import AffineAutoregressiveFlow
from zoo.layers.common import register


@register
class IAF(AffineAutoregressiveFlow):
    r"""One inverse autoregressive flow step: Kingma, Salimans, Jozefowicz, Chen, Sutskever &
    Welling, "Improving Variational Inference with Inverse Autoregressive Flow" (2016).

    $[m, s] = \mathrm{MADE}(z, h)$, $\sigma = \mathrm{sigmoid}(s + b_f)$,
    $y = \sigma \odot z + (1 - \sigma) \odot m$ (``transform="gated"``, the paper's
    numerically stable update; ``"affine"``: $y = z\, e^{s} + m$), with
    $\log|\det \partial y/\partial z| = \sum_d \log \sigma_d$. The MADE reads z (and the
    optional context h, e.g. the encoder's features), so ``forward`` (drawing a posterior
    sample and its density) is one pass; ``inverse`` (the density of an outside point) takes
    D passes. A posterior after K steps: $\log q(z_K) = \log q(z_0) - \sum_k \log|\det|_k$.
    Alternate ``input_order`` between stacked steps.

    Args:
        event_size: int. Dimension D of z.
        hidden_units: tuple of int. MADE hidden widths.
        context_size: int or None. Width of the context input h.
        transform: str. ``"gated"`` or ``"affine"``.
        forget_bias: float. b_f of the gated update (sigma starts near sigmoid(b_f)).
        input_order: str or sequence. The MADE's ordering.
        activation: str. MADE hidden activation.
        seed: int or None. Seed of a random ordering.

    Example:

    >>> import numpy as np
    >>> flow = IAF(3, hidden_units=(8,))
    >>> z = np.random.RandomState(0).randn(2, 3).astype("float32")
    >>> y, log_det = flow.forward(z)
    >>> back, inv_log_det = flow.inverse(y)
    >>> bool(np.allclose(back, z, atol=1e-5)), bool(np.allclose(log_det, -inv_log_det))
    (True, True)
    """

    conditioned_on = "input"

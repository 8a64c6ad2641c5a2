"""Masked autoregressive flow step (Papamakarios et al. 2017)."""

from __future__ import annotations

from zoo.layers.affine_autoregressive_flow import AffineAutoregressiveFlow
from zoo.layers.common import register


@register
class MAF(AffineAutoregressiveFlow):
    r"""One masked autoregressive flow step: Papamakarios, Pavlakou & Murray, "Masked
    Autoregressive Flow for Density Estimation" (2017).

    $x = \mathrm{scale}(x_{<d}) \odot u + \mathrm{shift}(x_{<d})$ with
    $[m, s] = \mathrm{MADE}(x, h)$: ``transform="affine"`` is the paper's
    $x_d = u_d e^{s_d} + m_d$; ``"gated"`` is Kingma et al. (2016)'s update
    $x = \sigma \odot u + (1 - \sigma) \odot m$, $\sigma = \mathrm{sigmoid}(s + b_f)$. The MADE
    reads x, so ``inverse`` (x -> u, the density direction:
    $\log p(x) = \log p_u(u) + \log|\det \partial u / \partial x|$) is one pass and
    ``forward`` (u -> x, sampling) takes D passes; IAF is the reverse arrangement.

    Args:
        event_size: int. Dimension D.
        hidden_units: tuple of int. MADE hidden widths.
        context_size: int or None. Width of a conditioning input.
        transform: str. ``"affine"`` or ``"gated"``.
        forget_bias: float. b_f of the gated update.
        input_order: str or sequence. The MADE's ordering.
        activation: str. MADE hidden activation.
        seed: int or None. Seed of a random ordering.

    Example:

    >>> import numpy as np
    >>> flow = MAF(3, hidden_units=(8,), transform="affine")
    >>> x = np.random.RandomState(0).randn(2, 3).astype("float32")
    >>> u, log_det = flow.inverse(x)
    >>> back, fwd_log_det = flow.forward(u)
    >>> bool(np.allclose(back, x, atol=1e-5)), bool(np.allclose(log_det, -fwd_log_det))
    (True, True)
    """

    conditioned_on = "output"

    def __init__(self, event_size: int, hidden_units=(64,), context_size: int | None = None,
                 transform: str = "affine", **kwargs):
        super().__init__(event_size, hidden_units=hidden_units, context_size=context_size,
                         transform=transform, **kwargs)

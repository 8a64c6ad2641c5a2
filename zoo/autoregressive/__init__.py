"""Autoregressive models of binary data: FVSBN, NADE, MADE, order-agnostic NADE (and RNADE
for real-valued data). Each gives the exact log-likelihood, samples and inpainting."""

from zoo.autoregressive.base import BinaryAutoregressiveModel
from zoo.autoregressive.fvsbn import FVSBN
from zoo.autoregressive.made import MADE
from zoo.autoregressive.nade import NADE
from zoo.autoregressive.order_agnostic_nade import OrderAgnosticNADE
from zoo.autoregressive.rnade import RNADE

__all__ = ["BinaryAutoregressiveModel", "FVSBN", "MADE", "NADE", "OrderAgnosticNADE", "RNADE"]

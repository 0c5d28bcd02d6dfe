"""Fused loss functions: functional forms and their nn.Module wrappers."""

from .encouraging import EncouragingLoss, EncouragingLossOutput, encouraging_loss
from .linear import LinearEncouragingLoss, linear_encouraging_loss
from .polynomial import AsymmetricPolynomialLoss, asymmetric_polynomial_loss

__all__ = [
    "AsymmetricPolynomialLoss",
    "EncouragingLoss",
    "EncouragingLossOutput",
    "LinearEncouragingLoss",
    "asymmetric_polynomial_loss",
    "encouraging_loss",
    "linear_encouraging_loss",
]

"""Asymmetric Polynomial Loss (APL), Huang et al., ICASSP 2023, and its special cases (BCE, ASL, focal, Poly-1).

Per label with ``p = sigmoid(x)``:
positive ``(1-p)^gamma_pos * [-log p + alpha1 (1-p) + alpha2 (1-p)^2]``,
negative ``p_m^gamma_neg * [-log(1-p_m) + beta1 p_m]`` with the shifted probability ``p_m = max(p - clip, 0)``.
The formulas, their closed-form gradients and the differences from the authors' code: see docs/losses.md.

The functional form and the Module; the elementwise pass (one ``torch.compile`` kernel on large inputs,
``HF_LOSSES_COMPILE=0`` switches it off) and its autograd Function are in losses/ops/polynomial.py.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import LossModule, check_range, check_reduction
from .ops.polynomial import APLSettings, FusedAsymmetricPolynomialLoss


def _settings(gamma_pos, gamma_neg, clip, alpha1, alpha2, beta1, detach_focusing_weight) -> APLSettings:
    """Validated settings; each error is one line naming the argument and its range."""
    s = APLSettings(
        float(gamma_pos),
        float(gamma_neg),
        float(clip),
        float(alpha1),
        float(alpha2),
        float(beta1),
        bool(detach_focusing_weight),
    )
    check_range("gamma_pos", s.gamma_pos, 0.0, math.inf, low_open=False, high_open=True)
    check_range("gamma_neg", s.gamma_neg, 0.0, math.inf, low_open=False, high_open=True)
    check_range("clip", s.clip, 0.0, 1.0, low_open=False, high_open=True)
    for name in ("alpha1", "alpha2", "beta1"):
        check_range(name, getattr(s, name), -math.inf, math.inf, low_open=True, high_open=True)
    return s


def asymmetric_polynomial_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    alpha1: float = -1.0,
    alpha2: float = 1.25,
    beta1: float = 0.0,
    detach_focusing_weight: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Asymmetric Polynomial Loss of multi-label logits against 0/1 targets of the same shape.

    See :class:`AsymmetricPolynomialLoss` for the formula and the arguments. Defaults are the authors'
    released settings. ``alpha* = beta1 = 0`` gives ASL; additionally ``gamma_* = clip = 0`` gives
    ``binary_cross_entropy_with_logits``. ``target`` may be float, integer or bool, holding only 0 and 1.
    """
    s = _settings(gamma_pos, gamma_neg, clip, alpha1, alpha2, beta1, detach_focusing_weight)
    check_reduction(reduction)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"target shape {tuple(target.shape)} must equal logits shape {tuple(logits.shape)}")
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    scale = 1.0 / logits.numel() if reduction == "mean" and logits.numel() else 1.0
    elementwise = reduction == "none"
    return FusedAsymmetricPolynomialLoss.apply(logits, target, s, scale, need_grad, elementwise)


class AsymmetricPolynomialLoss(LossModule, functional=asymmetric_polynomial_loss):
    r"""Asymmetric Polynomial Loss (Huang et al., ICASSP 2023) for multi-label classification.

    For a logit :math:`x` with :math:`p = \sigma(x)` and the shifted probability :math:`p_m = \max(p - c, 0)`:

    .. math::
        \ell(x, 1) = (1-p)^{\gamma_+} \left[-\log p + \alpha_1 (1-p) + \alpha_2 (1-p)^2\right], \qquad
        \ell(x, 0) = p_m^{\gamma_-} \left[-\log(1-p_m) + \beta_1 p_m\right].

    The defaults are the authors' released settings. ``alpha1 = alpha2 = beta1 = 0`` is the Asymmetric Loss
    (ASL); with ``gamma_pos = gamma_neg = clip = 0`` as well it is ``BCEWithLogitsLoss``. The gradient is
    computed in closed form during the forward pass (no double backward). Formulas and gradients:
    docs/losses.md.

    Args:
        gamma_pos: focusing exponent of positives, >= 0.
        gamma_neg: focusing exponent of negatives, >= 0.
        clip: probability shift ``c`` of negatives, in [0, 1); negatives with ``p <= clip`` contribute 0.
        alpha1: weight of the first polynomial term ``(1-p)`` of positives (finite).
        alpha2: weight of the second polynomial term ``(1-p)^2`` of positives (finite).
        beta1: weight of the polynomial term ``p_m`` of negatives (finite).
        detach_focusing_weight: treat the focusing weights as constants in the backward pass, as the authors do.
        reduction: ``"mean"`` over all elements (as ``BCEWithLogitsLoss``), ``"sum"`` (the authors' choice) or
            ``"none"``.

    Shape:
        - logits: any shape, floating point (float32, float64, bfloat16, float16).
        - target: the shape of ``logits``; float, integer or bool, holding only 0 and 1 (anything else is a
          ``ValueError``).
        - output: a scalar, or the shape of ``logits`` with ``reduction="none"``.

    Example::

        >>> import torch
        >>> from hf_losses import AsymmetricPolynomialLoss
        >>> loss_fn = AsymmetricPolynomialLoss(gamma_neg=4.0, clip=0.05)
        >>> loss_fn.gamma_neg
        4.0
        >>> logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
        >>> target = torch.tensor([[1, 0, 0]])
        >>> loss = loss_fn(logits, target)
        >>> loss.backward()
        >>> round(loss.item(), 4)
        0.0391
    """

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        # stored as the kernel takes them (floats, a bool), each checked
        names = list(settings)  # the functional's keyword arguments, reduction last
        checked = _settings(*(settings[name] for name in names[:-1]))
        check_reduction(settings["reduction"])
        return dict(zip(names, (*checked, settings["reduction"]), strict=True))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return asymmetric_polynomial_loss(logits, target, **self.settings())

"""Asymmetric Polynomial Loss (APL), Huang et al., ICASSP 2023, and its special cases (BCE, ASL, focal, Poly-1).

Per label with ``p = sigmoid(x)``:
positive ``(1-p)^gamma_pos * [-log p + alpha1 (1-p) + alpha2 (1-p)^2]``,
negative ``p_m^gamma_neg * [-log(1-p_m) + beta1 p_m]`` with the shifted probability ``p_m = max(p - clip, 0)``.

One elementwise pass (chunked so it stays in cache) computes the loss and its closed-form gradient;
``log p`` and ``log(1-p)`` come from ``logsigmoid`` of ``x`` and ``-x``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ._common import (
    check_non_negative,
    check_range,
    check_reduction,
    check_values,
    chunk_rows,
    compute_dtype,
    reduce,
    take_saved_gradient,
)


class _Settings(NamedTuple):
    gamma_pos: float
    gamma_neg: float
    clip: float
    alpha1: float
    alpha2: float
    beta1: float
    detach: bool


def _power(base: torch.Tensor, gamma: float) -> torch.Tensor | float:
    """base ** gamma; small integer powers by multiplication (much faster than pow on CPU); 1 for gamma == 0."""
    if gamma == 0:
        return 1.0
    if gamma == int(gamma) and 0 < gamma <= 8:
        result, square, n = None, base, int(gamma)
        while n:
            if n & 1:
                result = square if result is None else result * square
            n >>= 1
            if n:
                square = square * square
        return result
    return base.pow(gamma)


def _positive(x, p, q, s: _Settings, need_grad: bool):
    """Loss (1-p)^g+ [-log p + a1 q + a2 q^2] and, if asked, its derivative in x (dq/dx = -p q)."""
    weight = _power(q, s.gamma_pos)
    poly = q * (s.alpha1 + s.alpha2 * q) - F.logsigmoid(x)
    loss = weight * poly
    if not need_grad:
        return loss, None
    grad = -weight * q * (1.0 + p * (s.alpha1 + 2.0 * s.alpha2 * q))
    if not s.detach and s.gamma_pos != 0:
        grad = grad - s.gamma_pos * p * loss
    return loss, grad


def _negative(x, p, q, s: _Settings, need_grad: bool):
    """Loss p_m^g- [-log(1-p_m) + b1 p_m] with p_m = max(p - clip, 0), and its derivative in x."""
    if s.clip > 0:
        shifted = (p - s.clip).clamp_(min=0.0)
        one_minus = (q + s.clip).clamp_(max=1.0)  # 1 - p_m from q = 1 - p: exact even when p rounds to 1
        log_one_minus = one_minus.log()
    else:
        shifted, one_minus, log_one_minus = p, q, F.logsigmoid(-x)
    weight = _power(shifted, s.gamma_neg)
    poly = -log_one_minus if s.beta1 == 0 else s.beta1 * shifted - log_one_minus
    loss = poly * weight
    if not need_grad:
        return loss, None
    pq = p * q
    if s.clip > 0:
        # d p_m / dx = p q above the clip and 0 below it, where a positive gamma_neg already zeroes the weight.
        d_shift = pq if s.gamma_neg > 0 else torch.where(p > s.clip, pq, 0.0)
        grad = d_shift / one_minus if s.beta1 == 0 else d_shift * one_minus.reciprocal_().add_(s.beta1)
    else:
        d_shift = pq
        grad = p if s.beta1 == 0 else p + s.beta1 * pq  # d/dx [-log(1-p)] = p, exact for any x
    grad = grad * weight
    if not s.detach and s.gamma_neg != 0:
        d_weight = s.gamma_neg * torch.where(shifted > 0, _power(shifted, s.gamma_neg - 1.0), 0.0) * d_shift
        grad = grad + d_weight * poly
    return loss, grad


def _apl_chunk(x: torch.Tensor, positive: torch.Tensor, s: _Settings, grad_out: torch.Tensor | None):
    """Elementwise APL of one chunk; writes the gradient into `grad_out` when given."""
    need_grad = grad_out is not None
    p, q = torch.sigmoid(x), torch.sigmoid(-x)  # q = 1 - p without cancellation
    loss, grad = _negative(x, p, q, s, need_grad)
    if x.is_cuda:  # no host sync: evaluate the positive branch everywhere and select
        pos_loss, pos_grad = _positive(x, p, q, s, need_grad)
        loss = torch.where(positive, pos_loss, loss)
        grad = torch.where(positive, pos_grad, grad) if need_grad else None
    else:  # positives are few: evaluate their branch only where it applies
        idx = positive.nonzero().squeeze(1)
        pos_loss, pos_grad = _positive(x[idx], p[idx], q[idx], s, need_grad)
        loss = loss.index_copy_(0, idx, pos_loss)
        grad = grad.index_copy_(0, idx, pos_grad) if need_grad else None
    if need_grad:
        grad_out.copy_(grad)
    return loss


class _FusedAsymmetricPolynomialLoss(torch.autograd.Function):
    """Elementwise APL with the gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, logits, positive, settings, need_grad):
        flat = logits.reshape(-1)
        positive = positive.reshape(-1)
        dtype = compute_dtype(logits.dtype)
        loss = torch.empty(flat.shape, dtype=dtype, device=flat.device)
        grad = torch.empty(flat.shape, dtype=logits.dtype, device=flat.device) if need_grad else None
        step = chunk_rows(flat.numel(), 1, flat.device)
        for start in range(0, flat.numel(), step):
            sl = slice(start, start + step)
            loss[sl] = _apl_chunk(
                flat[sl].to(dtype), positive[sl], settings, None if grad is None else grad[sl]
            )
        ctx.saved_gradient = grad
        ctx.logits_shape = logits.shape
        return loss.view(logits.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grad = take_saved_gradient(ctx).view(ctx.logits_shape)
        grad.mul_(grad_loss.to(grad.dtype))
        return grad, None, None, None


def _check_settings(s: _Settings, reduction: str) -> None:
    check_non_negative("gamma_pos", s.gamma_pos)
    check_non_negative("gamma_neg", s.gamma_neg)
    check_range("clip", s.clip, 0.0, 1.0, low_open=False, high_open=True)
    check_reduction(reduction)


def asymmetric_polynomial_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
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

    Defaults are the authors' released settings. ``alpha* = beta1 = 0`` gives ASL; additionally
    ``gamma_* = clip = 0`` gives ``binary_cross_entropy_with_logits``. ``reduction="mean"`` averages over all
    elements like ``BCEWithLogitsLoss``; "sum" is what the authors return; "none" keeps the shape.
    """
    settings = _Settings(
        float(gamma_pos),
        float(gamma_neg),
        float(clip),
        float(alpha1),
        float(alpha2),
        float(beta1),
        bool(detach_focusing_weight),
    )
    _check_settings(settings, reduction)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal logits shape {tuple(logits.shape)}"
        )
    positive = targets > 0.5
    check_values("targets", targets != positive, "0 and 1 (multi-hot labels)")
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    loss = _FusedAsymmetricPolynomialLoss.apply(logits, positive, settings, need_grad)
    return reduce(loss, reduction)


class AsymmetricPolynomialLoss(nn.Module):
    """Module form of :func:`asymmetric_polynomial_loss`."""

    def __init__(
        self,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        alpha1: float = -1.0,
        alpha2: float = 1.25,
        beta1: float = 0.0,
        detach_focusing_weight: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.settings = _Settings(
            float(gamma_pos),
            float(gamma_neg),
            float(clip),
            float(alpha1),
            float(alpha2),
            float(beta1),
            bool(detach_focusing_weight),
        )
        _check_settings(self.settings, reduction)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return asymmetric_polynomial_loss(
            logits,
            targets,
            gamma_pos=s.gamma_pos,
            gamma_neg=s.gamma_neg,
            clip=s.clip,
            alpha1=s.alpha1,
            alpha2=s.alpha2,
            beta1=s.beta1,
            detach_focusing_weight=s.detach,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            ", ".join(f"{k}={v}" for k, v in self.settings._asdict().items())
            + f", reduction={self.reduction!r}"
        )

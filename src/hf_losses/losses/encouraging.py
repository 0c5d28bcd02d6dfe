"""Encouraging Loss (EL) and Conservative Encouraging Loss (CEL), Zhao et al., AAAI 2022.

Token loss: ``l = -log p_y + rho * b(p_y)`` with the bonus ``b(p) = log(1 - p)`` for ``p <= LE`` and its
tangent at ``LE`` beyond; label smoothing mixes in ``(eps / V) * sum_j [-log p_j + rho * b(p_j)]``.

The fused implementation walks the rows in cache-sized chunks and, in the same pass that computes the
loss, writes the closed-form gradient (SPEC section 1) into one buffer kept for backward. Differences
from the authors' code: ``log(1 - p_y)`` is computed as ``logsumexp(non-target logits) - logsumexp(all)``,
exact even when ``p_y`` rounds to 1, where the authors clamp ``1 - p`` at 1e-5 (which zeroes the bonus
gradient beyond that point). The one non-target class that may have ``p_j > 1/2`` gets the same exact
treatment when smoothing is on. One approximation remains: when a wrong class leads every other logit by more
than the dtype's exponent range (about 88 in float32) with LE = 1 and smoothing, the ``eps * rho / V``-sized
smoothing-bonus gradient on the remaining classes underflows to 0; values and all other terms stay exact.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
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


class EncouragingLossOutput(NamedTuple):
    """The reduced loss plus detached sums for logging: plain NLL and target bonus b(p_y), and the token count."""

    loss: torch.Tensor
    nll: torch.Tensor
    bonus: torch.Tensor
    num_tokens: torch.Tensor


class _RowSettings(NamedTuple):
    log_end: float
    eps: float
    rho: float


def _bonus_and_ratio(
    log_p: torch.Tensor, log_q: torch.Tensor, le: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """For the target: b(p) and log(p / (1 - min(p, LE))), from log p and log(1 - p)."""
    if le >= 1.0:
        return log_q, log_p - log_q
    p = log_p.exp()
    tangent = p > le
    bonus = torch.where(tangent, math.log1p(-le) - (p - le) / (1.0 - le), log_q)
    log_ratio = torch.where(tangent, log_p - math.log1p(-le), log_p - log_q)
    return bonus, log_ratio


def _masked(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero the entries of ignored rows (whose logits may hold anything, even values that overflow)."""
    return torch.where(valid, values, 0.0)


class _Top(NamedTuple):
    """The largest non-target class of each row, whose 1 - p may be too small to form as 1 - p."""

    col: torch.Tensor
    log_p: torch.Tensor
    log_q: torch.Tensor


def _forward_chunk(
    z: torch.Tensor,
    y: torch.Tensor,
    valid: torch.Tensor,
    s: _RowSettings,
    scratch: list[torch.Tensor],
    grad: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, NLL and target bonus of one chunk of rows; writes d(loss_row)/dz into `grad` when given."""
    n, vocab = z.shape
    x = scratch[0][:n]
    x.copy_(z)
    col = y.unsqueeze(1)
    z_y = x.gather(1, col).squeeze(1)
    mean_z = x.mean(1) if s.eps > 0 else None
    x.scatter_(1, col, -math.inf)
    # Only one non-target class can have p > 1/2; with smoothing and LE > 1/2 its bonus is formed exactly.
    exact_top = s.eps > 0 and s.log_end > 0.5
    if exact_top:
        m, top_col = x.max(1, keepdim=True)
        m = m.squeeze(1)
    else:
        m = x.amax(1)  # max over the non-target logits
    x.sub_(m.unsqueeze(1)).exp_()  # e_j = exp(z_j - m), 0 at the target (and 1 at the top class)
    if exact_top:
        x.scatter_(1, top_col, 0.0)
        sum_others = x.sum(1)
        x.scatter_(1, top_col, 1.0)
        sum_e = sum_others + 1.0
    else:
        sum_e = x.sum(1)
    lse_rest = m + sum_e.log()  # logsumexp over non-target logits
    lse = torch.logaddexp(lse_rest, z_y)
    log_p = z_y - lse  # log p_y
    log_q = lse_rest - lse  # log (1 - p_y), exact even when p_y rounds to 1
    nll = -log_p
    bonus_y, log_ratio_y = _bonus_and_ratio(log_p, log_q, s.log_end)
    loss = nll + s.rho * bonus_y
    log_scale = m - lse  # p_j = e_j * exp(log_scale)
    top = None
    if exact_top:
        top = _Top(top_col, log_scale, torch.logaddexp(z_y, m + sum_others.log()) - lse)

    if s.eps > 0:
        w, v = scratch[1][:n], scratch[2][:n]
        torch.mul(x, -log_scale.exp().unsqueeze(1), out=w)  # w = -p_j over the non-target classes
        if top is not None:
            # Every class but the top one has p <= 1/2 < LE: its bonus is log(1 - p), no tangent part.
            w.scatter_(1, top.col, 0.0)
            bonus_rest = torch.log1p(w, out=v).sum(1) + _bonus_and_ratio(top.log_p, top.log_q, s.log_end)[0]
        else:
            w.clamp_(min=-s.log_end)  # w = -t_j, t_j = min(p_j, LE)
            excess = sum_e * log_scale.exp() + w.sum(1)  # sum_j (p_j - t_j)
            bonus_rest = torch.log1p(w, out=v).sum(1) - excess / (1.0 - s.log_end)
        smooth = (lse - mean_z) + s.rho * (bonus_rest + bonus_y) / vocab
        loss = (1.0 - s.eps) * loss + s.eps * smooth

    loss = _masked(loss, valid)
    if grad is not None:
        _write_gradient(x, y, valid, s, scratch, grad, log_p, log_q, log_ratio_y, log_scale, top)
    return loss, _masked(nll, valid), _masked(bonus_y, valid)


def _write_gradient(x, y, valid, s, scratch, grad, log_p, log_q, log_ratio_y, log_scale, top):
    """grad_k = a p_k + (eps/V)(rho c_k - 1) - (1 - eps) g_y [k == y], with p_k = e_k exp(log_scale).

    Products of a huge ratio r = p / (1 - t) with a tiny probability are formed in log space. For bf16/fp16
    logits the chunk is assembled in a float32 scratch buffer and converted once at the end.
    """
    n, vocab = x.shape
    out = grad if grad.dtype == x.dtype else (scratch[1][:n] if s.eps > 0 else x)
    eps, rho, k = s.eps, s.rho, s.eps / vocab
    scale = log_scale.exp()
    ry_scale = (log_ratio_y + log_scale).exp()  # r_y p_k / e_k
    ry_q = (log_ratio_y + log_q).exp()  # r_y (1 - p_y)
    coef = (1.0 - eps) * (scale + rho * ry_scale)  # (1 - eps) g_y p_k / e_k
    grad_y = -(1.0 - eps) * (log_q.exp() + rho * ry_q)  # (1 - eps) g_y (p_y - 1)
    if eps > 0:
        w, v = scratch[1][:n], scratch[2][:n]
        torch.div(x, w.add_(1.0), out=v)  # w held -t_j: v = e_j / (1 - t_j)
        if top is not None:
            v.scatter_(1, top.col, 0.0)
        # R = sum_j p_j / (1 - t_j) = rest + r_top + r_y; r_top and r_y may be huge, so each product of
        # them with a probability is formed in log space.
        rest = v.sum(1) * scale
        p_y = log_p.exp()
        coef = coef + eps * scale + k * rho * (rest * scale + ry_scale)
        grad_y = grad_y - k * rho * ry_q - k + eps * p_y + k * rho * rest * p_y
        if top is not None:
            log_ratio_top = _bonus_and_ratio(top.log_p, top.log_q, s.log_end)[1]
            # r_top p_j for the other classes: bounded, but when the top class leads by more than the dtype's
            # exponent range their e_j underflow to 0 and this factor would overflow; capping it drops only
            # that (eps rho / V)-sized smoothing term instead of turning 0 * inf into NaN.
            log_cap = math.log(torch.finfo(log_scale.dtype).max) - 1.0
            coef = coef + k * rho * (log_ratio_top + log_scale).clamp(max=log_cap).exp()
            grad_y = grad_y + k * rho * (log_ratio_top + log_p).exp()
        # grad_j = e_j coef - (eps rho / V) p_j / (1 - t_j) - eps / V for every non-target j.
        torch.addcmul(
            _masked(torch.full_like(scale, -k), valid).unsqueeze(1),
            x,
            _masked(coef, valid).unsqueeze(1),
            out=out,
        )
        out.addcmul_(v, _masked(-k * rho * scale, valid).unsqueeze(1))
        if top is not None:
            # a p_top - (eps rho / V) r_top - eps / V, with r_top (p_top - 1) = -r_top q_top kept exact.
            p_top = top.log_p.exp()
            grad_top = (
                (1.0 - eps) * (p_top + rho * ry_scale)
                + eps * p_top
                + k * rho * (rest * p_top + ry_scale)
                - k * rho * (log_ratio_top + top.log_q).exp()
                - k
            )
            out.scatter_(1, top.col, _masked(grad_top, valid).unsqueeze(1))
    else:
        torch.mul(x, _masked(coef, valid).unsqueeze(1), out=out)
    out.scatter_(1, y.unsqueeze(1), _masked(grad_y, valid).unsqueeze(1))
    if out is not grad:
        grad.copy_(out)


class _FusedEncouragingLoss(torch.autograd.Function):
    """Per-row EL/CEL loss (plus detached NLL and bonus) with the gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, logits, target, valid, settings, need_grad):
        n, vocab = logits.shape
        dtype = compute_dtype(logits.dtype)
        rows = chunk_rows(n, vocab, logits.device)
        num_scratch = 3 if settings.eps > 0 else 1
        scratch = [torch.empty(rows, vocab, dtype=dtype, device=logits.device) for _ in range(num_scratch)]
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else None
        safe_target = torch.where(valid, target, 0)
        outputs = [torch.empty(n, dtype=dtype, device=logits.device) for _ in range(3)]
        for start in range(0, n, rows):
            sl = slice(start, start + rows)
            chunk = _forward_chunk(
                logits[sl], safe_target[sl], valid[sl], settings, scratch, None if grad is None else grad[sl]
            )
            for out, value in zip(outputs, chunk, strict=True):
                out[sl] = value
        ctx.saved_gradient = grad
        ctx.mark_non_differentiable(outputs[1], outputs[2])
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_nll, _grad_bonus):
        grad = take_saved_gradient(ctx)
        grad.mul_(grad_loss.unsqueeze(1).to(grad.dtype))
        return grad, None, None, None, None


def _check_settings(log_end, label_smoothing, bonus_weight, reduction) -> None:
    check_range("log_end", log_end, 0.0, 1.0, low_open=True, high_open=False)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, low_open=False, high_open=True)
    check_non_negative("bonus_weight", bonus_weight)
    check_reduction(reduction)


def _check_arguments(logits, target, log_end, label_smoothing, bonus_weight, reduction) -> None:
    _check_settings(log_end, label_smoothing, bonus_weight, reduction)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have shape [..., V] with V >= 2 classes, got {tuple(logits.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must be an integer tensor of class indices, got {target.dtype}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal logits shape without the class dimension "
            f"{tuple(logits.shape[:-1])}"
        )


def encouraging_loss_with_stats(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    log_end: float = 1.0,
    label_smoothing: float = 0.0,
    bonus_weight: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> EncouragingLossOutput:
    """EL/CEL loss with the detached sums of -log p_y and b(p_y) over non-ignored tokens, for logging."""
    _check_arguments(logits, target, log_end, label_smoothing, bonus_weight, reduction)
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_target = target.reshape(-1)
    valid = flat_target != ignore_index
    check_values(
        "target",
        valid & ((flat_target < 0) | (flat_target >= vocab)),
        f"class indices in [0, {vocab}) or ignore_index={ignore_index}",
    )
    settings = _RowSettings(float(log_end), float(label_smoothing), float(bonus_weight))
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, nll, bonus = _FusedEncouragingLoss.apply(flat_logits, flat_target, valid, settings, need_grad)
    num_tokens = valid.sum()
    loss = reduce(loss.view(target.shape), reduction, num_tokens)
    return EncouragingLossOutput(loss, nll.sum(), bonus.sum(), num_tokens)


def encouraging_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    log_end: float = 1.0,
    label_smoothing: float = 0.0,
    bonus_weight: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Encouraging loss ``-log p_y + rho * b(p_y)`` (label-smoothed over all classes), fused and exact.

    Args:
        logits: ``[..., V]`` unnormalised scores, any float dtype (math runs in float32 or float64).
        target: ``[...]`` integer class indices in ``[0, V)`` or ``ignore_index``.
        log_end: LE in (0, 1]; 1 is the full bonus (EL), below 1 the conservative bonus (CEL).
        label_smoothing: eps in [0, 1), applied to the NLL and the bonus alike.
        bonus_weight: rho >= 0; 0 gives exactly ``F.cross_entropy``.
        ignore_index: target value that contributes nothing.
        reduction: "mean" (over non-ignored tokens; 0 when there are none), "sum" or "none".
    """
    return encouraging_loss_with_stats(
        logits,
        target,
        log_end=log_end,
        label_smoothing=label_smoothing,
        bonus_weight=bonus_weight,
        ignore_index=ignore_index,
        reduction=reduction,
    ).loss


class EncouragingLoss(nn.Module):
    """Module form of :func:`encouraging_loss`; EL with ``log_end=1``, CEL with ``log_end < 1``."""

    def __init__(
        self,
        *,
        log_end: float = 1.0,
        label_smoothing: float = 0.0,
        bonus_weight: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_settings(log_end, label_smoothing, bonus_weight, reduction)
        self.log_end = log_end
        self.label_smoothing = label_smoothing
        self.bonus_weight = bonus_weight
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return encouraging_loss(
            logits,
            target,
            log_end=self.log_end,
            label_smoothing=self.label_smoothing,
            bonus_weight=self.bonus_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"log_end={self.log_end}, label_smoothing={self.label_smoothing}, "
            f"bonus_weight={self.bonus_weight}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )

"""Encouraging Loss (EL) and Conservative Encouraging Loss (CEL), Zhao et al., AAAI 2022.

Token loss: ``l = -log p_y + rho * b(p_y)`` with the bonus ``b(p) = log(1 - p)`` for ``p <= LE`` and its
tangent at ``LE`` beyond; label smoothing mixes in ``(eps / V) * sum_j [-log p_j + rho * b(p_j)]``.
The maths, the closed-form gradient and the differences from the authors' code: see docs/losses.md.

The fused implementation walks the rows in cache-sized chunks and, in the same pass that computes the
loss, writes the closed-form gradient into one buffer kept for backward. ``log(1 - p)`` of the target (and,
with smoothing, of the largest other class) is formed exactly from logsumexps, never as ``1 - p``; every
per-row quantity is built from differences of logits and every product of a large ratio ``p / (1 - p)``
with a small probability from bounded factors, so float32 matches float64 to ~1e-6 for any finite logits.
"""

from __future__ import annotations

import math
import queue
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    check_class_target,
    check_non_negative,
    check_range,
    check_reduction,
    check_values,
    chunk_rows,
    compute_dtype,
    no_double_backward,
    reduce,
    row_workers,
    take_saved_gradient,
)

LOG2_E = math.log2(math.e)
# Elements per float32 scratch buffer on CPU: the three buffers of a chunk (12 MiB) stay in a server's L3
# cache, and each vector op is large enough that the per-op costs (Python, row-sized ops, thread
# synchronisation, which is expensive when another process competes for the cores) stay small.
CPU_CHUNK_ELEMENTS = 1 << 20


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


class _Held(NamedTuple):
    """A class of each row kept out of the buffer (the target; with smoothing and LE > 1/2 also the largest
    non-target class) and what the loss and gradient need of it, each piece formed exactly. r is the ratio
    p / (1 - min(p, LE)) of the bonus gradient, e_j = exp(z_j - shift) a buffer entry."""

    log_p: torch.Tensor  # log p
    log_q: torch.Tensor  # log (1 - p)
    bonus: torch.Tensor  # b(p)
    log_ratio_scale: torch.Tensor  # log (r p_j / e_j), the same for every buffer class j
    ratio_q: torch.Tensor  # r (1 - p)
    tangent: torch.Tensor | None  # p > LE (None when LE = 1)


def _held_class(gap, log_others, lse, le) -> _Held:
    """The held class whose logit trails the logsumexp of all other classes by `gap`.

    `log_others` is log sum_{k != c} e_k and `lse` log sum_k e_k (both relative to the shift), so that
    p = 1 / (1 + e^gap) and r p_j / e_j = p e^{-log_others} below LE, p / (1 - LE) e^{-lse} above it.
    """
    log_p, log_q = -F.softplus(gap), -F.softplus(-gap)
    if le >= 1.0:
        return _Held(log_p, log_q, log_q, log_p - log_others, log_p.exp(), None)
    p = log_p.exp()
    tangent = p > le
    log_1m_le = math.log1p(-le)
    bonus = torch.where(tangent, log_1m_le - (p - le) / (1.0 - le), log_q)
    log_ratio_scale = torch.where(tangent, log_p - log_1m_le - lse, log_p - log_others)
    ratio_q = torch.where(tangent, (log_p + log_q - log_1m_le).exp(), p)
    return _Held(log_p, log_q, bonus, log_ratio_scale, ratio_q, tangent)


def _ratio_times(c: _Held, log_p_d: torch.Tensor, log_d_over_q_c: torch.Tensor, le: float) -> torch.Tensor:
    """r_c p_d for another held class d, from log p_d and log(p_d / (1 - p_c)) (bounded: <= p_c or p_c/(1-LE))."""
    below = (c.log_p + log_d_over_q_c).exp()
    if c.tangent is None:
        return below
    return torch.where(c.tangent, (c.log_p - math.log1p(-le) + log_p_d).exp(), below)


def _masked(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero the entries of ignored rows (whose logits may hold anything, even values that overflow)."""
    return torch.where(valid, values, 0.0)


class _Top(NamedTuple):
    """The largest non-target class of each row, held out of the buffer: its 1 - p can be tiny."""

    col: torch.Tensor
    held: _Held
    ratio_p_y: torch.Tensor  # r_top p_y
    ratio_y_p_top: torch.Tensor  # r_y p_top


def _forward_chunk(
    z: torch.Tensor,
    y: torch.Tensor,
    valid: torch.Tensor,
    s: _RowSettings,
    scratch: list[torch.Tensor],
    grad: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, NLL and target bonus of one chunk of rows; writes d(loss_row)/dz into `grad` when given.

    The buffer holds e_j = exp(z_j - shift) for every class but the held ones: the target and, with
    smoothing and LE > 1/2, the largest non-target class (the only one whose p can exceed 1/2, so whose
    1 - p needs care). The shift is the largest buffer logit, so the buffer's sum lies in [1, V]. Every
    per-row quantity is built from differences of logits, never from their magnitude, and every product of a
    huge ratio with a tiny probability from bounded factors, so float32 keeps ~1e-6 relative precision for
    any finite logits (docs/losses.md).
    """
    n, vocab = z.shape
    x = scratch[0][:n]
    x.copy_(z)
    col = y.unsqueeze(1)
    z_y = x.gather(1, col).squeeze(1)
    x.scatter_(1, col, -math.inf)
    hold_top = s.eps > 0 and s.log_end > 0.5
    if hold_top:
        z_top = x.amax(1, keepdim=True)
        # the column of the largest non-target logit (the last one if several tie), without the slow max-index
        is_top = torch.ge(x, z_top, out=scratch[1][:n])  # 1.0 at the top logit(s), 0.0 elsewhere
        top_col = (
            is_top.mul_(torch.arange(vocab, dtype=x.dtype, device=x.device)).amax(1, keepdim=True).long()
        )
        z_top = z_top.squeeze(1)
        x.scatter_(1, top_col, -math.inf)
        shift = x.amax(1)
        shift = torch.where(shift > -math.inf, shift, z_top)  # V = 2: the buffer is empty
        held_cols = torch.cat([col, top_col], 1)
    else:
        shift = x.amax(1)
        held_cols = col
    x.sub_(shift.unsqueeze(1))
    # exp(a) as exp2(a log2(e)): on CPU exp2 is several times faster than exp, and the product adds only a
    # relative error of ~1e-7 |a| to the exponent (after the subtraction, so large logits lose nothing)
    if s.eps > 0:
        x.scatter_(1, held_cols, 0.0)
        sum_shifted = x.sum(1)  # sum of z_j - shift over the buffer
        x.mul_(LOG2_E).exp2_().scatter_(1, held_cols, 0.0)
    else:
        x.mul_(LOG2_E).exp2_()  # 0 at the target
    log_sum = x.sum(1).log()  # log sum of the buffer's e_j (-inf when it is empty)
    a_y = z_y - shift
    if hold_top:
        a_top = z_top - shift
        # log sum_{k != c} e_k - a_c for c = y, top: the larger of the two terms first, so nothing cancels
        log_rest = torch.logaddexp(log_sum, a_top)
        gap_y = torch.maximum(log_sum - a_y, z_top - z_y) + F.softplus(-(log_sum - a_top).abs())
        gap_top = torch.maximum(log_sum - a_top, z_y - z_top) + F.softplus(-(log_sum - a_y).abs())
    else:
        log_rest = log_sum
        gap_y = log_sum - a_y
    lse = log_rest + F.softplus(-gap_y)
    target = _held_class(gap_y, log_rest, lse, s.log_end)
    top = None
    if hold_top:
        top_held = _held_class(gap_top, torch.logaddexp(log_sum, a_y), lse, s.log_end)
        top = _Top(
            top_col,
            top_held,
            _ratio_times(top_held, target.log_p, -F.softplus(log_sum - a_y), s.log_end),
            _ratio_times(target, top_held.log_p, -F.softplus(log_sum - a_top), s.log_end),
        )
    nll = -target.log_p
    loss = nll + s.rho * target.bonus

    if s.eps > 0:
        # sum_j b(p_j) over the buffer. Its t_j = min(p_j, LE) are <= 1/2 (with a held top, every buffer class
        # has p <= 1/2 < LE) and sum to <= 1, so prod_j (1 - t_j) lies in [1/4, 1]: one log of the product
        # replaces a log per class, and the product can neither under- nor overflow.
        w = scratch[1][:n]
        torch.mul(x, -(-lse).exp().unsqueeze(1), out=w)  # w = -p_j over the buffer
        if top is not None:
            bonus_rest = w.add_(1.0).prod(1).log() + top.held.bonus
            sum_shifted = sum_shifted + a_top
        else:
            w.clamp_(min=-s.log_end)  # w = -t_j
            excess = target.log_q.exp() + w.sum(1)  # sum_j (p_j - t_j) over the non-target classes
            bonus_rest = w.add_(1.0).prod(1).log() - excess / (1.0 - s.log_end)
        mean_nll = lse - (sum_shifted + a_y) / vocab  # (1/V) sum_j -log p_j
        smooth = mean_nll + s.rho * (bonus_rest + target.bonus) / vocab
        loss = (1.0 - s.eps) * loss + s.eps * smooth

    loss = _masked(loss, valid)
    if grad is not None:
        _write_gradient(x, y, valid, s, scratch, grad, -lse, target, top)
    return loss, _masked(nll, valid), _masked(target.bonus, valid)


def _write_gradient(x, y, valid, s, scratch, grad, log_scale, target: _Held, top: _Top | None):
    """grad_k = a p_k + (eps/V)(rho c_k - 1) - (1 - eps) g_y [k == y], with p_k = e_k exp(log_scale).

    (docs/losses.md derives it.) With smoothing, scratch[1] holds 1 - t_j over the buffer. The last pass
    writes into `grad` in its own dtype (bf16/fp16 logits: arithmetic in float32, one conversion).
    """
    n, vocab = x.shape
    eps, rho, k = s.eps, s.rho, s.eps / vocab
    scale = log_scale.exp()
    ry_scale = target.log_ratio_scale.exp()  # r_y p_j / e_j
    coef = (1.0 - eps) * (scale + rho * ry_scale)  # (1 - eps) g_y p_j / e_j
    grad_y = -(1.0 - eps) * (target.log_q.exp() + rho * target.ratio_q)  # (1 - eps) g_y (p_y - 1)
    if eps > 0:
        w, v = scratch[1][:n], scratch[2][:n]
        torch.div(x, w, out=v)  # v = e_j / (1 - t_j), 0 at held classes
        # R = sum_j r_j = rest + r_y (+ r_top): every product of R with a probability is bounded
        rest = v.sum(1) * scale
        p_y = target.log_p.exp()
        coef = coef + eps * scale + k * rho * (rest * scale + ry_scale)
        grad_y = grad_y - k * rho * target.ratio_q - k + eps * p_y + k * rho * rest * p_y
        if top is not None:
            coef = coef + k * rho * top.held.log_ratio_scale.exp()
            grad_y = grad_y + k * rho * top.ratio_p_y
        # grad_j = e_j coef - (eps rho / V) p_j / (1 - t_j) - eps / V for every buffer class j.
        acc = grad if grad.dtype == x.dtype else w
        torch.mul(x, _masked(coef, valid).unsqueeze(1), out=acc)
        acc.addcmul_(v, _masked(-k * rho * scale, valid).unsqueeze(1))
        acc.sub_(_masked(torch.full_like(scale, k), valid).unsqueeze(1))
        if acc is not grad:
            grad.copy_(acc)  # (a mixed-dtype op with out=grad would take a slow, unvectorised path)
        if top is not None:
            # a p_top - (eps rho / V) r_top - eps / V, with r_top (p_top - 1) = -r_top q_top kept exact.
            p_top = top.held.log_p.exp()
            grad_top = (
                (1.0 - eps) * (p_top + rho * top.ratio_y_p_top)
                + eps * p_top
                + k * rho * (rest * p_top + top.ratio_y_p_top - top.held.ratio_q)
                - k
            )
            grad.scatter_(1, top.col, _masked(grad_top, valid).unsqueeze(1).to(grad.dtype))
    else:
        torch.mul(x, _masked(coef, valid).unsqueeze(1), out=grad)
    grad.scatter_(1, y.unsqueeze(1), _masked(grad_y, valid).unsqueeze(1).to(grad.dtype))


def _run_on_workers(workers, starts, run_chunk, new_scratch) -> None:
    """run_chunk(start, scratch) for every start on the worker threads, each with its own scratch buffers."""
    pool, size = workers
    free = queue.SimpleQueue()
    for _ in range(min(size, len(starts))):
        free.put(new_scratch())

    def task(start: int) -> None:
        scratch = free.get()
        try:
            with torch.no_grad():  # grad mode is per thread
                run_chunk(start, scratch)
        finally:
            free.put(scratch)

    for future in [pool.submit(task, start) for start in starts]:
        future.result()


class _FusedEncouragingLoss(torch.autograd.Function):
    """Per-row EL/CEL loss (plus detached NLL and bonus) with the gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, logits, target, valid, settings, need_grad):
        n, vocab = logits.shape
        device, dtype = logits.device, compute_dtype(logits.dtype)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else None
        safe_target = torch.where(valid, target, 0)
        outputs = [torch.empty(n, dtype=dtype, device=device) for _ in range(3)]
        num_scratch = 3 if settings.eps > 0 else 1
        workers = None
        if device.type == "cpu" and not torch.compiler.is_compiling():
            workers = row_workers()
        rows = chunk_rows(n, vocab, device, CPU_CHUNK_ELEMENTS // (workers[1] if workers else 1))
        starts = range(0, n, rows)

        def run_chunk(start: int, scratch: list[torch.Tensor]) -> None:
            sl = slice(start, start + rows)
            chunk = _forward_chunk(
                logits[sl], safe_target[sl], valid[sl], settings, scratch, None if grad is None else grad[sl]
            )
            for out, value in zip(outputs, chunk, strict=True):
                out[sl] = value

        def new_scratch() -> list[torch.Tensor]:
            return [torch.empty(rows, vocab, dtype=dtype, device=device) for _ in range(num_scratch)]

        if workers is None or len(starts) < 2:
            scratch = new_scratch()
            for start in starts:
                run_chunk(start, scratch)
        else:
            _run_on_workers(workers, starts, run_chunk, new_scratch)
        ctx.saved_gradient = grad
        ctx.mark_non_differentiable(outputs[1], outputs[2])
        return tuple(outputs)

    @staticmethod
    @no_double_backward
    def backward(ctx, grad_loss, _grad_nll, _grad_bonus):
        grad = take_saved_gradient(ctx)
        grad.mul_(grad_loss.unsqueeze(1).to(grad.dtype))
        return grad, None, None, None, None


def _check_settings(log_end, label_smoothing, bonus_weight, reduction) -> None:
    check_range("log_end", log_end, 0.0, 1.0, low_open=True, high_open=False)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, low_open=False, high_open=True)
    check_non_negative("bonus_weight", bonus_weight)
    check_reduction(reduction)


def _check_arguments(logits, target, log_end, label_smoothing, bonus_weight, reduction) -> torch.Tensor:
    """Validate everything; returns the target as int64."""
    _check_settings(log_end, label_smoothing, bonus_weight, reduction)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have shape [..., V] with V >= 2 classes, got {tuple(logits.shape)}")
    return check_class_target(target, logits.shape[:-1], "logits shape without the class dimension")


def encouraging_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    log_end: float = 1.0,
    label_smoothing: float = 0.0,
    bonus_weight: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_stats: bool = False,
) -> torch.Tensor | EncouragingLossOutput:
    """Encouraging loss ``-log p_y + rho * b(p_y)`` (label-smoothed over all classes), fused and exact.

    See :class:`EncouragingLoss` for the maths and shapes.

    Args:
        logits: ``[..., V]`` unnormalised scores, any float dtype (math runs in float32 or float64).
        target: ``[...]`` class indices in ``[0, V)`` or ``ignore_index``, any integer dtype.
        log_end: LE in (0, 1]; 1 is the full bonus (EL), below 1 the conservative bonus (CEL).
        label_smoothing: eps in [0, 1), applied to the NLL and the bonus alike.
        bonus_weight: rho >= 0; 0 gives exactly ``F.cross_entropy``.
        ignore_index: target value that contributes nothing.
        reduction: "mean" (over non-ignored tokens; 0 when there are none), "sum" or "none".
        return_stats: return an :class:`EncouragingLossOutput` ``(loss, nll, bonus, num_tokens)`` instead of
            the loss alone: ``nll`` and ``bonus`` are the detached sums of ``-log p_y`` and ``b(p_y)`` (no
            smoothing, no rho) over the non-ignored tokens, ``num_tokens`` their count (a tensor).

    Returns:
        The reduced loss (float32 for bf16/fp16 logits), or the named tuple when ``return_stats=True``.
    """
    target = _check_arguments(logits, target, log_end, label_smoothing, bonus_weight, reduction)
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
    if return_stats:
        return EncouragingLossOutput(loss, nll.sum(), bonus.sum(), num_tokens)
    return loss


class EncouragingLoss(nn.Module):
    r"""Encouraging loss (EL) and conservative encouraging loss (CEL), Zhao et al., AAAI 2022.

    For a token with logits :math:`z \in \mathbb{R}^V`, :math:`p = \mathrm{softmax}(z)` and target
    :math:`y`, the bonus rewards confidence: :math:`b(p) = \log(1 - p)` for :math:`p \le LE` and its tangent
    :math:`\log(1 - LE) - (p - LE) / (1 - LE)` above. With label smoothing :math:`\varepsilon`:

    .. math::
        \ell = (1 - \varepsilon)\,[-\log p_y + \rho\, b(p_y)]
                + \frac{\varepsilon}{V} \sum_j [-\log p_j + \rho\, b(p_j)]

    ``log_end=1`` is EL, ``log_end < 1`` CEL (0.5 is the authors' choice for translation), ``bonus_weight=0``
    is exactly ``nn.CrossEntropyLoss(label_smoothing=...)``. The loss is negative for confident tokens: log
    the plain NLL beside it (``return_stats=True``). Formulas, gradients and numerics: docs/losses.md.

    Args:
        log_end: LE in (0, 1]; where the bonus turns into its tangent.
        label_smoothing: :math:`\varepsilon` in [0, 1), applied to the NLL and the bonus alike.
        bonus_weight: :math:`\rho \ge 0`, the weight of the bonus.
        ignore_index: target value that contributes nothing to the loss or the gradient.
        reduction: ``"mean"`` over non-ignored tokens (0 when there are none), ``"sum"`` or ``"none"``.

    The settings are public attributes, checked here and at every call.

    Shape:
        - logits: :math:`(*, V)`, any floating dtype (arithmetic in float32 for bf16/fp16, float64 for
          float64; the gradient comes back in the logits' dtype).
        - target: :math:`(*)`, class indices in :math:`[0, V)` or ``ignore_index``, any integer dtype.
        - output: scalar, or :math:`(*)` with ``reduction="none"`` (0 at ignored positions); float32 for
          bf16/fp16 logits.

    Example::

        >>> import torch
        >>> from hf_losses import EncouragingLoss
        >>> criterion = EncouragingLoss(log_end=0.5, label_smoothing=0.1)
        >>> logits = torch.randn(4, 7, 100, requires_grad=True)
        >>> target = torch.randint(0, 100, (4, 7))
        >>> target[:, -2:] = -100  # padding
        >>> criterion(logits, target).backward()
        >>> out = criterion(logits, target, return_stats=True)
        >>> out.num_tokens
        tensor(20)
        >>> ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=0.1)
        >>> bool(torch.isclose(EncouragingLoss(bonus_weight=0.0, label_smoothing=0.1)(logits, target), ce))
        True
    """

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

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, *, return_stats: bool = False
    ) -> torch.Tensor | EncouragingLossOutput:
        """The loss, or with ``return_stats=True`` an :class:`EncouragingLossOutput`; see :func:`encouraging_loss`."""
        return encouraging_loss(
            logits,
            target,
            log_end=self.log_end,
            label_smoothing=self.label_smoothing,
            bonus_weight=self.bonus_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            return_stats=return_stats,
        )

    def extra_repr(self) -> str:
        return (
            f"log_end={self.log_end}, label_smoothing={self.label_smoothing}, "
            f"bonus_weight={self.bonus_weight}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )

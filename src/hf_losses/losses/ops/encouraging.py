"""The EL/CEL kernel and its autograd Function (public within ``losses.ops``; the API is losses/encouraging.py).

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

import numpy as np
import torch
import torch.nn.functional as F
from numpy.polynomial import Chebyshev, Polynomial

from .utils import (
    CompiledPass,
    chunk_rows,
    compute_dtype,
    no_double_backward,
    others_want_the_cores,
    row_workers,
    take_saved_gradient,
)

LOG2_E = math.log2(math.e)
# Elements of scratch per float32 buffer of the EL loss on CPU, for each row worker: its three buffers of a
# chunk (12 MiB) stay in a server's L3 cache, and each vector op is large enough that the per-op costs (Python
# and the GIL shared by the workers, row-sized ops, thread synchronisation, which is expensive when another
# process competes for the cores) stay small. (Splitting one such budget between two workers made the
# workers' Python share, under one GIL, cost bf16 4096x32000 CEL ~0.1 of F.cross_entropy's time at two threads.)
EL_CPU_ELEMENTS = 1 << 20


def _interpolant(f, degree: int) -> tuple[float, ...]:
    """Power-basis coefficients c_0..c_degree of the Chebyshev interpolant of f on [0, 1] (float64)."""
    return tuple(
        float(c) for c in Chebyshev.interpolate(f, degree, domain=[0, 1]).convert(kind=Polynomial).coef
    )


# The cosine bonus over the buffer, in s = p^2 without a sine (a vector sine costs ~15 multiplications on CPU):
# cos(pi p) - 1 = s G(s) and r = pi p sin(pi p) = s H(s) on p in [0, 1], G and H interpolated per compute
# dtype. float32: degree 5; G lies in [-pi^2/2, -2], so its error (5e-8) is a relative error of each b(p_j)
# below float32 rounding, and H's (6e-7) enters the gradient scaled by bonus_smoothing / V. float64: degree 9,
# errors below 2e-14. np.sinc(x) = sin(pi x) / (pi x).
_G = lambda s: -(math.pi**2 / 2) * np.sinc(np.sqrt(s) / 2) ** 2  # noqa: E731
_H = lambda s: math.pi**2 * np.sinc(np.sqrt(s))  # noqa: E731
COSINE_G_H = {
    torch.float32: (_interpolant(_G, 5), _interpolant(_H, 5)),
    torch.float64: (_interpolant(_G, 9), _interpolant(_H, 9)),
}


class RowSettings(NamedTuple):
    log_end: float
    eps: float  # label smoothing of the NLL
    rho: float
    bonus: str = "log"
    power: float = 1.0
    start: float = 0.0
    bonus_eps: float = 0.0  # smoothing of the bonus

    @property
    def smooth_bonus(self) -> bool:
        """Whether the bonus of the non-target classes enters the loss."""
        return self.bonus_eps > 0 and self.rho > 0


def row_settings(log_end, label_smoothing, bonus_weight, bonus, bonus_power, bonus_start, bonus_smoothing):
    """The per-row settings of the kernel (bonus smoothing None: the label smoothing)."""
    eps = float(label_smoothing)
    bonus_eps = eps if bonus_smoothing is None else float(bonus_smoothing)
    return RowSettings(
        float(log_end), eps, float(bonus_weight), bonus, float(bonus_power), float(bonus_start), bonus_eps
    )


def _shape_at(s: RowSettings, p: float) -> float:
    """b(p) of the unshifted shape, for a number."""
    if s.bonus == "power":
        return -(p**s.power)
    if s.bonus == "cosine":
        return math.cos(math.pi * p) - 1.0
    if p <= s.log_end:
        return math.log1p(-p)
    return math.log1p(-s.log_end) - (p - s.log_end) / (1.0 - s.log_end)


class _Held(NamedTuple):
    """A class of each row kept out of the buffer (the target; with log bonus smoothing and LE > 1/2 also the
    largest non-target class) and what the loss and gradient need of it, each piece formed exactly. r is
    -p b_s'(p), the ratio p / (1 - min(p, LE)) for the log bonus; e_j = exp(z_j - shift) a buffer entry."""

    log_p: torch.Tensor  # log p
    log_q: torch.Tensor  # log (1 - p)
    bonus: torch.Tensor  # b_s(p)
    log_ratio_scale: torch.Tensor  # log (r p_j / e_j), the same for every buffer class j
    ratio_q: torch.Tensor  # r (1 - p)
    tangent: torch.Tensor | None  # p > LE (log bonus with LE < 1, else None)
    log_ratio: torch.Tensor | None  # log r for the bounded shapes (power, cosine), else None
    active: torch.Tensor | None  # p >= bonus_start (None when bonus_start = 0)


def _held_class(gap, log_others, lse, s: RowSettings) -> _Held:
    """The held class whose logit trails the logsumexp of all other classes by `gap`.

    `log_others` is log sum_{k != c} e_k and `lse` log sum_k e_k (both relative to the shift), so that
    p = 1 / (1 + e^gap) and r p_j / e_j = r e^{-lse}.
    """
    log_p, log_q = -F.softplus(gap), -F.softplus(-gap)
    if s.bonus == "log":
        held = _held_log(log_p, log_q, log_others, lse, s.log_end)
    else:
        held = _held_bounded(log_p, log_q, lse, s)
    if s.start == 0:
        return held
    active = log_p >= math.log(s.start)
    return held._replace(
        bonus=torch.where(active, held.bonus - _shape_at(s, s.start), 0.0),
        log_ratio_scale=torch.where(active, held.log_ratio_scale, -math.inf),
        ratio_q=torch.where(active, held.ratio_q, 0.0),
        active=active,
    )


def _held_log(log_p, log_q, log_others, lse, le) -> _Held:
    """log(1 - p) and its tangent: r = p / (1 - p) = p e^{-log_others} / e_j below LE, p / (1 - LE) above."""
    if le >= 1.0:
        return _Held(log_p, log_q, log_q, log_p - log_others, log_p.exp(), None, None, None)
    p = log_p.exp()
    tangent = p > le
    log_1m_le = math.log1p(-le)
    bonus = torch.where(tangent, log_1m_le - (p - le) / (1.0 - le), log_q)
    log_ratio_scale = torch.where(tangent, log_p - log_1m_le - lse, log_p - log_others)
    ratio_q = torch.where(tangent, (log_p + log_q - log_1m_le).exp(), p)
    return _Held(log_p, log_q, bonus, log_ratio_scale, ratio_q, tangent, None, None)


def _held_bounded(log_p, log_q, lse, s: RowSettings) -> _Held:
    """-p^a (r = a p^a) or cos(pi p) - 1 = -2 sin^2(pi p / 2) (r = pi p sin(pi p), sin(pi p) = sin(pi q))."""
    p, q = log_p.exp(), log_q.exp()
    if s.bonus == "power":
        log_r = math.log(s.power) + s.power * log_p
        bonus = -(s.power * log_p).exp()
    else:
        log_r = math.log(math.pi) + log_p + torch.minimum(p, q).mul(math.pi).sin().log()
        bonus = -2.0 * (p * (math.pi / 2)).sin().square()
    return _Held(log_p, log_q, bonus, log_r - lse, (log_r + log_q).exp(), None, log_r, None)


def _ratio_times(c: _Held, log_p_d: torch.Tensor, log_d_over_q_c: torch.Tensor, le: float) -> torch.Tensor:
    """r_c p_d for another held class d, from log p_d and log(p_d / (1 - p_c)) (bounded: <= p_c or p_c/(1-LE))."""
    if c.log_ratio is not None:
        out = (c.log_ratio + log_p_d).exp()
    else:
        out = (c.log_p + log_d_over_q_c).exp()
        if c.tangent is not None:
            out = torch.where(c.tangent, (c.log_p - math.log1p(-le) + log_p_d).exp(), out)
    return out if c.active is None else torch.where(c.active, out, 0.0)


def _masked(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero the entries of ignored rows (whose logits may hold anything, even values that overflow)."""
    return torch.where(valid, values, 0.0)


class _Top(NamedTuple):
    """The largest non-target class of each row, held out of the buffer: its 1 - p can be tiny."""

    col: torch.Tensor
    held: _Held
    ratio_p_y: torch.Tensor  # r_top p_y
    ratio_y_p_top: torch.Tensor  # r_y p_top


class _Buffer(NamedTuple):
    """The bonus of the buffer's classes: sum_j b_s(p_j), and r_j = v_j * v_scale (v None: v = e_j)."""

    bonus: torch.Tensor
    v: torch.Tensor | None
    v_scale: torch.Tensor


def forward_chunk(
    z: torch.Tensor,
    y: torch.Tensor,
    valid: torch.Tensor,
    s: RowSettings,
    scratch: list[torch.Tensor],
    grad: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, NLL and target bonus of one chunk of rows; writes d(loss_row)/dz into `grad` when given.

    The buffer holds e_j = exp(z_j - shift) for every class but the held ones: the target and, with
    log bonus smoothing and LE > 1/2, the largest non-target class (the only one whose p can exceed 1/2, so
    whose 1 - p needs care). The shift is the largest buffer logit, so the buffer's sum lies in [1, V]. Every
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
    hold_top = s.smooth_bonus and s.bonus == "log" and s.log_end > 0.5
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
        x.mul_(LOG2_E).exp2_()  # 0 at the held classes
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
    target = _held_class(gap_y, log_rest, lse, s)
    top = None
    if hold_top:
        top_held = _held_class(gap_top, torch.logaddexp(log_sum, a_y), lse, s)
        top = _Top(
            top_col,
            top_held,
            _ratio_times(top_held, target.log_p, -F.softplus(log_sum - a_y), s.log_end),
            _ratio_times(target, top_held.log_p, -F.softplus(log_sum - a_top), s.log_end),
        )
    nll = -target.log_p
    loss = (1.0 - s.eps) * nll + (s.rho * (1.0 - s.bonus_eps)) * target.bonus
    if s.eps > 0:
        if top is not None:
            sum_shifted = sum_shifted + a_top
        loss = loss + s.eps * (lse - (sum_shifted + a_y) / vocab)  # eps (1/V) sum_j -log p_j
    buffer = None
    if s.smooth_bonus:
        buffer = _buffer_bonus(x, scratch, s, lse, target, top)
        loss = loss + (s.rho * s.bonus_eps / vocab) * (buffer.bonus + target.bonus)

    loss = _masked(loss, valid)
    if grad is not None:
        _write_gradient(x, y, valid, s, scratch, grad, -lse, target, top, buffer)
    return loss, _masked(nll, valid), _masked(target.bonus, valid)


def _buffer_bonus(x, scratch, s: RowSettings, lse, target: _Held, top: _Top | None) -> _Buffer:
    """sum_j b_s(p_j) over the buffer (plus the held top's) and its ratios r_j, into scratch[2] (or from x).

    Classes below bonus_start get p_j = 0 (so b = 0, r = 0) and each one above it the shift -b(bonus_start).
    """
    n = x.shape[0]
    scale = (-lse).exp()  # p_j / e_j
    threshold = (math.log(s.start) + lse).exp().unsqueeze(1) if s.start > 0 else None  # e_j at bonus_start
    if s.bonus == "cosine":  # its ~15 passes over the buffer run as one compiled kernel on large inputs
        u = scratch[2][:n]
        bonus = _COSINE_PASS(
            x.numel(), x.device, x, scale, threshold, scratch[1][:n], u, _shape_at(s, s.start)
        )
        return _Buffer(bonus, u, torch.ones_like(scale))
    active = None
    if threshold is not None:  # 1.0 where p_j >= bonus_start
        active = torch.ge(x, threshold, out=scratch[1 if s.bonus == "power" else 2][:n])
        shift = active.sum(1) * _shape_at(s, s.start)
    else:
        shift = 0.0
    if s.bonus == "log":
        bonus, v = _buffer_log(x, scratch, s, scale, target, top, active)
        return _Buffer(bonus - shift, v, scale)
    if s.bonus == "power":
        u = scratch[2][:n]
        if s.power == 1.0:
            if active is None:  # r_j = p_j: folded into the coefficient of e_j
                return _Buffer(-(scale * x.sum(1)), None, scale)
            torch.mul(x, active, out=u)
        else:
            torch.pow(x, s.power, out=u)
            if active is not None:
                u.mul_(active)
        scale_a = (-s.power * lse).exp()  # p_j^a / e_j^a
        return _Buffer(-scale_a * u.sum(1) - shift, u, s.power * scale_a)
    raise AssertionError(f"unknown bonus {s.bonus!r}")  # (the API validates it)


def _cosine_pass(x, scale, threshold, sq, u, start_bonus: float) -> torch.Tensor:
    """sum_j b_s(p_j) of the cosine bonus over the buffer, and r_j = s_j H(s_j) into u: s_j = p_j^2 (in sq),
    p_j = 0 below bonus_start (e_j under `threshold`; None when bonus_start = 0). cos(pi p) - 1 = s G(s)."""
    g, h = COSINE_G_H[x.dtype]
    torch.mul(x, scale.unsqueeze(1), out=sq)
    if threshold is not None:
        active = x >= threshold
        sq.mul_(active)
    sq.square_()
    bonus = _polynomial(sq, g, out=u).mul_(sq).sum(1)  # (vecdot would allocate a [n, V] product)
    _polynomial(sq, h, out=u).mul_(sq)
    if threshold is not None:
        bonus = bonus - active.sum(1, dtype=x.dtype) * start_bonus
    return bonus


def _fused_cosine_pass(x, scale, threshold, sq, u, start_bonus: float) -> torch.Tensor:
    """`_cosine_pass` in plain arithmetic, the form torch.compile turns into one loop over the buffer."""
    g, h = COSINE_G_H[x.dtype]
    p = x * scale.unsqueeze(1)
    if threshold is not None:
        active = x >= threshold
        p = torch.where(active, p, 0.0)
    s = p * p
    value_g, value_h = s * g[-1] + g[-2], s * h[-1] + h[-2]
    for cg, ch in zip(reversed(g[:-2]), reversed(h[:-2]), strict=True):
        value_g, value_h = value_g * s + cg, value_h * s + ch
    u.copy_(value_h * s)
    bonus = (value_g * s).sum(1)
    if threshold is not None:
        bonus = bonus - active.sum(1, dtype=x.dtype) * start_bonus
    return bonus


_COSINE_PASS = CompiledPass(_fused_cosine_pass, "EL cosine-bonus pass", eager=_cosine_pass)


def _polynomial(s: torch.Tensor, coefficients: tuple[float, ...], out: torch.Tensor) -> torch.Tensor:
    """sum_k c_k s^k by Horner's rule into `out`, one fused pass per coefficient."""
    *low, _ = _COEFFICIENT_TENSORS[coefficients, s.dtype]
    torch.add(low.pop(), s, alpha=coefficients[-1], out=out)
    for c in reversed(low):
        torch.addcmul(c, out, s, out=out)
    return out


# The coefficients as 0-d tensors (addcmul's first operand; a CPU 0-d tensor also serves CUDA operands).
_COEFFICIENT_TENSORS = {
    (coefficients, dtype): tuple(torch.tensor(c, dtype=dtype) for c in coefficients)
    for dtype, pair in COSINE_G_H.items()
    for coefficients in pair
}


def _buffer_log(x, scratch, s: RowSettings, scale, target: _Held, top: _Top | None, active):
    """sum_j log(1 - t_j) (+ tangent) over the buffer, and v_j = e_j / (1 - t_j) in scratch[2].

    Its t_j = min(p_j, LE) are <= 1/2 (with a held top, every buffer class has p <= 1/2 < LE) and sum to
    <= 1, so prod_j (1 - t_j) lies in [1/4, 1]: one log of the product replaces a log per class, and the
    product can neither under- nor overflow.
    """
    n = x.shape[0]
    w = scratch[1][:n]
    torch.mul(x, -scale.unsqueeze(1), out=w)  # w = -p_j over the buffer
    if active is not None:
        w.mul_(active)
    if top is not None:
        bonus = w.add_(1.0).prod(1).log() + top.held.bonus
    else:
        if active is None:
            w.clamp_(min=-s.log_end)  # w = -t_j
            excess = target.log_q.exp() + w.sum(1)  # sum_j (p_j - t_j) over the non-target classes
        else:
            excess = -w.sum(1)
            w.clamp_(min=-s.log_end)
            excess = excess + w.sum(1)
        bonus = w.add_(1.0).prod(1).log() - excess / (1.0 - s.log_end)
    v = scratch[2][:n]
    if active is None:
        torch.div(x, w, out=v)  # v = e_j / (1 - t_j), 0 at held classes
    else:
        v.mul_(x).div_(w)  # v held the active mask
    return bonus, v


def _write_gradient(x, y, valid, s, scratch, grad, log_scale, target: _Held, top: _Top | None, buffer):
    """grad_k = A p_k - eps/V - (e rho/V) r_k - T [k == y] (docs/losses.md derives A and T).

    With bonus smoothing, `buffer` gives r_j of the buffer classes. The last pass writes into `grad` in its
    own dtype (bf16/fp16 logits: arithmetic in float32, one conversion).
    """
    n, vocab = x.shape
    eps, rho = s.eps, s.rho
    k = s.bonus_eps / vocab if buffer is not None else 0.0
    rho_y = rho * (1.0 - s.bonus_eps) if buffer is not None else rho  # the weight of the target's own bonus
    scale = log_scale.exp()
    ry_scale = target.log_ratio_scale.exp()  # r_y p_j / e_j
    coef = scale + rho_y * ry_scale  # A p_j / e_j
    p_y = target.log_p.exp()
    grad_y = -(1.0 - eps) * target.log_q.exp() - rho_y * target.ratio_q + eps * p_y - eps / vocab
    v = None
    if buffer is not None:
        v = buffer.v
        # R = sum_j r_j = rest + r_y (+ r_top): every product of R with a probability is bounded
        rest = (x if v is None else v).sum(1) * buffer.v_scale
        coef = coef + k * rho * (rest * scale + ry_scale)
        grad_y = grad_y + k * rho * (rest * p_y - target.ratio_q)
        if top is not None:
            coef = coef + k * rho * top.held.log_ratio_scale.exp()
            grad_y = grad_y + k * rho * top.ratio_p_y
        if v is None:
            coef = coef - k * rho * buffer.v_scale
    if v is None and eps == 0:
        torch.mul(x, _masked(coef, valid).unsqueeze(1), out=grad)
    else:
        # grad_j = e_j coef - (e rho / V) r_j - eps / V for every buffer class j.
        acc = grad if grad.dtype == x.dtype else scratch[1][:n]
        v_coef = None if v is None else _masked(-k * rho * buffer.v_scale, valid)
        offset = _masked(torch.full_like(scale, eps / vocab), valid) if eps > 0 else None
        _GRADIENT_PASS(x.numel(), x.device, x, _masked(coef, valid), v, v_coef, offset, acc, grad)
    if top is not None:
        # A p_top - eps/V - (e rho / V) r_top, with r_top (p_top - 1) = -r_top q_top kept exact.
        p_top = top.held.log_p.exp()
        grad_top = (
            p_top
            + rho_y * top.ratio_y_p_top
            + k * rho * (rest * p_top + top.ratio_y_p_top - top.held.ratio_q)
            - eps / vocab
        )
        grad.scatter_(1, top.col, _masked(grad_top, valid).unsqueeze(1).to(grad.dtype))
    grad.scatter_(1, y.unsqueeze(1), _masked(grad_y, valid).unsqueeze(1).to(grad.dtype))


def _gradient_pass(x, coef, v, v_coef, offset, acc, grad) -> None:
    """grad_j = e_j coef + v_j v_coef - offset (coefficients per row), through `acc` into grad's dtype."""
    torch.mul(x, coef.unsqueeze(1), out=acc)
    if v is not None:
        acc.addcmul_(v, v_coef.unsqueeze(1))
    if offset is not None:
        acc.sub_(offset.unsqueeze(1))
    if acc is not grad:
        grad.copy_(acc)  # (a mixed-dtype op with out=grad would take a slow, unvectorised path)


def _fused_gradient_pass(x, coef, v, v_coef, offset, acc, grad) -> None:
    """`_gradient_pass` in plain arithmetic, one loop under torch.compile (`acc` unused)."""
    out = x * coef.unsqueeze(1)
    if v is not None:
        out = out + v * v_coef.unsqueeze(1)
    if offset is not None:
        out = out - offset.unsqueeze(1)
    grad.copy_(out)


_GRADIENT_PASS = CompiledPass(_fused_gradient_pass, "EL gradient pass", eager=_gradient_pass)


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


class FusedEncouragingLoss(torch.autograd.Function):
    """Per-row EL/CEL loss (plus detached NLL and bonus) with the gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, logits, target, valid, settings, need_grad):
        n, vocab = logits.shape
        device, dtype = logits.device, compute_dtype(logits.dtype)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else None
        safe_target = torch.where(valid, target, 0)
        outputs = [torch.empty(n, dtype=dtype, device=device) for _ in range(3)]
        num_scratch = 3 if settings.eps > 0 or settings.smooth_bonus else 1
        rows = chunk_rows(n, vocab, device, EL_CPU_ELEMENTS)
        starts = range(0, n, rows)
        workers = None
        if device.type == "cpu" and len(starts) > 1 and not torch.compiler.is_compiling():
            # row workers where other processes take cores; on an idle machine every op uses all threads
            workers = row_workers()
            if workers is not None and not others_want_the_cores(torch.get_num_threads()):
                workers = None

        def run_chunk(start: int, scratch: list[torch.Tensor]) -> None:
            sl = slice(start, start + rows)
            chunk = forward_chunk(
                logits[sl], safe_target[sl], valid[sl], settings, scratch, None if grad is None else grad[sl]
            )
            for out, value in zip(outputs, chunk, strict=True):
                out[sl] = value

        def new_scratch() -> list[torch.Tensor]:
            return [torch.empty(rows, vocab, dtype=dtype, device=device) for _ in range(num_scratch)]

        if workers is None:
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

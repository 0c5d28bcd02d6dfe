"""Plain float64 reference implementations of the losses, written literally from the formulas
of docs/losses.md.

These are deliberately simple and slow: they are the ground truth the library is tested against.
Gradients come from torch autograd on float64. Nothing here imports the library.

docs/losses.md section 1 (Encouraging Loss), for one token with logits z, p = softmax(z), target y:

    b(p) = log(1 - p)                              if p <= LE
    b(p) = log(1 - LE) - (p - LE) / (1 - LE)       if p >  LE
    l    = (1 - eps) * [-log p_y + rho * b(p_y)] + (eps / V) * sum_j [-log p_j + rho * b(p_j)]

  and its other shapes (docs/losses.md), with bonus start s and bonus smoothing e (default eps):

    b(p) = -p^a  ("power"),  b(p) = cos(pi p) - 1  ("cosine")
    b_s(p) = b(p) - b(s) for p >= s, else 0
    l    = (1 - eps) (-log p_y) + (eps / V) sum_j -log p_j + rho [(1 - e) b_s(p_y) + (e / V) sum_j b_s(p_j)]

docs/losses.md section 2 (Asymmetric Polynomial Loss), for one label with logit x, p = sigmoid(x), t in {0, 1}:

    t = 1:  w+ = (1 - p)^gamma_pos,  l+ = w+ * [-log p + alpha1 (1 - p) + alpha2 (1 - p)^2]
    t = 0:  p_m = max(p - clip, 0),  w- = p_m^gamma_neg,  l- = w- * [-log(1 - p_m) + beta1 p_m]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def reduce(loss: torch.Tensor, reduction: str, count=None) -> torch.Tensor:
    """Apply a reduction. For "mean", divide by `count` (defaults to numel); 0 when count == 0."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        n = loss.numel() if count is None else int(count)
        return loss.sum() / max(n, 1)
    raise ValueError(reduction)


def safe_pow(base: torch.Tensor, gamma: float) -> torch.Tensor:
    """base ** gamma for base >= 0 with 0 ** 0 = 1 and no NaN gradients at base == 0."""
    gamma = float(gamma)
    if gamma == 0.0:
        return torch.ones_like(base)
    positive = base > 0
    safe_base = torch.where(positive, base, torch.ones_like(base))
    return torch.where(positive, safe_base**gamma, torch.zeros_like(base))


# ----------------------------------------------------------------------------------------------
# Encouraging loss
# ----------------------------------------------------------------------------------------------


def log1m_softmax_exact(z: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(z)_j) for every j, as logsumexp over k != j minus logsumexp over all k.

    Exact in float64 even when p_j rounds to 1. O(V^2) memory: only for small V.
    z: [N, V] float64.
    """
    n, v = z.shape
    zz = z.unsqueeze(1).expand(n, v, v)
    eye = torch.eye(v, dtype=torch.bool, device=z.device)
    zz = zz.masked_fill(eye, float("-inf"))
    return torch.logsumexp(zz, dim=-1) - torch.logsumexp(z, dim=-1, keepdim=True)


def el_bonus(p: torch.Tensor, log_end: float, log1m_p: torch.Tensor | None = None) -> torch.Tensor:
    """b(p) from docs/losses.md section 1. `log1m_p`, if given, is log(1 - p) computed some other (exact) way."""
    le = float(log_end)
    if log1m_p is None:
        # naive log(1 - p); clamp at LE so that the unused branch stays finite (no NaN gradients)
        log1m_p = torch.log1p(-torch.clamp(p, max=le)) if le < 1.0 else torch.log1p(-p)
    if le >= 1.0:
        return log1m_p
    tangent = math.log1p(-le) - (p - le) / (1.0 - le)
    return torch.where(p <= le, log1m_p, tangent)


def bonus_shape(p, bonus: str, bonus_power: float = 1.0) -> torch.Tensor:
    """b(p) of the "power" and "cosine" shapes, as written."""
    if bonus == "power":
        return -safe_pow(p, bonus_power)
    assert bonus == "cosine", bonus
    return torch.cos(math.pi * p) - 1.0


def _el_per_class_terms(z2, log_end, exact_log1m, bonus="log", bonus_power=1.0, bonus_start=0.0):
    """Return (log p, p, b_s(p)) for every class; z2: [N, V] float64."""
    logp = torch.log_softmax(z2, dim=-1)
    p = logp.exp()
    if bonus != "log":
        b = bonus_shape(p, bonus, bonus_power)
        b_start = bonus_shape(torch.tensor(float(bonus_start), dtype=F64), bonus, bonus_power)
    else:
        log1m = log1m_softmax_exact(z2) if exact_log1m else None
        if exact_log1m and float(log_end) < 1.0:
            # keep the unused log branch finite for p > LE
            log1m = torch.where(p <= log_end, log1m, torch.zeros_like(log1m))
        b = el_bonus(p, log_end, log1m)
        b_start = el_bonus(torch.tensor(float(bonus_start), dtype=F64), log_end)
    if bonus_start > 0:
        b = torch.where(p >= bonus_start, b - b_start, torch.zeros_like(b))
    return logp, p, b


def encouraging_loss_ref(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    log_end: float = 1.0,
    label_smoothing: float = 0.0,
    bonus_weight: float = 1.0,
    bonus: str = "log",
    bonus_power: float = 1.0,
    bonus_start: float = 0.0,
    bonus_smoothing: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    exact_log1m: bool = False,
) -> torch.Tensor:
    """EL/CEL in float64, literally from docs/losses.md section 1. `logits` should be a float64 tensor (leaf for grads)."""
    assert logits.dtype == F64
    v = logits.shape[-1]
    z2 = logits.reshape(-1, v)
    t = target.reshape(-1)
    mask = t != ignore_index
    t_safe = torch.where(mask, t, torch.zeros_like(t))

    logp, p, b = _el_per_class_terms(z2, log_end, exact_log1m, bonus, bonus_power, bonus_start)
    rho = float(bonus_weight)
    eps = float(label_smoothing)
    e = eps if bonus_smoothing is None else float(bonus_smoothing)

    def smoothed(per_class, eps):  # (1 - eps) x_y + (eps / V) sum_j x_j
        return (1.0 - eps) * per_class.gather(-1, t_safe.unsqueeze(-1)).squeeze(-1) + (
            eps / v
        ) * per_class.sum(-1)

    loss = smoothed(-logp, eps) + rho * smoothed(b, e)
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    loss = loss.reshape(target.shape)
    return reduce(loss, reduction, count=int(mask.sum()))


def encouraging_stats_ref(
    logits,
    target,
    *,
    log_end=1.0,
    ignore_index=-100,
    exact_log1m=False,
    bonus="log",
    bonus_power=1.0,
    bonus_start=0.0,
):
    """(nll_sum, bonus_sum, num_tokens): plain -log p_y and unsmoothed b_s(p_y) summed over kept tokens."""
    v = logits.shape[-1]
    z2 = logits.detach().to(F64).reshape(-1, v)
    t = target.reshape(-1)
    mask = t != ignore_index
    t_safe = torch.where(mask, t, torch.zeros_like(t))
    logp, p, b = _el_per_class_terms(z2, log_end, exact_log1m, bonus, bonus_power, bonus_start)
    nll = -logp.gather(-1, t_safe.unsqueeze(-1)).squeeze(-1)
    bon = b.gather(-1, t_safe.unsqueeze(-1)).squeeze(-1)
    zero = torch.zeros_like(nll)
    return (
        torch.where(mask, nll, zero).sum(),
        torch.where(mask, bon, zero).sum(),
        int(mask.sum()),
    )


def encouraging_grad_closed_form(
    logits,
    target,
    *,
    log_end=1.0,
    label_smoothing=0.0,
    bonus_weight=1.0,
    ignore_index=-100,
    bonus="log",
    bonus_power=1.0,
    bonus_start=0.0,
    bonus_smoothing=None,
):
    """The closed-form gradient of docs/losses.md (reduction="sum"), to cross-check the reference itself:

    dl/dz_k = A p_k - eps/V + rho (e/V) c_k - T [k = y],  c_j = p_j b_s'(p_j),
    A = 1 - rho (1 - e) c_y - rho (e/V) sum_j c_j,  T = (1 - eps) - rho (1 - e) c_y.
    """
    v = logits.shape[-1]
    z2 = logits.detach().to(F64).reshape(-1, v)
    t = target.reshape(-1)
    mask = t != ignore_index
    t_safe = torch.where(mask, t, torch.zeros_like(t))
    eps, rho, le = float(label_smoothing), float(bonus_weight), float(log_end)
    e = eps if bonus_smoothing is None else float(bonus_smoothing)
    p = torch.softmax(z2, -1)
    if bonus == "log":
        c = -p / (1.0 - torch.clamp(p, max=le))
    elif bonus == "power":
        c = -bonus_power * p**bonus_power
    else:
        c = -math.pi * p * torch.sin(math.pi * p)
    c = torch.where(p >= bonus_start, c, torch.zeros_like(c))
    big_c = c.sum(-1, keepdim=True)
    c_y = c.gather(-1, t_safe.unsqueeze(-1))
    a = 1.0 - rho * (1.0 - e) * c_y - rho * e * big_c / v
    onehot = F.one_hot(t_safe, v).to(F64)
    grad = a * p - eps / v + rho * (e / v) * c - ((1.0 - eps) - rho * (1.0 - e) * c_y) * onehot
    grad = grad * mask.unsqueeze(-1).to(F64)
    return grad.reshape(logits.shape)


# ----------------------------------------------------------------------------------------------
# Asymmetric polynomial loss, ASL, focal loss, Poly-1
# ----------------------------------------------------------------------------------------------


def apl_ref(
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
    """APL in float64, literally from docs/losses.md section 2."""
    assert logits.dtype == F64
    x = logits
    t = targets.to(F64)
    p = torch.sigmoid(x)
    one_minus_p = torch.sigmoid(-x)
    log_p = F.logsigmoid(x)

    # positive part
    w_pos = safe_pow(one_minus_p, gamma_pos)
    if detach_focusing_weight:
        w_pos = w_pos.detach()
    l_pos = w_pos * (-log_p + alpha1 * one_minus_p + alpha2 * one_minus_p**2)

    # negative part, with probability shifting
    if clip > 0:
        p_m = torch.clamp(p - clip, min=0.0)
        # 1 - p_m = 1 - max(p - clip, 0) = min((1 - p) + clip, 1): the same number, but without the
        # cancellation 1 - p that float64 itself cannot resolve for tiny clip and large x
        log_1m_pm = torch.log(torch.clamp(one_minus_p + clip, max=1.0))
    else:
        p_m = p
        log_1m_pm = F.logsigmoid(-x)
    w_neg = safe_pow(p_m, gamma_neg)
    if detach_focusing_weight:
        w_neg = w_neg.detach()
    l_neg = w_neg * (-log_1m_pm + beta1 * p_m)

    loss = torch.where(t == 1, l_pos, l_neg)
    return reduce(loss, reduction)


def asl_ref(
    logits, targets, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, detach_focusing_weight=True, reduction="mean"
):
    """Asymmetric Loss (Ridnik et al. 2021) in its own formulation: clip added to 1 - p, pt, one weight."""
    assert logits.dtype == F64
    x = logits
    t = targets.to(F64)
    xs_pos = torch.sigmoid(x)
    xs_neg = torch.sigmoid(-x)
    if clip > 0:
        xs_neg = torch.clamp(xs_neg + clip, max=1.0)
        log_neg = torch.log(xs_neg)
    else:
        log_neg = F.logsigmoid(-x)
    loss = t * F.logsigmoid(x) + (1 - t) * log_neg
    pt = xs_pos * t + xs_neg * (1 - t)
    base = 1 - pt
    w = torch.where(t == 1, safe_pow(base, gamma_pos), safe_pow(base, gamma_neg))
    if detach_focusing_weight:
        w = w.detach()
    return reduce(-loss * w, reduction)


def sigmoid_focal_ref(logits, targets, *, gamma=2.0, reduction="mean"):
    """Sigmoid focal loss without alpha balancing (torchvision's definition with alpha < 0)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    return reduce(loss, reduction)


def poly1_bce_ref(logits, targets, *, epsilon=1.0, reduction="mean"):
    """Poly-1 applied to BCE: BCE + eps * (1 - p_t)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return reduce(ce + epsilon * (1 - p_t), reduction)


# ----------------------------------------------------------------------------------------------
# input builders and comparison helpers for the tests
# ----------------------------------------------------------------------------------------------


def logits_with_prob(others: torch.Tensor, cls: int, prob: float) -> torch.Tensor:
    """Return a copy of the row `others` (float64, [V]) whose softmax gives class `cls` probability `prob`.

    z_cls = logit(prob) + logsumexp(z_k, k != cls).
    """
    z = others.clone().to(F64)
    rest = torch.cat([z[:cls], z[cls + 1 :]])
    z[cls] = math.log(prob) - math.log1p(-prob) + torch.logsumexp(rest, 0)
    return z


def make_el_inputs(
    lead_shape, v, *, gen, probs=None, ignore_frac=0.0, ignore_index=-100, scale=2.0, wrong_frac=0.0
):
    """Random float64 logits [*lead_shape, V] and long targets [*lead_shape].

    `probs`: list of target probabilities assigned cyclically to the rows (None: plain random rows).
    `wrong_frac`: fraction of rows where a *non-target* class gets that probability instead.
    Returns (logits float64, target long).
    """
    n = int(math.prod(lead_shape))
    z = torch.randn(n, v, generator=gen, dtype=F64) * scale
    t = torch.randint(0, v, (n,), generator=gen)
    if probs:
        for i in range(n):
            pr = probs[i % len(probs)]
            cls = int(t[i])
            if v > 1 and torch.rand((), generator=gen).item() < wrong_frac:
                cls = (cls + 1 + int(torch.randint(0, v - 1, (), generator=gen))) % v
            z[i] = logits_with_prob(z[i], cls, pr)
    if ignore_frac > 0:
        drop = torch.rand(n, generator=gen) < ignore_frac
        t = torch.where(drop, torch.full_like(t, ignore_index), t)
    return z.reshape(*lead_shape, v), t.reshape(lead_shape)


def assert_close(actual, expected, *, rtol, atol=0.0, atol_scale=0.0, name="value"):
    """|a - e| <= atol + atol_scale * max|e| + rtol * |e| elementwise, compared in float64.

    `atol_scale` makes the absolute tolerance relative to the magnitude of the whole tensor, which is
    the right notion of "relative error" for gradients whose small entries are dominated by rounding.
    """
    a = torch.as_tensor(actual).detach().to(F64)
    e = torch.as_tensor(expected).detach().to(F64)
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite entries in the result: {a[~torch.isfinite(a)][:5]}"
    scale = e.abs().max().item() if e.numel() else 0.0
    bound = atol + atol_scale * scale + rtol * e.abs()
    err = (a - e).abs()
    if not bool((err <= bound).all()):
        idx = int(torch.argmax(err - bound))
        raise AssertionError(
            f"{name}: mismatch at flat index {idx}: got {a.reshape(-1)[idx].item():.10g}, "
            f"expected {e.reshape(-1)[idx].item():.10g} (abs err {err.reshape(-1)[idx].item():.3g}, "
            f"allowed {bound.reshape(-1)[idx].item():.3g}); max abs err {err.max().item():.3g}, "
            f"tensor scale {scale:.3g}, {(err > bound).sum().item()} of {err.numel()} entries out of tolerance"
        )

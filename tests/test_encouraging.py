"""Encouraging loss (EL / CEL): values and gradients against the float64 reference of docs/losses.md section 1."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_losses import EncouragingLoss, encouraging_loss

try:
    from tests.reference import (
        assert_close,
        encouraging_grad_closed_form,
        encouraging_loss_ref,
        encouraging_stats_ref,
        logits_with_prob,
        make_el_inputs,
    )
except ModuleNotFoundError:  # tests/ is not a package
    from reference import (
        assert_close,
        encouraging_grad_closed_form,
        encouraging_loss_ref,
        encouraging_stats_ref,
        logits_with_prob,
        make_el_inputs,
    )

F64 = torch.float64
LOG_ENDS = [1.0, 0.75, 0.5, 0.25]
SMOOTHINGS = [0.0, 0.1]
BONUS_WEIGHTS = [0.0, 0.5, 1.0]
# probabilities given to the target (or, for "wrong" rows, to a non-target class): hit both branches
CONFIDENT_PROBS = [1e-6, 0.05, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 0.9999]

# float32 precision target: ~1e-5 relative to float64 (values with an absolute floor for near-zero ones)
F32_VALUE_TOL = dict(rtol=1e-5, atol=1e-5)
F32_GRAD_TOL = dict(rtol=1e-5, atol_scale=1e-5)
F64_VALUE_TOL = dict(rtol=1e-10, atol=1e-10)
F64_GRAD_TOL = dict(rtol=1e-9, atol_scale=1e-10)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cotangent(shape):
    """Fixed random weights (float32 values, same for every dtype) for reduction="none" backward."""
    return torch.rand(shape, generator=_gen(123), dtype=torch.float32)


def _lib_value_and_grad(logits, target, fn=encouraging_loss, **kw):
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x, target, **kw)
    loss = out.loss if hasattr(out, "loss") else out
    # a fixed random cotangent for reduction="none" so every token's gradient is weighted differently
    if loss.dim() > 0:
        (loss * _cotangent(loss.shape).to(loss.dtype)).sum().backward()
    else:
        loss.backward()
    return loss, x.grad


def _ref_value_and_grad(logits, target, **kw):
    x = logits.detach().to(F64).clone().requires_grad_(True)
    loss = encouraging_loss_ref(x, target, **kw)
    if loss.dim() > 0:
        (loss * _cotangent(loss.shape).to(F64)).sum().backward()
    else:
        loss.backward()
    return loss.detach(), x.grad


def _check_against_ref(logits, target, *, value_tol, grad_tol, **kw):
    lv, lg = _lib_value_and_grad(logits, target, **kw)
    rv, rg = _ref_value_and_grad(logits, target, **kw)
    assert lg.dtype == logits.dtype
    assert lv.shape == rv.shape
    assert_close(lv, rv, name="loss", **value_tol)
    assert_close(lg, rg, name="grad", **grad_tol)
    return lv, lg, rv, rg


# ----------------------------------------------------------------------------------------------
# value and gradient vs the float64 reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bonus_weight", BONUS_WEIGHTS)
@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("log_end", LOG_ENDS)
def test_matches_reference_grid(log_end, label_smoothing, bonus_weight, dtype):
    """[B, T, V] with random rows, confident rows (tangent branch), confidently wrong rows, padding."""
    gen = _gen(hash((log_end, label_smoothing, bonus_weight)) % 2**31)
    z, t = make_el_inputs((4, 9), 17, gen=gen, probs=CONFIDENT_PROBS, ignore_frac=0.2, wrong_frac=0.25)
    z = z.to(dtype)
    value_tol = F32_VALUE_TOL if dtype == torch.float32 else F64_VALUE_TOL
    grad_tol = F32_GRAD_TOL if dtype == torch.float32 else F64_GRAD_TOL
    kw = dict(log_end=log_end, label_smoothing=label_smoothing, bonus_weight=bonus_weight)
    for reduction in ("mean", "sum", "none"):
        lv, *_ = _check_against_ref(z, t, value_tol=value_tol, grad_tol=grad_tol, reduction=reduction, **kw)
        expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        assert lv.dtype == expected_dtype


@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("bonus_weight", [0.5, 1.0])
def test_float32_precision_full_bonus_near_one(label_smoothing, bonus_weight):
    """LE = 1 (full bonus) with target probabilities up to 1 - 1e-4: float32 within ~1e-5 of float64."""
    probs = [0.5, 0.9, 0.99, 0.999, 0.9995, 0.9999]
    z, t = make_el_inputs((len(probs) * 2,), 33, gen=_gen(7), probs=probs, scale=3.0)
    z = z.to(torch.float32)
    for reduction in ("sum", "none"):
        _check_against_ref(
            z,
            t,
            value_tol=F32_VALUE_TOL,
            grad_tol=F32_GRAD_TOL,
            reduction=reduction,
            log_end=1.0,
            label_smoothing=label_smoothing,
            bonus_weight=bonus_weight,
        )


def test_full_bonus_extreme_confidence_is_exact():
    """LE = 1, rho = 1, eps = 0: l = logsumexp(z_k, k != y) - z_y exactly, even when p_y rounds to 1.

    Gradient: softmax over the non-target classes for k != y, and -1 at y. (The authors' clamp at
    1e-5 would zero the bonus gradient here; docs/losses.md requires the exact value.)
    """
    v = 11
    gen = _gen(3)
    rows, targets = [], []
    for margin in [5.0, 12.0, 20.0, 40.0, 80.0]:
        z = torch.randn(v, generator=gen, dtype=F64)
        y = int(torch.randint(0, v, (), generator=gen))
        z[y] = z.max() + margin
        rows.append(z)
        targets.append(y)
    z = torch.stack(rows)
    t = torch.tensor(targets)
    for dtype, value_tol, grad_tol in [
        (torch.float64, F64_VALUE_TOL, F64_GRAD_TOL),
        (torch.float32, F32_VALUE_TOL, F32_GRAD_TOL),
    ]:
        zd = z.to(dtype)
        x = zd.detach().to(F64)
        others = x.masked_fill(F.one_hot(t, v).bool(), float("-inf"))
        expected = torch.logsumexp(others, -1) - x.gather(-1, t[:, None]).squeeze(-1)
        lv, lg = _lib_value_and_grad(zd, t, reduction="none", log_end=1.0)
        # "none" with the fixed random cotangent: recompute the expected gradient with the same weights
        w = _cotangent(lv.shape).to(F64)
        x2 = zd.detach().to(F64).requires_grad_(True)
        others2 = x2.masked_fill(F.one_hot(t, v).bool(), float("-inf"))
        exp2 = torch.logsumexp(others2, -1) - x2.gather(-1, t[:, None]).squeeze(-1)
        (exp2 * w).sum().backward()
        assert_close(lv, expected.detach(), name=f"loss {dtype}", **value_tol)
        assert_close(lg, x2.grad, name=f"grad {dtype}", **grad_tol)
        # the exact reference agrees
        x3 = zd.detach().to(F64).requires_grad_(True)
        r = encouraging_loss_ref(x3, t, reduction="sum", exact_log1m=True)
        assert_close(r, expected.sum(), rtol=1e-12, atol=1e-12, name="exact reference")
        # the target-logit gradient stays -1 however confident
        ls, gs = _lib_value_and_grad(zd, t, reduction="sum", log_end=1.0)
        assert_close(
            gs.gather(-1, t[:, None]).squeeze(-1),
            torch.full((len(t),), -1.0, dtype=F64),
            rtol=1e-5,
            atol=1e-6,
            name="target grad",
        )


@pytest.mark.parametrize("kind", ["confident", "confidently_wrong"])
@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("log_end", [1.0, 0.5])
def test_extreme_confidence_with_exact_reference(log_end, label_smoothing, kind):
    """Margins of 10 to 76 nats on the target ("confident") or on a non-target class ("confidently_wrong"),
    so that p rounds to 1 even in float64: compare with the reference that computes log(1 - p_j) exactly
    (logsumexp over k != j minus logsumexp over all). With smoothing, every class's b(p_j) enters the
    loss, so the dominant class's log(1 - p_j) must be exact too. The true gradient is bounded (|g| < 1)."""
    gen = _gen(11)
    v = 9
    n = 12
    z = torch.randn(n, v, generator=gen, dtype=F64)
    t = torch.randint(0, v, (n,), generator=gen)
    for i in range(n):
        cls = int(t[i]) if kind == "confident" else (int(t[i]) + 1) % v
        z[i, cls] = z[i].max() + 10.0 + 6.0 * i
    for dtype, vt, gt in [
        (torch.float64, dict(rtol=1e-9, atol=1e-9), dict(rtol=1e-8, atol_scale=1e-9)),
        (torch.float32, F32_VALUE_TOL, F32_GRAD_TOL),
    ]:
        zd = z.to(dtype)
        kw = dict(log_end=log_end, label_smoothing=label_smoothing, reduction="none")
        lv, lg = _lib_value_and_grad(zd, t, **kw)
        x = zd.detach().to(F64).clone().requires_grad_(True)
        r = encouraging_loss_ref(x, t, exact_log1m=True, **kw)
        (r * _cotangent(r.shape).to(F64)).sum().backward()
        assert x.grad.abs().max() < 1.0
        assert_close(lv, r.detach(), name=f"loss {dtype}", **vt)
        assert_close(lg, x.grad, name=f"grad {dtype}", **gt)


@pytest.mark.parametrize("log_end", LOG_ENDS)
@pytest.mark.parametrize("v", [2, 3, 50_000])
def test_vocab_sizes(v, log_end):
    """V from 2 up to 50k (few rows for big V), with smoothing and padding."""
    n = 3 if v > 1000 else 40
    probs = [0.2, 0.6, 0.95, 0.999] if v > 2 else [0.01, 0.4, 0.6, 0.95, 0.999]
    z, t = make_el_inputs((n,), v, gen=_gen(v), probs=probs, ignore_frac=0.15 if n > 3 else 0.0)
    if n == 3:
        t[1] = -100
    z = z.to(torch.float32)
    for eps in SMOOTHINGS:
        _check_against_ref(
            z,
            t,
            value_tol=F32_VALUE_TOL,
            grad_tol=F32_GRAD_TOL,
            reduction="mean",
            log_end=log_end,
            label_smoothing=eps,
            bonus_weight=1.0,
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("log_end", [1.0, 0.5])
def test_low_precision_logits(dtype, log_end):
    """bf16/fp16 logits: float32 result, gradient in the logits dtype, ~1e-2 of float64 on the same inputs."""
    z, t = make_el_inputs((3, 8), 50, gen=_gen(5), probs=[0.1, 0.5, 0.9, 0.99], ignore_frac=0.2)
    z = z.to(dtype)
    for eps in SMOOTHINGS:
        for reduction in ("mean", "none"):
            lv, lg = _lib_value_and_grad(z, t, log_end=log_end, label_smoothing=eps, reduction=reduction)
            assert lv.dtype == torch.float32
            assert lg.dtype == dtype
            rv, rg = _ref_value_and_grad(z, t, log_end=log_end, label_smoothing=eps, reduction=reduction)
            assert_close(lv, rv, rtol=1e-2, atol=1e-3, name="loss")
            assert_close(lg, rg, rtol=1e-2, atol_scale=1e-2, name="grad")


def test_output_dtypes():
    z, t = make_el_inputs((6,), 10, gen=_gen(1))
    for dtype, out in [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
    ]:
        x = z.detach().to(dtype).clone().requires_grad_(True)
        for reduction in ("mean", "sum", "none"):
            loss = encouraging_loss(x, t, reduction=reduction)
            assert loss.dtype == out, (dtype, reduction, loss.dtype)
        encouraging_loss(x, t).backward()
        assert x.grad.dtype == dtype


def test_non_contiguous_logits():
    """Transposed [T, B, V] views and strided last dimension."""
    z, t = make_el_inputs((5, 4), 21, gen=_gen(9), probs=[0.3, 0.95, 0.9999], ignore_frac=0.2)
    z = z.to(torch.float32)
    zt = z.transpose(0, 1)  # [4, 5, V], not contiguous
    tt = t.transpose(0, 1)
    assert not zt.is_contiguous()
    x = z.clone().requires_grad_(True)
    loss = encouraging_loss(x.transpose(0, 1), tt, log_end=0.5, label_smoothing=0.1, reduction="sum")
    loss.backward()
    rx = z.to(F64).requires_grad_(True)
    r = encouraging_loss_ref(rx.transpose(0, 1), tt, log_end=0.5, label_smoothing=0.1, reduction="sum")
    r.backward()
    assert_close(loss, r, name="loss", **F32_VALUE_TOL)
    assert_close(x.grad, rx.grad, name="grad", **F32_GRAD_TOL)

    wide = torch.randn(6, 40, generator=_gen(2))
    xs = wide.clone().requires_grad_(True)
    tgt = torch.randint(0, 20, (6,), generator=_gen(2))
    l2 = encouraging_loss(xs[:, ::2], tgt, reduction="sum")
    l2.backward()
    rs = wide.to(F64).requires_grad_(True)
    r2 = encouraging_loss_ref(rs[:, ::2], tgt, reduction="sum")
    r2.backward()
    assert_close(l2, r2, name="strided loss", **F32_VALUE_TOL)
    assert_close(xs.grad, rs.grad, name="strided grad", **F32_GRAD_TOL)


def test_shapes_flatten_consistently():
    """[B, T, V] gives the same per-token losses as the flattened [B*T, V] input."""
    z, t = make_el_inputs((3, 5), 12, gen=_gen(4), probs=[0.2, 0.8, 0.99], ignore_frac=0.2)
    a = encouraging_loss(z, t, log_end=0.75, label_smoothing=0.1, reduction="none")
    b = encouraging_loss(
        z.reshape(15, 12), t.reshape(15), log_end=0.75, label_smoothing=0.1, reduction="none"
    )
    assert a.shape == (3, 5)
    assert b.shape == (15,)
    assert_close(a.reshape(15), b, rtol=1e-12, atol=1e-12)
    # a single token (1-D logits are not required, but [1, V] must work)
    c = encouraging_loss(z.reshape(15, 12)[:1], t.reshape(15)[:1], reduction="none")
    assert c.shape == (1,)


# ----------------------------------------------------------------------------------------------
# ignore_index, padding, reductions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_index", [-100, -1, 0])
def test_ignore_index(ignore_index):
    v = 13
    gen = _gen(21)
    z = torch.randn(4, 6, v, generator=gen) * 4
    low = 1 if ignore_index == 0 else 0
    t = torch.randint(low, v, (4, 6), generator=gen)
    drop = torch.rand(4, 6, generator=gen) < 0.3
    t[drop] = ignore_index
    t[0, 0] = ignore_index
    kw = dict(log_end=0.5, label_smoothing=0.1, bonus_weight=0.7, ignore_index=ignore_index)
    for reduction in ("mean", "sum", "none"):
        lv, lg, rv, rg = _check_against_ref(
            z, t, value_tol=F32_VALUE_TOL, grad_tol=F32_GRAD_TOL, reduction=reduction, **kw
        )
        mask = t == ignore_index
        assert (lg[mask] == 0).all(), "ignored tokens must get exactly zero gradient"
        if reduction == "none":
            assert (lv[mask] == 0).all(), "ignored tokens must have loss exactly 0"
    # mean divides by the number of kept tokens, not by all tokens
    s = encouraging_loss(z, t, reduction="sum", **kw)
    m = encouraging_loss(z, t, reduction="mean", **kw)
    n = (t != ignore_index).sum()
    assert_close(m, s / n, rtol=1e-6, atol=1e-7)


def test_ignored_rows_with_large_logits_do_not_leak():
    """Padding rows may hold anything finite: they must not change the value or the gradient."""
    z, t = make_el_inputs((8,), 10, gen=_gen(8), probs=[0.3, 0.99])
    z = z.to(torch.float32)
    t[2] = -100
    t[5] = -100
    z2 = z.clone()
    z2[2] = 3e4
    z2[5, 0] = -3e4
    z2[5, 1] = 3e4
    for reduction in ("mean", "sum"):
        l1, g1 = _lib_value_and_grad(z, t, log_end=1.0, label_smoothing=0.1, reduction=reduction)
        l2, g2 = _lib_value_and_grad(z2, t, log_end=1.0, label_smoothing=0.1, reduction=reduction)
        assert torch.isfinite(l2) and torch.isfinite(g2).all()
        assert_close(l2, l1, rtol=1e-6, atol=1e-7)
        assert (g2[2] == 0).all() and (g2[5] == 0).all()
        assert_close(g2, g1, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_all_padding(dtype):
    z = torch.randn(2, 3, 7).to(dtype)
    t = torch.full((2, 3), -100)
    for reduction, shape in [("mean", ()), ("sum", ()), ("none", (2, 3))]:
        x = z.clone().requires_grad_(True)
        loss = encouraging_loss(x, t, log_end=0.5, label_smoothing=0.1, reduction=reduction)
        assert loss.shape == shape
        assert torch.isfinite(loss).all()
        assert (loss == 0).all()
        loss.sum().backward()
        assert x.grad is not None
        assert torch.isfinite(x.grad.float()).all()
        assert (x.grad == 0).all()
    stats = encouraging_loss(z, t, return_stats=True)
    assert float(stats.nll) == 0.0 and float(stats.bonus) == 0.0 and int(stats.num_tokens) == 0
    assert float(stats.loss) == 0.0


# ----------------------------------------------------------------------------------------------
# bonus_weight = 0 is cross-entropy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_end", [1.0, 0.5])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_zero_bonus_is_cross_entropy(label_smoothing, log_end):
    z, t = make_el_inputs(
        (5, 7),
        23,
        gen=_gen(13),
        probs=[0.01, 0.5, 0.99, 0.9999],
        ignore_frac=0.2,
        ignore_index=-1,
        wrong_frac=0.3,
    )
    z = z.to(torch.float32)
    for reduction in ("none", "mean", "sum"):
        x = z.clone().requires_grad_(True)
        el = encouraging_loss(
            x,
            t,
            log_end=log_end,
            label_smoothing=label_smoothing,
            bonus_weight=0.0,
            ignore_index=-1,
            reduction=reduction,
        )
        xc = z.clone().requires_grad_(True)
        ce = F.cross_entropy(
            xc.reshape(-1, 23),
            t.reshape(-1),
            label_smoothing=label_smoothing,
            ignore_index=-1,
            reduction=reduction,
        )
        if reduction == "none":
            ce = ce.reshape(t.shape)
        assert el.shape == ce.shape
        assert_close(el, ce, rtol=1e-5, atol=1e-6, name=f"value {reduction}")
        w = torch.rand(el.shape, generator=_gen(1))
        (el * w).sum().backward()
        (ce * w).sum().backward()
        assert_close(x.grad, xc.grad, rtol=1e-5, atol_scale=1e-5, name=f"grad {reduction}")


# ----------------------------------------------------------------------------------------------
# stats
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_end", [1.0, 0.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_with_stats(log_end, reduction):
    z, t = make_el_inputs((3, 6), 15, gen=_gen(17), probs=[0.1, 0.6, 0.9, 0.999], ignore_frac=0.25)
    z = z.to(torch.float32)
    kw = dict(log_end=log_end, label_smoothing=0.1, bonus_weight=0.5, reduction=reduction)
    x = z.clone().requires_grad_(True)
    out = encouraging_loss(x, t, **kw, return_stats=True)
    loss, nll, bonus, num_tokens = out  # a 4-tuple
    assert isinstance(out, tuple) and hasattr(out, "_fields")
    assert out.loss is loss and out.nll is nll and out.bonus is bonus and out.num_tokens is num_tokens
    # loss equals the plain function
    plain = encouraging_loss(z, t, **kw)
    assert_close(loss, plain, rtol=1e-6, atol=1e-7, name="loss")
    # nll/bonus: unsmoothed, unweighted, summed over kept tokens regardless of reduction, detached
    r_nll, r_bonus, r_n = encouraging_stats_ref(z, t, log_end=log_end)
    assert_close(nll, r_nll, rtol=1e-5, atol=1e-5, name="nll")
    assert_close(bonus, r_bonus, rtol=1e-5, atol=1e-5, name="bonus")
    assert torch.is_tensor(num_tokens)
    assert int(num_tokens) == r_n == int((t != -100).sum())
    assert nll.dim() == 0 and bonus.dim() == 0
    assert not nll.requires_grad and not bonus.requires_grad
    ce_sum = F.cross_entropy(z.reshape(-1, 15), t.reshape(-1), reduction="sum")
    assert_close(nll, ce_sum, rtol=1e-5, atol=1e-5, name="nll vs cross_entropy")
    # the loss still back-propagates like the plain function
    loss.sum().backward()
    x2 = z.clone().requires_grad_(True)
    encouraging_loss(x2, t, **kw).sum().backward()
    assert_close(x.grad, x2.grad, rtol=1e-6, atol_scale=1e-7, name="grad")


def test_with_stats_tangent_branch_bonus():
    """bonus uses b with the tangent branch (p > LE), before rho."""
    v = 6
    z = torch.stack(
        [
            logits_with_prob(torch.zeros(v, dtype=F64), 2, 0.9),
            logits_with_prob(torch.zeros(v, dtype=F64), 4, 0.3),
        ]
    )
    t = torch.tensor([2, 4])
    out = encouraging_loss(z, t, log_end=0.5, bonus_weight=0.25, label_smoothing=0.1, return_stats=True)
    expected_bonus = (math.log(0.5) - (0.9 - 0.5) / 0.5) + math.log(0.7)
    expected_nll = -math.log(0.9) - math.log(0.3)
    assert_close(out.bonus, torch.tensor(expected_bonus, dtype=F64), rtol=1e-10, atol=1e-12)
    assert_close(out.nll, torch.tensor(expected_nll, dtype=F64), rtol=1e-10, atol=1e-12)
    assert int(out.num_tokens) == 2


def test_hand_computed_values():
    """Tiny cases worked out by hand from the formulas of docs/losses.md."""
    v = 4
    z = torch.stack(
        [
            logits_with_prob(torch.zeros(v, dtype=F64), 1, 0.8),
            logits_with_prob(torch.zeros(v, dtype=F64), 0, 0.25),
        ]
    )
    t = torch.tensor([1, 0])
    # LE = 1, rho = 1, no smoothing: -log p + log(1 - p)
    loss = encouraging_loss(z, t, reduction="none")
    assert_close(
        loss,
        torch.tensor([-math.log(0.8) + math.log(0.2), -math.log(0.25) + math.log(0.75)], dtype=F64),
        rtol=1e-12,
        atol=1e-12,
    )
    # LE = 0.5, rho = 2: tangent for p = 0.8
    loss = encouraging_loss(z, t, log_end=0.5, bonus_weight=2.0, reduction="none")
    tangent = math.log(0.5) - (0.8 - 0.5) / 0.5
    assert_close(
        loss,
        torch.tensor([-math.log(0.8) + 2 * tangent, -math.log(0.25) + 2 * math.log(0.75)], dtype=F64),
        rtol=1e-12,
        atol=1e-12,
    )
    # smoothing: row 2 has p = 0.25 for all 4 classes
    eps = 0.2
    loss = encouraging_loss(z[1:], t[1:], label_smoothing=eps, reduction="none")
    per = -math.log(0.25) + math.log(0.75)
    assert_close(loss, torch.tensor([(1 - eps) * per + eps / 4 * 4 * per], dtype=F64), rtol=1e-12, atol=1e-12)
    # gradient without smoothing (rho = 1, p_y <= LE): (p - e_y) / (1 - p_y)
    x = z[:1].clone().requires_grad_(True)
    encouraging_loss(x, t[:1], reduction="sum").backward()
    p = torch.softmax(z[:1], -1)
    expected = (p - F.one_hot(t[:1], v).to(F64)) / (1 - 0.8)
    assert_close(x.grad, expected, rtol=1e-10, atol=1e-12)
    # above LE: (p - e_y) * (1 + p_y / (1 - LE))
    x = z[:1].clone().requires_grad_(True)
    encouraging_loss(x, t[:1], log_end=0.5, reduction="sum").backward()
    expected = (p - F.one_hot(t[:1], v).to(F64)) * (1 + 0.8 / 0.5)
    assert_close(x.grad, expected, rtol=1e-10, atol=1e-12)


def test_reference_matches_closed_form_gradient():
    """Self-check of the reference: its autograd gradient equals the closed form of docs/losses.md section 1."""
    for le in LOG_ENDS:
        for eps in SMOOTHINGS:
            for rho in BONUS_WEIGHTS + [2.0]:
                z, t = make_el_inputs(
                    (10,), 8, gen=_gen(31), probs=CONFIDENT_PROBS, ignore_frac=0.2, wrong_frac=0.3
                )
                x = z.clone().requires_grad_(True)
                encouraging_loss_ref(
                    x, t, log_end=le, label_smoothing=eps, bonus_weight=rho, reduction="sum"
                ).backward()
                cf = encouraging_grad_closed_form(z, t, log_end=le, label_smoothing=eps, bonus_weight=rho)
                assert_close(x.grad, cf, rtol=1e-9, atol_scale=1e-10)


# ----------------------------------------------------------------------------------------------
# properties (hypothesis)
# ----------------------------------------------------------------------------------------------

_log_ends = st.sampled_from(LOG_ENDS) | st.floats(0.02, 0.98)
_smooth = st.sampled_from([0.0, 0.1]) | st.floats(0.0, 0.9)
_rho = st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 3.0)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    v=st.integers(2, 40),
    n=st.integers(1, 12),
    log_end=_log_ends,
    eps=_smooth,
    rho=_rho,
    scale=st.floats(0.1, 8.0),
)
def test_property_matches_reference(seed, v, n, log_end, eps, rho, scale):
    gen = _gen(seed)
    z, t = make_el_inputs(
        (n,), v, gen=gen, probs=[0.01, 0.4, 0.8, 0.97, 0.999], scale=scale, ignore_frac=0.2, wrong_frac=0.3
    )
    _check_against_ref(
        z,
        t,
        value_tol=F64_VALUE_TOL,
        grad_tol=F64_GRAD_TOL,
        reduction="sum",
        log_end=log_end,
        label_smoothing=eps,
        bonus_weight=rho,
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    v=st.integers(2, 40),
    log_end=_log_ends,
    eps=_smooth,
    rho=_rho,
    scale=st.floats(0.1, 10.0),
)
def test_property_el_not_above_ce(seed, v, log_end, eps, rho, scale):
    """b(p) <= 0 and rho >= 0, so EL <= CE token-wise (with the same smoothing)."""
    z, t = make_el_inputs(
        (16,), v, gen=_gen(seed), probs=[0.05, 0.5, 0.9, 0.999], scale=scale, ignore_frac=0.1
    )
    el = encouraging_loss(z, t, log_end=log_end, label_smoothing=eps, bonus_weight=rho, reduction="none")
    ce = F.cross_entropy(z, t, label_smoothing=eps, reduction="none")
    assert (el <= ce + 1e-12 * (1 + ce.abs())).all(), (el - ce).max()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), v=st.integers(2, 30), log_end=st.floats(0.05, 0.95), eps=_smooth, rho=_rho
)
def test_property_continuous_at_log_end(seed, v, log_end, eps, rho):
    """Value and gradient are continuous where p_y crosses LE (b is the tangent of log(1 - p) there)."""
    gen = _gen(seed)
    base = torch.randn(v, generator=gen, dtype=F64)
    y = int(torch.randint(0, v, (), generator=gen))
    d = 1e-9
    z = torch.stack([logits_with_prob(base, y, log_end - d), logits_with_prob(base, y, log_end + d)])
    t = torch.tensor([y, y])
    x = z.clone().requires_grad_(True)
    loss = encouraging_loss(x, t, log_end=log_end, label_smoothing=eps, bonus_weight=rho, reduction="none")
    loss.sum().backward()
    assert abs(loss[0].item() - loss[1].item()) < 1e-6
    assert_close(x.grad[1], x.grad[0], rtol=0, atol=1e-6, name="grad jump at LE")
    # and both sides agree with the reference
    _check_against_ref(
        z,
        t,
        value_tol=F64_VALUE_TOL,
        grad_tol=F64_GRAD_TOL,
        reduction="sum",
        log_end=log_end,
        label_smoothing=eps,
        bonus_weight=rho,
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    v=st.integers(2, 40),
    log_end=_log_ends,
    eps=_smooth,
    rho=_rho,
    shift=st.floats(-200.0, 200.0),
)
def test_property_shift_invariance(seed, v, log_end, eps, rho, shift):
    """Gradient rows sum to 0, and adding a constant to a row changes neither loss nor gradient."""
    z, t = make_el_inputs((8,), v, gen=_gen(seed), probs=[0.05, 0.5, 0.9, 0.999], ignore_frac=0.1)
    shifts = torch.linspace(-1, 1, 8, dtype=F64)[:, None] * shift
    kw = dict(log_end=log_end, label_smoothing=eps, bonus_weight=rho, reduction="none")
    l1, g1 = _lib_value_and_grad(z, t, **kw)
    l2, g2 = _lib_value_and_grad(z + shifts, t, **kw)
    assert_close(l2, l1, rtol=1e-8, atol=1e-8, name="loss after shift")
    assert_close(g2, g1, rtol=1e-7, atol_scale=1e-9, name="grad after shift")
    scale = g1.abs().sum(-1)
    assert (g1.sum(-1).abs() <= 1e-10 * scale + 1e-14).all(), g1.sum(-1)
    # float32 too (looser)
    z32 = z.to(torch.float32)
    _, g32 = _lib_value_and_grad(z32, t, **kw)
    assert (g32.sum(-1).abs().double() <= 1e-5 * g32.abs().sum(-1).double() + 1e-7).all()


# ----------------------------------------------------------------------------------------------
# autograd behaviour
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_grad_and_requires_grad_false_give_same_value(dtype):
    z, t = make_el_inputs((4, 5), 19, gen=_gen(41), probs=[0.2, 0.9, 0.999], ignore_frac=0.2)
    z = z.to(dtype)
    kw = dict(log_end=0.75, label_smoothing=0.1, bonus_weight=0.8)
    for reduction in ("mean", "sum", "none"):
        x = z.clone().requires_grad_(True)
        with_grad = encouraging_loss(x, t, reduction=reduction, **kw)
        with torch.no_grad():
            ng = encouraging_loss(x, t, reduction=reduction, **kw)
        nrg = encouraging_loss(z.clone(), t, reduction=reduction, **kw)
        assert not ng.requires_grad and not nrg.requires_grad
        assert torch.allclose(ng, with_grad.detach(), rtol=1e-6, atol=1e-7)
        assert torch.allclose(nrg, with_grad.detach(), rtol=1e-6, atol=1e-7)
        s = encouraging_loss(z.clone(), t, reduction=reduction, **kw, return_stats=True)
        assert torch.allclose(s.loss, with_grad.detach(), rtol=1e-6, atol=1e-7)


def test_second_backward_raises():
    z, t = make_el_inputs((3, 4), 9, gen=_gen(43), probs=[0.5, 0.99])
    x = z.to(torch.float32).requires_grad_(True)
    loss = encouraging_loss(x, t, log_end=0.5, label_smoothing=0.1)
    loss.backward()
    with pytest.raises(RuntimeError):
        loss.backward()


def test_double_backward_raises_a_clear_error_at_the_fused_loss():
    z, t = make_el_inputs((3, 4), 9, gen=_gen(44), probs=[0.5, 0.99])
    x = z.to(torch.float32).requires_grad_(True)
    loss = encouraging_loss(x, t, log_end=0.5, label_smoothing=0.1)
    with pytest.raises(RuntimeError, match="double backward .* not supported by the fused"):
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        torch.autograd.grad((g * g).sum(), x)
    # an ordinary backward of a fresh loss still works
    encouraging_loss(x, t, log_end=0.5, label_smoothing=0.1).backward()
    assert torch.isfinite(x.grad).all()


def test_retain_graph_second_backward_is_correct_or_raises():
    """With retain_graph=True a second backward must either raise or accumulate the same gradient."""
    z, t = make_el_inputs((3, 4), 9, gen=_gen(45), probs=[0.5, 0.99])
    x = z.to(torch.float32).requires_grad_(True)
    loss = encouraging_loss(x, t, log_end=0.5, label_smoothing=0.1)
    loss.backward(retain_graph=True)
    g1 = x.grad.clone()
    try:
        loss.backward()
    except RuntimeError:
        return
    assert_close(x.grad, 2 * g1, rtol=1e-6, atol_scale=1e-7)


def test_gradient_scaled_by_upstream():
    """Upstream gradients other than 1 are honoured (e.g. loss * 3, gradient accumulation)."""
    z, t = make_el_inputs((4,), 7, gen=_gen(46), probs=[0.3, 0.95])
    x1 = z.clone().requires_grad_(True)
    (encouraging_loss(x1, t, log_end=0.5) * 3.0).backward()
    x2 = z.clone().requires_grad_(True)
    encouraging_loss(x2, t, log_end=0.5).backward()
    assert_close(x1.grad, 3 * x2.grad, rtol=1e-12, atol_scale=1e-14)


def test_module_matches_functional():
    z, t = make_el_inputs((2, 5), 14, gen=_gen(47), probs=[0.2, 0.9, 0.999], ignore_frac=0.2, ignore_index=-1)
    kw = dict(log_end=0.5, label_smoothing=0.1, bonus_weight=0.7, ignore_index=-1)
    for reduction in ("mean", "sum", "none"):
        mod = EncouragingLoss(reduction=reduction, **kw)
        assert isinstance(mod, torch.nn.Module)
        x1 = z.clone().requires_grad_(True)
        x2 = z.clone().requires_grad_(True)
        a = mod(x1, t)
        b = encouraging_loss(x2, t, reduction=reduction, **kw)
        assert_close(a, b, rtol=1e-12, atol=1e-12)
        a.sum().backward()
        b.sum().backward()
        assert_close(x1.grad, x2.grad, rtol=1e-12, atol_scale=1e-14)
    # defaults: LE = 1, no smoothing, rho = 1, ignore -100, mean
    z2, t2 = make_el_inputs((6,), 5, gen=_gen(48), probs=[0.3, 0.9], ignore_frac=0.3)
    d = EncouragingLoss()(z2, t2)
    r = encouraging_loss_ref(z2, t2, log_end=1.0, label_smoothing=0.0, bonus_weight=1.0, reduction="mean")
    assert d.dim() == 0
    assert_close(d, r, rtol=1e-10, atol=1e-12)
    assert_close(encouraging_loss(z2, t2), r, rtol=1e-10, atol=1e-12)


def test_module_settings_are_public_attributes_and_forward_returns_stats():
    mod = EncouragingLoss(
        log_end=0.5, label_smoothing=0.1, bonus_weight=0.7, ignore_index=-1, reduction="sum"
    )
    assert (mod.log_end, mod.label_smoothing, mod.bonus_weight, mod.ignore_index, mod.reduction) == (
        0.5,
        0.1,
        0.7,
        -1,
        "sum",
    )
    assert "log_end=0.5" in repr(mod)
    z, t = make_el_inputs((3, 4), 9, gen=_gen(50), probs=[0.3, 0.9], ignore_frac=0.3, ignore_index=-1)
    out = mod(z, t, return_stats=True)
    expected = encouraging_loss(
        z,
        t,
        log_end=0.5,
        label_smoothing=0.1,
        bonus_weight=0.7,
        ignore_index=-1,
        reduction="sum",
        return_stats=True,
    )
    assert type(out).__name__ == "EncouragingLossOutput"
    for a, b in zip(out, expected, strict=True):
        assert torch.equal(a, b)
    mod.log_end = 1.0  # a changed attribute takes effect, and is checked at the call
    assert_close(
        mod(z, t),
        encouraging_loss(z, t, label_smoothing=0.1, bonus_weight=0.7, ignore_index=-1, reduction="sum"),
        rtol=1e-12,
        atol=1e-12,
    )
    mod.log_end = 2.0
    with pytest.raises(ValueError, match=r"log_end must be in \(0, 1\]"):
        mod(z, t)


def test_docstring_examples_run():
    """The Example sections of the module's docstrings (EncouragingLoss's in particular) run as written."""
    import doctest

    import hf_losses.losses.encouraging as module

    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


# ----------------------------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------------------------


def _call_all(logits, target, **kw):
    """Call the three public entry points; each must raise on its own."""
    return [
        lambda: encouraging_loss(logits, target, **kw),
        lambda: encouraging_loss(logits, target, **kw, return_stats=True),
        lambda: EncouragingLoss(**kw)(logits, target),
    ]


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(log_end=0.0), "log_end"),
        (dict(log_end=-0.5), "log_end"),
        (dict(log_end=1.5), "log_end"),
        (dict(log_end=float("nan")), "log_end"),
        (dict(label_smoothing=-0.1), "label_smoothing"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(label_smoothing=1.5), "label_smoothing"),
        (dict(bonus_weight=-0.5), "bonus_weight"),
        (dict(reduction="avg"), "reduction"),
        (dict(reduction="batchmean"), "reduction"),
    ],
)
def test_invalid_hyperparameters(kw, name):
    z = torch.randn(3, 5)
    t = torch.tensor([0, 1, 4])
    for call in _call_all(z, t, **kw):
        with pytest.raises(ValueError, match=name):
            call()
    # the Module refuses bad settings at construction, naming the argument and the allowed range
    allowed = {
        "log_end": r"log_end must be in \(0, 1\]",
        "label_smoothing": r"label_smoothing must be in \[0, 1\)",
        "bonus_weight": "bonus_weight must be >= 0",
        "reduction": "reduction must be one of 'mean', 'sum', 'none'",
    }[name]
    with pytest.raises(ValueError, match=allowed):
        EncouragingLoss(**kw)


def test_valid_boundary_hyperparameters():
    z = torch.randn(3, 5, dtype=F64)
    t = torch.tensor([0, 1, 4])
    for kw in [
        dict(log_end=1.0),
        dict(log_end=1e-3),
        dict(label_smoothing=0.0),
        dict(label_smoothing=0.999),
        dict(bonus_weight=0.0),
        dict(bonus_weight=5.0),
    ]:
        out = encouraging_loss(z, t, **kw)
        r = encouraging_loss_ref(z, t, **kw)
        assert_close(out, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [5, 6, -1, -5, 1000])
def test_invalid_target_values(bad):
    z = torch.randn(2, 3, 5)
    t = torch.tensor([[0, 1, 2], [3, 4, 0]])
    t[1, 2] = bad
    for call in _call_all(z, t):
        with pytest.raises(ValueError, match="target"):
            call()


def test_target_equal_to_custom_ignore_index_is_fine_but_default_is_not():
    z = torch.randn(3, 5)
    t = torch.tensor([0, -1, 4])
    encouraging_loss(z, t, ignore_index=-1)
    with pytest.raises(ValueError, match="target"):
        encouraging_loss(z, t)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_any_integer_target_dtype_is_accepted(dtype):
    """Targets of every integer dtype are class indices (converted to int64), with the same result."""
    z, t = make_el_inputs((2, 3), 7, gen=_gen(49), probs=[0.3, 0.9])
    kw = dict(log_end=0.5, label_smoothing=0.1, reduction="none")
    x1, x2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    expected = encouraging_loss(x1, t, **kw)
    got = encouraging_loss(x2, t.to(dtype), **kw)
    assert torch.equal(got, expected)
    expected.sum().backward()
    got.sum().backward()
    assert torch.equal(x2.grad, x1.grad)
    if dtype != torch.uint8:  # negative values: ignored when equal to ignore_index, rejected otherwise
        padded = t.to(dtype).clone()
        padded[0, 0] = -1
        encouraging_loss(z, padded, ignore_index=-1)
        with pytest.raises(ValueError, match="target"):
            encouraging_loss(z, padded)
    too_big = t.to(dtype).clone()
    too_big[1, 1] = 7
    with pytest.raises(ValueError, match="target"):
        encouraging_loss(z, too_big)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_target_is_a_value_error(dtype):
    z = torch.randn(3, 5)
    with pytest.raises(
        ValueError, match="target must be an integer tensor.*int64, int32, int16, int8, uint8"
    ):
        encouraging_loss(z, torch.zeros(3, dtype=dtype))


def test_target_check_is_an_in_graph_assertion_under_compile(monkeypatch):
    """Under torch.compile the target check must not branch on tensor data (a graph break with fullgraph):
    it becomes torch._assert_async, which raises RuntimeError with the same message."""
    import torch.compiler

    z = torch.randn(3, 5)
    bad = torch.tensor([0, 9, 4])
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(RuntimeError, match="target must contain only class indices"):
        encouraging_loss(z, bad)
    encouraging_loss(z, torch.tensor([0, -100, 4]))  # a good target passes


@pytest.mark.slow
def test_compiles_with_fullgraph():
    """torch.compile(fullgraph=True) of a small model calling the loss: same value and gradients as eager,
    and a bad target still fails."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11)

    def step(h, t):
        return encouraging_loss(head(h), t, log_end=0.5, label_smoothing=0.1)

    h = torch.randn(2, 5, 8)
    t = torch.randint(0, 11, (2, 5))
    t[0, 0] = -100
    eager = step(h, t)
    eager.backward()
    eager_grad = head.weight.grad.clone()
    head.weight.grad = None
    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(h, t)
    loss.backward()
    assert_close(loss, eager.detach(), rtol=1e-6, atol=1e-7, name="compiled loss")
    assert_close(head.weight.grad, eager_grad, rtol=1e-5, atol_scale=1e-6, name="compiled grad")
    t[1, 1] = 11
    # our in-graph assertion, or inductor's own index bounds check, whichever its kernel runs first
    with pytest.raises(RuntimeError, match="target must contain only class indices|index out of bounds"):
        compiled(h, t)


@pytest.mark.parametrize(
    "zshape, tshape",
    [((2, 3, 5), (2, 4)), ((2, 3, 5), (6,)), ((4, 5), (5,)), ((4, 5), (4, 1)), ((4, 5), (2, 2))],
)
def test_shape_mismatch(zshape, tshape):
    z = torch.randn(*zshape)
    t = torch.zeros(tshape, dtype=torch.long)
    for call in _call_all(z, t):
        with pytest.raises(ValueError, match=r"(?i)target|shape"):
            call()


# ----------------------------------------------------------------------------------------------
# bonus shapes, bonus start, bonus smoothing
# ----------------------------------------------------------------------------------------------

# (bonus, bonus_power, log_end)
SHAPES = [
    ("log", 1.0, 1.0),
    ("log", 1.0, 0.75),
    ("log", 1.0, 0.4),
    ("power", 1.0, 1.0),
    ("power", 0.5, 1.0),
    ("power", 2.5, 1.0),
    ("cosine", 1.0, 1.0),
]
BONUS_STARTS = [0.0, 0.25, 0.8]  # not a probability of CONFIDENT_PROBS: the gradient jumps there
BONUS_SMOOTHINGS = [None, 0.0, 0.2, 1.0]


def _shape_kw(shape, bonus_start=0.0, bonus_smoothing=None, label_smoothing=0.0, bonus_weight=1.0):
    bonus, power, log_end = shape
    return dict(
        bonus=bonus,
        bonus_power=power,
        log_end=log_end,
        bonus_start=bonus_start,
        bonus_smoothing=bonus_smoothing,
        label_smoothing=label_smoothing,
        bonus_weight=bonus_weight,
    )


@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("bonus_smoothing", BONUS_SMOOTHINGS)
@pytest.mark.parametrize("bonus_start", BONUS_STARTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_bonus_options_match_reference(shape, bonus_start, bonus_smoothing, label_smoothing):
    """Every shape x start x bonus smoothing x label smoothing: float32 and float64 values and gradients."""
    kw = _shape_kw(shape, bonus_start, bonus_smoothing, label_smoothing, bonus_weight=0.7)
    gen = _gen(zlib.crc32(repr((shape, bonus_start, bonus_smoothing, label_smoothing)).encode()))  # stable
    z, t = make_el_inputs((30,), 13, gen=gen, probs=CONFIDENT_PROBS, ignore_frac=0.15, wrong_frac=0.4)
    for dtype, value_tol, grad_tol in (
        (torch.float32, F32_VALUE_TOL, F32_GRAD_TOL),
        (F64, F64_VALUE_TOL, F64_GRAD_TOL),
    ):
        for reduction in ("sum", "none"):
            lv, lg = _lib_value_and_grad(z.to(dtype), t, reduction=reduction, **kw)
            rv, rg = _ref_value_and_grad(z.to(dtype), t, reduction=reduction, exact_log1m=True, **kw)
            assert_close(lv, rv, name="loss", **value_tol)
            assert_close(lg, rg, name="grad", **grad_tol)
    stats = encouraging_loss(z, t, return_stats=True, **kw)
    nll, bonus, count = encouraging_stats_ref(
        z, t, log_end=kw["log_end"], bonus=kw["bonus"], bonus_power=kw["bonus_power"], bonus_start=bonus_start
    )
    assert_close(stats.nll, nll, **F64_VALUE_TOL)  # float64 sums in another order
    assert_close(stats.bonus, bonus, **F64_VALUE_TOL)


@pytest.mark.parametrize("bonus_smoothing", [None, 0.3])
@pytest.mark.parametrize("bonus_start", [0.0, 0.25])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_reference_gradient_is_the_closed_form(shape, bonus_start, bonus_smoothing):
    """The reference's autograd gradient equals the closed form written in docs/losses.md (float64)."""
    kw = _shape_kw(shape, bonus_start, bonus_smoothing, label_smoothing=0.1, bonus_weight=0.8)
    z, t = make_el_inputs((20,), 11, gen=_gen(3), probs=CONFIDENT_PROBS, ignore_frac=0.1, wrong_frac=0.4)
    _, rg = _ref_value_and_grad(z, t, reduction="sum", **kw)
    assert_close(rg, encouraging_grad_closed_form(z, t, **kw), rtol=1e-9, atol_scale=1e-10)


def _adversarial_rows(v, gen):
    """Rows with gaps of thousands of nats, ties at the top, targets far below, offsets of +-1e4."""
    base = torch.randn(8, v, generator=gen, dtype=F64)
    base[0, 3] += 3000.0  # a non-target class dominates
    base[1, 0] += 3000.0  # the target dominates
    base[2, 1:3] += 40.0  # a tie at the top
    base[3, 0] -= 2000.0  # the target far below
    base[4] *= 300.0
    base[5, 0] += 17.0  # p_y within ~1e-7 of 1
    base[6, 5] += 16.0
    offsets = torch.tensor([1e4, -1e4, 9999.5, -9876.0, 0.0, 1e4, -1e4, 5e3], dtype=F64)
    z = base + offsets.unsqueeze(1)
    t = torch.zeros(8, dtype=torch.long)
    t[6] = 2
    return z, t


@pytest.mark.parametrize("bonus_smoothing", [None, 0.0, 0.5])
@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("bonus_start", [0.0, 0.25])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_bonus_options_on_adversarial_logits(shape, bonus_start, label_smoothing, bonus_smoothing):
    kw = _shape_kw(shape, bonus_start, bonus_smoothing, label_smoothing)
    z, t = _adversarial_rows(9, _gen(11))
    z = z.float()
    # the reference takes the same (float32) logits, relative to their row maximum: exact in float64
    ref_z = z.double() - z.double().amax(1, keepdim=True)
    lv, lg = _lib_value_and_grad(z, t, reduction="none", **kw)
    rv, rg = _ref_value_and_grad(ref_z, t, reduction="none", exact_log1m=True, **kw)
    assert_close(lv, rv, name="loss", **F32_VALUE_TOL)
    assert_close(lg, rg, name="grad", **F32_GRAD_TOL)


@pytest.mark.parametrize("shape", SHAPES[::2] + [SHAPES[-1]], ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_bonus_options_large_vocabulary(shape):
    """256k classes, a few rows (confident and random), float32 against float64."""
    kw = _shape_kw(shape, 0.2, 0.3, 0.1)
    z, t = make_el_inputs((4,), 256_000, gen=_gen(2), probs=[0.01, 0.6, 0.99, 0.9], wrong_frac=0.5)
    lv, lg = _lib_value_and_grad(z.float(), t, reduction="none", **kw)
    rv, rg = _ref_value_and_grad(z, t, reduction="none", **kw)
    assert_close(lv, rv, name="loss", **F32_VALUE_TOL)
    assert_close(lg, rg, name="grad", **F32_GRAD_TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_bonus_options_low_precision_logits(shape, dtype):
    """bf16/fp16 logits: the float32 loss of exactly those logits, the gradient rounded to their dtype."""
    kw = _shape_kw(shape, 0.25, 0.2, 0.1)
    z, t = make_el_inputs(
        (12,), 50, gen=_gen(5), probs=[0.1, 0.5, 0.9, 0.99], ignore_frac=0.2, wrong_frac=0.3
    )
    z = z.to(dtype)
    lv, lg = _lib_value_and_grad(z, t, reduction="none", **kw)
    assert lv.dtype == torch.float32 and lg.dtype == dtype
    rv, rg = _ref_value_and_grad(z, t, reduction="none", exact_log1m=True, **kw)
    assert_close(lv, rv, name="loss", **F32_VALUE_TOL)
    assert_close(lg, rg, rtol=8e-3, atol_scale=4e-3, name="grad")


@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_zero_bonus_weight_is_cross_entropy_for_every_shape(shape, label_smoothing):
    kw = _shape_kw(shape, 0.25, 0.5, label_smoothing, bonus_weight=0.0)
    z, t = make_el_inputs((6, 5), 40, gen=_gen(8), probs=CONFIDENT_PROBS, ignore_frac=0.2)
    lv, lg = _lib_value_and_grad(z.float(), t, **kw)
    ce_z = z.float().clone().requires_grad_(True)
    ce = F.cross_entropy(ce_z.flatten(0, 1), t.flatten(), label_smoothing=label_smoothing)
    ce.backward()
    assert_close(lv, ce, rtol=1e-6, atol=1e-7, name="loss")
    assert_close(lg, ce_z.grad, rtol=1e-5, atol_scale=1e-6, name="grad")


def test_default_bonus_start_and_smoothing_are_todays_loss():
    """bonus_start=0 and bonus_smoothing=None (= label_smoothing) give exactly the loss without them."""
    z, t = make_el_inputs((7, 3), 30, gen=_gen(9), probs=CONFIDENT_PROBS, ignore_frac=0.2)
    z = z.float()
    for log_end, eps in ((1.0, 0.1), (0.5, 0.1), (0.75, 0.0)):
        base, base_grad = _lib_value_and_grad(z, t, log_end=log_end, label_smoothing=eps, reduction="none")
        for extra in (
            dict(bonus_start=0.0),
            dict(bonus_smoothing=eps),
            dict(bonus="log", bonus_smoothing=None),
        ):
            lv, lg = _lib_value_and_grad(
                z, t, log_end=log_end, label_smoothing=eps, reduction="none", **extra
            )
            torch.testing.assert_close(lv, base, rtol=0, atol=0)
            torch.testing.assert_close(lg, base_grad, rtol=0, atol=0)


@pytest.mark.parametrize("bonus_weight", [0.5, 1.0])
def test_power_one_is_nll_minus_p(bonus_weight):
    """bonus='power', bonus_power=1, no smoothing: l = -log p_y - rho p_y, gradient included."""
    z, t = make_el_inputs((40,), 25, gen=_gen(4), probs=CONFIDENT_PROBS, wrong_frac=0.3)
    z = z.float()
    lv, lg = _lib_value_and_grad(z, t, bonus="power", bonus_weight=bonus_weight, reduction="none")
    x = z.double().requires_grad_(True)
    expected = (
        F.cross_entropy(x, t, reduction="none") - bonus_weight * x.softmax(1).gather(1, t[:, None])[:, 0]
    )
    (expected * _cotangent(expected.shape).double()).sum().backward()
    assert_close(lv, expected, name="loss", **F32_VALUE_TOL)
    assert_close(lg, x.grad, name="grad", **F32_GRAD_TOL)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_bonus_is_continuous_at_its_start(shape):
    """Just below and just above p_y = bonus_start the loss agrees (the shifted bonus is 0 there)."""
    others = torch.randn(12, generator=_gen(6), dtype=F64)
    kw = _shape_kw(shape, 0.4, 0.0)
    below = logits_with_prob(others, 0, 0.4 - 1e-9).unsqueeze(0)
    above = logits_with_prob(others, 0, 0.4 + 1e-9).unsqueeze(0)
    t = torch.tensor([0])
    low, high = encouraging_loss(below, t, **kw), encouraging_loss(above, t, **kw)
    assert abs(low.item() - high.item()) < 1e-7
    assert encouraging_loss(below, t, return_stats=True, **kw).bonus.item() == 0.0
    assert encouraging_loss(above, t, return_stats=True, **kw).bonus.item() < 0.0


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(bonus="exp"), r"bonus must be one of 'log', 'power', 'cosine', got 'exp'"),
        (dict(bonus="power", bonus_power=0.0), r"bonus_power must be > 0, got 0.0"),
        (dict(bonus="power", bonus_power=-1.0), r"bonus_power must be > 0"),
        (dict(bonus_start=1.0), r"bonus_start must be in \[0, 1\), got 1.0"),
        (dict(bonus_start=-0.1), r"bonus_start must be in \[0, 1\)"),
        (dict(bonus_smoothing=1.5), r"bonus_smoothing must be in \[0, 1\], got 1.5"),
        (dict(bonus_smoothing=-0.5), r"bonus_smoothing must be in \[0, 1\]"),
        (dict(bonus="cosine", log_end=0.5), r"log_end must be 1 unless bonus='log'"),
        (dict(bonus="log", bonus_power=2.0), r"bonus_power must be 1 unless bonus='power'"),
    ],
)
def test_invalid_bonus_options(kw, message):
    z, t = torch.randn(3, 5), torch.tensor([0, 1, 4])
    for call in _call_all(z, t, **kw):
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "dtype, bound_g, bound_h", [(torch.float32, 1e-6, 5e-6), (torch.float64, 1e-13, 1e-13)]
)
def test_the_cosine_interpolants_are_exact_to_the_compute_dtype(dtype, bound_g, bound_h):
    """The kernel's sine-free cosine bonus: cos(pi p) - 1 = s G(s) and pi p sin(pi p) = s H(s), s = p^2,
    evaluated by its own Horner routine in `dtype` over p in [0, 1], against math in float64."""
    from hf_losses.losses.ops.encouraging import COSINE_G_H, _polynomial

    p = torch.linspace(0, 1, 100_001, dtype=F64)
    s = (p * p).to(dtype)
    g, h = COSINE_G_H[dtype]
    bonus = (_polynomial(s, g, out=torch.empty_like(s)) * s).to(F64)
    ratio = (_polynomial(s, h, out=torch.empty_like(s)) * s).to(F64)
    exact_bonus = -2 * torch.sin(math.pi * p / 2) ** 2  # cos(pi p) - 1 without cancellation
    exact_ratio = math.pi * p * torch.sin(math.pi * p)
    # relative per class for the bonus (|G| >= 2), absolute for r (it enters the gradient times e rho / V)
    assert ((bonus - exact_bonus).abs() <= bound_g * exact_bonus.abs() + 1e-300).all()
    assert (ratio - exact_ratio).abs().max() <= bound_h * math.pi**2


@pytest.mark.parametrize(
    "kw",
    [
        dict(bonus="cosine", bonus_start=0.0),
        dict(bonus="cosine", bonus_start=0.25, bonus_smoothing=0.3),
        dict(bonus="log", log_end=0.75),
    ],
    ids=["cosine", "cosine-start", "cel"],
)
def test_the_compiled_passes_match_reference(monkeypatch, kw):
    """On large inputs the cosine bonus's pass over the buffer and the gradient pass run as torch.compile
    kernels: float32 values and gradients against float64, extreme logits included, bf16 logits (the gradient
    written in bf16) against the float32 result, and one compilation serves other sizes."""
    from hf_losses.losses.ops import encouraging, utils

    monkeypatch.setattr(utils, "COMPILE_MIN_ELEMENTS", 5000)  # inductor specialises sizes <= 4096
    kw = dict(kw, label_smoothing=0.1, bonus_weight=0.7)
    frames = None
    for rows, vocab in [(40, 300), (37, 301)]:
        z, t = make_el_inputs(
            (rows,), vocab, gen=_gen(rows), probs=CONFIDENT_PROBS, ignore_frac=0.1, wrong_frac=0.4
        )
        z[0, :4] = torch.tensor([1e4, -1e4, 30.0, -30.0], dtype=F64)
        for reduction in ("sum", "none"):
            lv, lg = _lib_value_and_grad(z.float(), t, reduction=reduction, **kw)
            rv, rg = _ref_value_and_grad(z.float(), t, reduction=reduction, exact_log1m=True, **kw)
            assert_close(lv, rv, name="loss", **F32_VALUE_TOL)
            assert_close(lg, rg, name="grad", **F32_GRAD_TOL)
        bv, bg = _lib_value_and_grad(z.bfloat16(), t, reduction="sum", **kw)
        fv, fg = _lib_value_and_grad(z.bfloat16().float(), t, reduction="sum", **kw)
        torch.testing.assert_close(bv.float(), fv, rtol=1e-5, atol=0)  # bf16 in, float32 inside
        torch.testing.assert_close(bg.float(), fg, rtol=1e-2, atol=1e-6)  # one rounding to bf16
        assert callable(encouraging._GRADIENT_PASS.compiled), "the compiled gradient pass ran"
        if kw["bonus"] == "cosine":
            assert callable(encouraging._COSINE_PASS.compiled), "the compiled cosine pass ran"
        if frames is None:
            frames = torch._dynamo.utils.counters["frames"]["ok"]
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames, "recompiled for a new size"

"""Asymmetric Polynomial Loss (APL): values and gradients against the float64 reference of docs/losses.md section 2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_losses import AsymmetricPolynomialLoss, asymmetric_polynomial_loss

try:
    from tests.reference import apl_ref, asl_ref, assert_close, poly1_bce_ref, sigmoid_focal_ref
except ModuleNotFoundError:  # tests/ is not a package
    from reference import apl_ref, asl_ref, assert_close, poly1_bce_ref, sigmoid_focal_ref

F64 = torch.float64
DEFAULTS = dict(
    gamma_pos=0.0, gamma_neg=4.0, clip=0.05, alpha1=-1.0, alpha2=1.25, beta1=0.0, detach_focusing_weight=True
)
PARAM_SETS = [
    DEFAULTS,
    dict(gamma_pos=1.0, gamma_neg=2.0, clip=0.1, alpha1=0.5, alpha2=-0.3, beta1=1.0),
    dict(gamma_pos=0.0, gamma_neg=0.0, clip=0.0, alpha1=1.0, alpha2=0.0, beta1=1.0),
    dict(gamma_pos=2.5, gamma_neg=1.5, clip=0.2, alpha1=-2.0, alpha2=3.0, beta1=-0.5),
    dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.0, alpha1=-1.0, alpha2=1.25, beta1=0.3),
]
F32_VALUE_TOL = dict(rtol=1e-5, atol=1e-6)
F32_GRAD_TOL = dict(rtol=1e-5, atol_scale=1e-5)
F64_VALUE_TOL = dict(rtol=1e-10, atol=1e-12)
F64_GRAD_TOL = dict(rtol=1e-9, atol_scale=1e-11)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _inputs(shape, *, gen, scale=3.0, pos_frac=0.3, dtype=torch.float32):
    x = torch.randn(*shape, generator=gen, dtype=F64) * scale
    t = (torch.rand(*shape, generator=gen) < pos_frac).to(F64)
    return x.to(dtype), t.to(dtype)


def _cotangent(shape):
    return torch.rand(shape, generator=_gen(321), dtype=torch.float32)


def _backward(loss):
    if loss.dim() > 0:
        (loss * _cotangent(loss.shape).to(loss.dtype)).sum().backward()
    else:
        loss.backward()


def _lib(x, t, **kw):
    xx = x.detach().clone().requires_grad_(True)
    loss = asymmetric_polynomial_loss(xx, t, **kw)
    _backward(loss)
    return loss.detach(), xx.grad


def _ref(fn, x, t, **kw):
    xx = x.detach().to(F64).clone().requires_grad_(True)
    loss = fn(xx, t.to(F64), **kw)
    _backward(loss)
    return loss.detach(), xx.grad


def _check(x, t, *, value_tol, grad_tol, **kw):
    lv, lg = _lib(x, t, **kw)
    rv, rg = _ref(apl_ref, x, t, **kw)
    assert lg.dtype == x.dtype
    assert lv.shape == rv.shape
    assert_close(lv, rv, name="loss", **value_tol)
    assert_close(lg, rg, name="grad", **grad_tol)
    return lv, lg


# ----------------------------------------------------------------------------------------------
# value and gradient vs the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("pidx", range(len(PARAM_SETS)))
def test_matches_reference(pidx, detach, reduction, dtype):
    params = dict(PARAM_SETS[pidx], detach_focusing_weight=detach)
    x, t = _inputs((6, 37), gen=_gen(pidx), dtype=dtype)
    vt, gt = (F32_VALUE_TOL, F32_GRAD_TOL) if dtype == torch.float32 else (F64_VALUE_TOL, F64_GRAD_TOL)
    _check(x, t, value_tol=vt, grad_tol=gt, reduction=reduction, **params)


def test_defaults():
    """The defaults are the authors' values: gamma_pos 0, gamma_neg 4, clip 0.05, alpha (-1, 1.25), beta 0,
    detached focusing weights, mean over all elements."""
    x, t = _inputs((5, 11), gen=_gen(1), dtype=F64)
    xx = x.clone().requires_grad_(True)
    loss = asymmetric_polynomial_loss(xx, t)
    assert loss.dim() == 0
    loss.backward()
    rx = x.clone().requires_grad_(True)
    r = apl_ref(rx, t, reduction="mean", **DEFAULTS)
    r.backward()
    assert_close(loss, r, **F64_VALUE_TOL)
    assert_close(xx.grad, rx.grad, **F64_GRAD_TOL)
    mod = AsymmetricPolynomialLoss()
    assert isinstance(mod, torch.nn.Module)
    assert_close(mod(x, t), r, **F64_VALUE_TOL)


def test_hand_computed_values():
    """One positive and one negative label worked out by hand."""
    x = torch.tensor([0.3, 1.2], dtype=F64)
    t = torch.tensor([1.0, 0.0], dtype=F64)
    p = 1 / (1 + math.exp(-0.3))
    q = 1 - p
    lp = (q**1.0) * (-math.log(p) + 0.5 * q + 2.0 * q**2)
    p2 = 1 / (1 + math.exp(-1.2))
    pm = p2 - 0.1
    ln = (pm**2.0) * (-math.log(1 - pm) + 0.7 * pm)
    out = asymmetric_polynomial_loss(
        x, t, gamma_pos=1.0, gamma_neg=2.0, clip=0.1, alpha1=0.5, alpha2=2.0, beta1=0.7, reduction="none"
    )
    assert_close(out, torch.tensor([lp, ln], dtype=F64), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("pidx", [0, 1, 2])
def test_extreme_logits_float32(pidx, detach):
    """|x| up to 1e4 in float32: finite values and gradients that agree with float64."""
    params = dict(PARAM_SETS[pidx], detach_focusing_weight=detach)
    vals = torch.tensor(
        [-1e4, -3e3, -100.0, -40.0, -20.0, -10.0, -3.0, 0.0, 3.0, 10.0, 20.0, 40.0, 100.0, 3e3, 1e4]
    )
    x = torch.cat([vals, vals])
    t = torch.cat([torch.ones_like(vals), torch.zeros_like(vals)])
    for reduction in ("none", "sum", "mean"):
        lv, lg = _lib(x, t, reduction=reduction, **params)
        assert torch.isfinite(lv).all(), lv
        assert torch.isfinite(lg).all(), lg
        rv, rg = _ref(apl_ref, x, t, reduction=reduction, **params)
        assert torch.isfinite(rv).all() and torch.isfinite(rg).all()
        assert_close(lv, rv, rtol=1e-5, atol=1e-5, name="loss")
        assert_close(lg, rg, rtol=1e-5, atol=1e-6, name="grad")


@pytest.mark.parametrize("clip", [1e-4, 1e-6, 1e-8, 1e-10])
def test_small_clip_large_logits_float32(clip):
    """A small but valid clip with large logits on negative labels: 1 - p_m = (1 - p) + clip is tiny but
    positive, so the loss is finite (about -log(clip + sigmoid(-x))) and so is its gradient."""
    x = torch.tensor([-5.0, 0.0, 5.0, 12.0, 20.0, 30.0, 100.0, 1e4])
    t = torch.zeros_like(x)
    for gamma_neg in (0.0, 4.0):
        for detach in (True, False):
            kw = dict(
                DEFAULTS, clip=clip, gamma_neg=gamma_neg, detach_focusing_weight=detach, reduction="none"
            )
            lv, lg = _lib(x, t, **kw)
            assert torch.isfinite(lv).all(), lv
            assert torch.isfinite(lg).all(), lg
            rv, rg = _ref(apl_ref, x, t, **kw)
            assert_close(lv, rv, rtol=1e-3, atol=1e-6, name="loss")
            assert_close(lg, rg, rtol=1e-3, atol_scale=1e-3, name="grad")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("detach", [True, False])
def test_low_precision_inputs(dtype, detach):
    x, t = _inputs((4, 29), gen=_gen(3), dtype=dtype)
    for pidx in (0, 1):
        params = dict(PARAM_SETS[pidx], detach_focusing_weight=detach)
        for reduction in ("mean", "none"):
            lv, lg = _lib(x, t, reduction=reduction, **params)
            assert lg.dtype == dtype
            assert torch.isfinite(lv.float()).all()
            rv, rg = _ref(apl_ref, x, t, reduction=reduction, **params)
            assert_close(lv, rv, rtol=1e-2, atol=1e-3, name="loss")
            assert_close(lg, rg, rtol=1e-2, atol_scale=1e-2, name="grad")


def test_reductions_consistent():
    x, t = _inputs((3, 4, 5), gen=_gen(4))
    none = asymmetric_polynomial_loss(x, t, reduction="none")
    assert none.shape == x.shape
    s = asymmetric_polynomial_loss(x, t, reduction="sum")
    m = asymmetric_polynomial_loss(x, t, reduction="mean")
    assert s.dim() == 0 and m.dim() == 0
    assert_close(s, none.sum(), rtol=1e-6, atol=1e-6)
    assert_close(m, none.sum() / x.numel(), rtol=1e-6, atol=1e-7)


def test_non_contiguous_inputs():
    x, t = _inputs((7, 12), gen=_gen(5))
    xx = x.clone().requires_grad_(True)
    loss = asymmetric_polynomial_loss(xx.t(), t.t(), reduction="sum", detach_focusing_weight=False)
    loss.backward()
    rx = x.to(F64).requires_grad_(True)
    r = apl_ref(rx.t(), t.t().to(F64), reduction="sum", **dict(DEFAULTS, detach_focusing_weight=False))
    r.backward()
    assert_close(loss, r, **F32_VALUE_TOL)
    assert_close(xx.grad, rx.grad, **F32_GRAD_TOL)


# ----------------------------------------------------------------------------------------------
# special cases from docs/losses.md section 2
# ----------------------------------------------------------------------------------------------

ZERO_POLY = dict(alpha1=0.0, alpha2=0.0, beta1=0.0)


@pytest.mark.parametrize(
    "gp, gn, clip", [(0.0, 4.0, 0.05), (1.0, 2.0, 0.0), (0.0, 0.0, 0.2), (2.0, 3.0, 0.1), (3.0, 1.0, 0.3)]
)
@pytest.mark.parametrize("detach", [True, False])
def test_zero_polynomial_is_asl(gp, gn, clip, detach):
    x, t = _inputs((5, 23), gen=_gen(6), dtype=F64)
    for reduction in ("none", "sum", "mean"):
        lv, lg = _lib(
            x,
            t,
            gamma_pos=gp,
            gamma_neg=gn,
            clip=clip,
            detach_focusing_weight=detach,
            reduction=reduction,
            **ZERO_POLY,
        )
        rv, rg = _ref(
            asl_ref,
            x,
            t,
            gamma_pos=gp,
            gamma_neg=gn,
            clip=clip,
            detach_focusing_weight=detach,
            reduction=reduction,
        )
        assert_close(lv, rv, name="loss", **F64_VALUE_TOL)
        assert_close(lg, rg, name="grad", **F64_GRAD_TOL)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_case_is_bce_with_logits(dtype, detach):
    x, t = _inputs((8, 31), gen=_gen(7), dtype=dtype, scale=6.0)
    x[0, :6] = torch.tensor([-80.0, -30.0, 30.0, 80.0, -1e3, 1e3], dtype=dtype)
    kw = dict(gamma_pos=0.0, gamma_neg=0.0, clip=0.0, detach_focusing_weight=detach, **ZERO_POLY)
    for reduction in ("none", "sum", "mean"):
        lv, lg = _lib(x, t, reduction=reduction, **kw)
        xx = x.clone().requires_grad_(True)
        b = F.binary_cross_entropy_with_logits(xx, t, reduction=reduction)
        _backward(b)
        # same dtype on both sides: float32 must match to float32 rounding
        torch.testing.assert_close(lv.to(b.dtype), b.detach())
        torch.testing.assert_close(lg, xx.grad)
    bce_module = torch.nn.BCEWithLogitsLoss()
    torch.testing.assert_close(AsymmetricPolynomialLoss(**kw)(x, t).to(dtype), bce_module(x, t))


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_focal_loss(gamma, dtype):
    """alpha = beta = 0, gamma_pos = gamma_neg = g, clip 0, weights not detached -> sigmoid focal loss."""
    x, t = _inputs((6, 19), gen=_gen(8), dtype=dtype, scale=4.0)
    kw = dict(gamma_pos=gamma, gamma_neg=gamma, clip=0.0, detach_focusing_weight=False, **ZERO_POLY)
    vt, gt = (F32_VALUE_TOL, F32_GRAD_TOL) if dtype == torch.float32 else (F64_VALUE_TOL, F64_GRAD_TOL)
    for reduction in ("none", "sum", "mean"):
        lv, lg = _lib(x, t, reduction=reduction, **kw)
        rv, rg = _ref(sigmoid_focal_ref, x, t, gamma=gamma, reduction=reduction)
        assert_close(lv, rv, name="loss", **vt)
        assert_close(lg, rg, name="grad", **gt)


def test_detached_focal_weights_change_gradient_only():
    """With detach_focusing_weight=True the value is still the focal loss, but the gradient is
    w * d(BCE)/dx, not the focal gradient."""
    x, t = _inputs((4, 13), gen=_gen(9), dtype=F64)
    kw = dict(gamma_pos=2.0, gamma_neg=2.0, clip=0.0, **ZERO_POLY)
    lv_d, lg_d = _lib(x, t, detach_focusing_weight=True, reduction="sum", **kw)
    lv_n, lg_n = _lib(x, t, detach_focusing_weight=False, reduction="sum", **kw)
    assert_close(lv_d, lv_n, rtol=1e-12, atol=1e-12)
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    expected = (1 - p_t) ** 2 * (p - t)  # weight times the BCE gradient
    assert_close(lg_d, expected, rtol=1e-10, atol_scale=1e-12)
    assert not torch.allclose(lg_d, lg_n)


@pytest.mark.parametrize("eps", [1.0, -0.5, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_poly1_bce(eps, dtype):
    """gammas 0, clip 0, alpha1 = beta1 = eps, alpha2 = 0 -> Poly-1 on BCE."""
    x, t = _inputs((6, 17), gen=_gen(10), dtype=dtype, scale=4.0)
    vt, gt = (F32_VALUE_TOL, F32_GRAD_TOL) if dtype == torch.float32 else (F64_VALUE_TOL, F64_GRAD_TOL)
    for detach in (True, False):
        kw = dict(
            gamma_pos=0.0,
            gamma_neg=0.0,
            clip=0.0,
            alpha1=eps,
            alpha2=0.0,
            beta1=eps,
            detach_focusing_weight=detach,
        )
        for reduction in ("none", "sum", "mean"):
            lv, lg = _lib(x, t, reduction=reduction, **kw)
            rv, rg = _ref(poly1_bce_ref, x, t, epsilon=eps, reduction=reduction)
            assert_close(lv, rv, name="loss", **vt)
            assert_close(lg, rg, name="grad", **gt)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("gamma_neg", [0.0, 1.0, 4.0])
def test_easy_negatives_vanish(gamma_neg, detach):
    """With clip > 0, negatives whose p <= clip contribute exactly 0 loss and exactly 0 gradient."""
    clip = 0.05
    logit_clip = math.log(clip / (1 - clip))
    x = torch.linspace(-50.0, logit_clip - 1e-3, 40)
    t = torch.zeros_like(x)
    for kw in (dict(DEFAULTS), dict(DEFAULTS, beta1=2.0, alpha1=3.0)):
        kw.update(gamma_neg=gamma_neg, clip=clip, detach_focusing_weight=detach)
        xx = x.clone().requires_grad_(True)
        loss = asymmetric_polynomial_loss(xx, t, reduction="none", **kw)
        assert (loss == 0).all(), loss
        loss.sum().backward()
        assert (xx.grad == 0).all(), xx.grad
    # just above the clip the negative does contribute
    above = torch.tensor([logit_clip + 0.5])
    assert (
        asymmetric_polynomial_loss(above, torch.zeros(1), clip=clip, gamma_neg=gamma_neg, reduction="sum") > 0
    )


# ----------------------------------------------------------------------------------------------
# properties (hypothesis)
# ----------------------------------------------------------------------------------------------

_gamma = st.sampled_from([0.0, 1.0, 2.0, 4.0]) | st.floats(1.0, 6.0)
_clip = st.sampled_from([0.0, 0.05]) | st.floats(0.0, 0.5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    gp=_gamma,
    gn=_gamma,
    clip=_clip,
    a1=st.floats(-3, 3),
    a2=st.floats(-3, 3),
    b1=st.floats(-3, 3),
    detach=st.booleans(),
    scale=st.floats(0.1, 15.0),
)
def test_property_matches_reference(seed, gp, gn, clip, a1, a2, b1, detach, scale):
    x, t = _inputs((3, 17), gen=_gen(seed), dtype=F64, scale=scale)
    _check(
        x,
        t,
        value_tol=F64_VALUE_TOL,
        grad_tol=dict(rtol=1e-8, atol_scale=1e-10),
        reduction="sum",
        gamma_pos=gp,
        gamma_neg=gn,
        clip=clip,
        alpha1=a1,
        alpha2=a2,
        beta1=b1,
        detach_focusing_weight=detach,
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    gp=_gamma,
    gn=_gamma,
    clip=_clip,
    a1=st.floats(-1, 3),
    a2=st.floats(-0.5, 3),
    b1=st.floats(-1, 3),
    scale=st.floats(0.1, 30.0),
)
def test_property_nonnegative(seed, gp, gn, clip, a1, a2, b1, scale):
    """-log p >= q + q^2/2 (q = 1 - p) and -log(1 - p_m) >= p_m, so the loss is >= 0 whenever
    alpha1 >= -1, alpha2 >= -1/2 and beta1 >= -1 (the defaults included)."""
    x, t = _inputs((4, 25), gen=_gen(seed), dtype=torch.float32, scale=scale)
    loss = asymmetric_polynomial_loss(
        x, t, gamma_pos=gp, gamma_neg=gn, clip=clip, alpha1=a1, alpha2=a2, beta1=b1, reduction="none"
    )
    assert torch.isfinite(loss).all()
    assert (loss >= -1e-6).all(), loss.min()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), g=_gamma, a=st.floats(-3, 3), detach=st.booleans())
def test_property_symmetry(seed, g, a, detach):
    """clip 0, gamma_pos = gamma_neg, alpha1 = beta1, alpha2 = 0: l(x, 1) = l(-x, 0), and the
    gradients are opposite."""
    x = torch.randn(40, generator=_gen(seed), dtype=F64) * 5
    kw = dict(
        gamma_pos=g,
        gamma_neg=g,
        clip=0.0,
        alpha1=a,
        alpha2=0.0,
        beta1=a,
        detach_focusing_weight=detach,
        reduction="none",
    )
    x1 = x.clone().requires_grad_(True)
    x0 = (-x).clone().requires_grad_(True)
    l1 = asymmetric_polynomial_loss(x1, torch.ones_like(x), **kw)
    l0 = asymmetric_polynomial_loss(x0, torch.zeros_like(x), **kw)
    assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    l1.sum().backward()
    l0.sum().backward()
    assert_close(x1.grad, -x0.grad, rtol=1e-9, atol_scale=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), gp=_gamma, gn=_gamma, clip=_clip)
def test_property_detach_does_not_change_value(seed, gp, gn, clip):
    x, t = _inputs((3, 9), gen=_gen(seed), dtype=F64)
    kw = dict(gamma_pos=gp, gamma_neg=gn, clip=clip, reduction="none")
    a = asymmetric_polynomial_loss(x, t, detach_focusing_weight=True, **kw)
    b = asymmetric_polynomial_loss(x, t, detach_focusing_weight=False, **kw)
    assert_close(a, b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# autograd behaviour, module
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_grad_and_requires_grad_false_give_same_value(dtype):
    x, t = _inputs((4, 10), gen=_gen(11), dtype=dtype)
    for detach in (True, False):
        for reduction in ("mean", "sum", "none"):
            kw = dict(reduction=reduction, detach_focusing_weight=detach)
            xx = x.clone().requires_grad_(True)
            a = asymmetric_polynomial_loss(xx, t, **kw)
            with torch.no_grad():
                b = asymmetric_polynomial_loss(xx, t, **kw)
            c = asymmetric_polynomial_loss(x.clone(), t, **kw)
            assert not b.requires_grad and not c.requires_grad
            assert torch.allclose(a.detach().float(), b.float(), rtol=1e-6, atol=1e-7)
            assert torch.allclose(a.detach().float(), c.float(), rtol=1e-6, atol=1e-7)


def test_second_backward_raises():
    x, t = _inputs((3, 8), gen=_gen(12))
    xx = x.clone().requires_grad_(True)
    loss = asymmetric_polynomial_loss(xx, t)
    loss.backward()
    with pytest.raises(RuntimeError):
        loss.backward()


def test_module_matches_functional():
    x, t = _inputs((3, 14), gen=_gen(13), dtype=F64)
    kw = dict(
        gamma_pos=1.0,
        gamma_neg=3.0,
        clip=0.1,
        alpha1=0.5,
        alpha2=0.2,
        beta1=0.4,
        detach_focusing_weight=False,
    )
    for reduction in ("mean", "sum", "none"):
        mod = AsymmetricPolynomialLoss(reduction=reduction, **kw)
        x1 = x.clone().requires_grad_(True)
        x2 = x.clone().requires_grad_(True)
        a = mod(x1, t)
        b = asymmetric_polynomial_loss(x2, t, reduction=reduction, **kw)
        assert_close(a, b, rtol=1e-12, atol=1e-14)
        a.sum().backward()
        b.sum().backward()
        assert_close(x1.grad, x2.grad, rtol=1e-12, atol_scale=1e-14)


# ----------------------------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------------------------


def _calls(x, t, **kw):
    return [
        lambda: asymmetric_polynomial_loss(x, t, **kw),
        lambda: AsymmetricPolynomialLoss(**kw)(x, t),
    ]


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(clip=-0.1), "clip"),
        (dict(clip=1.0), "clip"),
        (dict(clip=2.0), "clip"),
        (dict(gamma_pos=-1.0), "gamma_pos"),
        (dict(gamma_neg=-0.5), "gamma_neg"),
        (dict(reduction="avg"), "reduction"),
        (dict(reduction="batchmean"), "reduction"),
    ],
)
def test_invalid_hyperparameters(kw, name):
    x, t = _inputs((2, 5), gen=_gen(14))
    for call in _calls(x, t, **kw):
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, 0.999])
def test_invalid_target_values(bad):
    x, t = _inputs((2, 5), gen=_gen(15))
    t[1, 3] = bad
    for call in _calls(x, t):
        with pytest.raises(ValueError, match="target"):
            call()


@pytest.mark.parametrize(
    "xshape, tshape", [((2, 5), (2, 4)), ((2, 5), (10,)), ((3, 4), (4, 3)), ((2, 5), (5,))]
)
def test_shape_mismatch(xshape, tshape):
    x = torch.randn(*xshape)
    t = torch.zeros(*tshape)
    for call in _calls(x, t):
        with pytest.raises(ValueError, match=r"(?i)shape|target"):
            call()


def test_valid_boundary_hyperparameters():
    x, t = _inputs((3, 7), gen=_gen(16), dtype=F64)
    for kw in [dict(clip=0.0), dict(clip=0.99), dict(gamma_pos=0.0, gamma_neg=0.0), dict(gamma_neg=10.0)]:
        out = asymmetric_polynomial_loss(x, t, **kw)
        r = apl_ref(x, t, **dict(DEFAULTS, **kw), reduction="mean")
        assert_close(out, r, **F64_VALUE_TOL)


# ----------------------------------------------------------------------------------------------
# torch.nn conventions: target dtypes, double backward, Module attributes and docstring
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int16, torch.int64, torch.float16])
def test_targets_of_any_dtype(dtype):
    """0/1 targets may be bool, integer or float: same value and gradient as float targets."""
    x, t = _inputs((5, 13), gen=_gen(17))
    lv, lg = _lib(x, t, reduction="none")
    got_v, got_g = _lib(x, t.to(dtype), reduction="none")
    torch.testing.assert_close(got_v, lv, rtol=0, atol=0)
    torch.testing.assert_close(got_g, lg, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int64])
def test_integer_targets_outside_0_1(dtype):
    x, t = _inputs((2, 5), gen=_gen(18))
    t = t.to(dtype)
    t[0, 1] = 2
    with pytest.raises(ValueError, match="target must contain only 0 and 1"):
        asymmetric_polynomial_loss(x, t)


def test_double_backward_fails_clearly():
    x, t = _inputs((3, 8), gen=_gen(19))
    xx = x.clone().requires_grad_(True)
    loss = asymmetric_polynomial_loss(xx, t)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, xx, create_graph=True)


def test_module_hyperparameters_are_public_attributes():
    kw = dict(gamma_pos=1.0, gamma_neg=3.0, clip=0.1, alpha1=0.5, alpha2=0.2, beta1=0.4)
    mod = AsymmetricPolynomialLoss(detach_focusing_weight=False, reduction="sum", **kw)
    for name, value in kw.items():
        assert getattr(mod, name) == value
    assert mod.detach_focusing_weight is False and mod.reduction == "sum"
    assert "gamma_neg=3.0" in repr(mod)
    x, t = _inputs((3, 6), gen=_gen(20), dtype=F64)
    mod.gamma_neg = 2.0  # a changed attribute is what the next call uses
    expected = asymmetric_polynomial_loss(x, t, **dict(kw, gamma_neg=2.0), detach_focusing_weight=False)
    assert_close(mod(x, t), expected * x.numel(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(gamma_neg=-1.0), r"^gamma_neg must be in \[0, inf\), got -1.0$"),
        (dict(gamma_pos=float("nan")), r"^gamma_pos must be in \[0, inf\), got nan$"),
        (dict(clip=1.0), r"^clip must be in \[0, 1\), got 1.0$"),
        (dict(alpha1=float("inf")), r"^alpha1 must be in \(-inf, inf\), got inf$"),
        (dict(beta1=float("nan")), r"^beta1 must be in \(-inf, inf\), got nan$"),
        (dict(reduction="avg"), r"^reduction must be one of"),
    ],
)
def test_module_validates_at_construction(kw, message):
    with pytest.raises(ValueError, match=message):
        AsymmetricPolynomialLoss(**kw)


def test_module_docstring_example_runs():
    import doctest

    from hf_losses.losses import polynomial

    finder = doctest.DocTestFinder()
    (test,) = finder.find(polynomial.AsymmetricPolynomialLoss, "AsymmetricPolynomialLoss", module=polynomial)
    assert test.examples, "the docstring has an example"
    result = doctest.DocTestRunner().run(test)
    assert result.failed == 0


# ----------------------------------------------------------------------------------------------
# the compiled kernel, its eager fallback, torch.compile of a caller
# ----------------------------------------------------------------------------------------------


def test_failed_compile_falls_back_to_eager(monkeypatch):
    """Where torch.compile cannot build the kernel (no compiler), one warning, then the eager kernel."""
    from hf_losses.losses.ops import polynomial, utils

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(polynomial._pass, "compiled", broken)
    monkeypatch.setattr(utils, "COMPILE_MIN_ELEMENTS", 0)
    x, t = _inputs((4, 9), gen=_gen(21))
    with pytest.warns(RuntimeWarning, match="APL kernel failed.*eager kernel"):
        lv, lg = _lib(x, t, reduction="sum")
    assert polynomial._pass.compiled is False
    rv, rg = _ref(apl_ref, x, t, reduction="sum", **DEFAULTS)
    assert_close(lv, rv, **F32_VALUE_TOL)
    assert_close(lg, rg, **F32_GRAD_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("pidx", [0, 1])
def test_compiled_kernel_matches_reference(monkeypatch, pidx):
    """The torch.compile kernel (large inputs): exact against float64, extreme logits included, and one
    compilation serves every input size."""
    from hf_losses.losses.ops import utils

    monkeypatch.setattr(utils, "COMPILE_MIN_ELEMENTS", 5000)  # inductor specialises sizes <= 4096
    params = dict(PARAM_SETS[pidx], detach_focusing_weight=bool(pidx))
    x, t = _inputs((50, 120), gen=_gen(22))
    vals = torch.tensor([-1e4, -100.0, -20.0, -3.0, 0.0, 3.0, 20.0, 100.0, 1e4])
    x[0, :9], t[0, :9], x[1, :9], t[1, :9] = vals, 1.0, vals, 0.0
    for reduction in ("mean", "none"):
        _check(x, t, value_tol=F32_VALUE_TOL, grad_tol=F32_GRAD_TOL, reduction=reduction, **params)
    for dtype in (torch.bool, torch.int64):
        torch.testing.assert_close(_lib(x, t.to(dtype)), _lib(x, t), rtol=0, atol=0)
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    for shape in [(77, 91), (5003,)]:
        x, t = _inputs(shape, gen=_gen(23))
        _check(x, t, value_tol=F32_VALUE_TOL, grad_tol=F32_GRAD_TOL, reduction="mean", **params)
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames, "recompiled for a new size"


@pytest.mark.slow
def test_fullgraph_compile_of_a_caller():
    """torch.compile(fullgraph=True) of code calling the loss: no graph break on the target check."""

    def step(x, t):
        return asymmetric_polynomial_loss(x * 2.0, t, gamma_pos=1.0)

    compiled = torch.compile(step, fullgraph=True)
    x, t = _inputs((4, 7), gen=_gen(24))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = compiled(x1, t.long()), step(x2, t.long())
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(x1.grad, x2.grad)
    bad = t.long()
    bad[0, 0] = 2
    with pytest.raises(RuntimeError, match="target must contain only 0 and 1"):
        compiled(x, bad)


@pytest.mark.parametrize("gamma_neg", [0.0, 4.0])
def test_a_clip_below_the_float32_range_keeps_loss_and_gradient_finite(gamma_neg):
    # 1 - p_m = q + clip underflows to 0 in float32 for a confident negative when clip < ~1e-38.
    x = torch.tensor([[120.0, 30.0, -3.0, 0.5]], requires_grad=True)
    loss = asymmetric_polynomial_loss(
        x, torch.zeros_like(x), gamma_neg=gamma_neg, clip=4.7e-199, alpha1=0.0, alpha2=0.0, reduction="none"
    )
    loss.sum().backward()
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    assert torch.isfinite(x.grad).all()

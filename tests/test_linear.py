"""linear_encouraging_loss: EL of h @ W.T + b without the logits, against the unfused loss and float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hf_losses.losses.linear as linear_api
import hf_losses.losses.ops.linear as linear
from hf_losses.losses.encouraging import encouraging_loss
from hf_losses.losses.linear import LinearEncouragingLoss, linear_encouraging_loss

try:
    from tests.reference import assert_close, encouraging_loss_ref, encouraging_stats_ref
except ModuleNotFoundError:  # tests/ is not a package
    from reference import assert_close, encouraging_loss_ref, encouraging_stats_ref

F64 = torch.float64
VALUE_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-5, atol_scale=1e-5)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 5 tokens, and EL kernel calls of 2 rows, so every loop runs several times."""
    monkeypatch.setattr(linear, "CPU_LOGIT_ELEMENTS", 1)
    monkeypatch.setattr(linear, "MIN_CHUNK_TOKENS", 5)
    monkeypatch.setattr(linear, "chunk_rows", lambda rows, vocab, device: 2)


def make_inputs(shape=(3, 7), dim=12, vocab=50, *, seed=0, scale=1.0, ignore_frac=0.3, integer=False):
    """h [*shape, d], W [V, d], b [V], target [*shape]. `integer`: integer entries, so logits are exact."""
    g = torch.Generator().manual_seed(seed)
    if integer:
        h = torch.randint(-3, 4, (*shape, dim), generator=g).to(F64) * scale
        w = torch.randint(-3, 4, (vocab, dim), generator=g).to(F64)
        b = torch.randint(-3, 4, (vocab,), generator=g).to(F64)
    else:
        h = torch.randn(*shape, dim, generator=g, dtype=F64) * scale
        w = torch.randn(vocab, dim, generator=g, dtype=F64) * dim**-0.5
        b = torch.randn(vocab, generator=g, dtype=F64)
    target = torch.randint(0, vocab, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_frac] = -100
    return h, w, b, target


def _leaves(*tensors, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_(True) for t in tensors]


def _backward(loss):
    """Backward with a fixed random cotangent for reduction="none", so every token is weighted differently."""
    if loss.dim() > 0:
        cotangent = torch.rand(loss.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
        loss = (loss * cotangent.to(loss.dtype)).sum()
    loss.backward()


def fused(h, w, b, target, dtype=torch.float32, **kw):
    h, w, b = _leaves(h, w, b, dtype=dtype)
    loss = linear_encouraging_loss(h, w, target, bias=b, **kw)
    _backward(loss)
    return loss.detach(), [None if t is None else t.grad for t in (h, w, b)]


def unfused(h, w, b, target, dtype=torch.float32, **kw):
    h, w, b = _leaves(h, w, b, dtype=dtype)
    logits = h @ w.T + (0 if b is None else b)
    if dtype == F64:
        loss = encouraging_loss_ref(logits, target, exact_log1m=True, **kw)
    else:
        loss = encouraging_loss(logits, target, **kw)
    _backward(loss)
    return loss.detach(), [None if t is None else t.grad for t in (h, w, b)]


def check(got, expected, value_tol=VALUE_TOL, grad_tol=GRAD_TOL):
    (loss, grads), (ref_loss, ref_grads) = got, expected
    assert_close(loss, ref_loss, name="loss", **value_tol)
    for name, grad, ref in zip(("input", "weight", "bias"), grads, ref_grads, strict=True):
        assert (grad is None) == (ref is None), name
        if ref is not None:
            assert_close(grad, ref, name=f"grad {name}", **grad_tol)


@pytest.mark.parametrize(
    ("reduction", "with_bias"),
    [("mean", True), ("sum", True), ("none", True), ("mean", False), ("none", False)],
)
@pytest.mark.parametrize(("log_end", "label_smoothing"), [(1.0, 0.0), (0.5, 0.0), (1.0, 0.1), (0.5, 0.1)])
def test_matches_float64_reference_and_unfused(small_chunks, log_end, label_smoothing, with_bias, reduction):
    h, w, b, target = make_inputs(scale=3.0)
    b = b if with_bias else None
    kw = dict(log_end=log_end, label_smoothing=label_smoothing, reduction=reduction)
    got = fused(h, w, b, target, **kw)
    assert got[0].shape == (target.shape if reduction == "none" else ())
    check(got, unfused(h, w, b, target, dtype=F64, **kw))
    check(got, unfused(h, w, b, target, **kw))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("log_end", [1.0, 0.75, 0.5])
def test_float64_is_exact(small_chunks, log_end, label_smoothing):
    h, w, b, target = make_inputs(shape=(2, 9), scale=4.0, seed=3)
    kw = dict(log_end=log_end, label_smoothing=label_smoothing, bonus_weight=0.7)
    check(
        fused(h, w, b, target, dtype=F64, **kw),
        unfused(h, w, b, target, dtype=F64, **kw),
        dict(rtol=1e-10, atol=1e-10),
        dict(rtol=1e-9, atol_scale=1e-10),
    )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("log_end", [1.0, 0.5])
@pytest.mark.parametrize("scale", [30.0, 300.0])
def test_large_logits(small_chunks, scale, log_end, label_smoothing):
    """Logits in the hundreds to thousands (exact integers in float32): confident right and wrong tokens."""
    h, w, b, target = make_inputs(shape=(4, 6), scale=scale, seed=5, integer=True)
    logits = h @ w.T + b
    target[0, :3] = logits[0, :3].argmax(-1)  # confidently right: p_y rounds to 1 in float32
    kw = dict(log_end=log_end, label_smoothing=label_smoothing, reduction="sum")
    got = fused(h, w, b, target, **kw)
    assert torch.isfinite(got[0]) and all(torch.isfinite(g).all() for g in got[1])
    check(got, unfused(h, w, b, target, dtype=F64, **kw))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored(reduction):
    h, w, b, _ = make_inputs()
    target = torch.full((3, 7), -100)
    out = linear_encouraging_loss(*_leaves(h, w, dtype=torch.float32), target, reduction=reduction)
    assert torch.equal(out, torch.zeros(target.shape if reduction == "none" else ()))
    loss, grads = fused(h, w, b, target, reduction=reduction, return_stats=False)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_one_valid_token(small_chunks):
    h, w, b, target = make_inputs(shape=(1, 6), seed=2)
    target[:] = -100
    target[0, 4] = 17
    kw = dict(log_end=0.5, label_smoothing=0.1)
    got = fused(h, w, b, target, **kw)
    check(got, unfused(h, w, b, target, dtype=F64, **kw))
    assert torch.equal(got[1][0][0, :4], torch.zeros(4, 12))  # ignored tokens get no gradient


def test_custom_ignore_index_and_unbatched_input(small_chunks):
    h, w, b, target = make_inputs(shape=(6,), ignore_frac=0.0)
    target = target.to(torch.int32)  # any integer dtype
    target[2] = 3
    kw = dict(ignore_index=3, log_end=0.5)
    check(fused(h, w, b, target, **kw), unfused(h, w, b, target, dtype=F64, **kw))
    one = linear_encouraging_loss(h[0].float(), w.float(), target[0], bias=b.float(), reduction="none")
    assert one.shape == ()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_stats(small_chunks, reduction):
    h, w, b, target = make_inputs(scale=3.0)
    out = linear_encouraging_loss(
        h.float(), w.float(), target, bias=b.float(), log_end=0.5, reduction=reduction, return_stats=True
    )
    logits = h @ w.T + b
    nll, bonus, count = encouraging_stats_ref(logits, target, log_end=0.5, exact_log1m=True)
    assert int(out.num_tokens) == count == int((target != -100).sum())
    assert_close(out.nll, nll, rtol=1e-5, atol=1e-5, name="nll")
    assert_close(out.bonus, bonus, rtol=1e-5, atol=1e-5, name="bonus")
    assert not out.nll.requires_grad and not out.bonus.requires_grad
    expected = encouraging_loss_ref(logits, target, log_end=0.5, reduction=reduction, exact_log1m=True)
    assert_close(out.loss, expected, name="loss", **VALUE_TOL)


def test_only_requested_gradients(small_chunks):
    """A frozen head (weight and bias without grad) still trains the input, and the other way round."""
    h, w, b, target = make_inputs()
    x = h.float().requires_grad_(True)
    linear_encouraging_loss(x, w.float(), target, bias=b.float()).backward()
    _, (ref, _, _) = unfused(h, w, b, target)
    assert_close(x.grad, ref, name="input grad", **GRAD_TOL)
    weight = w.float().requires_grad_(True)
    linear_encouraging_loss(h.float(), weight, target).backward()
    assert weight.grad is not None
    with torch.no_grad():
        value = linear_encouraging_loss(h.float(), weight, target)
    assert not value.requires_grad


def test_backward_runs_once():
    h, w, b, target = make_inputs()
    x = h.float().requires_grad_(True)
    loss = linear_encouraging_loss(x, w.float(), target)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()
    loss = linear_encouraging_loss(x, w.float(), target)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_autocast_projects_in_the_autocast_dtype(small_chunks):
    """Under autocast (Trainer --bf16) float32 parameters meet bf16 hidden states, as in nn.Linear."""
    h, w, b, target = make_inputs()
    leaves = _leaves(h, w, b, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_encouraging_loss(leaves[0].to(torch.bfloat16), leaves[1], target, bias=leaves[2])
    loss.backward()
    assert all(t.grad.dtype == torch.float32 for t in leaves)
    low = [t.to(torch.bfloat16).to(F64) for t in (h, w, b)]
    check(
        (loss.detach(), [t.grad for t in leaves]),
        unfused(*low, target, dtype=F64),
        dict(rtol=1e-2, atol=1e-2),
        dict(rtol=2e-2, atol_scale=2e-2),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(small_chunks, dtype):
    h, w, b, target = make_inputs(scale=2.0)
    h, w, b = (t.to(dtype).to(F64) for t in (h, w, b))  # the same values in every dtype
    kw = dict(log_end=0.5, label_smoothing=0.1)
    loss, grads = fused(h, w, b, target, dtype=dtype, **kw)
    assert loss.dtype == torch.float32 and all(g.dtype == dtype for g in grads)
    check(
        (loss, grads),
        unfused(h, w, b, target, dtype=F64, **kw),
        dict(rtol=1e-2, atol=1e-2),
        dict(rtol=2e-2, atol_scale=2e-2),
    )


def test_module():
    criterion = LinearEncouragingLoss(log_end=0.5, label_smoothing=0.1, bonus_weight=0.5, reduction="sum")
    assert (criterion.log_end, criterion.label_smoothing, criterion.bonus_weight) == (0.5, 0.1, 0.5)
    assert criterion.ignore_index == -100 and "reduction='sum'" in repr(criterion)
    h, w, b, target = make_inputs()
    h, w, b = (t.float() for t in (h, w, b))
    expected = linear_encouraging_loss(
        h, w, target, bias=b, log_end=0.5, label_smoothing=0.1, bonus_weight=0.5, reduction="sum"
    )
    assert torch.equal(criterion(h, w, target, bias=b), expected)
    out = criterion(h, w, target, b, return_stats=True)
    assert torch.equal(out.loss, expected) and int(out.num_tokens) == int((target != -100).sum())
    with pytest.raises(ValueError, match="log_end"):
        LinearEncouragingLoss(log_end=1.5)


def test_default_chunks_bound_the_logits():
    assert linear.chunk_tokens(4096, 64000, torch.device("cpu")) * 64000 <= 2 * linear.CPU_LOGIT_ELEMENTS
    assert linear.chunk_tokens(4096, 250_000, torch.device("cpu")) == linear.MIN_CHUNK_TOKENS
    assert linear.chunk_tokens(3, 64000, torch.device("cpu")) == 3
    assert linear.chunk_tokens(0, 64000, torch.device("cpu")) == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(log_end=0.0), "log_end"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(bonus_weight=-1.0), "bonus_weight"),
        (dict(reduction="avg"), "reduction"),
        (dict(weight=torch.zeros(12)), "weight"),
        (dict(input=torch.zeros(3, 7, 11)), "input"),
        (dict(input=torch.zeros(3, 7, 12, dtype=torch.long)), "input"),
        (dict(bias=torch.zeros(49)), "bias"),
        (dict(bias=torch.zeros(50, dtype=F64)), "bias"),
        (dict(weight=torch.zeros(50, 12, dtype=F64)), "weight"),
        (dict(target=torch.zeros(3, 7)), "target"),
        (dict(target=torch.zeros(3, 6, dtype=torch.long)), "target"),
        (dict(target=torch.full((3, 7), 50)), "target"),
        (dict(target=torch.full((3, 7), -2)), "target"),
    ],
)
def test_bad_arguments(change, match):
    args = dict(
        input=torch.zeros(3, 7, 12), weight=torch.zeros(50, 12), target=torch.zeros(3, 7, dtype=torch.long)
    )
    args.update(change)
    with pytest.raises(ValueError, match=match):
        linear_encouraging_loss(args.pop("input"), args.pop("weight"), args.pop("target"), **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    h, w, b, target = make_inputs(shape=(4, 33), dim=64, vocab=3000, scale=2.0)
    h, w, b = (t.to(dtype).to(F64) for t in (h, w, b))
    kw = dict(log_end=0.5, label_smoothing=0.1)
    cuda = [t.cuda() for t in (h, w, b, target)]
    loss, grads = fused(*cuda, dtype=dtype, **kw)
    tol = (
        (VALUE_TOL, GRAD_TOL)
        if dtype == torch.float32
        else (dict(rtol=1e-2, atol=1e-2), dict(rtol=2e-2, atol_scale=2e-2))
    )
    check((loss.cpu(), [g.cpu() for g in grads]), unfused(h, w, b, target, dtype=F64, **kw), *tol)


def test_docstring_example():
    import doctest

    result = doctest.testmod(linear_api)
    assert result.attempted >= 7 and result.failed == 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(bonus="power", bonus_power=1.0, label_smoothing=0.1),
        dict(bonus="power", bonus_power=2.0, bonus_start=0.2, bonus_smoothing=0.3),
        dict(bonus="cosine", label_smoothing=0.1, bonus_smoothing=0.0),
        dict(bonus="log", log_end=0.75, bonus_start=0.1, label_smoothing=0.1, bonus_smoothing=0.5),
    ],
    ids=str,
)
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_bonus_options_fused_equals_unfused(kw, reduction):
    """The fused head with every bonus option is the unfused loss of the same logits (float64, exact)."""
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(3, 7, 16, generator=gen, dtype=torch.float64) * 2
    weight = torch.randn(40, 16, generator=gen, dtype=torch.float64)
    bias = torch.randn(40, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 40, (3, 7), generator=gen)
    target[0, :2] = -100
    fused = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    plain = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    a = linear_encouraging_loss(fused[0], fused[1], target, bias=fused[2], reduction=reduction, **kw)
    b = encouraging_loss(F.linear(*plain), target, reduction=reduction, **kw)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    cot = torch.rand(a.shape, generator=gen, dtype=torch.float64)
    (a * cot).sum().backward()
    (b * cot).sum().backward()
    for x, y in zip(fused, plain, strict=True):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)
    module = LinearEncouragingLoss(**kw, reduction=reduction)
    torch.testing.assert_close(module(hidden, weight, target, bias), a.detach(), rtol=0, atol=0)

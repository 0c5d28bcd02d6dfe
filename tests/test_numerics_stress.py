"""Numerics under stress: finite values and gradients for extreme but finite inputs, huge vocabularies, all-padding."""

import itertools
import math
import os

import pytest
import torch

from hf_losses import asymmetric_polynomial_loss, encouraging_loss

try:
    from tests.reference import encouraging_loss_ref
except ModuleNotFoundError:  # tests/ is not a package
    from reference import encouraging_loss_ref

EL_SETTINGS = list(itertools.product([1.0, 0.75, 0.5, 0.25], [0.0, 0.1], [0.0, 1.0]))


def extreme_logits(rows: int, vocab: int, dtype: torch.dtype, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(rows, vocab, generator=g) * scale
    z[0] = 0.0
    z[0, 1] = scale  # confident and right (target 1), or confidently wrong (target 0)
    z[1, 2] = -scale
    return z.clamp(-scale, scale).to(dtype)


@pytest.mark.parametrize(
    "dtype,scale", [(torch.float32, 1e4), (torch.bfloat16, 1e4), (torch.float16, 1e4), (torch.float64, 1e4)]
)
@pytest.mark.parametrize("log_end,eps,rho", EL_SETTINGS)
def test_encouraging_finite_for_extreme_logits(dtype, scale, log_end, eps, rho):
    z = extreme_logits(6, 50, dtype, scale).requires_grad_()
    target = torch.tensor([1, 0, 2, 3, -100, 4])
    loss = encouraging_loss(
        z, target, log_end=log_end, label_smoothing=eps, bonus_weight=rho, reduction="sum"
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad.float()).all()
    assert z.grad.dtype == dtype


def test_encouraging_confidently_wrong_rows_are_finite_and_bounded():
    z = torch.zeros(2, 8)
    z[:, 3] = 1e4
    z.requires_grad_()
    loss = encouraging_loss(z, torch.tensor([0, 3]), log_end=1.0, label_smoothing=0.1, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert z.grad.abs().max() <= 2.0  # EL's gradient stays bounded: -1 on the target, softmax of the rest


@pytest.mark.parametrize("log_end,eps", [(1.0, 0.1), (0.5, 0.1), (0.5, 0.0)])
def test_encouraging_vocabulary_of_256k(log_end, eps):
    z = (torch.randn(3, 256_000) * 5).requires_grad_()
    target = torch.tensor([0, 255_999, 128_000])
    loss = encouraging_loss(z, target, log_end=log_end, label_smoothing=eps)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad.sum(-1), torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_encouraging_all_targets_ignored(dtype):
    z = (torch.randn(2, 5, 11) * 1e3).to(dtype).requires_grad_()
    loss = encouraging_loss(z, torch.full((2, 5), -100), log_end=0.5, label_smoothing=0.1)
    loss.backward()
    assert loss.item() == 0.0 and (z.grad == 0).all()


def adversarial_el_rows(vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32-representable rows that stress every term of EL: huge gaps between the top classes, several
    classes tied at the top (with or without the target), targets far below, cascades of gaps, and the same
    rows shifted by +-1e4 so that the logits' magnitude dwarfs their differences."""
    g = torch.Generator().manual_seed(seed)
    rows, targets = [torch.tensor([-300.0, 0.0] + [-150.0] * (vocab - 2))], [0]
    for gap in [0.0, 0.5, 5.0, 20.0, 60.0, 90.0, 100.0, 120.0, 200.0, 400.0, 3e3, 2e4]:
        base = torch.randn(vocab, generator=g)
        for kind in range(7):
            z, y = base.clone(), int(torch.randint(0, vocab, (), generator=g))
            other, other2 = (y + 1) % vocab, (y + 2) % vocab
            if kind == 0:  # target on top
                z[y] = z.max() + gap
            elif kind == 1:  # a wrong class on top
                z[other] = z.max() + gap
            elif kind == 2:  # target far below
                z[y] = z.min() - gap
            elif kind == 3:  # cascade: wrong class far above the rest, target far below the rest
                z[other] = z.max() + gap
                z[y] = z[other] - 2 * gap
            elif kind == 4:  # two wrong classes tied at the top
                z[other] = z[other2] = z.max() + gap
            elif kind == 5:  # one wrong class at 0, target at -gap/2, the rest at -gap
                z[:] = -gap
                z[other], z[y] = 0.0, -gap / 2
            else:  # target tied with a wrong class at the top
                z[y] = z[other] = z.max() + gap
            for offset in (0.0, 1e4 if kind % 2 else -1e4):
                rows.append(z + offset)
                targets.append(y)
    return torch.stack(rows), torch.tensor(targets)


def test_encouraging_issue_example_float32_is_exact():
    """The row of issue 8: a wrong class 150 nats above two others and 300 above the target (LE 1, LS 0.1)."""
    z = torch.tensor([[-300.0, 0.0, -150.0, -150.0]], requires_grad=True)
    loss = encouraging_loss(z, torch.tensor([0]), log_end=1.0, label_smoothing=0.1)
    loss.backward()
    # (0.9) 300 + (0.1 / 4) (300 + 2 * 150 - (150 - log 2)), the last term being -log p_1 + log(1 - p_1)
    expected = 0.9 * 300 + 0.025 * (600 - 150 + math.log(2))
    assert abs(loss.item() - expected) <= 1e-5 * expected
    expected_grad = torch.tensor([[-0.925, 0.95, -0.0125, -0.0125]])
    torch.testing.assert_close(z.grad, expected_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("vocab,seed", [(2, 0), (3, 1), (9, 2)])
@pytest.mark.parametrize("log_end", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.6])
def test_encouraging_float32_matches_float64_on_adversarial_rows(vocab, seed, log_end, eps):
    """Float32 within 1e-5 of the exact float64 reference, value and gradient, row by row.

    Tolerances: relative 1e-5, plus 1e-5 of the row's largest gradient entry and 1e-6 absolute (a gradient
    entry that is itself a cancellation of O(1) terms cannot be resolved better in float32)."""
    z, t = adversarial_el_rows(vocab, seed)
    weights = torch.linspace(0.5, 1.5, len(t))
    for rho in (0.0, 1.0, 2.5):
        kw = dict(log_end=log_end, label_smoothing=eps, bonus_weight=rho, reduction="none")
        x = z.clone().requires_grad_()
        loss = encouraging_loss(x, t, **kw)
        (loss * weights).sum().backward()
        x64 = z.double().requires_grad_()
        ref = encouraging_loss_ref(x64, t, exact_log1m=True, **kw)
        (ref * weights.double()).sum().backward()
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-5)
        row_scale = x64.grad.abs().amax(1, keepdim=True)
        err = (x.grad.double() - x64.grad).abs()
        bound = 1e-5 * (x64.grad.abs() + row_scale) + 1e-6
        assert (err <= bound).all(), f"rho={rho}: worst row {int((err - bound).amax(1).argmax())}"


@pytest.mark.parametrize("cores_taken", [True, False], ids=["row-workers", "intra-op"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encouraging_worker_threads_match_one_thread(monkeypatch, dtype, cores_taken):
    """On CPU with several torch threads, chunks of rows run on worker threads while other processes want
    the cores, else one after the other with every op on all threads: either way the same loss and gradient
    as with one thread, and a later torch.set_num_threads is honoured."""
    from hf_losses.losses.ops import encouraging

    monkeypatch.setattr(encouraging, "others_want_the_cores", lambda threads: cores_taken)
    z = (torch.randn(96, 40_000, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    target = torch.randint(0, 40_000, (96,), generator=torch.Generator().manual_seed(4))
    target[::7] = -100
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            x = z.clone().requires_grad_()
            loss = encouraging_loss(x, target, log_end=0.75, label_smoothing=0.1, reduction="none")
            (loss * torch.linspace(0.5, 1.5, 96)).sum().backward()
            results.append((loss.detach(), x.grad))
            assert torch.get_num_threads() == count
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            grad.float(), results[0][1].float(), rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-7
        )


def test_others_want_the_cores_counts_runnable_threads_of_other_processes(tmp_path):
    """Runnable threads of the machine less this process's own, plus ours, against this process's CPUs;
    True (the safe layout) where /proc cannot be read."""
    from hf_losses.losses.ops.utils import others_want_the_cores

    cpus = len(os.sched_getaffinity(0))
    (tmp_path / "loadavg").write_text("0.50 0.40 0.30 3/120 4242\n")  # 3 runnable, this reader included
    for task, state in [(1, "R"), (2, "R"), (3, "S")]:  # two of them ours
        (tmp_path / "self" / "task" / str(task)).mkdir(parents=True)
        (tmp_path / "self" / "task" / str(task) / "stat").write_text(f"{task} (py thon) {state} 1 2 3\n")
    assert others_want_the_cores(cpus - 1, proc=str(tmp_path)) is False  # 1 other + (cpus - 1) of ours
    assert others_want_the_cores(cpus, proc=str(tmp_path)) is True
    assert others_want_the_cores(1, proc=str(tmp_path / "missing")) is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_polynomial_finite_for_extreme_logits(dtype, detach, clip):
    x = torch.tensor([[-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4]] * 2).to(dtype).requires_grad_()
    t = torch.tensor([[0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    loss = asymmetric_polynomial_loss(x, t.to(dtype), gamma_pos=1.0, clip=clip, detach_focusing_weight=detach)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad.float()).all()

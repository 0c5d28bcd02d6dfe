"""Numerics under stress: finite values and gradients for extreme but finite inputs, huge vocabularies, all-padding."""

import itertools

import pytest
import torch

from hf_losses import asymmetric_polynomial_loss, encouraging_loss

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_polynomial_finite_for_extreme_logits(dtype, detach, clip):
    x = torch.tensor([[-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4]] * 2).to(dtype).requires_grad_()
    t = torch.tensor([[0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    loss = asymmetric_polynomial_loss(x, t.to(dtype), gamma_pos=1.0, clip=clip, detach_focusing_weight=detach)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad.float()).all()

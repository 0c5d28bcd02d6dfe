"""The losses and --fused_lm_head on CUDA against float64 references on the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from hf_losses import asymmetric_polynomial_loss, encouraging_loss

try:
    from tests.reference import F64, apl_ref, assert_close, encouraging_loss_ref, make_el_inputs
except ModuleNotFoundError:  # tests/ is not a package
    from reference import F64, apl_ref, assert_close, encouraging_loss_ref, make_el_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TOLERANCE = {  # (value, gradient) tolerances per dtype of the logits
    torch.float32: (dict(rtol=1e-5), dict(rtol=1e-5, atol_scale=1e-5)),
    torch.bfloat16: (dict(rtol=1e-2, atol=1e-2), dict(rtol=2e-2, atol_scale=2e-2)),
    torch.float16: (dict(rtol=2e-3, atol=2e-3), dict(rtol=5e-3, atol_scale=5e-3)),
}


def on_cuda(logits: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits rounded to `dtype`: a CUDA leaf in that dtype and the float64 CPU leaf of the same values."""
    rounded = logits.to(dtype)
    return rounded.cuda().requires_grad_(), rounded.to(F64).requires_grad_()


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("settings", [dict(log_end=1.0), dict(log_end=0.5, label_smoothing=0.1)])
def test_encouraging_loss_matches_the_float64_reference(dtype, settings):
    logits, target = make_el_inputs(
        (6, 40), 5000, gen=torch.Generator().manual_seed(0), ignore_frac=0.2, scale=4.0
    )
    cuda, reference = on_cuda(logits, dtype)
    loss = encouraging_loss(cuda, target.cuda(), **settings)
    expected = encouraging_loss_ref(reference, target, **settings)
    loss.backward()
    expected.backward()
    value_tol, grad_tol = TOLERANCE[dtype]
    assert_close(loss.cpu(), expected, **value_tol, name="loss")
    assert_close(cuda.grad.cpu(), reference.grad, **grad_tol, name="grad")


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_asymmetric_polynomial_loss_matches_the_float64_reference(dtype):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(512, 300, generator=g, dtype=F64) * 4  # 153,600 entries: the compiled path
    target = (torch.rand(512, 300, generator=g) < 0.05).float()
    cuda, reference = on_cuda(logits, dtype)
    loss = asymmetric_polynomial_loss(cuda, target.cuda())
    expected = apl_ref(reference, target.to(F64))
    loss.backward()
    expected.backward()
    value_tol, grad_tol = TOLERANCE[dtype]
    assert_close(loss.cpu(), expected, **value_tol, name="loss")
    assert_close(cuda.grad.cpu(), reference.grad, **grad_tol, name="grad")


@pytest.mark.parametrize("model_type", ["marian", "t5", "m2m_100"])
def test_fused_lm_head_trains_like_the_unfused_path(tmp_path, model_type):
    try:
        from tests.test_trainer_fused_head import assert_same_weights, trained
    except ModuleNotFoundError:
        from test_trainer_fused_head import assert_same_weights, trained

    plain = trained(tmp_path, model_type, fused=False, use_cpu=False)
    fused = trained(tmp_path, model_type, fused=True, use_cpu=False)
    assert next(fused.model.parameters()).is_cuda
    assert_same_weights(fused.model, plain.model)

"""Helpers shared by the fused losses: argument checks, reductions, chunking, the one-shot backward."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")

# Rows of scratch per chunk are chosen so that one float32 scratch buffer holds about this many
# elements: small enough to stay in the CPU's cache, large enough to amortise the per-op overhead.
CPU_CHUNK_ELEMENTS = 1 << 18
CUDA_CHUNK_ELEMENTS = 1 << 24


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    """Raise ValueError naming `name` unless `value` lies in the interval described by the bounds."""
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or value != value:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ValueError naming `name` unless `value >= 0`."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless `reduction` is one of mean/sum/none."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")


def check_values(name: str, bad: torch.Tensor, allowed: str) -> None:
    """Fail if any element of the boolean tensor `bad` is set.

    On CPU this raises ValueError. On CUDA an exact check would force a host/device sync on every
    call, so it is queued as an asynchronous device assertion instead: a bad value then surfaces as
    a CUDA error at the next synchronisation point, with this message in the device log.
    """
    message = f"{name} must contain only {allowed}"
    if bad.device.type == "cuda":
        torch._assert_async(~bad.any(), message)
    elif bool(bad.any()):
        raise ValueError(message)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic runs in: float64 stays float64, everything else uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_rows(num_rows: int, row_size: int, device: torch.device) -> int:
    """How many rows of width `row_size` one chunk processes."""
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else CPU_CHUNK_ELEMENTS
    return max(1, min(num_rows, budget // max(row_size, 1)))


def reduce(loss: torch.Tensor, reduction: str, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """Apply a reduction; "mean" divides by `count` (default: number of elements), 0 when it is 0."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if count is None:
        count = loss.numel()
    if isinstance(count, int):
        return total / count if count else total * 0.0
    return total / count.clamp(min=1).to(total.dtype)


def take_saved_gradient(ctx) -> torch.Tensor:
    """Hand over the gradient buffer saved by a fused forward; it can be used once only."""
    grad = ctx.saved_gradient
    if grad is None:
        raise RuntimeError(
            "The fused hf_losses gradient was already used: backward through this loss can run only once "
            "(no retain_graph=True second pass). Recompute the loss for another backward."
        )
    ctx.saved_gradient = None
    return grad

"""Helpers shared by the fused losses: argument checks, reductions, chunking, the one-shot backward."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

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

    Eager on CPU this raises ValueError. On CUDA an exact check would force a host/device sync on every
    call, and under ``torch.compile`` a Python branch on tensor data would break the graph, so there it is
    an asynchronous assertion in the graph instead: a bad value raises a RuntimeError with this message
    (on CUDA at the next synchronisation point, as a device-side assertion).
    """
    message = f"{name} must contain only {allowed}"
    if bad.device.type == "cuda" or torch.compiler.is_compiling():
        torch._assert_async(~bad.any(), message)
    elif bool(bad.any()):
        raise ValueError(message)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic runs in: float64 stays float64, everything else uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_rows(num_rows: int, row_size: int, device: torch.device, cpu_elements: int | None = None) -> int:
    """How many rows of width `row_size` one chunk processes (`cpu_elements` overrides the CPU budget)."""
    cpu_budget = CPU_CHUNK_ELEMENTS if cpu_elements is None else cpu_elements
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else cpu_budget
    return max(1, min(num_rows, budget // max(row_size, 1)))


# Threads that process chunks of rows side by side, each running its torch ops with few intra-op threads:
# on CPU a chunk's many mid-sized ops then need no thread synchronisation each, which costs a scheduler time
# slice per op when other processes compete for the cores. (pid, torch threads) -> pool; rebuilt after a fork
# or a change of torch.set_num_threads.
MAX_ROW_WORKERS = 4
_row_workers: tuple[tuple[int, int], ThreadPoolExecutor, int] | None = None
_row_workers_lock = threading.Lock()


def row_workers() -> tuple[ThreadPoolExecutor, int] | None:
    """A pool of worker threads and its size (at most MAX_ROW_WORKERS, splitting torch's intra-op threads
    between them), or None when torch runs single-threaded."""
    global _row_workers
    threads = torch.get_num_threads()
    if threads < 2:
        return None
    key = (os.getpid(), threads)
    with _row_workers_lock:
        if _row_workers is None or _row_workers[0] != key:
            if _row_workers is not None and _row_workers[0][0] == key[0]:
                _row_workers[1].shutdown(wait=False)
            size = min(threads, MAX_ROW_WORKERS)
            _row_workers = (key, _start_workers(size, max(1, threads // size)), size)
        return _row_workers[1], _row_workers[2]


def _start_workers(size: int, intra_op_threads: int) -> ThreadPoolExecutor:
    ready = threading.Barrier(size + 1)

    def configure() -> None:
        torch.set_num_threads(intra_op_threads)
        ready.wait()

    pool = ThreadPoolExecutor(size, thread_name_prefix="hf_losses_rows")
    for _ in range(size):
        pool.submit(configure)
    ready.wait()
    # set_num_threads also sets the default of threads that start later: give it back to the caller's count
    torch.set_num_threads(torch.get_num_threads())
    return pool


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


def check_class_target(target: torch.Tensor, expected_shape: tuple[int, ...], what: str) -> torch.Tensor:
    """Class-index targets of any integer dtype, as int64; ValueError naming `target` otherwise.

    `what` describes the expected shape in the message, e.g. "logits shape without the class dimension".
    """
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(
            f"target must be an integer tensor of class indices (any of int64, int32, int16, int8, uint8), "
            f"got {target.dtype}"
        )
    if tuple(target.shape) != tuple(expected_shape):
        raise ValueError(f"target shape {tuple(target.shape)} must equal the {what} {tuple(expected_shape)}")
    return target.long()


def no_double_backward(backward):
    """Decorator for the backward of a fused loss, whose gradient was computed in closed form in forward.

    With ``create_graph=True`` (double backward, e.g. a gradient penalty) it raises a clear RuntimeError at
    the fused loss; otherwise backward runs as usual (autograd already disables grad mode there).
    """

    @functools.wraps(backward)
    def checked(ctx, *grad_outputs):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "double backward (create_graph=True) is not supported by the fused hf_losses loss: its "
                "gradient is computed in closed form during the forward pass and is not differentiable"
            )
        return backward(ctx, *grad_outputs)

    return checked


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

"""Helpers of the kernels: compute dtype, chunk sizes, the CPU row workers, the compiled passes, the one-shot
backward, the value check that stays asynchronous on CUDA."""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

# Elements of one float32 scratch buffer, the unit of a chunk of rows. On CPU, for a kernel that runs on one
# thread (the APL pass, the EL kernel inside the fused head's chunk of logits): small enough that the
# buffers stay in a core's cache (1 MiB each). The EL loss on its own gives each of its row workers a larger
# budget: EL_CPU_ELEMENTS in ops/encouraging.py. On CUDA: one buffer of 64 MiB.
CPU_SCRATCH_ELEMENTS = 1 << 18
CUDA_CHUNK_ELEMENTS = 1 << 24


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
    cpu_budget = CPU_SCRATCH_ELEMENTS if cpu_elements is None else cpu_elements
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else cpu_budget
    return max(1, min(num_rows, budget // max(row_size, 1)))


# Threads that process chunks of rows side by side, each running its torch ops with few intra-op threads:
# on CPU a chunk's many mid-sized ops then need no thread synchronisation each, which costs a scheduler time
# slice per op when other processes compete for the cores (on an idle machine the workers' shared GIL makes
# them slower than intra-op threads: see others_want_the_cores). (pid, torch threads) -> pool; rebuilt after a fork
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


def others_want_the_cores(threads: int, proc: str = "/proc") -> bool:
    """Whether other processes' runnable threads compete now for the cores that `threads` of ours would use.

    Linux: the runnable threads of the whole machine (loadavg) less this process's own (its tasks in state R),
    plus `threads`, against the CPUs this process may run on. True where that cannot be read.
    """
    try:
        with open(f"{proc}/loadavg") as f:
            runnable = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir(f"{proc}/self/task"):
            with open(f"{proc}/self/task/{task}/stat") as f:
                own += f.read().rsplit(")", 1)[1].split()[0] == "R"  # the state follows the (command)
        cpus = len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError, AttributeError):
        return True
    return runnable - own + threads > cpus


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


# Passes over fewer elements run eagerly: a compiled pass pays off only on large inputs.
COMPILE_MIN_ELEMENTS = 1 << 16


class CompiledPass:
    """`fn` as one kernel generated by ``torch.compile`` (dynamic shapes, built on first use), where it pays off.

    `eager` (default: `fn` itself) runs instead on inputs under COMPILE_MIN_ELEMENTS, on devices other than
    CPU/CUDA, with ``HF_LOSSES_COMPILE=0``, and for good (after one warning) once compiling has failed, e.g.
    without a C++ compiler. Inside a user's ``torch.compile`` region `fn` is traced into the user's graph.
    """

    def __init__(self, fn: Callable, what: str, eager: Callable | None = None):
        self.fn, self.what, self.eager = fn, what, eager or fn
        self.compiled: Callable | None | bool = None  # None: not built yet; False: switched off or failed
        self.lock = threading.Lock()

    def __call__(self, numel: int, device: torch.device, *args):
        if torch.compiler.is_compiling():
            return self.fn(*args)
        if numel < COMPILE_MIN_ELEMENTS or device.type not in ("cpu", "cuda"):
            return self.eager(*args)
        with self.lock:
            if self.compiled is None:
                enabled = os.environ.get("HF_LOSSES_COMPILE", "1").lower() not in ("0", "false", "no")
                self.compiled = torch.compile(self.fn, dynamic=True) if enabled else False
            compiled = self.compiled
        if compiled is False:
            return self.eager(*args)
        try:
            return compiled(*args)
        except Exception as err:  # no C++/Triton toolchain, unsupported platform: fall back for good
            with self.lock:
                if self.compiled is not False:
                    self.compiled = False
                    warnings.warn(
                        f"hf_losses: torch.compile of the {self.what} failed ({type(err).__name__}: {err}); "
                        "using the eager kernel from now on",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            return self.eager(*args)


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

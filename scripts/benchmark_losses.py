#!/usr/bin/env python
"""Forward+backward time and peak extra memory of the fused losses against PyTorch baselines, in one process.

    python scripts/benchmark_losses.py --output-dir benchmarks          # the README table (make bench)
    python scripts/benchmark_losses.py --quick --output-dir /tmp/bench  # tiny shapes, a smoke test

Time: median of ``torch.utils.benchmark.Timer.blocked_autorange`` with all threads. Memory (CPU): the rise
of the peak resident set (VmHWM, reset through /proc/self/clear_refs) over one forward+backward, measured in
a child process whose glibc mmap threshold is pinned so freed buffers go back to the OS; on CUDA,
max_memory_allocated.
Both include the logits' gradient. Ratios are against the first row of each group (the PyTorch baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from hf_losses import asymmetric_polynomial_loss, encouraging_loss

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def plain_encouraging(z, y, *, log_end, label_smoothing):
    """The authors' formula written plainly: log_softmax, exp, log of the clamped 1 - p, where, gather."""
    logp = F.log_softmax(z.float(), dim=-1)
    p = logp.exp()
    bonus = torch.log(torch.clamp(1.0 - p, min=1e-5))
    if log_end < 1:
        bonus = torch.where(p > log_end, math.log(1 - log_end) - (p - log_end) / (1 - log_end), bonus)
    per_class = bonus - logp
    target = per_class.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    smooth = per_class.mean(-1)
    return ((1 - label_smoothing) * target + label_smoothing * smooth).mean()


def plain_polynomial(x, t, *, gamma_neg=4.0, clip=0.05, alpha1=-1.0, alpha2=1.25):
    """APL written plainly with sigmoid, clamp, log and pow (default settings, gamma_pos = 0)."""
    p = torch.sigmoid(x.float())
    q = 1 - p
    pos = -torch.log(p.clamp(min=1e-8)) + alpha1 * q + alpha2 * q * q
    p_m = (p - clip).clamp(min=0)
    neg = -torch.log((1 - p_m).clamp(min=1e-8)) * torch.pow(p_m, gamma_neg).detach()
    return (t * pos + (1 - t) * neg).mean()


@dataclass
class Case:
    group: str
    name: str
    shape: tuple[int, int]
    dtype: torch.dtype
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    kind: str  # "classes" (integer targets) or "multilabel" (0/1 targets)

    @property
    def label(self) -> str:
        return f"{self.group}|{self.name}|{self.shape}|{self.dtype}"


def el_cases(shape, dtype) -> list[Case]:
    cases = []
    for eps in (0.0, 0.1):
        group = f"EL/CEL eps={eps:g}"
        cases.append(
            Case(
                group,
                f"F.cross_entropy(ls={eps:g})",
                shape,
                dtype,
                lambda z, y, e=eps: F.cross_entropy(z, y, label_smoothing=e),
                "classes",
            )
        )
        for le in (0.5, 1.0):
            name = f"hf_losses {'cel LE=0.5' if le < 1 else 'el LE=1'}"
            cases.append(
                Case(
                    group,
                    name,
                    shape,
                    dtype,
                    lambda z, y, e=eps, end=le: encouraging_loss(z, y, log_end=end, label_smoothing=e),
                    "classes",
                )
            )
        cases.append(
            Case(
                group,
                "plain formula (LE=0.5)",
                shape,
                dtype,
                lambda z, y, e=eps: plain_encouraging(z, y, log_end=0.5, label_smoothing=e),
                "classes",
            )
        )
    return cases


def apl_cases(shape) -> list[Case]:
    group = "APL"
    return [
        Case(
            group,
            "F.binary_cross_entropy_with_logits",
            shape,
            torch.float32,
            lambda x, t: F.binary_cross_entropy_with_logits(x, t),
            "multilabel",
        ),
        Case(
            group, "hf_losses apl (defaults)", shape, torch.float32, asymmetric_polynomial_loss, "multilabel"
        ),
        Case(group, "plain formula", shape, torch.float32, plain_polynomial, "multilabel"),
    ]


def make_inputs(case: Case, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows, cols = case.shape
    x = (torch.randn(rows, cols, generator=gen) * 2).to(device=device, dtype=case.dtype).requires_grad_()
    if case.kind == "classes":
        target = torch.randint(0, cols, (rows,), generator=gen).to(device)
    else:
        target = (torch.rand(rows, cols, generator=gen) < 0.05).float().to(device)
    return x, target


def fwd_bwd(case: Case, x: torch.Tensor, target: torch.Tensor) -> None:
    x.grad = None
    case.fn(x, target).backward()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def peak_extra_mib(case: Case, x, target, device: torch.device) -> float:
    """Peak memory above the inputs during one forward+backward, in MiB."""
    x.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd(case, x, target)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS")
    fwd_bwd(case, x, target)
    return (_status_kib("VmHWM") - base) / 1024


def measure_memory(cases: list[Case], device: torch.device) -> list[float]:
    """Peak extra MiB per case; on CPU in a child process whose glibc returns freed buffers to the OS.

    The pinned mmap threshold that makes the RSS peak meaningful also makes every large allocation a fresh
    mmap, which would distort the timings, so time and memory are measured in different processes.
    """
    if device.type == "cuda":
        return [_peak_of(case, device) for case in cases]
    env = {**os.environ, MMAP_ENV: str(1 << 16)}
    child = subprocess.run(
        [sys.executable, __file__, "--memory-of", json.dumps([c.label for c in cases])],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def _peak_of(case: Case, device: torch.device) -> float:
    x, target = make_inputs(case, device)
    fwd_bwd(case, x, target)  # warm-up
    return peak_extra_mib(case, x, target, device)


def run(cases: list[Case], device: torch.device, min_run_time: float) -> list[dict]:
    rows = []
    memories = measure_memory(cases, device)
    for case, memory in zip(cases, memories, strict=True):
        x, target = make_inputs(case, device)
        fwd_bwd(case, x, target)  # warm-up
        timer = benchmark.Timer(
            stmt="fwd_bwd(case, x, target)",
            globals={"fwd_bwd": fwd_bwd, "case": case, "x": x, "target": target},
            num_threads=torch.get_num_threads(),
        )
        seconds = timer.blocked_autorange(min_run_time=min_run_time).median
        rows.append(
            {
                "group": case.group,
                "name": case.name,
                "shape": case.shape,
                "dtype": str(case.dtype).removeprefix("torch."),
                "ms": seconds * 1e3,
                "mib": memory,
            }
        )
        print(
            f"{case.group:>16} | {str(case.shape):>14} {rows[-1]['dtype']:>8} | {case.name:<34} "
            f"{rows[-1]['ms']:9.1f} ms {memory:8.1f} MiB",
            flush=True,
        )
        del x, target
    return rows


def add_ratios(rows: list[dict]) -> None:
    base = None
    for row in rows:
        key = (row["group"], row["shape"], row["dtype"])
        if base is None or base[0] != key:
            base = (key, row)
        row["time_ratio"] = row["ms"] / base[1]["ms"]
        row["mem_ratio"] = row["mib"] / base[1]["mib"] if base[1]["mib"] > 0 else float("nan")


def markdown(rows: list[dict], command: str, device: str) -> str:
    lines = [
        f"Command: `{command}` on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| loss | shape | dtype | implementation | fwd+bwd ms | x baseline | peak extra MiB | x baseline |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"| {r['group']} | {shape} | {r['dtype']} | {r['name']} | {r['ms']:.1f} | "
            f"{r['time_ratio']:.2f} | {r['mib']:.0f} | {r['mem_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['group']} {'x'.join(map(str, r['shape']))} {r['dtype']}\n{r['name']}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.38 * len(rows) + 1.5), sharey=True)
    for ax, key, title in (
        (axes[0], "time_ratio", "time / baseline"),
        (axes[1], "mem_ratio", "peak memory / baseline"),
    ):
        ax.barh(
            range(len(rows)),
            [r[key] for r in rows],
            color=["tab:gray" if r[key] == 1 else "tab:blue" for r in rows],
        )
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(title)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def all_cases(quick: bool) -> tuple[list[Case], float]:
    """The benchmark's cases and its default seconds of timing per row."""
    if quick:
        el_shapes, apl_shapes, min_run_time = (
            [((64, 1000), torch.float32), ((64, 1000), torch.bfloat16)],
            [(256, 64)],
            0.05,
        )
    else:
        el_shapes = [
            ((2048, 32000), torch.float32),
            ((1024, 64000), torch.float32),
            ((2048, 32000), torch.bfloat16),
        ]
        apl_shapes, min_run_time = [(8192, 512), (2048, 4000)], 1.0
    cases = [c for shape, dtype in el_shapes for c in el_cases(shape, dtype)]
    cases += [c for shape in apl_shapes for c in apl_cases(shape)]
    return cases, min_run_time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test, not a measurement")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per row")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: the memory-measuring child process
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.memory_of:
        wanted = json.loads(args.memory_of)
        by_label = {c.label: c for quick in (True, False) for c in all_cases(quick)[0]}
        print(json.dumps([_peak_of(by_label[label], device) for label in wanted]))
        return
    cases, min_run_time = all_cases(args.quick)
    rows = run(cases, device, args.min_run_time or min_run_time)
    add_ratios(rows)

    command = "python scripts/benchmark_losses.py " + " ".join(sys.argv[1:] if argv is None else argv)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, command.strip(), device_name)
    (args.output_dir / "results.md").write_text(table)
    chart(rows, args.output_dir / "results.png")
    print("\n" + table)
    print(f"wrote {args.output_dir / 'results.md'} and {args.output_dir / 'results.png'}")


if __name__ == "__main__":
    main()

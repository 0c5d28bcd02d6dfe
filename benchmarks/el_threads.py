"""How the EL kernel shares two CPU threads: its row workers against intra-op threads, per chunk budget.

    python -m benchmarks.el_threads                    # all layouts, the machine as it is
    python -m benchmarks.el_threads --layouts workers,intra-op

Each layout runs in its own process with ``--threads`` torch threads and times forward+backward of a bf16
``--rows`` x ``--vocab`` batch (4096x32000): ``F.cross_entropy`` (LS 0.1), CEL (LE 0.5, LS 0.1) and the cosine
bonus (LS 0.1), each EL call right after a cross-entropy call, ``--repeats`` rounds, so that each round's
ratio compares calls made under the same load (this machine's speed drifts by tens of percent). Layouts:
``shipped`` (the kernel as shipped: row workers only while other processes want the cores, else intra-op),
``workers`` (always one row worker per thread, each with a chunk of ``EL_CPU_ELEMENTS`` elements per scratch
buffer, the cosine bonus's buffer pass compiled), ``workers-eager`` (the same with ``HF_LOSSES_COMPILE=0``),
``intra-op`` (no row workers: every torch op of a chunk uses all threads).
Run it on a quiet machine, then beside a busy process, to see what each layout costs when a core is taken.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

LAYOUTS = ("shipped", "workers", "workers-eager", "intra-op")


def time_layout(layout: str, threads: int, repeats: int, rows: int, vocab: int) -> dict[str, list[float]]:
    """Per round: milliseconds of F.cross_entropy and, right after it, each EL loss (the kernel set to
    `layout`), so that each round's ratio compares two calls made under the same machine load."""
    import os

    import torch
    import torch.nn.functional as F

    import hf_losses.losses.ops.encouraging as kernel
    from hf_losses import encouraging_loss

    torch.set_num_threads(threads)
    if layout == "intra-op":
        kernel.row_workers = lambda: None
    elif layout.startswith("workers"):
        kernel.others_want_the_cores = lambda threads: True
        if layout == "workers-eager":
            os.environ["HF_LOSSES_COMPILE"] = "0"
    torch.manual_seed(0)
    logits = torch.randn(rows, vocab).bfloat16().requires_grad_()
    target = torch.randint(0, vocab, (rows,))
    losses = {
        "cross_entropy": lambda: F.cross_entropy(logits, target, label_smoothing=0.1),
        "cel": lambda: encouraging_loss(logits, target, log_end=0.5, label_smoothing=0.1),
        "cosine": lambda: encouraging_loss(logits, target, bonus="cosine", label_smoothing=0.1),
    }

    def milliseconds(loss) -> float:
        start = time.perf_counter()
        loss().backward()
        logits.grad = None
        return 1e3 * (time.perf_counter() - start)

    for loss in losses.values():  # warm-up (and the compiled passes' first build)
        milliseconds(loss)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(repeats):
        for name in ("cel", "cosine"):
            times["cross_entropy"].append(milliseconds(losses["cross_entropy"]))
            times[name].append(milliseconds(losses[name]))
    return times


def cell(times: dict[str, list[float]], name: str) -> str:
    """Median milliseconds and the median (min-max) of the per-round ratios to F.cross_entropy."""
    ce = times["cross_entropy"][1::2] if name == "cosine" else times["cross_entropy"][0::2]
    ratios = [t / c for t, c in zip(times[name], ce, strict=True)]
    return (
        f"{statistics.median(times[name]):.0f} ({statistics.median(ratios):.2f}x, "
        f"{min(ratios):.2f}-{max(ratios):.2f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(time_layout(args.child, args.threads, args.repeats, args.rows, args.vocab)))
        return
    layouts = args.layouts.split(",")
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown:
        parser.error(f"--layouts: unknown {', '.join(unknown)}; allowed: {', '.join(LAYOUTS)}")
    print(
        f"bf16 {args.rows}x{args.vocab}, {args.threads} threads, {args.repeats} rounds: median ms (median and "
        "range of each round's ratio to the F.cross_entropy call just before it)"
    )
    print("| layout | F.cross_entropy | CEL LE 0.5 | cosine bonus |\n|---|---:|---:|---:|")
    for layout in layouts:
        command = [sys.executable, "-m", "benchmarks.el_threads", "--child", layout]
        command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        command += ["--rows", str(args.rows), "--vocab", str(args.vocab)]
        times = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        cells = [f"{statistics.median(times['cross_entropy']):.0f}"] + [
            cell(times, k) for k in ("cel", "cosine")
        ]
        print(f"| {layout} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

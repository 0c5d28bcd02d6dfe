"""One training step of a decoder-only LM with a Llama-3- or Gemma-sized output head, with and without the fused head.

    python -m benchmarks.causal_head --output-dir benchmarks              # make bench-causal-head
    python -m benchmarks.causal_head --tokens 1024 --output-dir benchmarks  # less memory and time
    python -m benchmarks.causal_head --quick --output-dir /tmp/b          # tiny shapes, a smoke test

The model is a Llama with hidden size 4096 and one small decoder layer (32 query and 8 key-value heads, MLP
1024), with the vocabulary of Llama 3 (128,256) or of Gemma 3 (262,144) and tied embeddings, so that the
output head, whose logits the fused path never forms, dominates as it does in fine-tuning with small batches.
A step is ``EncouragingCausalLMTrainer.training_step`` (forward and backward; the optimizer step is the same
for both and left out) on 4 sequences of ``--tokens / 4`` tokens, every next token scored, CEL with LE 0.5 and
label smoothing 0.1, float32 on the CPU.

Each variant runs in its own process: one warm-up step, then ``--steps`` timed steps (median reported). Memory
is the rise of the peak resident set (VmHWM, reset through /proc/self/clear_refs) during one step after the
warm-up, with the glibc mmap threshold pinned so that freed buffers go back to the OS (every variant runs
under it); it includes the gradients. A variant whose rough memory estimate (``estimated_gib``) exceeds the
available memory less ``--memory-margin`` is not run, and one that fails is reported as such, so that the
benchmark does not push a shared machine into its out-of-memory killer. Results: ``causal_head.json`` (after
each variant) and ``causal_head.md`` in ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import MMAP_ENV, MMAP_THRESHOLD, ROOT, command_line, status_kib

MODULE = "benchmarks.causal_head"

HEADS = {"llama3": 128_256, "gemma3": 262_144}
FULL = dict(hidden=4096, heads=32, kv_heads=8, mlp=1024, rows=4)
QUICK = dict(hidden=64, heads=4, kv_heads=2, mlp=128, rows=4)
QUICK_VOCAB = {"llama3": 1_000, "gemma3": 2_000}


def measure(head: str, fused: bool, shape: dict, vocab: int, tokens: int, steps: int) -> dict:
    """Time (s, median over `steps`) and peak extra memory (MiB) of one training step, in this process."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_losses import EncouragingCausalLMConfig, EncouragingCausalLMTrainer

    length = tokens // shape["rows"]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=shape["hidden"],
        intermediate_size=shape["mlp"],
        num_hidden_layers=1,
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=length + 1,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with tempfile.TemporaryDirectory() as output_dir:
        args = EncouragingCausalLMConfig(
            output_dir=output_dir,
            loss="cel",
            log_end=0.5,
            label_smoothing_factor=0.1,
            fused_lm_head=fused,
            use_cpu=True,
            report_to="none",
        )
        trainer = EncouragingCausalLMTrainer(model=model, args=args)
    g = torch.Generator().manual_seed(1)
    # one more token per row: each row of `length + 1` tokens scores `length` next tokens
    input_ids = torch.randint(4, vocab, (shape["rows"], length + 1), generator=g)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}
    scored = torch.tensor(shape["rows"] * length)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        trainer.training_step(model, dict(inputs), scored)
        return time.perf_counter() - start

    first = step()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    base = status_kib("VmRSS")
    times = [step()]
    peak = (status_kib("VmHWM") - base) / 1024
    times += [step() for _ in range(steps - 1)]
    return {
        "head": head,
        "vocab": vocab,
        "tokens": int(scored),
        "fused_lm_head": fused,
        "first_step_s": first,
        "step_s": statistics.median(times),
        "peak_extra_mib": peak,
    }


def estimated_gib(vocab: int, hidden: int, tokens: int, fused: bool) -> float:
    """A generous peak of one step, float32, in [V, d] head-sized and [tokens, V] logits-sized buffers: the
    tied head's weight, the gradient kept from the warm-up, the new one and the dense embedding gradient added
    to it (and, unfused, the gradient product of the logits path and four logits-sized buffers: the logits,
    their gradient, the loss's work buffers); 1 GiB for the rest. A Gemma-sized fused step peaked at 4 heads."""
    head = 4 * vocab * hidden
    logits = 0 if fused else 4 * tokens * vocab
    return ((4 if fused else 5) * head + 4 * logits) / 2**30 + 1.0


def available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def run_variant(head: str, fused: bool, args: argparse.Namespace) -> dict:
    """The variant's row, measured in a child process; or why it was not (too little memory, a failure)."""
    row = {"head": head, "vocab": (QUICK_VOCAB if args.quick else HEADS)[head], "fused_lm_head": fused}
    shape = QUICK if args.quick else FULL
    need, free = estimated_gib(row["vocab"], shape["hidden"], args.tokens, fused), available_gib()
    if need > free - args.memory_margin:
        return {**row, "skipped": f"needs ~{need:.0f} GiB, {free:.0f} GiB available"}
    env = {**os.environ, MMAP_ENV: str(MMAP_THRESHOLD)}
    request = ["--variant", f"{head}:{'fused' if fused else 'unfused'}", "--steps", str(args.steps)]
    request += [
        "--tokens",
        str(args.tokens),
        "--threads",
        str(args.threads),
        *(["--quick"] if args.quick else []),
    ]
    child = subprocess.run(
        [sys.executable, "-m", MODULE, *request], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if child.returncode != 0:
        return {**row, "skipped": f"exit status {child.returncode} (negative: killed by that signal)"}
    return json.loads(child.stdout.strip().splitlines()[-1])


def table(rows: list[dict], shape: dict, tokens: int, command: str) -> str:
    threads = next((row["threads"] for row in rows if "threads" in row), "?")
    lines = [
        f"One training step (forward + backward) of a 1-layer Llama, hidden {shape['hidden']}, tied head, "
        f"{tokens:,} scored tokens, CEL (LE 0.5, LS 0.1), float32, {threads} CPU "
        f"threads (`{command}`):",
        "",
        "| head | | step time | first step | peak extra memory |",
        "|---|---|---|---|---|",
    ]
    for plain, fused in zip(rows[::2], rows[1::2], strict=True):
        for name, row in (("logits + EL", plain), ("fused head", fused)):
            if "skipped" in row:
                lines.append(f"| {row['head']} ({row['vocab']:,}) | {name} | not run: {row['skipped']} | | |")
                continue
            time_ratio = mib_ratio = ""
            if "skipped" not in plain:
                time_ratio = f" ({row['step_s'] / plain['step_s']:.2f}x)"
                mib_ratio = f" ({row['peak_extra_mib'] / plain['peak_extra_mib']:.2f}x)"
            lines.append(
                f"| {row['head']} ({row['vocab']:,}) | {name} | {row['step_s']:.2f} s{time_ratio} "
                f"| {row['first_step_s']:.2f} s | {row['peak_extra_mib']:,.0f} MiB{mib_ratio} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks"))
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--heads", nargs="+", choices=sorted(HEADS), default=list(HEADS), help="which heads")
    parser.add_argument("--tokens", type=int, default=4096, help="scored tokens per step (a multiple of 4)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant after one warm-up step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument(
        "--memory-margin",
        type=float,
        default=3.0,
        help="GiB to leave free: variants that would not are skipped",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tokens < 4 or args.tokens % 4:
        parser.error(f"--tokens must be a positive multiple of 4; got {args.tokens}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1; got {args.steps}")
    torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else FULL
    if args.variant:
        head, kind = args.variant.split(":")
        vocab = (QUICK_VOCAB if args.quick else HEADS)[head]
        row = measure(head, kind == "fused", shape, vocab, args.tokens, args.steps)
        print(json.dumps({**row, "threads": args.threads}))
        return
    command = command_line(MODULE, sys.argv[1:])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for head in args.heads:
        for fused in (False, True):
            rows.append(run_variant(head, fused, args))
            # written after each variant, so that a long run that is stopped keeps what it measured
            (args.output_dir / "causal_head.json").write_text(
                json.dumps({"shape": shape, "tokens": args.tokens, "rows": rows}, indent=2) + "\n"
            )
    (args.output_dir / "causal_head.md").write_text(table(rows, shape, args.tokens, command))
    print(table(rows, shape, args.tokens, command))


if __name__ == "__main__":
    main()

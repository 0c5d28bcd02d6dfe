"""One training step of a seq2seq model with an mBART-50-sized output head, with and without --fused_lm_head.

    python -m benchmarks.fused_head --output-dir benchmarks          # fused_head.md (make bench-fused-head)
    python -m benchmarks.fused_head --quick --output-dir /tmp/b      # tiny shapes, a smoke test

The model is an mBART with the vocabulary (250,054) and width (d_model 1024, 16 heads, FFN 4096) of mBART-50
but one encoder and one decoder layer, so that the output head, whose logits the fused path never forms,
dominates as it does in fine-tuning with small batches. A step is ``EncouragingSeq2SeqTrainer.training_step``
(forward and backward; the optimizer step is the same for both and left out) on 32 pairs of 128 source and 128
target tokens (4,096 target tokens), CEL with LE 0.5 and label smoothing 0.1, float32 on the CPU.

Each variant runs in its own process: one warm-up step, then ``--steps`` timed steps (median reported). Memory is
the rise of the peak resident set during one step after the warm-up (benchmarks/harness.py; both variants run
under the pinned mmap threshold); it includes the gradients. Results: ``fused_head.json`` and ``fused_head.md`` in ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import command_line, peak_rise_mib, run_child

FULL = dict(vocab=250_054, d_model=1024, heads=16, ffn=4096, rows=32, length=128)
QUICK = dict(vocab=4_000, d_model=64, heads=4, ffn=128, rows=4, length=16)


def measure(fused: bool, shape: dict, steps: int) -> dict:
    """Time (s, median over `steps`) and peak extra memory (MiB) of one training step, in this process."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer

    torch.manual_seed(0)
    config = MBartConfig(
        vocab_size=shape["vocab"],
        d_model=shape["d_model"],
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        max_position_embeddings=shape["length"] + 2,
        dropout=0.0,
    )
    model = MBartForConditionalGeneration(config)
    with tempfile.TemporaryDirectory() as output_dir:
        args = EncouragingSeq2SeqConfig(
            output_dir=output_dir,
            loss="cel",
            log_end=0.5,
            label_smoothing_factor=0.1,
            fused_lm_head=fused,
            use_cpu=True,
            report_to="none",
        )
        trainer = EncouragingSeq2SeqTrainer(model=model, args=args)
    g = torch.Generator().manual_seed(1)
    size = (shape["rows"], shape["length"])
    inputs = {
        "input_ids": torch.randint(4, shape["vocab"], size, generator=g),
        "attention_mask": torch.ones(size, dtype=torch.long),
        "labels": torch.randint(4, shape["vocab"], size, generator=g),
    }
    tokens = torch.tensor(inputs["labels"].numel())
    model.train()

    def step() -> float:
        start = time.perf_counter()
        trainer.training_step(model, dict(inputs), tokens)
        return time.perf_counter() - start

    first = step()
    times: list[float] = []
    peak = peak_rise_mib(lambda: times.append(step()))
    times += [step() for _ in range(steps - 1)]
    return {
        "fused_lm_head": fused,
        "first_step_s": first,
        "step_s": statistics.median(times),
        "peak_extra_mib": peak,
    }


def run_variant(fused: bool, quick: bool, steps: int) -> dict:
    request = [
        "--variant",
        "fused" if fused else "unfused",
        "--steps",
        str(steps),
        *(["--quick"] if quick else []),
    ]
    request += ["--threads", str(torch.get_num_threads())]
    return run_child(__spec__.name, request)


def table(rows: list[dict], shape: dict, command: str) -> str:
    plain, fused = rows
    lines = [
        f"One training step (forward + backward), mBART head d_model {shape['d_model']} -> V {shape['vocab']:,}, "
        f"{shape['rows'] * shape['length']:,} target tokens, CEL (LE 0.5, LS 0.1), float32, "
        f"{torch.get_num_threads()} CPU threads (`{command}`):",
        "",
        "| | step time | first step | peak extra memory |",
        "|---|---|---|---|",
    ]
    for name, row in (("logits + EL (default)", plain), ("`--fused_lm_head`", fused)):
        lines.append(
            f"| {name} | {row['step_s']:.2f} s ({row['step_s'] / plain['step_s']:.2f}x) | {row['first_step_s']:.2f} s "
            f"| {row['peak_extra_mib']:,.0f} MiB ({row['peak_extra_mib'] / plain['peak_extra_mib']:.2f}x) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks"))
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant after one warm-up step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--variant", choices=("fused", "unfused"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else FULL
    if args.variant:
        print(json.dumps(measure(args.variant == "fused", shape, args.steps)))
        return
    rows = [run_variant(fused, args.quick, args.steps) for fused in (False, True)]
    command = command_line(__spec__.name, sys.argv[1:])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "fused_head.json").write_text(
        json.dumps({"shape": shape, "rows": rows}, indent=2) + "\n"
    )
    (args.output_dir / "fused_head.md").write_text(table(rows, shape, command.strip()))
    print(table(rows, shape, command.strip()))


if __name__ == "__main__":
    main()

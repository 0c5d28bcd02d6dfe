#!/usr/bin/env python
"""Steps per second of short translate.py runs under each throughput option, and their loss curves.

    python scripts/probe_throughput.py --output_dir results/throughput-multi30k --max_steps 40

Every option trains the same model on the same data with the same seed from the same starting flags (the
converged Multi30k De->En recipe's), for ``--max_steps`` steps without evaluation or checkpoints, in its own
process with ``OMP_NUM_THREADS`` threads. The table (``throughput.md`` and ``throughput.json``) gives steps/s
and the training loss logged every ``--logging_steps`` steps beside fp32's, so an option that is faster but
learns differently shows it. Options run one after the other; ``--pair`` adds two fp32/bf16 runs side by side
at one thread each, to compare two runs at once with one run at two threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "multi30k"

BASE = [
    "--train_file", str(DATA / "train.jsonl"),
    "--source_lang", "de", "--target_lang", "en",
    "--model_config", "transformer-multi30k-base",
    "--do_train", "true", "--label_smoothing_factor", "0.1", "--loss", "ce",
    "--learning_rate", "7e-4", "--lr_scheduler_type", "inverse_sqrt", "--warmup_steps", "400",
    "--adam_beta2", "0.98", "--weight_decay", "1e-4", "--max_grad_norm", "1.0",
    "--per_device_train_batch_size", "128", "--max_source_length", "64", "--max_target_length", "64",
    "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
    "--use_cpu", "true", "--seed", "1", "--overwrite_output_dir", "true",
]  # fmt: skip

# name -> (threads, extra flags)
OPTIONS = {
    "fp32": (1, []),
    "bf16": (1, ["--bf16", "true"]),
    "bf16-group-by-length": (1, ["--bf16", "true", "--train_sampling_strategy", "group_by_length"]),
    "bf16-compile": (1, ["--bf16", "true", "--torch_compile", "true"]),
    "bf16-2-threads": (2, ["--bf16", "true"]),
}


def command(name: str, extra: list[str], output_dir: Path, max_steps: int, logging_steps: int) -> list[str]:
    return [
        sys.executable, str(HERE / "translate.py"), *BASE, *extra,
        "--max_steps", str(max_steps), "--logging_steps", str(logging_steps),
        "--output_dir", str(output_dir / name),
    ]  # fmt: skip


def start(name: str, threads: int, argv: list[str], output_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    log = open(output_dir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def measure(name: str, output_dir: Path) -> dict:
    """Steps/s of the training loop (the Trainer's own train_runtime) and the logged losses."""
    run = output_dir / name
    results = json.loads((run / "train_results.json").read_text(encoding="utf-8"))
    state = json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))
    losses = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    return {"steps_per_second": results["train_steps_per_second"], "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/throughput"))
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--logging_steps", type=int, default=5)
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--pair", action="store_true", help="also run fp32 and bf16 side by side")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    rows = {}
    for name in args.options:
        threads, extra = OPTIONS[name]
        argv = command(name, extra, args.output_dir, args.max_steps, args.logging_steps)
        began = time.monotonic()
        if start(name, threads, argv, args.output_dir).wait() != 0:
            sys.exit(f"{name} failed: see {args.output_dir / (name + '.log')}")
        rows[name] = {"threads": threads, "wall_s": round(time.monotonic() - began, 1)}
        rows[name].update(measure(name, args.output_dir))
        print(name, rows[name]["steps_per_second"], flush=True)
    if args.pair:
        pair = {f"{n}-beside": OPTIONS[n] for n in ("fp32", "bf16")}
        procs = [
            start(
                name,
                t,
                command(name, x, args.output_dir, args.max_steps, args.logging_steps),
                args.output_dir,
            )
            for name, (t, x) in pair.items()
        ]
        if any(p.wait() != 0 for p in procs):
            sys.exit("a side-by-side run failed: see its log")
        for name in pair:
            rows[name] = {"threads": 1, **measure(name, args.output_dir)}

    (args.output_dir / "throughput.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    reference = rows.get("fp32")
    lines = [
        "| option | threads | steps/s | x fp32 | loss at the last logged steps |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ratio = f"{row['steps_per_second'] / reference['steps_per_second']:.2f}" if reference else "-"
        tail = ", ".join(f"{s}: {v:.3f}" for s, v in list(row["losses"].items())[-3:])
        lines.append(f"| {name} | {row['threads']} | {row['steps_per_second']:.3f} | {ratio} | {tail} |")
    (args.output_dir / "throughput.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""What a run writes besides the model: per-split metrics and prediction files, each written atomically."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; once written, it replaces `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    yield tmp
    os.replace(tmp, path)


def write_lines(path: Path, lines: list[str], training_args) -> None:
    """One line per item, newlines inside an item replaced by spaces (main process only)."""
    if training_args.should_save:
        with replaced_atomically(path) as tmp:
            tmp.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")


def write_json(path: Path, data: dict, training_args) -> None:
    """A JSON file (main process only)."""
    if training_args.should_save:
        with replaced_atomically(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_split_metrics(trainer, split: str, metrics: dict, num_samples: int) -> None:
    """Log and save metrics of one split (`{split}_results.json`, merged into all_results.json)."""
    metrics[f"{split}_samples"] = num_samples
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)

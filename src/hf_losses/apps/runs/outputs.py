"""What a run writes besides the model: per-split metrics and prediction files, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from hf_losses.files import replaced_atomically

# The files a run writes besides the model (the comparison runner reads them; .gitignore keeps them in results/).
ALL_RESULTS = "all_results.json"  # every split's metrics (Trainer.save_metrics)
TEST_PREDICTIONS = "predictions.jsonl"  # classification: one JSON object per test example
# Per split, as split_file(prefix, kind) with prefix "eval" or "test":
PREDICTIONS = "predictions.txt"  # translation: one hypothesis a line
REFERENCES = "references.txt"  # translation: the references scored, same order
CALIBRATION = "calibration.json"  # translation: TokenCalibration.to_dict()
SCORES = "scores.npz"  # classification: probabilities, labels, threshold


def split_file(prefix: str, kind: str) -> str:
    """The name of one split's file, e.g. ``test_predictions.txt``."""
    return f"{prefix}_{kind}"


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

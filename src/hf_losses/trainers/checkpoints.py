"""The ``checkpoint-N`` folders of an output_dir: which are complete, and which is the last."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether a checkpoint folder was written to the end: the Trainer writes ``trainer_state.json`` last."""
    state = Path(path) / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def complete_checkpoints(output_dir: str | Path) -> list[str]:
    """The complete ``checkpoint-N`` folders of output_dir by step, oldest first; incomplete ones (a killed
    save) are skipped loudly."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    steps = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))
    )
    complete = []
    for _, path in steps:
        if is_complete_checkpoint(path):
            complete.append(str(path))
        else:
            logger.warning(
                "Skipping incomplete checkpoint %s (no readable trainer_state.json: a killed save?)", path
            )
    return complete


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in output_dir (None when there is none)."""
    complete = complete_checkpoints(output_dir)
    return complete[-1] if complete else None

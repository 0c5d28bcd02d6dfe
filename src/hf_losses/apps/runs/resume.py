"""Resume: whether output_dir may be used, which checkpoint a run continues from, and a loud warning when
its loss settings were different."""

from __future__ import annotations

import logging
from fnmatch import fnmatch
from pathlib import Path

from hf_losses.trainers.checkpoints import CHECKPOINT_NAME, last_complete_checkpoint

from .errors import UsageError
from .outputs import ALL_RESULTS

logger = logging.getLogger(__name__)


# Any of these in output_dir marks a run of ours (trained, or evaluated only), which a new run may continue.
RUN_FILES = ("trainer_state.json", "training_args.bin", ALL_RESULTS)
# What compare.py writes into a run folder before it starts the script: not files of a foreign run.
RUNNER_FILES = ("compare_*",)


def holds_a_run(folder: Path) -> bool:
    """Whether `folder` holds a run of ours: a ``checkpoint-N`` folder or one of ``RUN_FILES``."""
    return any((folder / name).is_file() for name in RUN_FILES) or any(
        p.is_dir() and CHECKPOINT_NAME.match(p.name) for p in folder.iterdir()
    )


def check_output_dir(training_args, overwrite_output_dir: bool) -> None:
    """UsageError for an output_dir that is a file, or that holds files but no run of ours (unless
    --overwrite_output_dir): a run of ours is resumed or redone, other files are never written over silently."""
    folder = Path(training_args.output_dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output_dir {folder} is a file; name a folder")
    if overwrite_output_dir or not folder.is_dir() or holds_a_run(folder):
        return
    foreign = sorted(p.name for p in folder.iterdir() if not any(fnmatch(p.name, g) for g in RUNNER_FILES))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UsageError(
            f"--output_dir {folder} is not empty ({shown}) and holds no run to resume: choose another folder, "
            "or pass --overwrite_output_dir to write over its files"
        )


def resume_checkpoint(training_args, overwrite_output_dir: bool) -> str | None:
    """--resume_from_checkpoint, else the last complete checkpoint in output_dir (None when overwriting).

    It does not look at --do_train: classify.py decides what to run from the data, after this decision.
    """
    given = training_args.resume_from_checkpoint
    if given is not None:
        if not Path(given).is_dir():
            raise UsageError(f"--resume_from_checkpoint {given} is not a directory")
        return given
    if overwrite_output_dir:
        return None
    return last_complete_checkpoint(training_args.output_dir)


def announce_resume(checkpoint: str, training_args) -> None:
    """Log the checkpoint training continues from; warn if it was trained with other loss settings."""
    logger.info("Resuming from %s (pass --overwrite_output_dir to start from scratch).", checkpoint)
    warn_if_loss_changed(checkpoint, training_args)


def warn_if_loss_changed(checkpoint: str | None, training_args) -> None:
    """Warn loudly when resuming a checkpoint that was trained with other loss settings."""
    saved_path = Path(checkpoint or "") / "training_args.bin"
    if checkpoint is None or not saved_path.is_file():
        return
    import torch

    try:
        saved = torch.load(saved_path, weights_only=False)
    except Exception:  # an unreadable or foreign file: nothing to compare
        return
    if not hasattr(saved, "loss_settings"):
        return
    before, now = saved.loss_settings(), training_args.loss_settings()
    changed = [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted({*before, *now})
        if before.get(k) != now.get(k)
    ]
    if changed:
        bar = "!" * 100
        logger.warning(
            "\n%s\nRESUMING %s WITH DIFFERENT LOSS SETTINGS: %s.\nThe continued run is not the run that "
            "produced this checkpoint; start a new output_dir (or --overwrite_output_dir) to compare losses.\n%s",
            bar,
            checkpoint,
            "; ".join(changed),
            bar,
        )

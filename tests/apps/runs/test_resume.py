"""hf_losses.apps.runs.resume: which checkpoint a run continues from, and the warning when loss settings changed."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from hf_losses import EncouragingSeq2SeqConfig, MultiLabelConfig
from hf_losses.apps.runs import UsageError
from hf_losses.apps.runs.resume import (
    announce_resume,
    check_output_dir,
    resume_checkpoint,
    warn_if_loss_changed,
)


def checkpoint(root, step: int, complete: bool = True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_the_last_complete_checkpoint_in_output_dir(tmp_path):
    args = EncouragingSeq2SeqConfig(output_dir=str(tmp_path))
    assert resume_checkpoint(args, overwrite_output_dir=False) is None
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 12, complete=False)  # a killed save
    assert resume_checkpoint(args, overwrite_output_dir=False) == str(tmp_path / "checkpoint-10")
    assert resume_checkpoint(args, overwrite_output_dir=True) is None


def test_resume_from_checkpoint_wins_and_must_exist(tmp_path):
    chosen = checkpoint(tmp_path / "elsewhere", 3)
    checkpoint(tmp_path, 10)
    args = EncouragingSeq2SeqConfig(output_dir=str(tmp_path), resume_from_checkpoint=str(chosen))
    assert resume_checkpoint(args, overwrite_output_dir=True) == str(chosen)
    args.resume_from_checkpoint = str(tmp_path / "missing")
    with pytest.raises(UsageError, match="--resume_from_checkpoint .*missing is not a directory"):
        resume_checkpoint(args, overwrite_output_dir=False)


def test_announce_resume_logs_the_checkpoint(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hf_losses"):
        announce_resume(str(tmp_path / "checkpoint-4"), EncouragingSeq2SeqConfig(output_dir=str(tmp_path)))
    assert f"Resuming from {tmp_path / 'checkpoint-4'}" in caplog.text


@pytest.mark.parametrize(
    "config,saved,now",
    [
        (EncouragingSeq2SeqConfig, {"loss": "el"}, {"loss": "cel"}),
        (EncouragingSeq2SeqConfig, {"label_smoothing_factor": 0.1}, {"label_smoothing_factor": 0.0}),
        (MultiLabelConfig, {"loss": "apl"}, {"loss": "apl", "gamma_neg": 2.0}),
    ],
)
def test_resume_with_other_loss_settings_warns_loudly(tmp_path, caplog, config, saved, now):
    path = checkpoint(tmp_path, 4)
    torch.save(config(output_dir=str(tmp_path), **saved), path / "training_args.bin")
    with caplog.at_level(logging.WARNING, logger="hf_losses"):
        warn_if_loss_changed(str(path), config(output_dir=str(tmp_path), **now))
    assert "DIFFERENT LOSS SETTINGS" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_losses"):
        warn_if_loss_changed(str(path), config(output_dir=str(tmp_path), **saved))
    assert "DIFFERENT LOSS SETTINGS" not in caplog.text


@pytest.mark.parametrize(
    "contents, allowed",
    [
        ({}, True),  # empty
        ({"compare_flags.json": "{}", "compare_log.txt": ""}, True),  # what compare.py writes first
        ({"checkpoint-2/": None, "notes.txt": "x"}, True),  # a run of ours to resume
        ({"all_results.json": "{}", "config.json": "{}"}, True),  # a finished run of ours
        ({"trainer_state.json": "{}", "README.md": ""}, True),
        ({"README.md": "mine", "config.json": "{}"}, False),  # someone else's files
        ({"compare_flags.json": "{}", "model.safetensors": ""}, False),
    ],
)
def test_check_output_dir_refuses_foreign_files_only(tmp_path, contents, allowed):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in contents.items():
        (out / name).mkdir() if text is None else (out / name).write_text(text)
    args = EncouragingSeq2SeqConfig(output_dir=str(out))
    if allowed:
        check_output_dir(args, overwrite_output_dir=False)
    else:
        with pytest.raises(UsageError, match=r"--output_dir .* --overwrite_output_dir"):
            check_output_dir(args, overwrite_output_dir=False)
    check_output_dir(args, overwrite_output_dir=True)  # always allowed when overwriting


def test_check_output_dir_refuses_a_file_even_when_overwriting(tmp_path):
    (tmp_path / "out").write_text("x")
    args = EncouragingSeq2SeqConfig(output_dir=str(tmp_path / "out"))
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="--output_dir .* is a file"):
            check_output_dir(args, overwrite)
    check_output_dir(EncouragingSeq2SeqConfig(output_dir=str(tmp_path / "new")), False)  # not there yet

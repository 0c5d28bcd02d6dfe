"""Shared CLI helpers: config files, demo defaults, resume warnings."""

import logging

import pytest
import torch

from hf_losses import EncouragingSeq2SeqConfig, MultiLabelConfig
from hf_losses.cli import RunArguments, parse_arguments, warn_if_loss_changed, with_defaults


def test_with_defaults_only_without_data_or_model_flags():
    defaults = ["--do_train", "--num_train_epochs", "3"]
    assert with_defaults(["--loss", "cel"], defaults, triggers=("--train_file",)) == [
        *defaults,
        "--loss",
        "cel",
    ]
    assert with_defaults(["--train_file=a.jsonl"], defaults, triggers=("--train_file",)) == [
        "--train_file=a.jsonl"
    ]
    assert with_defaults(["recipe.yaml"], defaults, triggers=("--train_file",)) == ["recipe.yaml"]


def test_yaml_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\nloss: el\nbonus_weight: 0.5\n")
    args, run_args = parse_arguments((EncouragingSeq2SeqConfig, RunArguments), [str(path)])
    assert (args.loss, args.bonus_weight, run_args.overwrite_output_dir) == ("el", 0.5, False)


def test_unknown_flag_is_a_one_line_usage_error(tmp_path):
    with pytest.raises(ValueError, match="--no_such_flag"):
        parse_arguments((EncouragingSeq2SeqConfig,), ["--output_dir", str(tmp_path), "--no_such_flag", "1"])


@pytest.mark.parametrize(
    "config,saved,now",
    [
        (EncouragingSeq2SeqConfig, {"loss": "el"}, {"loss": "cel"}),
        (EncouragingSeq2SeqConfig, {"label_smoothing_factor": 0.1}, {"label_smoothing_factor": 0.0}),
        (MultiLabelConfig, {"loss": "apl"}, {"loss": "apl", "gamma_neg": 2.0}),
    ],
)
def test_resume_with_other_loss_settings_warns_loudly(tmp_path, caplog, config, saved, now):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    torch.save(config(output_dir=str(tmp_path), **saved), checkpoint / "training_args.bin")
    with caplog.at_level(logging.WARNING, logger="hf_losses"):
        warn_if_loss_changed(str(checkpoint), config(output_dir=str(tmp_path), **now))
    assert "DIFFERENT LOSS SETTINGS" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_losses"):
        warn_if_loss_changed(str(checkpoint), config(output_dir=str(tmp_path), **saved))
    assert "DIFFERENT LOSS SETTINGS" not in caplog.text

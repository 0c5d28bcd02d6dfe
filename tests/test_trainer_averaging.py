"""--average_checkpoints: the final model is the float64 mean of the last N checkpoints, in both trainers."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hf_losses import EncouragingSeq2SeqConfig, MultiLabelConfig
from hf_losses.trainers.averaging import load_mean_into, mean_weights
from tests.helpers.tiny import tiny_marian
from tests.test_trainer_library import card_text, multilabel_trainer, run_args, seq2seq_trainer


def expected_mean(folders) -> dict[str, torch.Tensor]:
    """Written independently of the module: stack every checkpoint's file in float64 and take the mean."""
    files = [load_file(str(Path(f) / "model.safetensors")) for f in folders]
    return {name: torch.stack([w[name].double() for w in files]).mean(0) for name in files[0]}


def fake_checkpoint(folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text("{}")
    return folder


def test_mean_of_a_tied_model_is_exact_and_stays_tied(tmp_path):
    folders = []
    for seed in range(3):
        model = tiny_marian(seed=seed)
        model.save_pretrained(tmp_path / f"checkpoint-{seed + 1}")
        folders.append(tmp_path / f"checkpoint-{seed + 1}")
    expected = expected_mean(folders)

    model = tiny_marian(seed=7)
    load_mean_into(model, mean_weights(folders))
    state = model.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(state[name].double(), value, rtol=0, atol=1e-7, msg=name)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(
        model.lm_head.weight.double(), expected["model.shared.weight"], rtol=0, atol=1e-7
    )


class WithCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def test_integer_buffers_come_from_the_newest_checkpoint(tmp_path):
    a = fake_checkpoint(
        tmp_path / "checkpoint-1", {"weight": torch.tensor([1.0, 2, 3]), "steps": torch.tensor(3)}
    )
    b = fake_checkpoint(
        tmp_path / "checkpoint-2", {"weight": torch.tensor([2.0, 4, 7]), "steps": torch.tensor(8)}
    )
    model = WithCounter()
    load_mean_into(model, mean_weights([a, b]))
    assert model.steps.item() == 8 and model.steps.dtype == torch.long
    torch.testing.assert_close(model.weight.data, torch.tensor([1.5, 3.0, 5.0]))


def test_checkpoints_of_another_model_are_refused(tmp_path):
    a = fake_checkpoint(tmp_path / "checkpoint-1", {"other": torch.zeros(3)})
    with pytest.raises(ValueError, match="lack weight"):
        load_mean_into(WithCounter(), mean_weights([a]))


AVERAGING = dict(max_steps=6, save_steps=2, save_total_limit=3, average_checkpoints=3)


@pytest.mark.parametrize("make", [seq2seq_trainer, multilabel_trainer])
def test_trainer_ends_with_the_mean_of_the_last_checkpoints(tmp_path, make):
    trainer = make(tmp_path, **AVERAGING)
    output = trainer.train()
    folders = [tmp_path / f"checkpoint-{s}" for s in (2, 4, 6)]
    state = trainer.model.state_dict()
    for name, value in expected_mean(folders).items():
        torch.testing.assert_close(state[name].double(), value, rtol=0, atol=1e-7, msg=name)
    last = load_file(str(folders[-1] / "model.safetensors"))
    assert any(not torch.equal(state[n], last[n]) for n in last if last[n].is_floating_point())
    assert output.metrics["train_averaged_checkpoints"] == 3
    assert output.metrics["train_averaged_checkpoint_steps"] == "2,4,6"
    trainer.save_model()
    assert "mean of the checkpoints at steps 2, 4, 6" in card_text(tmp_path)


def test_a_resumed_run_averages_the_same_checkpoints(tmp_path):
    whole = seq2seq_trainer(tmp_path / "whole", **AVERAGING)
    whole.train()
    expected = {k: v.clone() for k, v in whole.model.state_dict().items()}

    seq2seq_trainer(tmp_path / "killed", **AVERAGING).train()
    shutil.rmtree(tmp_path / "killed" / "checkpoint-6")  # as if killed after step 4's save
    resumed = seq2seq_trainer(tmp_path / "killed", **AVERAGING)
    output = resumed.train(resume_from_checkpoint=True)
    assert output.metrics["train_averaged_checkpoint_steps"] == "2,4,6"
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("config", [EncouragingSeq2SeqConfig, MultiLabelConfig])
@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(save_total_limit=2), "--save_total_limit >= 3"),
        (dict(save_strategy="no"), "saves 0"),
        (dict(max_steps=4), "saves 2 in this run"),
        (dict(average_checkpoints=-1), "must be >= 0"),
        (dict(load_best_model_at_end=True, eval_strategy="steps", eval_steps=2), "load_best_model_at_end"),
    ],
)
def test_checkpoints_that_cannot_exist_are_refused_at_construction(tmp_path, config, settings, message):
    with pytest.raises(ValueError, match=message):
        config(**run_args(tmp_path, **{**AVERAGING, **settings}))


def test_an_epoch_run_too_short_to_save_n_checkpoints_is_refused_before_the_first_step(tmp_path):
    # 16 examples at batch 4: 4 steps per epoch, so 2 epochs saving every 4 steps give 2 checkpoints.
    trainer = seq2seq_trainer(
        tmp_path, **{**AVERAGING, "max_steps": -1, "num_train_epochs": 2, "save_steps": 4}
    )
    with pytest.raises(ValueError, match="saves 2 in this run"):
        trainer.train()
    assert not list(tmp_path.glob("checkpoint-*"))


def test_results_of_an_averaged_run_are_json(tmp_path):
    trainer = seq2seq_trainer(tmp_path, **AVERAGING)
    output = trainer.train()
    trainer.log_metrics("train", output.metrics)
    trainer.save_metrics("train", output.metrics)
    saved = json.loads((tmp_path / "all_results.json").read_text())
    assert saved["train_averaged_checkpoints"] == 3

"""The trainers used from Python as a TRL/transformers user would: saving, cards, pushes, resume, configs."""

import copy
import json
import pickle
from pathlib import Path
from unittest import mock

import datasets
import numpy as np
import pytest
import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer, MultiLabelConfig, MultiLabelTrainer
from hf_losses.metrics import Seq2SeqMetrics
from hf_losses.trainers.checkpoints import last_complete_checkpoint
from hf_losses.trainers.seq2seq import shift_tokens_right
from tests.helpers.tiny import (
    multilabel_dataset,
    seq2seq_dataset,
    tiny_bert,
    tiny_marian,
    tiny_tokenizer,
)

SECRET = "hf_" + "Zz9Yy8Xx7" * 4


def run_args(output_dir, **overrides) -> dict:
    defaults = dict(
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return {"output_dir": str(output_dir), **defaults, **overrides}


def seq2seq_trainer(output_dir, train=None, trainer_kwargs=None, **overrides):
    model, tok = tiny_marian(), tiny_tokenizer()
    return EncouragingSeq2SeqTrainer(
        model=model,
        args=EncouragingSeq2SeqConfig(**run_args(output_dir, **overrides)),
        train_dataset=train if train is not None else seq2seq_dataset(16),
        eval_dataset=seq2seq_dataset(6, seed=1),
        data_collator=DataCollatorForSeq2Seq(tok, model=model),
        processing_class=tok,
        **(trainer_kwargs or {}),
    )


def multilabel_trainer(output_dir, model=None, trainer_kwargs=None, **overrides):
    tok = tiny_tokenizer()
    return MultiLabelTrainer(
        model=model or tiny_bert(),
        args=MultiLabelConfig(**run_args(output_dir, **overrides)),
        train_dataset=multilabel_dataset(16),
        eval_dataset=multilabel_dataset(8, seed=1),
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
        **(trainer_kwargs or {}),
    )


def card_text(folder) -> str:
    return (Path(folder) / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("make", [seq2seq_trainer, multilabel_trainer])
def test_plain_train_saves_complete_checkpoints_with_cards(tmp_path, make):
    trainer = make(tmp_path)
    trainer.train()
    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        assert (folder / "trainer_state.json").is_file()
        assert "`unknown`" in card_text(folder)
    trainer.save_model()
    trainer.create_model_card()
    assert "hf_losses" in card_text(tmp_path)


def test_card_dataset_comes_from_the_dataset_info(tmp_path):
    train = seq2seq_dataset(8)
    train.info.dataset_name, train.info.config_name = "wmt/wmt14", "de-en"
    trainer = seq2seq_trainer(tmp_path, train=train, max_steps=1, save_strategy="no")
    trainer.create_model_card()
    assert "datasets:\n- wmt/wmt14" in card_text(tmp_path)


def test_create_model_card_and_push_arguments_reach_the_card(tmp_path):
    trainer = multilabel_trainer(tmp_path, max_steps=1, save_strategy="no")
    trainer.model.model_tags = ["from-model"]
    trainer.create_model_card(
        language="de",
        license="mit",
        tags=["mine"],
        model_name="my-model",
        finetuned_from="google-bert/bert-base-uncased",
        dataset_tags="google-research-datasets/go_emotions",
        dataset="GoEmotions",
        dataset_args="simplified",
    )
    card = card_text(tmp_path)
    head = card.split("---")[1]
    for needle in (
        "license: mit",
        "- mine",
        "- from-model",
        "- de",
        "base_model: google-bert/bert-base-uncased",
    ):
        assert needle in head, needle
    assert "- google-research-datasets/go_emotions" in head
    assert "# my-model" in card
    trainer.save_model()  # later cards keep what was given
    assert "license: mit" in card_text(tmp_path)


def test_translation_card_from_the_api_has_beams_signature_and_any_eval_split(tmp_path):
    model, tok = tiny_marian(), tiny_tokenizer()
    metrics = Seq2SeqMetrics(tok)
    args = EncouragingSeq2SeqConfig(
        **run_args(tmp_path, max_steps=1, save_strategy="no"),
        predict_with_generate=True,
        generation_num_beams=2,
        generation_max_length=8,
    )
    trainer = EncouragingSeq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=seq2seq_dataset(8),
        data_collator=DataCollatorForSeq2Seq(tok, model=model),
        processing_class=tok,
        compute_metrics=metrics,
    )
    data = seq2seq_dataset(4, seed=2)
    results = trainer.evaluate({"a": data, "b": data})
    assert "eval_a_bleu" in results and "eval_a_ece" in results
    trainer.create_model_card()
    card = card_text(tmp_path)
    assert "Not evaluated yet" not in card
    assert "num_beams=2" in card
    assert metrics.signatures["bleu_signature"] in card


def test_evaluation_reports_calibration(tmp_path):
    trainer = seq2seq_trainer(tmp_path, max_steps=1, save_strategy="no")
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_ece"] <= 1.0 and 0.0 < metrics["eval_mean_p_y"] < 1.0
    assert trainer.calibration.num_tokens == sum(len(x) for x in seq2seq_dataset(6, seed=1)["labels"])


def test_tune_threshold_from_the_config_and_label_names_in_the_card(tmp_path):
    model = tiny_bert()
    model.config.id2label = {i: f"topic{i}" for i in range(model.config.num_labels)}
    trainer = multilabel_trainer(tmp_path, model=model, tune_threshold=True)
    trainer.train()
    assert trainer.threshold_split == "validation"
    trainer.create_model_card()
    card = card_text(tmp_path)
    assert "tuned for micro-F1 on the `validation` split" in card
    assert "`topic0`" in card and "Threshold: not recorded" not in card


def test_class_thresholds_are_tuned_stored_and_reported_beside_the_global_one(tmp_path):
    from sklearn.metrics import f1_score

    trainer = multilabel_trainer(tmp_path, tune_threshold=True, tune_class_thresholds=True)
    trainer.train()
    thresholds = trainer.class_thresholds
    assert len(thresholds) == trainer.model.config.num_labels == len(trainer.model.config.class_thresholds)
    metrics = trainer.evaluate()
    scores = trainer.compute_metrics.last_scores
    targets = trainer.compute_metrics.last_targets
    expected = f1_score(targets, scores >= np.asarray(thresholds), average="macro", zero_division=0)
    assert metrics["eval_f1_macro_per_class"] == pytest.approx(expected)
    assert "eval_f1_macro" in metrics
    trainer.create_model_card()
    assert "Per-class thresholds" in card_text(tmp_path)


def test_class_thresholds_need_the_global_tuning(tmp_path):
    with pytest.raises(ValueError, match="--tune_class_thresholds tunes on the data of --tune_threshold"):
        MultiLabelConfig(**run_args(tmp_path, tune_class_thresholds=True))


@pytest.mark.parametrize("make", [seq2seq_trainer, multilabel_trainer])
def test_compute_loss_func_is_refused_not_ignored(tmp_path, make):
    with pytest.raises(ValueError, match="compute_loss_func"):
        make(tmp_path, trainer_kwargs={"compute_loss_func": lambda outputs, labels, num_items_in_batch: 0})


@pytest.mark.parametrize("make", [seq2seq_trainer, multilabel_trainer])
def test_label_names_that_are_class_names_are_refused(tmp_path, make):
    with pytest.raises(ValueError, match="label_names=.*class_names"):
        make(tmp_path, label_names=["admiration", "amusement"])


def test_config_copies_keep_the_token_but_pickles_drop_it(tmp_path):
    args = EncouragingSeq2SeqConfig(output_dir=str(tmp_path), hub_token=SECRET)
    assert copy.deepcopy(args).hub_token == SECRET
    assert pickle.loads(pickle.dumps(args)).hub_token is None


def test_shift_tokens_right_uses_start_and_pad():
    labels = torch.tensor([[5, 6, 1, -100], [7, 1, -100, -100]])
    expected = torch.tensor([[2, 5, 6, 1], [2, 7, 1, 0]])
    assert torch.equal(shift_tokens_right(labels, pad_token_id=0, decoder_start_token_id=2), expected)


def test_checkpoint_pushes_carry_a_current_card(tmp_path, monkeypatch):
    uploads = []

    def upload_folder(*, folder_path, commit_message, **kwargs):
        readme = Path(folder_path) / "README.md"
        uploads.append((commit_message, readme.read_text(encoding="utf-8") if readme.is_file() else None))
        return mock.Mock(is_done=lambda: True)

    api = mock.Mock()
    api.create_repo.return_value = mock.Mock(repo_id="tester/tiny")
    api.upload_folder.side_effect = upload_folder
    monkeypatch.setattr("transformers.trainer.hf_api", lambda *a, **k: api)
    trainer = seq2seq_trainer(
        tmp_path, push_to_hub=True, hub_model_id="tester/tiny", hub_token=SECRET, hub_always_push=True
    )
    trainer.train()
    trainer.push_to_hub()
    messages = [m for m, _ in uploads]
    assert any("step 2" in m for m in messages) and any("step 4" in m for m in messages)
    assert messages[-1] == "End of training"
    assert all(card is not None and "hf_losses" in card for _, card in uploads), messages
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


def truncate(checkpoint: Path) -> None:
    """A save killed half-way: weights written, trainer_state.json cut short."""
    state = checkpoint / "trainer_state.json"
    state.write_text(state.read_text()[:40])


def test_resume_skips_an_incomplete_checkpoint_and_matches_an_uninterrupted_run(tmp_path, caplog):
    whole = seq2seq_trainer(tmp_path / "whole", max_steps=6)
    whole.train()
    expected = {k: v.detach().clone() for k, v in whole.model.named_parameters()}

    first = seq2seq_trainer(tmp_path / "killed", max_steps=6)
    first.train()
    truncate(tmp_path / "killed" / "checkpoint-6")
    truncate(tmp_path / "killed" / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "killed").endswith("checkpoint-2")
    assert "checkpoint-4" in caplog.text and "checkpoint-6" in caplog.text

    resumed = seq2seq_trainer(tmp_path / "killed", max_steps=6)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    for name, value in resumed.model.named_parameters():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert (
        json.loads((tmp_path / "killed" / "checkpoint-6" / "trainer_state.json").read_text())["global_step"]
        == 6
    )


def test_resume_true_without_a_complete_checkpoint_is_an_error(tmp_path):
    trainer = seq2seq_trainer(tmp_path, max_steps=2)
    trainer.train()
    truncate(tmp_path / "checkpoint-2")
    with pytest.raises(ValueError, match="No complete checkpoint"):
        seq2seq_trainer(tmp_path, max_steps=2).train(resume_from_checkpoint=True)


def test_dataset_without_info_is_fine():
    from hf_losses.cards import DatasetInfo

    assert DatasetInfo.from_dataset(datasets.Dataset.from_dict({"a": [1]})).id == "unknown"
    assert DatasetInfo.from_dataset([1, 2]).id == "unknown"

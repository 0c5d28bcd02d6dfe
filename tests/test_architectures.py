"""Our trainers on every architecture a user is likely to bring, each built from a tiny config.

Seq2seq models with EncouragingSeq2SeqTrainer: train 2 steps saving a checkpoint at each, evaluate with and
without generation, predict, save_model and reload; ``loss="ce"`` gives the weights of the stock
Seq2SeqTrainer after 2 SGD steps. Encoders with MultiLabelTrainer and every preset: train 2 steps with a
checkpoint, evaluate, save_model and reload; ``loss="bce"`` gives the weights of the stock Trainer.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
)

from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer, MultiLabelConfig, MultiLabelTrainer
from hf_losses.apps.models import build_translation_model, is_decoder_only
from tests.helpers.tiny import (
    CAUSAL_ARCHITECTURES,
    ENCODER_ARCHITECTURES,
    NUM_LABELS,
    SEQ2SEQ_ARCHITECTURES,
    multilabel_dataset,
    one_step_args,
    quick_tiny_training,
    seq2seq_dataset,
    tiny_causal_lm,
    tiny_encoder_classifier,
    tiny_seq2seq,
    tiny_tokenizer,
)

MULTILABEL_PRESETS = ("bce", "asl", "focal", "poly1", "apl")
GENERATION_MAX_LENGTH = 6


@pytest.fixture(autouse=True, scope="module")
def quick_training():
    with quick_tiny_training():
        yield


def two_step_args(output_dir: Path, **overrides) -> dict:
    """Two plain SGD steps of 4 examples (lr 0.1, no schedule or clipping) on the CPU, nothing reported."""
    args = one_step_args(str(output_dir), per_device_train_batch_size=4, per_device_eval_batch_size=4)
    args.update(max_steps=2, learning_rate=0.1, report_to="none")
    args.update(overrides)
    return args


def saving_args(output_dir: Path) -> dict:
    """``two_step_args`` with a checkpoint after every step."""
    return two_step_args(output_dir, save_strategy="steps", save_steps=1)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def assert_same_weights(got, expected):
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, atol=1e-6, rtol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )


def assert_moved(model, initial):
    """The steps changed the weights (so equal weights are a real comparison)."""
    start = weights(initial)
    assert any(not torch.equal(value, start[name]) for name, value in weights(model).items())


def assert_complete_checkpoints(output_dir: Path, steps):
    for step in steps:
        folder = output_dir / f"checkpoint-{step}"
        assert (folder / "trainer_state.json").is_file(), folder
        assert (folder / "model.safetensors").is_file(), folder


def assert_reloads(folder: Path, model, auto_class):
    reloaded = auto_class.from_pretrained(folder)
    assert_same_weights(weights(reloaded), weights(model))


# -- sequence-to-sequence ---------------------------------------------------------------------------------
def with_decoder_inputs(collator, config):
    """Also give every batch ``decoder_input_ids``: the labels shifted right after decoder_start_token_id.

    The stock trainer's label smoother keeps the labels from the model, so models that cannot build decoder
    inputs in the collator (no ``prepare_decoder_input_ids_from_labels``) need them in the batch.
    """

    def collate(features):
        batch = collator(features)
        if "decoder_input_ids" not in batch:
            labels = batch["labels"]
            shifted = torch.full_like(labels, config.decoder_start_token_id)
            shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, config.pad_token_id)
            batch["decoder_input_ids"] = shifted
        return batch

    return collate


def generated_lengths(prediction) -> dict[str, float]:
    """Mean generated length; nothing for teacher-forced logits (evaluation without generation)."""
    tokens = prediction.predictions
    if isinstance(tokens, tuple) or tokens.ndim == 3:
        return {}
    lengths = (tokens != tiny_tokenizer().pad_token_id).sum(axis=1)  # Seq2SeqTrainer pads to the model's max
    assert lengths.max() <= GENERATION_MAX_LENGTH
    return {"gen_len": float(lengths.mean())}


@pytest.mark.parametrize("arch", list(SEQ2SEQ_ARCHITECTURES))
def test_seq2seq_built_from_a_config_json_saves(tmp_path, arch):
    """``--model_config config.json``: generation settings in generation_config, so that saving works (the
    script path itself runs for T5 in tests/apps/test_translate.py)."""
    tiny_seq2seq(arch).config.save_pretrained(tmp_path / "config")
    model = build_translation_model(str(tmp_path / "config" / "config.json"), tiny_tokenizer())
    model.save_pretrained(tmp_path / "saved")
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved")
    assert reloaded.generation_config.forced_eos_token_id == tiny_tokenizer().eos_token_id
    assert_same_weights(weights(reloaded), weights(model))


@pytest.mark.parametrize("arch", list(CAUSAL_ARCHITECTURES))
def test_a_causal_lm_config_json_builds_a_decoder_only_translator(tmp_path, arch):
    """``translate --model_config`` with a decoder-only config: a causal LM sized to the tokenizer, which
    pads and stops with the tokenizer's tokens."""
    tiny_causal_lm(arch, vocab_size=7).config.save_pretrained(tmp_path / "config")
    model = build_translation_model(str(tmp_path / "config" / "config.json"), tiny_tokenizer())
    assert is_decoder_only(model.config) and not model.config.is_encoder_decoder
    assert model.get_output_embeddings().weight.shape[0] == len(tiny_tokenizer())
    assert (model.generation_config.pad_token_id, model.generation_config.eos_token_id) == (0, 1)


@pytest.mark.parametrize("arch", list(SEQ2SEQ_ARCHITECTURES))
def test_seq2seq_configs_are_not_decoder_only(arch):
    assert not is_decoder_only(tiny_seq2seq(arch).config)


def test_encoders_that_transformers_can_run_as_decoders_are_not_translators(tmp_path):
    transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    assert not is_decoder_only(transformers.AutoConfig.from_pretrained(tmp_path))
    with pytest.raises(ValueError, match="--model_config .*: a bert model neither translates"):
        build_translation_model(str(tmp_path / "config.json"), tiny_tokenizer())


@pytest.mark.parametrize("arch", list(SEQ2SEQ_ARCHITECTURES))
def test_seq2seq_trains_saves_evaluates_predicts(tmp_path, arch):
    model, dataset = tiny_seq2seq(arch), seq2seq_dataset(8)
    config = EncouragingSeq2SeqConfig(
        **saving_args(tmp_path),
        loss="cel",
        predict_with_generate=True,
        generation_max_length=GENERATION_MAX_LENGTH,
        generation_num_beams=1,
    )
    trainer = EncouragingSeq2SeqTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer(), model=model),
        processing_class=tiny_tokenizer(),
        compute_metrics=generated_lengths,
    )
    trainer.train()
    assert_complete_checkpoints(tmp_path, steps=(1, 2))

    trainer.args.predict_with_generate = False
    teacher_forced = trainer.evaluate()
    trainer.args.predict_with_generate = True
    generated = trainer.evaluate()
    assert math.isfinite(teacher_forced["eval_loss"]) and "eval_gen_len" not in teacher_forced
    assert generated["eval_loss"] == pytest.approx(teacher_forced["eval_loss"], rel=1e-5)
    assert 0 <= generated["eval_gen_len"] <= GENERATION_MAX_LENGTH

    prediction = trainer.predict(dataset)
    assert prediction.predictions.shape[0] == len(dataset)
    assert math.isfinite(prediction.metrics["test_loss"])

    trainer.save_model(str(tmp_path / "final"))
    assert_reloads(tmp_path / "final", model, transformers.AutoModelForSeq2SeqLM)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("arch", list(SEQ2SEQ_ARCHITECTURES))
def test_seq2seq_ce_equals_stock_trainer(tmp_path, arch, eps):
    dataset = seq2seq_dataset(8)
    ours_model, stock_model = tiny_seq2seq(arch), tiny_seq2seq(arch)
    collate = DataCollatorForSeq2Seq(tiny_tokenizer(), model=stock_model)
    if eps > 0:  # stock: the label smoother needs decoder inputs in the batch
        collate = with_decoder_inputs(collate, stock_model.config)
    EncouragingSeq2SeqTrainer(
        model=ours_model,
        args=EncouragingSeq2SeqConfig(
            **two_step_args(tmp_path / "ours"), loss="ce", label_smoothing_factor=eps
        ),
        train_dataset=dataset,
        data_collator=collate,
    ).train()
    Seq2SeqTrainer(
        model=stock_model,
        args=Seq2SeqTrainingArguments(**two_step_args(tmp_path / "stock"), label_smoothing_factor=eps),
        train_dataset=dataset,
        data_collator=collate,
    ).train()
    assert_same_weights(weights(ours_model), weights(stock_model))
    assert_moved(ours_model, tiny_seq2seq(arch))


# -- multi-label encoders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", MULTILABEL_PRESETS)
@pytest.mark.parametrize("arch", list(ENCODER_ARCHITECTURES))
def test_multilabel_trains_saves_evaluates(tmp_path, arch, preset):
    model, dataset = tiny_encoder_classifier(arch), multilabel_dataset(8)
    trainer = MultiLabelTrainer(
        model=model,
        args=MultiLabelConfig(**saving_args(tmp_path), loss=preset),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=DataCollatorWithPadding(tiny_tokenizer()),
        processing_class=tiny_tokenizer(),
    )
    trainer.train()
    assert_complete_checkpoints(tmp_path, steps=(1, 2))
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and 0.0 <= metrics["eval_f1_micro"] <= 1.0
    prediction = trainer.predict(dataset)
    assert prediction.predictions.shape == (len(dataset), NUM_LABELS)
    trainer.save_model(str(tmp_path / "final"))
    assert_reloads(tmp_path / "final", model, transformers.AutoModelForSequenceClassification)


@pytest.mark.parametrize("arch", list(ENCODER_ARCHITECTURES))
def test_multilabel_bce_equals_stock_trainer(tmp_path, arch):
    dataset, collate = multilabel_dataset(8), DataCollatorWithPadding(tiny_tokenizer())
    ours_model, stock_model = tiny_encoder_classifier(arch), tiny_encoder_classifier(arch)
    MultiLabelTrainer(
        model=ours_model,
        args=MultiLabelConfig(**two_step_args(tmp_path / "ours"), loss="bce"),
        train_dataset=dataset,
        data_collator=collate,
    ).train()
    Trainer(
        model=stock_model,
        args=TrainingArguments(**two_step_args(tmp_path / "stock")),
        train_dataset=dataset,
        data_collator=collate,
    ).train()
    assert stock_model.config.problem_type == "multi_label_classification"
    assert_same_weights(weights(ours_model), weights(stock_model))
    assert_moved(ours_model, tiny_encoder_classifier(arch))


def test_classifier_bias_starts_at_the_smoothed_label_frequencies():
    from hf_losses.apps.models import set_classifier_bias_to_prior
    from tests.helpers.tiny import tiny_bert

    model = tiny_bert()
    labels = model.config.num_labels
    targets = np.zeros((8, labels), dtype=np.int64)
    targets[:3, 0] = 1  # label 0 on 3 of 8 examples: q = 4 / 10
    set_classifier_bias_to_prior(model, targets)
    expected = np.full(labels, 1 / 10)
    expected[0] = 4 / 10
    np.testing.assert_allclose(torch.sigmoid(model.classifier.bias.detach()).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=f"targets must be \\[examples, {labels}\\]"):
        set_classifier_bias_to_prior(model, targets[:, :1])

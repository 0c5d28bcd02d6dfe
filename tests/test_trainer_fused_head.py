"""--fused_lm_head: EncouragingSeq2SeqTrainer trains exactly as without it, for every architecture it accepts."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, default_data_collator

from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer
from hf_losses.trainers.lm_head import SUPPORTED_MODEL_TYPES

try:
    from tests.test_lm_head import VOCAB, tiny_model
except ModuleNotFoundError:  # tests/ is not a package
    from test_lm_head import VOCAB, tiny_model


def tiny_dataset(rows: int = 12) -> Dataset:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(3, VOCAB, (rows, 6), generator=g)
    labels[::3, 4:] = -100  # padded targets
    attention_mask = torch.ones(rows, 8, dtype=torch.long)
    attention_mask[1::2, 6:] = 0
    input_ids = torch.randint(3, VOCAB, (rows, 8), generator=g) * attention_mask
    return Dataset.from_dict(
        {
            "input_ids": input_ids.tolist(),
            "attention_mask": attention_mask.tolist(),
            "labels": labels.tolist(),
        }
    )


def config(tmp_path, fused: bool, **overrides) -> EncouragingSeq2SeqConfig:
    settings = dict(
        output_dir=str(tmp_path / ("fused" if fused else "unfused")),
        fused_lm_head=fused,
        loss="cel",
        label_smoothing_factor=0.1,
        # SGD, so the weights compare the gradients themselves: Adam divides each gradient entry by its own
        # scale, turning entries that are zero in exact arithmetic (key-projection biases, by softmax's shift
        # invariance) from float32 rounding noise into full-size steps, in either path.
        optim="sgd",
        learning_rate=0.5,
        max_steps=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return EncouragingSeq2SeqConfig(**{**settings, **overrides})


def trained(tmp_path, model_type: str, fused: bool, **overrides):
    model = tiny_model(model_type)
    trainer = EncouragingSeq2SeqTrainer(
        model=model,
        args=config(tmp_path, fused, **overrides),
        train_dataset=tiny_dataset(),
        eval_dataset=tiny_dataset(6),
        data_collator=default_data_collator,
    )
    trainer.train()
    return trainer


def assert_same_weights(model, expected_model) -> None:
    expected = dict(expected_model.named_parameters())
    for name, value in model.named_parameters():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5, msg=f"{name} differs")


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_three_steps_give_the_weights_of_the_unfused_path(tmp_path, model_type):
    plain = trained(tmp_path, model_type, fused=False)
    fused = trained(tmp_path, model_type, fused=True)
    weights = dict(plain.model.named_parameters())
    initial = dict(tiny_model(model_type).named_parameters())
    moved = max((weights[n] - p).abs().max().item() for n, p in initial.items())
    assert moved > 1e-2  # the steps are large enough to show a wrong gradient
    assert_same_weights(fused.model, plain.model)
    history = zip(plain.state.log_history, fused.state.log_history, strict=True)
    logged = [(a.get("loss"), b.get("loss")) for a, b in history]
    assert logged and all(a == pytest.approx(b, rel=1e-5) for a, b in logged if a is not None)


def test_gradient_accumulation_and_evaluation_are_unchanged(tmp_path):
    plain = trained(
        tmp_path, "marian", fused=False, gradient_accumulation_steps=2, per_device_train_batch_size=2
    )
    fused = trained(
        tmp_path, "marian", fused=True, gradient_accumulation_steps=2, per_device_train_batch_size=2
    )
    assert_same_weights(fused.model, plain.model)
    plain_eval, fused_eval = plain.evaluate(), fused.evaluate()
    for key in ("eval_loss", "eval_nll_loss", "eval_bonus", "eval_ece"):
        assert fused_eval[key] == pytest.approx(plain_eval[key], rel=1e-5), key
    assert "forward" not in vars(fused.model.lm_head)  # the head is restored after each step
    logits = fused.model(**{k: torch.tensor(v) for k, v in tiny_dataset(2)[:2].items()}).logits
    assert logits.shape[-1] == VOCAB


def test_unknown_architecture_is_a_one_line_error_naming_the_flag(tmp_path):
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    bert = dict(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    decoder = BertConfig(**bert, is_decoder=True, add_cross_attention=True)
    model = EncoderDecoderModel(
        EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**bert), decoder)
    )
    with pytest.raises(ValueError, match="--fused_lm_head supports .* got EncoderDecoderModel") as error:
        EncouragingSeq2SeqTrainer(
            model=model, args=config(tmp_path, fused=True), train_dataset=tiny_dataset()
        )
    assert "\n" not in str(error.value)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(
        ValueError, match="GPT2LMHeadModel is decoder-only"
    ):  # refused before the head is looked at
        EncouragingSeq2SeqTrainer(model=gpt2, args=config(tmp_path, fused=True), train_dataset=tiny_dataset())


def test_sharded_head_is_refused(tmp_path, monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    with pytest.raises(ValueError, match="--fused_lm_head .* FSDP or DeepSpeed ZeRO-3"):
        EncouragingSeq2SeqTrainer(model=tiny_model("marian"), args=config(tmp_path, fused=True))


def test_flag_from_the_command_line():
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EncouragingSeq2SeqConfig).parse_args_into_dataclasses(
        ["--output_dir", "x", "--fused_lm_head", "--report_to", "none"]
    )
    assert args.fused_lm_head is True

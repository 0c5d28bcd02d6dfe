"""EncouragingSeq2SeqTrainer: exact token-mean updates under accumulation, ce parity, logging, config checks."""

import math

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer, encouraging_loss
from tests.helpers.tiny import one_step_args, seq2seq_dataset, tiny_llama, tiny_marian, tiny_tokenizer

LOSS = dict(loss="cel", log_end=0.5, bonus_weight=1.0, label_smoothing_factor=0.1)


def params_after_step(trainer) -> dict[str, torch.Tensor]:
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def exact_reference_step(dataset, **loss) -> dict[str, torch.Tensor]:
    """theta - lr * grad of the exact token mean over all examples, computed by hand."""
    model, tokenizer = tiny_marian(), tiny_tokenizer()
    batch = DataCollatorForSeq2Seq(tokenizer, model=model)(list(dataset))
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
    ).logits
    log_end = loss["log_end"] if loss["loss"] == "cel" else 1.0
    rho = 0.0 if loss["loss"] == "ce" else loss["bonus_weight"]
    value = encouraging_loss(
        logits,
        batch["labels"],
        log_end=log_end,
        bonus_weight=rho,
        label_smoothing=loss["label_smoothing_factor"],
    )
    value.backward()
    return {k: (v - 1.0 * v.grad if v.grad is not None else v).detach() for k, v in model.named_parameters()}


def make_trainer(tmp_path, batch_size, accumulation, dataset, **loss):
    model, tokenizer = tiny_marian(), tiny_tokenizer()
    args = EncouragingSeq2SeqConfig(
        **one_step_args(
            str(tmp_path), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation
        ),
        **loss,
    )
    return EncouragingSeq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )


@pytest.mark.parametrize("batch_size,accumulation", [(8, 1), (4, 2), (2, 4)])
def test_one_step_equals_exact_token_mean(tmp_path, batch_size, accumulation):
    dataset = seq2seq_dataset(8)
    expected = exact_reference_step(dataset, **LOSS)
    got = params_after_step(make_trainer(tmp_path, batch_size, accumulation, dataset, **LOSS))
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=2e-6, rtol=1e-5, msg=name)


def test_naive_per_batch_mean_would_differ(tmp_path):
    """Sanity check of the test itself: the examples' token counts differ, so a per-micro-batch mean is wrong."""
    dataset = seq2seq_dataset(8)
    lengths = [len(x) for x in dataset["labels"]]
    assert sum(lengths[:4]) != sum(lengths[4:])


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ce_matches_stock_seq2seq_trainer(tmp_path, eps):
    dataset = seq2seq_dataset(8)
    ours = params_after_step(
        make_trainer(tmp_path / "ours", 8, 1, dataset, loss="ce", label_smoothing_factor=eps)
    )
    model, tokenizer = tiny_marian(), tiny_tokenizer()
    stock_args = Seq2SeqTrainingArguments(
        **one_step_args(str(tmp_path / "stock"), per_device_train_batch_size=8, label_smoothing_factor=eps)
    )
    stock = Seq2SeqTrainer(
        model=model,
        args=stock_args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )
    theirs = params_after_step(stock)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, atol=2e-6, rtol=1e-5, msg=name)


def test_logs_nll_and_bonus_beside_loss(tmp_path):
    trainer = make_trainer(tmp_path, 4, 2, seq2seq_dataset(8), **LOSS)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h][0]
    assert {"nll_loss", "bonus"} <= logged.keys()
    assert logged["nll_loss"] > 0 and logged["bonus"] < 0


def test_evaluation_reports_exact_token_means(tmp_path):
    dataset = seq2seq_dataset(8)
    trainer = make_trainer(tmp_path, 4, 1, dataset, **LOSS)
    trainer.args.per_device_eval_batch_size = 3  # uneven batches: a mean of batch means would be off
    metrics = trainer.evaluate(eval_dataset=dataset)
    model, tokenizer = tiny_marian(), tiny_tokenizer()
    batch = DataCollatorForSeq2Seq(tokenizer, model=model)(list(dataset))
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
        ).logits
    expected = encouraging_loss(logits, batch["labels"], log_end=0.5, label_smoothing=0.1)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"])
    assert metrics["eval_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["eval_nll_loss"] == pytest.approx(float(nll), rel=1e-5)


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"loss": "xl"}, "--loss"),
        ({"log_end": 0.0}, "log_end"),
        ({"log_end": 1.5}, "log_end"),
        ({"bonus_weight": -1.0}, "bonus_weight"),
        ({"label_smoothing_factor": 1.0}, "label_smoothing"),
        ({"loss": "el", "log_end": 0.3}, "--log_end does not apply to --loss el"),
        ({"loss": "ce", "bonus_weight": 2.0}, "--bonus_weight does not apply to --loss ce"),
        ({"loss": "ce", "log_end": 0.5}, "--log_end does not apply to --loss ce"),
        ({"loss": "ce", "bonus": "power"}, "--bonus does not apply to --loss ce"),
        ({"loss": "el", "bonus": "exp"}, "--bonus must be one of 'log', 'power', 'cosine', got 'exp'"),
        ({"loss": "el", "bonus": "power", "bonus_power": 0.0}, "--bonus_power must be > 0"),
        ({"loss": "el", "bonus_start": 1.0}, r"--bonus_start must be in \[0, 1\)"),
        ({"loss": "el", "bonus_smoothing": 2.0}, r"--bonus_smoothing must be in \[0, 1\]"),
        ({"loss": "cel", "bonus": "cosine"}, "--log_end must be 1 unless --bonus='log'"),
        ({"bonus_schedule": "step"}, "--bonus_schedule must be one of constant, linear, cosine, exp"),
        (
            {"bonus_schedule": "linear", "bonus_warmup_ratio": -0.1},
            r"--bonus_warmup_ratio must be in \[0, 1\]",
        ),
        (
            {"bonus_schedule": "linear", "bonus_warmup_ratio": 1.5},
            r"--bonus_warmup_ratio must be in \[0, 1\]",
        ),
        ({"bonus_schedule": "linear", "bonus_warmup_steps": -3}, "--bonus_warmup_steps must be >= 0"),
        (
            {"bonus_schedule": "exp", "bonus_warmup_steps": 3, "bonus_exp_rate": 0.0},
            "--bonus_exp_rate must be > 0",
        ),
        ({"bonus_schedule": "linear"}, "--bonus_schedule linear, cosine or exp needs --bonus_warmup_ratio"),
        ({"bonus_warmup_steps": 10}, "a warmup needs one of those schedules"),
        ({"learning_rate": -1e-3}, "--learning_rate must be >= 0"),
        ({"per_device_train_batch_size": 0}, "--per_device_train_batch_size must be at least 1"),
        ({"gradient_accumulation_steps": 0}, "--gradient_accumulation_steps"),
        ({"max_steps": -5}, "--max_steps must be a positive number"),
        ({"max_steps": -1, "num_train_epochs": 0}, "--num_train_epochs must be > 0"),
    ],
)
def test_config_rejects_invalid_values(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        EncouragingSeq2SeqConfig(output_dir=str(tmp_path), **overrides)


def test_a_causal_lm_is_refused_at_construction_naming_what_to_use(tmp_path):
    with pytest.raises(
        ValueError, match=r"LlamaForCausalLM is decoder-only.*trainer_loss_func\(.*shift_labels=True"
    ):
        EncouragingSeq2SeqTrainer(
            model=tiny_llama(), args=EncouragingSeq2SeqConfig(**one_step_args(str(tmp_path)))
        )


def test_no_pin_memory_warning_on_the_cpu(tmp_path, recwarn):
    """Without use_cpu (the scripts' case), on a machine without an accelerator."""
    if torch.cuda.is_available():
        pytest.skip("pinning memory is possible here")
    model = tiny_marian()
    args = {**one_step_args(str(tmp_path), per_device_train_batch_size=4), "use_cpu": False}
    trainer = EncouragingSeq2SeqTrainer(
        model=model,
        args=EncouragingSeq2SeqConfig(**args),
        train_dataset=seq2seq_dataset(8),
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer(), model=model),
    )
    assert trainer.args.dataloader_pin_memory is False
    next(iter(trainer.get_train_dataloader()))
    assert not [w for w in recwarn if "pin_memory" in str(w.message)]


def test_resuming_a_marian_checkpoint_reports_only_really_missing_keys(tmp_path, caplog):
    """Tied weights (embed_tokens, lm_head = the shared embedding) and sinusoidal positions are never saved."""
    from safetensors.torch import load_file, save_file

    trainer = make_trainer(tmp_path, 4, 1, seq2seq_dataset(8))
    folder = tmp_path / "saved"
    trainer.save_model(str(folder))
    with caplog.at_level("WARNING", logger="transformers.trainer"):
        trainer._load_from_checkpoint(str(folder))
    assert "missing keys" not in caplog.text
    weights = load_file(folder / "model.safetensors")
    lost = "model.encoder.layers.0.fc1.weight"
    save_file({k: v for k, v in weights.items() if k != lost}, folder / "model.safetensors", {"format": "pt"})
    caplog.clear()
    with caplog.at_level("WARNING", logger="transformers.trainer"):
        trainer._load_from_checkpoint(str(folder))
    assert "missing keys" in caplog.text and lost in caplog.text and "embed_tokens" not in caplog.text


def test_config_resolves_each_loss(tmp_path):
    def settings(**kw):
        return EncouragingSeq2SeqConfig(output_dir=str(tmp_path), **kw).loss_settings()

    assert settings(loss="el") == {
        "loss": "el",
        "log_end": 1.0,
        "bonus_weight": 1.0,
        "bonus": "log",
        "label_smoothing_factor": 0.0,
        "bonus_schedule": "constant",
    }
    assert settings(loss="el", bonus="power", bonus_schedule="exp", bonus_warmup_ratio=0.1) == {
        "loss": "el",
        "log_end": 1.0,
        "bonus_weight": 1.0,
        "bonus": "power",
        "label_smoothing_factor": 0.0,
        "bonus_schedule": "exp",
        "bonus_warmup_ratio": 0.1,
        "bonus_exp_rate": 5.0,
    }
    assert settings(loss="el", log_end=1.0)["log_end"] == 1.0
    assert settings(loss="ce")["bonus_weight"] == 0.0
    assert settings(loss="cel")["log_end"] == 0.5
    assert settings(loss="cel", log_end=0.75, bonus_weight=2.0)["bonus_weight"] == 2.0


def test_replacing_the_loss_drops_the_old_default(tmp_path):
    import dataclasses

    cel = EncouragingSeq2SeqConfig(output_dir=str(tmp_path), loss="cel")
    assert dataclasses.replace(cel, loss="el").loss_settings()["log_end"] == 1.0
    knob = EncouragingSeq2SeqConfig(output_dir=str(tmp_path), loss="cel", log_end=0.3)
    # Inherited from the earlier config (a lower level): dropped, with a warning naming it.
    with pytest.warns(UserWarning, match=r"--log_end 0.3 was set for --loss cel .* --loss ce"):
        ce = dataclasses.replace(knob, loss="ce")
    assert ce.log_end is None and ce.loss_settings()["log_end"] == 1.0
    assert dataclasses.replace(ce, loss="cel").loss_settings()["log_end"] == 0.5  # gone for good
    assert dataclasses.replace(knob, bonus_weight=2.0).log_end == 0.3  # same loss: kept
    # Set at the same level as the loss that pins it: still an error.
    with pytest.raises(ValueError, match="--log_end does not apply"):
        dataclasses.replace(knob, loss="el", log_end=0.4)
    with pytest.raises(ValueError, match="--log_end does not apply"):
        EncouragingSeq2SeqConfig(output_dir=str(tmp_path), loss="el", log_end=0.3)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "exp"])
def test_bonus_weight_at_each_step(tmp_path, schedule):
    """The weight of every step against the formula of docs/losses.md, by warmup steps and by ratio."""
    ramp = {
        "constant": lambda x: 1.0,
        "linear": lambda x: x,
        "cosine": lambda x: (1 - math.cos(math.pi * x)) / 2,
        "exp": lambda x: (1 - math.exp(-5 * x)) / (1 - math.exp(-5)),
    }[schedule]
    warm = {} if schedule == "constant" else {"bonus_warmup_steps": 4}
    args = EncouragingSeq2SeqConfig(
        output_dir=str(tmp_path), loss="el", bonus_weight=2.0, bonus_schedule=schedule, **warm
    )
    got = [args.bonus_weight_at(step, 100) for step in range(7)]
    expected = [2.0 * ramp(min(step / 4, 1.0)) for step in range(7)]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if schedule != "constant":
        assert got[0] == 0.0 and got[4:] == [2.0] * 3
        by_ratio = EncouragingSeq2SeqConfig(
            output_dir=str(tmp_path),
            loss="el",
            bonus_weight=2.0,
            bonus_schedule=schedule,
            bonus_warmup_ratio=0.03,
        )
        assert by_ratio.bonus_warmup(100) == 3  # ceil(0.03 * 100), as transformers' warmup_ratio
        assert by_ratio.bonus_weight_at(2, 100) == pytest.approx(2.0 * ramp(2 / 3))


def _scheduled_trainer(tmp_path, **overrides):
    model, tokenizer = tiny_marian(), tiny_tokenizer()
    args = EncouragingSeq2SeqConfig(
        **{**one_step_args(str(tmp_path), per_device_train_batch_size=4), "max_steps": 4, **overrides},
        loss="el",
        bonus_weight=2.0,
        bonus_schedule="linear",
        bonus_warmup_steps=4,
    )
    return EncouragingSeq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=seq2seq_dataset(16),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )


def test_scheduled_weight_is_used_logged_and_resumed(tmp_path):
    """Each step trains with the weight of its step, logs it, and a resumed run continues the ramp."""
    seen = []
    trainer = _scheduled_trainer(tmp_path / "full", save_strategy="steps", save_steps=2)
    inner = trainer.loss_fn.forward

    def spy(*args, **kwargs):
        if trainer.model.training:
            seen.append((trainer.state.global_step, trainer.loss_fn.bonus_weight))
        return inner(*args, **kwargs)

    trainer.loss_fn.forward = spy
    trainer.train()
    assert sorted(set(seen)) == [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.5)]
    logged = [(h["step"], h["bonus_weight"]) for h in trainer.state.log_history if "loss" in h]
    assert logged == [(1, 0.0), (2, 0.5), (3, 1.0), (4, 1.5)]
    full = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    resumed = _scheduled_trainer(tmp_path / "full", save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    logged = [(h["step"], h["bonus_weight"]) for h in resumed.state.log_history if "loss" in h]
    assert logged[-2:] == [(3, 1.0), (4, 1.5)]
    for name, value in resumed.model.named_parameters():
        torch.testing.assert_close(value, full[name], rtol=1e-5, atol=1e-6, msg=name)

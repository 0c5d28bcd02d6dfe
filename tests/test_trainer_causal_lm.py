"""EncouragingCausalLMTrainer: next-token EL/CEL for decoder-only LMs, with and without the fused head.

One SGD step is checked against the float64 formula (tests/reference.py) over the whole batch, for every split
of it into accumulation steps; three steps of the fused head against the unfused path, for every family.
"""

import datasets
import pytest
import torch
from transformers import DataCollatorForSeq2Seq

from hf_losses import (
    EncouragingCausalLMConfig,
    EncouragingCausalLMTrainer,
    EncouragingSeq2SeqConfig,
    EncouragingSeq2SeqTrainer,
)
from hf_losses.trainers.causal_lm import next_token_labels
from tests.helpers.tiny import (
    CAUSAL_ARCHITECTURES,
    one_step_args,
    prompt_completion_dataset,
    quick_tiny_training,
    tiny_causal_lm,
    tiny_marian,
    tiny_tokenizer,
)
from tests.reference import encouraging_loss_ref


@pytest.fixture(autouse=True, scope="module")
def quick_training():
    with quick_tiny_training():
        yield


CEL = dict(loss="cel", log_end=0.5, label_smoothing_factor=0.1)
# issue 18's knobs: another bonus shape, a start, and a bonus smoothing of its own
SHAPED = dict(
    loss="el",
    bonus="power",
    bonus_power=2.0,
    bonus_start=0.1,
    bonus_smoothing=0.0,
    label_smoothing_factor=0.1,
)
SPLITS = [(8, 1), (4, 2), (2, 4)]  # per-device batch x accumulation = 8 examples in one step


def collator():
    return DataCollatorForSeq2Seq(tiny_tokenizer())  # pads input_ids with 0 and labels with -100


def reference_knobs(loss: str, label_smoothing_factor: float, **knobs) -> dict:
    return {"log_end": 1.0, **knobs, "label_smoothing": label_smoothing_factor}


def formula_step(arch: str, dataset, lr: float = 1.0, **loss) -> dict[str, torch.Tensor]:
    """theta - lr * grad of the float64 EL of the next tokens, mean over the whole batch's scored tokens."""
    model = tiny_causal_lm(arch)
    batch = collator()(list(dataset))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    value = encouraging_loss_ref(logits[:, :-1], batch["labels"][:, 1:], **reference_knobs(**loss))
    value.backward()
    return {k: (v - lr * v.grad if v.grad is not None else v).detach() for k, v in model.named_parameters()}


def make_trainer(tmp_path, arch="llama", dataset=None, loss=None, **overrides):
    settings = {**one_step_args(str(tmp_path)), **(loss or CEL), **overrides}
    return EncouragingCausalLMTrainer(
        model=tiny_causal_lm(arch),
        args=EncouragingCausalLMConfig(**settings),
        train_dataset=prompt_completion_dataset(8) if dataset is None else dataset,
        eval_dataset=prompt_completion_dataset(5, seed=1),
        data_collator=collator(),
    )


def trained_weights(trainer) -> dict[str, torch.Tensor]:
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def assert_same_weights(got, expected, tol=1e-5):
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=tol, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


def test_next_token_labels():
    labels = torch.tensor([[-100, -100, 5, 6, 1], [-100, 7, 1, -100, -100]])
    expected = torch.tensor([[-100, 5, 6, 1, -100], [7, 1, -100, -100, -100]])
    assert torch.equal(next_token_labels(labels), expected)


@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
@pytest.mark.parametrize("bs,ga", SPLITS)
def test_one_step_is_the_exact_mean_over_the_batch(tmp_path, bs, ga, fused):
    dataset = prompt_completion_dataset(8)
    lengths = [sum(label != -100 for label in row) for row in dataset["labels"]]
    assert len(set(lengths)) > 1  # a mean of per-micro-batch means would differ
    trainer = make_trainer(
        tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, fused_lm_head=fused
    )
    assert_same_weights(trained_weights(trainer), formula_step("llama", dataset, **CEL), tol=2e-6)


@pytest.mark.parametrize("arch", CAUSAL_ARCHITECTURES)
def test_every_family_takes_the_formula_step(tmp_path, arch):
    trainer = make_trainer(tmp_path, arch, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert_same_weights(
        trained_weights(trainer), formula_step(arch, prompt_completion_dataset(8), **CEL), tol=2e-6
    )


@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
def test_bonus_shapes_follow_the_formula(tmp_path, fused):
    trainer = make_trainer(
        tmp_path,
        loss=SHAPED,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        fused_lm_head=fused,
    )
    expected = formula_step("llama", prompt_completion_dataset(8), **SHAPED)
    assert_same_weights(trained_weights(trainer), expected, tol=2e-6)


def test_a_ramped_bonus_starts_from_cross_entropy(tmp_path):
    ramped = dict(bonus_schedule="linear", bonus_warmup_steps=2)
    trainer = make_trainer(tmp_path, fused_lm_head=True, **ramped)
    ce = formula_step(
        "llama", prompt_completion_dataset(8), loss="ce", label_smoothing_factor=0.1, bonus_weight=0
    )
    assert_same_weights(trained_weights(trainer), ce, tol=2e-6)
    assert trainer.state.log_history[0]["bonus_weight"] == 0.0


def three_steps_trainer(tmp_path, arch: str, fused: bool):
    return make_trainer(
        tmp_path / f"{arch}-{fused}",
        arch,
        fused_lm_head=fused,
        optim="sgd",
        learning_rate=0.5,
        max_steps=3,
        per_device_train_batch_size=4,
    )


def three_steps(tmp_path, arch: str, fused: bool):
    trainer = three_steps_trainer(tmp_path, arch, fused)
    return trainer, trained_weights(trainer)


@pytest.mark.parametrize("arch", CAUSAL_ARCHITECTURES)
def test_three_steps_of_the_fused_head_equal_the_unfused_path(tmp_path, arch):
    initial = dict(tiny_causal_lm(arch).named_parameters())
    plain, plain_weights = three_steps(tmp_path, arch, fused=False)
    fused, fused_weights = three_steps(tmp_path, arch, fused=True)
    moved = max((plain_weights[n] - p).abs().max().item() for n, p in initial.items())
    assert moved > 1e-2  # the steps are large enough to show a wrong gradient
    assert_same_weights(fused_weights, plain_weights)
    losses = [
        (a.get("loss"), b.get("loss"))
        for a, b in zip(plain.state.log_history, fused.state.log_history, strict=True)
    ]
    assert all(a == pytest.approx(b, rel=1e-5) for a, b in losses if a is not None)


def test_the_fused_head_never_projects_and_evaluation_is_unchanged(tmp_path):
    plain, _ = three_steps(tmp_path, "qwen3", fused=False)  # tied embeddings
    fused = three_steps_trainer(tmp_path, "qwen3", fused=True)
    head = fused.model.get_output_embeddings()
    widths = []
    hook = head.register_forward_hook(lambda module, args, output: widths.append(output.shape[-1]))
    fused.train()
    hook.remove()
    assert widths and set(widths) == {16}  # the head returned the hidden states: no [tokens, V] logits
    assert "forward" not in vars(head)  # the projection is back for evaluation and generation
    plain_eval, fused_eval = plain.evaluate(), fused.evaluate()
    for key in ("eval_loss", "eval_nll_loss", "eval_bonus", "eval_ece", "eval_mean_p_y"):
        assert fused_eval[key] == pytest.approx(plain_eval[key], rel=1e-5), key


def test_gemma2_soft_capping_is_refused_by_the_fused_head_only(tmp_path):
    def trainer(fused):
        return EncouragingCausalLMTrainer(
            model=tiny_causal_lm("gemma2", final_logit_softcapping=30.0),
            args=EncouragingCausalLMConfig(**one_step_args(str(tmp_path)), fused_lm_head=fused),
            train_dataset=prompt_completion_dataset(8),
            data_collator=collator(),
        )

    with pytest.raises(
        ValueError, match="--fused_lm_head does not reproduce the final_logit_softcapping=30.0"
    ) as e:
        trainer(fused=True)
    assert "\n" not in str(e.value)
    trainer(fused=False).train()


def test_each_trainer_refuses_the_other_kind_of_model_naming_the_right_one(tmp_path):
    with pytest.raises(
        ValueError, match="MarianMTModel is an encoder-decoder model: use hf_losses.EncouragingSeq2SeqTrainer"
    ):
        EncouragingCausalLMTrainer(
            model=tiny_marian(), args=EncouragingCausalLMConfig(**one_step_args(str(tmp_path)))
        )
    with pytest.raises(
        ValueError, match="LlamaForCausalLM is decoder-only: use hf_losses.EncouragingCausalLMTrainer"
    ):
        EncouragingSeq2SeqTrainer(
            model=tiny_causal_lm("llama"), args=EncouragingSeq2SeqConfig(**one_step_args(str(tmp_path)))
        )


def test_the_config_shares_every_knob_of_the_seq2seq_config():
    from dataclasses import fields

    from transformers import HfArgumentParser

    seq2seq_only = {f.name for f in fields(EncouragingSeq2SeqConfig)} - {
        f.name for f in fields(EncouragingCausalLMConfig)
    }
    assert all(name.startswith(("generation_", "predict_with_generate", "sortish")) for name in seq2seq_only)
    (args,) = HfArgumentParser(EncouragingCausalLMConfig).parse_args_into_dataclasses(
        ["--output_dir", "x", "--loss", "el", "--bonus", "cosine", "--fused_lm_head", "--report_to", "none"]
    )
    assert args.fused_lm_head and args.build_loss().bonus == "cosine"
    with pytest.raises(ValueError, match="--log_end does not apply to --loss el"):
        EncouragingCausalLMConfig(output_dir="x", loss="el", log_end=0.5)


@pytest.mark.parametrize("arch", CAUSAL_ARCHITECTURES)
def test_hidden_states_and_head_reproduce_the_logits(arch):
    from hf_losses.trainers.lm_head import run_without_lm_head

    model = tiny_causal_lm(arch)
    input_ids = torch.tensor([[2, 5, 9, 30, 7], [2, 11, 4, 0, 0]])
    attention_mask = (input_ids != 0).long()
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    hidden, weight, bias = run_without_lm_head(model, input_ids=input_ids, attention_mask=attention_mask)
    assert weight is model.get_output_embeddings().weight and bias is None
    torch.testing.assert_close(hidden @ weight.T, logits, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ evaluation with generation (issue 19)


@pytest.mark.parametrize("side", ["right", "left"])
def test_prompts_of_takes_each_prompt_left_padded_whichever_side_the_batch_was_padded(side):
    from hf_losses.trainers.causal_lm import prompts_of

    rows = list(prompt_completion_dataset(6))
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = side
    batch = DataCollatorForSeq2Seq(tokenizer)(rows)
    ids, mask = prompts_of(batch["input_ids"], batch["attention_mask"], batch["labels"], pad_token_id=0)
    prompts = [
        [t for t, label in zip(r["input_ids"], r["labels"], strict=True) if label == -100] for r in rows
    ]
    width = max(len(p) for p in prompts)
    assert ids.shape == mask.shape == (len(rows), width)
    for row_ids, row_mask, prompt in zip(ids.tolist(), mask.tolist(), prompts, strict=True):
        assert row_ids == [0] * (width - len(prompt)) + prompt
        assert row_mask == [0] * (width - len(prompt)) + [1] * len(prompt)


def test_predict_with_generate_returns_the_tokens_generated_after_each_prompt(tmp_path):
    """Predictions equal generating from each prompt alone; the loss is the teacher-forced one of plain
    evaluation; the labels are the targets."""
    rows = [r for r in prompt_completion_dataset(8) if r["labels"][0] == -100]  # rows with a prompt
    dataset = datasets.Dataset.from_list(rows)
    trainer = EncouragingCausalLMTrainer(
        model=tiny_causal_lm("llama"),
        args=EncouragingCausalLMConfig(
            **one_step_args(str(tmp_path)),
            **CEL,
            predict_with_generate=True,
            generation_max_length=4,
            per_device_eval_batch_size=3,
        ),
        train_dataset=dataset,
        data_collator=collator(),
    )
    output = trainer.predict(dataset)
    plain = trainer.evaluate(dataset)
    assert output.metrics["test_loss"] == pytest.approx(plain["eval_loss"], rel=1e-6)
    model = trainer.model.eval()
    for row, predicted, label in zip(rows, output.predictions, output.label_ids, strict=True):
        prompt = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab == -100]
        alone = model.generate(
            input_ids=torch.tensor([prompt]), max_new_tokens=4, do_sample=False, pad_token_id=0
        )[0, len(prompt) :].tolist()
        kept = [t for t in predicted.tolist() if t != -100]
        assert kept[: len(alone)] == alone and all(t == 0 for t in kept[len(alone) :])
        assert [t for t in label.tolist() if t != -100] == [t for t in row["labels"] if t != -100]


def test_generation_settings_reach_generate_and_the_card(tmp_path):
    trainer = make_trainer(
        tmp_path, predict_with_generate=True, generation_max_length=3, generation_num_beams=2
    )
    config = trainer.generation_config(trainer.model)
    assert (config.max_new_tokens, config.num_beams, config.pad_token_id) == (3, 2, 0)
    assert trainer.model.generation_config.num_beams != 2  # the model's own settings are left alone
    hyper = trainer.card_hyperparameters()
    assert (hyper["generation_num_beams"], hyper["generation_max_length"]) == (2, 3)
    assert "generation_num_beams" not in make_trainer(tmp_path / "plain").card_hyperparameters()


def test_lora_adapters_train_the_same_with_the_fused_head(tmp_path):
    """PEFT LoRA on the attention (the usual LLM fine-tune): the head is frozen and still applied by the loss."""
    peft = pytest.importorskip("peft")

    def lora_weights(fused: bool) -> dict[str, torch.Tensor]:
        config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        model = peft.get_peft_model(tiny_causal_lm("llama"), config)
        settings = {**one_step_args(str(tmp_path / str(fused))), "max_steps": 3, "learning_rate": 0.5}
        trainer = EncouragingCausalLMTrainer(
            model=model,
            args=EncouragingCausalLMConfig(**settings, **CEL, fused_lm_head=fused),
            train_dataset=prompt_completion_dataset(8),
            data_collator=collator(),
        )
        trainer.train()
        return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    plain, fused = lora_weights(False), lora_weights(True)
    assert set(plain) == set(fused) and all("lora_" in k for k in plain)
    assert max(v.abs().max().item() for k, v in plain.items() if "lora_B" in k) > 1e-3  # B starts at zero
    assert_same_weights(fused, plain)

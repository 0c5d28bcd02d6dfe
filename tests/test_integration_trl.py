"""EncouragingSFTTrainer: EL/CEL in TRL's SFTTrainer on prompt-completion data, with and without the fused head."""

import importlib
import json
import shutil
import sys

import pytest
import torch

pytest.importorskip("trl")

import datasets  # noqa: E402
from transformers import DataCollatorForSeq2Seq  # noqa: E402

from hf_losses.integrations.trl import EncouragingSFTConfig, EncouragingSFTTrainer  # noqa: E402
from tests.helpers.tiny import one_step_args, quick_tiny_training, tiny_causal_lm, tiny_tokenizer  # noqa: E402
from tests.reference import encouraging_loss_ref  # noqa: E402
from tests.test_trainer_averaging import expected_mean  # noqa: E402

CEL = dict(loss="cel", log_end=0.5, label_smoothing_factor=0.1)


@pytest.fixture(autouse=True, scope="module")
def quick_training():
    with quick_tiny_training():
        yield


def prompt_completion(n: int = 8) -> datasets.Dataset:
    """TRL's standard prompt-completion format; prompts and completion lengths differ between examples."""
    rows = [
        {
            "prompt": " ".join(f"w{(i + j) % 30 + 3}" for j in range(1 + i % 4)),
            "completion": "".join(f" w{(2 * i + j) % 30 + 3}" for j in range(1 + (3 * i) % 5)),
        }
        for i in range(n)
    ]
    return datasets.Dataset.from_list(rows)


def sft_trainer(tmp_path, arch="llama", eval_dataset=None, **overrides):
    """One SGD step at lr 1 in float32 (TRL's configs default to bf16 autocast)."""
    settings = {**one_step_args(str(tmp_path)), "bf16": False, **CEL, **overrides}
    return EncouragingSFTTrainer(
        model=tiny_causal_lm(arch),
        args=EncouragingSFTConfig(**settings),
        train_dataset=prompt_completion(),
        eval_dataset=eval_dataset,
        processing_class=tiny_tokenizer(),
    )


def formula_step(arch, prepared: datasets.Dataset) -> dict[str, torch.Tensor]:
    """theta - grad of the float64 CEL of the next tokens over TRL's prepared batch (labels -100 on prompts)."""
    model = tiny_causal_lm(arch)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in prepared]
    batch = DataCollatorForSeq2Seq(tiny_tokenizer())(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    encouraging_loss_ref(logits[:, :-1], batch["labels"][:, 1:], log_end=0.5, label_smoothing=0.1).backward()
    return {k: (v - v.grad).detach() for k, v in model.named_parameters()}


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def assert_same_weights(got, expected, tol):
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=tol, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
@pytest.mark.parametrize("bs,ga", [(8, 1), (2, 4)])
def test_one_step_is_the_exact_completion_token_mean(tmp_path, bs, ga, fused):
    trainer = sft_trainer(
        tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, fused_lm_head=fused
    )
    prepared = trainer.train_dataset
    assert all(r["labels"][0] == -100 for r in prepared)  # completion-only: the prompts are masked
    assert len({sum(x != -100 for x in r["labels"]) for r in prepared}) > 1
    trainer.train()
    assert_same_weights(weights(trainer.model), formula_step("llama", prepared), tol=2e-6)


def test_one_forward_pass_per_micro_batch_and_no_projection_with_the_fused_head(tmp_path):
    trainer = sft_trainer(
        tmp_path, "qwen3", per_device_train_batch_size=2, gradient_accumulation_steps=2, fused_lm_head=True
    )
    calls, widths = [], []
    trainer.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    head = trainer.model.get_output_embeddings()
    head.register_forward_hook(lambda module, args, output: widths.append(output.shape[-1]))
    trainer.train()
    assert len(calls) == 2  # one step of two micro-batches: no second pass for the loss
    assert set(widths) == {16}  # the head returned the hidden states: no [tokens, V] logits
    logged = trainer.state.log_history[0]
    assert {"loss", "nll_loss", "bonus", "bonus_weight"} <= set(logged)


def test_three_steps_and_evaluation_of_the_fused_head_equal_the_unfused_path(tmp_path):
    runs = {}
    for fused in (False, True):
        trainer = sft_trainer(
            tmp_path / str(fused),
            "gpt2",
            fused_lm_head=fused,
            max_steps=3,
            learning_rate=0.5,
            per_device_train_batch_size=4,
        )
        trainer.train()
        runs[fused] = weights(trainer.model), trainer.evaluate(prompt_completion(5))
    (fused_weights, fused_eval), (plain_weights, plain_eval) = runs[True], runs[False]
    assert_same_weights(fused_weights, plain_weights, tol=1e-5)
    for key in ("eval_loss", "eval_nll_loss", "eval_bonus"):  # evaluation forms the logits in both
        assert fused_eval[key] == pytest.approx(plain_eval[key], rel=1e-5), key


def test_misuse_is_refused_in_one_line(tmp_path, recwarn):
    with pytest.raises(ValueError, match="loss_type='dft' .* leave loss_type at 'nll'"):
        sft_trainer(tmp_path, loss_type="dft")
    with pytest.raises(ValueError, match="compute_loss_func is not used"):
        EncouragingSFTTrainer(
            model=tiny_causal_lm("llama"),
            args=EncouragingSFTConfig(**one_step_args(str(tmp_path))),
            compute_loss_func=lambda *a, **k: None,
        )
    with pytest.raises(ValueError, match="final_logit_softcapping=30.0"):
        EncouragingSFTTrainer(
            model=tiny_causal_lm("gemma2", final_logit_softcapping=30.0),
            args=EncouragingSFTConfig(**one_step_args(str(tmp_path)), fused_lm_head=True),
            train_dataset=prompt_completion(),
            processing_class=tiny_tokenizer(),
        )
    # label smoothing goes into the EL: TRL's warning of an extra forward pass does not apply
    assert not [w for w in recwarn if "label_smoothing_factor" in str(w.message)]


AVERAGING = dict(max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=3, average_checkpoints=3)


def test_sft_ends_with_the_mean_of_the_last_checkpoints_also_after_a_resume(tmp_path):
    trainer = sft_trainer(tmp_path / "whole", learning_rate=0.5, **AVERAGING)
    output = trainer.train()
    folders = [tmp_path / "whole" / f"checkpoint-{s}" for s in (2, 4, 6)]
    state = trainer.model.state_dict()
    for name, value in expected_mean(folders).items():
        torch.testing.assert_close(state[name].double(), value, rtol=0, atol=1e-7, msg=name)
    assert output.metrics["train_averaged_checkpoint_steps"] == "2,4,6"
    trainer.save_metrics("train", output.metrics)
    assert (
        json.loads((tmp_path / "whole" / "all_results.json").read_text())["train_averaged_checkpoints"] == 3
    )
    card = (tmp_path / "whole" / "README.md").read_text()
    assert "TRL" in card  # TRL's card, with our section after it:
    assert (
        card.index("## Training procedure")
        < card.index("## Loss and final weights")
        < card.index("## Citations")
    )
    assert "| `loss` | cel |" in card and "| `log_end` | 0.5 |" in card
    assert "| `average_checkpoints` | 3 (mean of the checkpoints at steps 2, 4, 6) |" in card
    assert "compare `nll_loss`" in card

    shutil.copytree(tmp_path / "whole", tmp_path / "killed", ignore=shutil.ignore_patterns("checkpoint-6"))
    resumed = sft_trainer(tmp_path / "killed", learning_rate=0.5, **AVERAGING)
    resumed.train(resume_from_checkpoint=True)  # as if killed after step 4's save
    assert_same_weights(weights(resumed.model), weights(trainer.model), tol=1e-5)


def test_sft_stops_when_the_validation_loss_stops_improving(tmp_path):
    trainer = sft_trainer(
        tmp_path,
        eval_dataset=prompt_completion(4),
        max_steps=10,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        metric_for_best_model="loss",
        early_stopping_patience=2,
        early_stopping_threshold=1e9,  # no evaluation after the first counts as an improvement
    )
    output = trainer.train()
    assert trainer.state.global_step == 3
    assert output.metrics["train_stopped_early"] == 1
    card = (tmp_path / "README.md").read_text()
    assert "| `early_stopping` | patience 2 on loss (stopped at step 3) |" in card
    assert "average_checkpoints" not in card


def test_the_sft_card_of_a_baseline_names_it(tmp_path):
    trainer = sft_trainer(tmp_path, loss="ce", log_end=None)
    trainer.train()
    card = (tmp_path / "README.md").read_text()
    assert "using the `ce` baseline loss (no encouraging bonus)." in card and "nll_loss" not in card


def test_averaging_a_peft_adapter_is_refused_in_one_line(tmp_path):
    peft = pytest.importorskip("peft")
    with pytest.raises(ValueError, match="PEFT model's checkpoints hold only its adapter.*set it to 0"):
        EncouragingSFTTrainer(
            model=tiny_causal_lm("llama"),
            args=EncouragingSFTConfig(**{**one_step_args(str(tmp_path)), "bf16": False, **AVERAGING}),
            train_dataset=prompt_completion(),
            processing_class=tiny_tokenizer(),
            peft_config=peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )
    with pytest.raises(ValueError, match="--save_total_limit >= 3"):
        EncouragingSFTConfig(**{**one_step_args(str(tmp_path)), **AVERAGING, "save_total_limit": 2})


def test_without_trl_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)
    monkeypatch.delitem(sys.modules, "hf_losses.integrations.trl")
    with pytest.raises(ImportError, match=r"pip install hf_losses\[trl\]") as error:
        importlib.import_module("hf_losses.integrations.trl")
    assert "\n" not in str(error.value)

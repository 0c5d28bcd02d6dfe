"""trainer_loss_func: the losses as ``compute_loss_func`` of the stock Trainer / Seq2SeqTrainer.

Each update is checked against theta - lr * grad of the exact mean over the whole batch, computed by hand
from a plain float64-free formula (full-batch mean of the loss over all items), for gradient accumulation
1, 2 and 4; and the item counts transformers passes are checked against what the module docstring says.
"""

import pytest
import torch
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
)

from hf_losses import (
    AsymmetricPolynomialLoss,
    EncouragingLoss,
    asymmetric_polynomial_loss,
    encouraging_loss,
    trainer_loss_func,
)
from tests.helpers.tiny import (
    causal_lm_dataset,
    multilabel_dataset,
    one_step_args,
    quick_tiny_training,
    seq2seq_dataset,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_seq2seq,
    tiny_tokenizer,
)


@pytest.fixture(autouse=True, scope="module")
def quick_training():
    with quick_tiny_training():
        yield


EL = dict(log_end=0.5, label_smoothing=0.1)
SPLITS = [(8, 1), (4, 2), (2, 4)]  # per-device batch x accumulation = 8 examples in one step


def seq2seq_collator(model):
    return DataCollatorForSeq2Seq(tiny_tokenizer(), model=model)


def causal_collator(model=None):
    return DataCollatorForLanguageModeling(tiny_tokenizer(), mlm=False)


def multilabel_collator(model=None):
    return DataCollatorWithPadding(tiny_tokenizer())


def step_with_stock_trainer(tmp_path, trainer_class, model, dataset, collator, loss_func, bs, ga):
    args_class = Seq2SeqTrainingArguments if trainer_class is Seq2SeqTrainer else TrainingArguments
    args = args_class(
        **one_step_args(str(tmp_path), per_device_train_batch_size=bs, gradient_accumulation_steps=ga)
    )
    trainer = trainer_class(
        model=model, args=args, train_dataset=dataset, data_collator=collator, compute_loss_func=loss_func
    )
    trainer.train()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def step_by_hand(model, batch, full_batch_mean) -> dict[str, torch.Tensor]:
    """theta - 1.0 * grad of ``full_batch_mean(model, batch)`` (one plain SGD step at lr 1)."""
    full_batch_mean(model, batch).backward()
    return {k: (v - v.grad if v.grad is not None else v).detach() for k, v in model.named_parameters()}


def assert_same_weights(got, expected):
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, atol=1e-6, rtol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )


def seq2seq_token_mean(model, batch):
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
    ).logits
    return encouraging_loss(logits, batch["labels"], **EL)


def causal_token_mean(model, batch):
    """Token t+1 predicted from tokens up to t; the mean over all non-ignored shifted targets."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return encouraging_loss(logits[:, :-1], batch["labels"][:, 1:], **EL)


def label_entry_mean(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return asymmetric_polynomial_loss(logits, batch["labels"])


@pytest.mark.parametrize("arch", ["marian", "t5"])
@pytest.mark.parametrize("bs,ga", SPLITS)
def test_seq2seq_trainer_step_is_exact_token_mean(tmp_path, arch, bs, ga):
    """T5 is a "*ForConditionalGeneration" model, whose labels some transformers releases counted shifted."""
    dataset = seq2seq_dataset(8)
    reference = tiny_seq2seq(arch)
    expected = step_by_hand(reference, seq2seq_collator(reference)(list(dataset)), seq2seq_token_mean)
    model = tiny_seq2seq(arch)
    loss_func = trainer_loss_func(EncouragingLoss(**EL))
    got = step_with_stock_trainer(
        tmp_path, Seq2SeqTrainer, model, dataset, seq2seq_collator(model), loss_func, bs, ga
    )
    assert_same_weights(got, expected)


@pytest.mark.parametrize("bs,ga", SPLITS)
def test_causal_lm_trainer_step_is_exact_shifted_token_mean(tmp_path, bs, ga):
    dataset = causal_lm_dataset(8)
    expected = step_by_hand(tiny_llama(), causal_collator()(list(dataset)), causal_token_mean)
    loss_func = trainer_loss_func(EncouragingLoss(**EL), shift_labels=True)
    got = step_with_stock_trainer(
        tmp_path, Trainer, tiny_llama(), dataset, causal_collator(), loss_func, bs, ga
    )
    assert_same_weights(got, expected)


@pytest.mark.parametrize("bs,ga", SPLITS)
def test_multilabel_trainer_step_is_exact_label_entry_mean(tmp_path, bs, ga):
    dataset = multilabel_dataset(8)
    expected = step_by_hand(tiny_bert(), multilabel_collator()(list(dataset)), label_entry_mean)
    loss_func = trainer_loss_func(AsymmetricPolynomialLoss())
    got = step_with_stock_trainer(
        tmp_path, Trainer, tiny_bert(), dataset, multilabel_collator(), loss_func, bs, ga
    )
    assert_same_weights(got, expected)


def test_gpt2_needs_its_loss_type_for_an_exact_count(tmp_path):
    """GPT2LMHeadModel has no causal-LM ``loss_type``: transformers counts unshifted labels unless it is set."""
    dataset = causal_lm_dataset(8)
    expected = step_by_hand(tiny_gpt2(), causal_collator()(list(dataset)), causal_token_mean)
    loss_func = trainer_loss_func(EncouragingLoss(**EL), shift_labels=True)
    model = tiny_gpt2()
    model.loss_type = "ForCausalLM"
    got = step_with_stock_trainer(
        tmp_path / "set", Trainer, model, dataset, causal_collator(), loss_func, 4, 2
    )
    assert_same_weights(got, expected)
    unset = step_with_stock_trainer(
        tmp_path / "unset", Trainer, tiny_gpt2(), dataset, causal_collator(), loss_func, 4, 2
    )
    assert not torch.allclose(unset["transformer.wte.weight"], expected["transformer.wte.weight"], atol=1e-5)


def counting_loss_func(seen: list):
    """A compute_loss_func recording (num_items_in_batch, labels) and returning a zero loss that backprops."""

    def loss_func(outputs, labels, num_items_in_batch=None):
        seen.append((num_items_in_batch, labels))
        return outputs["logits"].sum() * 0.0

    return loss_func


@pytest.mark.parametrize(
    "model_factory,collator,dataset,count",
    [
        # encoder-decoder "*ForConditionalGeneration": every non-ignored label (the seq2seq token count)
        (lambda: tiny_seq2seq("t5"), seq2seq_collator, seq2seq_dataset, lambda y: y.ne(-100).sum()),
        (lambda: tiny_seq2seq("bart"), seq2seq_collator, seq2seq_dataset, lambda y: y.ne(-100).sum()),
        # loss_type "ForCausalLM": the shifted targets
        (tiny_llama, causal_collator, causal_lm_dataset, lambda y: y[:, 1:].ne(-100).sum()),
        # GPT2LMHeadModel: loss_type None, so every label, one per row more than the shifted targets
        (tiny_gpt2, causal_collator, causal_lm_dataset, lambda y: y.ne(-100).sum()),
        # 0/1 multi-hot float labels: every label entry, N x L
        (tiny_bert, multilabel_collator, multilabel_dataset, lambda y: y.numel()),
    ],
    ids=["t5", "bart", "llama", "gpt2", "bert-multilabel"],
)
def test_num_items_in_batch_is_what_the_docstring_says(tmp_path, model_factory, collator, dataset, count):
    seen = []
    model, data = model_factory(), dataset(8)
    trainer_class = Seq2SeqTrainer if collator is seq2seq_collator else Trainer
    step_with_stock_trainer(
        tmp_path, trainer_class, model, data, collator(model), counting_loss_func(seen), 4, 2
    )
    assert len(seen) == 2
    expected = sum(int(count(labels)) for _, labels in seen)
    assert all(int(n) == expected for n, _ in seen)


def test_evaluation_uses_the_loss_per_batch_but_not_with_generation(tmp_path):
    """eval_loss is the EL mean of each evaluation batch; predict_with_generate bypasses compute_loss_func."""
    dataset = seq2seq_dataset(8)
    model = tiny_seq2seq("marian")
    batch = seq2seq_collator(model)(list(dataset))
    with torch.no_grad():
        expected = float(seq2seq_token_mean(model, batch))
    args = dict(one_step_args(str(tmp_path)), per_device_eval_batch_size=8)
    for generate in (False, True):
        trainer = Seq2SeqTrainer(
            model=model,
            args=Seq2SeqTrainingArguments(**args, predict_with_generate=generate, generation_max_length=6),
            data_collator=seq2seq_collator(model),
            compute_loss_func=trainer_loss_func(EncouragingLoss(**EL)),
            compute_metrics=lambda prediction: {},  # without metrics evaluate() never generates
        )
        eval_loss = trainer.evaluate(eval_dataset=dataset)["eval_loss"]
        if generate:
            assert eval_loss != pytest.approx(expected, rel=1e-3)
            assert eval_loss > 0  # the model's own cross-entropy; this EL is negative only when confident
        else:
            assert eval_loss == pytest.approx(expected, rel=1e-5)


def test_without_a_count_it_returns_the_batch_mean_and_leaves_the_module_alone():
    logits = torch.randn(3, 5, 7, requires_grad=True)
    target = torch.randint(0, 7, (3, 5))
    target[0, :2] = -100
    module = EncouragingLoss(reduction="none", **EL)
    loss_func = trainer_loss_func(module)
    out = loss_func({"logits": logits}, target)
    torch.testing.assert_close(out, encouraging_loss(logits, target, **EL))
    summed = encouraging_loss(logits, target, reduction="sum", **EL)
    torch.testing.assert_close(
        loss_func({"logits": logits}, target, num_items_in_batch=torch.tensor(20)), summed / 20
    )
    torch.testing.assert_close(loss_func((logits,), target, num_items_in_batch=20), summed / 20)
    assert module.reduction == "none"


def test_multilabel_targets_are_cast_to_the_logits_dtype():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = (torch.rand(4, 6) < 0.4).long()
    got = trainer_loss_func(AsymmetricPolynomialLoss())({"logits": logits}, labels, num_items_in_batch=48)
    expected = asymmetric_polynomial_loss(logits, labels.double(), reduction="sum") / 48
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected)
    got.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.float64


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="EncouragingLoss or AsymmetricPolynomialLoss"):
        trainer_loss_func(torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="shift_labels"):
        trainer_loss_func(AsymmetricPolynomialLoss(), shift_labels=True)
    with pytest.raises(ValueError, match="labels"):
        trainer_loss_func(EncouragingLoss())({"logits": torch.randn(2, 3)}, None, num_items_in_batch=2)

"""MultiLabelTrainer: exact mean over all label entries under accumulation, BCE parity, presets, validation, threshold."""

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from hf_losses import MultiLabelConfig, MultiLabelTrainer, asymmetric_polynomial_loss
from hf_losses.metrics import MultiLabelMetrics
from tests.helpers.tiny import NUM_LABELS, multilabel_dataset, one_step_args, tiny_bert, tiny_tokenizer

APL = dict(
    gamma_pos=0.0, gamma_neg=4.0, clip=0.05, alpha1=-1.0, alpha2=1.25, beta1=0.0, detach_focusing_weight=True
)


def collator():
    return DataCollatorWithPadding(tiny_tokenizer())


def params_after_step(trainer) -> dict[str, torch.Tensor]:
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def exact_reference_step(dataset, **knobs) -> dict[str, torch.Tensor]:
    """theta - lr * grad of the mean of the loss over all N x L label entries of the full batch, by hand."""
    model = tiny_bert()
    batch = collator()(list(dataset))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (len(dataset), NUM_LABELS)
    asymmetric_polynomial_loss(logits, batch["labels"], reduction="mean", **knobs).backward()
    return {k: (v - 1.0 * v.grad if v.grad is not None else v).detach() for k, v in model.named_parameters()}


def make_trainer(tmp_path, batch_size, accumulation, dataset, **config):
    args = MultiLabelConfig(
        **one_step_args(
            str(tmp_path), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation
        ),
        **config,
    )
    return MultiLabelTrainer(
        model=tiny_bert(), args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=collator()
    )


@pytest.mark.parametrize("batch_size,accumulation", [(8, 1), (4, 2), (2, 4)])
def test_one_step_equals_exact_mean_over_label_entries(tmp_path, batch_size, accumulation):
    dataset = multilabel_dataset(8)
    expected = exact_reference_step(dataset, **APL)
    got = params_after_step(make_trainer(tmp_path, batch_size, accumulation, dataset, loss="apl"))
    initial = dict(tiny_bert().named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=2e-6, rtol=1e-5, msg=name)
    assert not torch.equal(
        got["classifier.weight"], initial["classifier.weight"]
    )  # the step moved the weights


def test_bce_matches_stock_trainer(tmp_path):
    dataset = multilabel_dataset(8)
    ours = params_after_step(make_trainer(tmp_path / "ours", 8, 1, dataset, loss="bce"))
    stock = Trainer(
        model=tiny_bert(),
        args=TrainingArguments(**one_step_args(str(tmp_path / "stock"), per_device_train_batch_size=8)),
        train_dataset=dataset,
        data_collator=collator(),
    )
    theirs = params_after_step(stock)
    assert stock.model.config.problem_type == "multi_label_classification"
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, atol=2e-6, rtol=1e-5, msg=name)


def test_evaluation_loss_is_exact_mean(tmp_path):
    dataset = multilabel_dataset(7)
    trainer = make_trainer(tmp_path, 4, 1, dataset, loss="apl")
    trainer.args.per_device_eval_batch_size = 3  # uneven batches: a mean of batch means would be off
    metrics = trainer.evaluate()
    batch = collator()(list(dataset))
    with torch.no_grad():
        logits = tiny_bert()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = asymmetric_polynomial_loss(logits, batch["labels"], reduction="mean", **APL)
    assert metrics["eval_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert {"eval_f1_micro", "eval_f1_macro", "eval_map", "eval_p@1", "eval_ndcg@3"} <= metrics.keys()


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"loss": "apl"}, APL),
        (
            {"loss": "bce"},
            dict(
                gamma_pos=0.0,
                gamma_neg=0.0,
                clip=0.0,
                alpha1=0.0,
                alpha2=0.0,
                beta1=0.0,
                detach_focusing_weight=True,
            ),
        ),
        ({"loss": "asl"}, dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05, alpha1=0.0, alpha2=0.0, beta1=0.0)),
        ({"loss": "asl", "gamma_neg": 2.0}, dict(gamma_neg=2.0, clip=0.05, alpha1=0.0)),
        (
            {"loss": "focal"},
            dict(gamma_pos=2.0, gamma_neg=2.0, clip=0.0, alpha1=0.0, beta1=0.0, detach_focusing_weight=False),
        ),
        ({"loss": "focal", "detach_focusing_weight": True}, dict(gamma_pos=2.0, detach_focusing_weight=True)),
        ({"loss": "poly1"}, dict(gamma_pos=0.0, gamma_neg=0.0, clip=0.0, alpha1=1.0, alpha2=0.0, beta1=1.0)),
        ({"loss": "poly1", "poly_epsilon": 2.5}, dict(alpha1=2.5, beta1=2.5, alpha2=0.0)),
        ({"loss": "poly1", "poly_epsilon": 2.5, "beta1": 0.0}, dict(alpha1=2.5, beta1=0.0)),
        ({"loss": "apl", "clip": 0.0, "alpha2": 0.0}, dict(clip=0.0, alpha2=0.0, alpha1=-1.0, gamma_neg=4.0)),
    ],
)
def test_presets_and_overrides_resolve(tmp_path, overrides, expected):
    args = MultiLabelConfig(output_dir=str(tmp_path), **overrides)
    settings = args.loss_settings()  # what cards record and resume compares
    for knob, value in expected.items():
        assert settings[knob] == value, knob
    assert set(MultiLabelConfig.KNOBS) <= set(settings)
    assert settings["loss"] == overrides["loss"]
    loss = trainer_loss_module(args)
    assert {knob: getattr(loss, knob) for knob in MultiLabelConfig.KNOBS} == {
        knob: settings[knob] for knob in MultiLabelConfig.KNOBS
    }


def trainer_loss_module(args):
    trainer = MultiLabelTrainer(
        model=tiny_bert(), args=args, train_dataset=multilabel_dataset(8), data_collator=collator()
    )
    return trainer.loss_fn


def test_presets_resolve_whenever_the_loss_is_built(tmp_path):
    """Changing the preset after construction (dataclasses.replace, a YAML file) keeps no stale knob."""
    import dataclasses

    apl = MultiLabelConfig(output_dir=str(tmp_path), loss="apl")
    bce = dataclasses.replace(apl, loss="bce")
    assert bce.loss_settings() == {
        "loss": "bce",
        **APL,
        "alpha1": 0.0,
        "alpha2": 0.0,
        "gamma_neg": 0.0,
        "clip": 0.0,
    }
    assert trainer_loss_module(bce).gamma_neg == 0.0
    tuned = dataclasses.replace(
        MultiLabelConfig(output_dir=str(tmp_path), loss="asl", gamma_neg=2.0), loss="apl"
    )
    assert tuned.loss_settings()["gamma_neg"] == 2.0  # what the user set explicitly survives
    assert tuned.loss_settings()["alpha2"] == 1.25


def test_bare_bool_flag_parses(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(MultiLabelConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--loss", "focal", "--detach_focusing_weight"]
    )
    assert args.loss_settings()["detach_focusing_weight"] is True


def test_presets_resolve_through_the_argument_parser(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(MultiLabelConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--loss", "asl", "--gamma_neg", "2", "--clip", "0"]
    )
    assert args.loss_settings() == {
        "loss": "asl",
        **APL,
        "alpha1": 0.0,
        "alpha2": 0.0,
        "gamma_neg": 2.0,
        "clip": 0.0,
    }


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"loss": "xl"}, "--loss"),
        ({"loss": "BCE"}, "--loss"),
        ({"clip": 1.0}, "clip"),
        ({"clip": -0.1}, "clip"),
        ({"gamma_neg": -1.0}, "gamma_neg"),
        ({"gamma_pos": float("nan")}, "gamma_pos"),
        ({"loss": "apl", "poly_epsilon": 2.0}, "--poly_epsilon applies to --loss poly1"),
        ({"threshold": 0.0}, "--threshold"),
        ({"threshold": 1.0}, "--threshold"),
    ],
)
def test_config_rejects_invalid_values(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        MultiLabelConfig(output_dir=str(tmp_path), **overrides)


def test_trainer_needs_multilabel_config(tmp_path):
    with pytest.raises(TypeError, match="MultiLabelConfig"):
        MultiLabelTrainer(
            model=tiny_bert(),
            args=TrainingArguments(output_dir=str(tmp_path)),
            train_dataset=multilabel_dataset(8),
            data_collator=collator(),
        )


def test_tune_threshold_with_a_dict_of_eval_sets_is_refused_at_construction(tmp_path):
    dataset = multilabel_dataset(8)
    args = MultiLabelConfig(**one_step_args(str(tmp_path)), tune_threshold=True)
    common = dict(model=tiny_bert(), args=args, train_dataset=dataset, data_collator=collator())
    for eval_dataset in ({"a": dataset, "b": dataset}, None):
        with pytest.raises(ValueError, match="tune_threshold=True needs one eval_dataset"):
            MultiLabelTrainer(**common, eval_dataset=eval_dataset)
    trainer = MultiLabelTrainer(**common, eval_dataset={"a": dataset}, threshold_dataset=dataset)
    assert trainer.threshold_dataset is dataset


def test_tune_threshold_stores_threshold_everywhere(tmp_path):
    dataset = multilabel_dataset(16, seed=1)
    trainer = make_trainer(tmp_path, 8, 1, dataset, loss="bce")
    threshold, f1 = trainer.tune_threshold(dataset)
    assert 0.0 < threshold < 1.0 and 0.0 <= f1 <= 1.0
    assert trainer.args.threshold == threshold
    assert trainer.model.config.threshold == threshold
    assert (
        isinstance(trainer.compute_metrics, MultiLabelMetrics)
        and trainer.compute_metrics.threshold == threshold
    )
    # the chosen threshold is the best of the grid on that data (micro-F1 computed independently here)
    metrics = trainer.evaluate()
    assert metrics["eval_f1_micro"] == pytest.approx(f1)
    assert trainer.compute_metrics.last_scores.shape == (16, NUM_LABELS)
    targets = np.asarray(dataset["labels"], dtype=int)
    for candidate in np.linspace(0.05, 0.95, 19):
        pred = trainer.compute_metrics.last_scores >= candidate
        tp, fp, fn = (
            (pred & (targets == 1)).sum(),
            (pred & (targets == 0)).sum(),
            (~pred & (targets == 1)).sum(),
        )
        assert (2 * tp / max(2 * tp + fp + fn, 1)) <= f1 + 1e-12

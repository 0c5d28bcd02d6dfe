"""--early_stopping_patience: training stops once the validation metric stops improving, also after a resume."""

import json
import shutil

import numpy as np
import pytest
from transformers import EarlyStoppingCallback, TrainerControl, TrainerState, TrainingArguments

from hf_losses import EncouragingSeq2SeqConfig, MultiLabelConfig
from hf_losses.trainers.stopping import evaluations_without_improvement
from tests.test_trainer_library import card_text, multilabel_trainer, run_args, seq2seq_trainer

# every evaluation after the first fails to beat the best by the (huge) threshold: a stop after N + 1 evaluations
NEVER_BETTER = dict(
    max_steps=10,
    eval_strategy="steps",
    eval_steps=1,
    save_steps=1,
    metric_for_best_model="loss",
    early_stopping_threshold=1e9,
)


@pytest.mark.parametrize(
    "values, greater, threshold, expected",
    [
        ([1.0, 2.0, 2.0, 1.5], True, 0.0, 2),  # 2.0 again and 1.5 do not beat 2.0
        ([1.0, 2.0, 2.0, 1.5, 3.0], True, 0.0, 0),
        (
            [1.0, 1.05, 1.2],
            True,
            0.1,
            0,
        ),  # 1.05 is within the threshold but becomes the best; 1.2 beats it by 0.15
        ([1.0, 1.05, 1.1], True, 0.1, 2),
        ([3.0, 2.0, 2.5, 2.1], False, 0.0, 2),  # lower is better (a loss)
        ([], True, 0.0, 0),
    ],
)
def test_the_count_is_rebuilt_from_hand_computed_histories(values, greater, threshold, expected):
    assert evaluations_without_improvement(values, greater, threshold) == expected


@pytest.mark.parametrize("greater", [True, False])
def test_the_rebuilt_count_equals_the_stock_callback_s_count_on_random_histories(greater):
    """Drive transformers' EarlyStoppingCallback as the Trainer does (on_evaluate, then the best metric update)."""
    args = TrainingArguments(
        output_dir="unused", metric_for_best_model="bleu", greater_is_better=greater, eval_strategy="steps"
    )
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = list(np.round(rng.normal(size=rng.integers(1, 12)), 1))  # rounding makes ties
        threshold = float(rng.choice([0.0, 0.2]))
        stock, state = EarlyStoppingCallback(100, threshold), TrainerState()
        for value in values:
            stock.on_evaluate(args, state, TrainerControl(), metrics={"eval_bleu": value})
            if state.best_metric is None or (
                value > state.best_metric if greater else value < state.best_metric
            ):
                state.best_metric = value
        assert (
            evaluations_without_improvement(values, greater, threshold)
            == stock.early_stopping_patience_counter
        )


@pytest.mark.parametrize("make", [seq2seq_trainer, multilabel_trainer])
def test_training_stops_after_patience_evaluations_without_improvement(tmp_path, make):
    trainer = make(tmp_path, **NEVER_BETTER, early_stopping_patience=2)
    output = trainer.train()
    assert trainer.state.global_step == 3  # evaluations at steps 1 (the best), 2 and 3 (no better): stop
    assert output.metrics["train_stopped_early"] == 1 and output.metrics["train_global_step"] == 3
    trainer.save_metrics("train", output.metrics)
    assert json.loads((tmp_path / "all_results.json").read_text())["train_stopped_early"] == 1
    trainer.save_model()
    assert "patience 2 on loss (stopped at step 3)" in card_text(tmp_path)


def test_without_patience_the_same_run_trains_to_the_end(tmp_path):
    trainer = seq2seq_trainer(tmp_path, **{**NEVER_BETTER, "max_steps": 5})
    output = trainer.train()
    assert trainer.state.global_step == 5 and "train_stopped_early" not in output.metrics


def test_a_resumed_run_stops_where_the_uninterrupted_run_stopped(tmp_path):
    whole = seq2seq_trainer(tmp_path / "whole", **NEVER_BETTER, early_stopping_patience=3)
    whole.train()
    assert whole.state.global_step == 4

    seq2seq_trainer(tmp_path / "killed", **NEVER_BETTER, early_stopping_patience=3).train()
    for step in (3, 4):  # as if killed right after step 2's save, one evaluation without improvement counted
        shutil.rmtree(tmp_path / "killed" / f"checkpoint-{step}")
    resumed = seq2seq_trainer(tmp_path / "killed", **NEVER_BETTER, early_stopping_patience=3)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4  # a count restarted at 0 would train on to step 5


def test_a_run_saved_without_early_stopping_continues_with_it(tmp_path):
    """A longer schedule continuing a checkpoint that knew no early stopping (transformers alone: KeyError)."""
    seq2seq_trainer(tmp_path, **{**NEVER_BETTER, "max_steps": 2}).train()
    shutil.rmtree(tmp_path / "checkpoint-2")
    longer = seq2seq_trainer(tmp_path, **NEVER_BETTER, early_stopping_patience=2)
    output = longer.train(resume_from_checkpoint=True)
    # counted from the logged evaluations: 1 (the best), 2, 3 without improvement: stop at step 3
    assert longer.state.global_step == 3 and output.metrics["train_stopped_early"] == 1


def test_a_resumed_run_evaluates_and_saves_at_the_intervals_it_is_given(tmp_path):
    """transformers would keep the checkpoint's intervals (here: evaluate and save every 2 steps)."""
    seq2seq_trainer(tmp_path, **{**NEVER_BETTER, "max_steps": 2, "eval_steps": 2, "save_steps": 2}).train()
    longer = seq2seq_trainer(tmp_path, **{**NEVER_BETTER, "max_steps": 5, "early_stopping_threshold": 0.0})
    longer.train(resume_from_checkpoint=True)
    evaluated = [e["step"] for e in longer.state.log_history if "eval_loss" in e]
    assert evaluated == [2, 3, 4, 5]
    assert sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*")) == [2, 3, 4, 5]


@pytest.mark.parametrize("config", [EncouragingSeq2SeqConfig, MultiLabelConfig])
@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(metric_for_best_model=None), "--early_stopping_patience needs --metric_for_best_model"),
        (dict(eval_strategy="no"), "--early_stopping_patience needs evaluations during training"),
        (dict(early_stopping_patience=-1), "--early_stopping_patience must be >= 0"),
        (dict(early_stopping_threshold=-0.1), "--early_stopping_threshold must be >= 0"),
        (
            dict(average_checkpoints=3, save_total_limit=3),
            "the Trainer also keeps the best checkpoint.*--save_total_limit >= 4",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_at_construction(tmp_path, config, settings, message):
    with pytest.raises(ValueError, match=message):
        config(**run_args(tmp_path, **{**NEVER_BETTER, "early_stopping_patience": 2, **settings}))


def test_averaging_after_early_stopping_takes_the_last_checkpoints_before_the_stop(tmp_path):
    # "best" = the highest validation loss, the first one as training lowers it: the Trainer keeps checkpoint-1
    settings = dict(
        early_stopping_patience=3, average_checkpoints=2, save_total_limit=3, greater_is_better=True
    )
    trainer = seq2seq_trainer(tmp_path, **NEVER_BETTER, **settings)
    output = trainer.train()
    assert trainer.state.global_step == 4 and trainer.state.best_global_step == 1
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-3",
        "checkpoint-4",
    ]
    assert output.metrics["train_averaged_checkpoint_steps"] == "3,4"  # the last two, not the kept best

"""Early stopping: training ends once the validation metric has not improved for N evaluations in a row.

    stop after evaluation t  if  none of evaluations t-N+1..t beat the best before it by more than the threshold

transformers' ``EarlyStoppingCallback`` does the counting, on ``--metric_for_best_model``; here it is a field of
the trainer configs (``--early_stopping_patience N``), checked before training, and its count survives a killed
run: on resume it is rebuilt from the evaluations in the checkpoint's log (transformers itself restores callback
state only with ``--restore_callback_states_from_checkpoint``), also when the checkpoint was saved without early
stopping (a run continued on a longer schedule). With ``--average_checkpoints`` the final model is
then the mean of the last checkpoints saved before the stop, as fairseq's ``--patience`` and averaging do.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field

from transformers import EarlyStoppingCallback

logger = logging.getLogger(__name__)


@dataclass
class EarlyStoppingArguments:
    """The ``--early_stopping_patience`` fields shared by the trainer configs (a dataclass mixin)."""

    early_stopping_patience: int = field(
        default=0,
        metadata={
            "help": "Stop training when --metric_for_best_model has not improved for N evaluations in a row "
            "(0: off). Needs --metric_for_best_model and evaluations during training (--eval_strategy)."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={"help": "How much the metric must beat its best by to count as an improvement."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_early_stopping(self)


def check_early_stopping(args) -> None:
    """ValueError unless the early-stopping fields can work with the rest of ``args``."""
    patience = args.early_stopping_patience
    if patience < 0:
        raise ValueError(f"--early_stopping_patience must be >= 0 (0: off); got {patience}")
    if args.early_stopping_threshold < 0:
        raise ValueError(f"--early_stopping_threshold must be >= 0; got {args.early_stopping_threshold}")
    if patience == 0:
        return
    if args.metric_for_best_model is None:
        raise ValueError(
            "--early_stopping_patience needs --metric_for_best_model: the validation metric it watches "
            "(e.g. bleu, f1_macro, loss)"
        )
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
        raise ValueError(
            "--early_stopping_patience needs evaluations during training: set --eval_strategy steps or epoch"
        )


def evaluations_without_improvement(values: list[float], greater_is_better: bool, threshold: float) -> int:
    """How many of the last evaluations did not beat the best before them by more than ``threshold``: the count
    ``EarlyStoppingCallback`` holds after seeing ``values`` (and the Trainer updating its best metric)."""
    better = operator.gt if greater_is_better else operator.lt
    best, count = None, 0
    for value in values:
        count = 0 if best is None or (better(value, best) and abs(value - best) > threshold) else count + 1
        if best is None or better(value, best):
            best = value
    return count


class ResumableEarlyStopping(EarlyStoppingCallback):
    """``EarlyStoppingCallback`` whose count is rebuilt from the logged evaluations when training (re)starts."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        # a checkpoint saved without early stopping has no entry for it, where the Trainer's saves write
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        key = args.metric_for_best_model
        key = key if key.startswith("eval_") else f"eval_{key}"
        values = [entry[key] for entry in state.log_history if key in entry]
        self.early_stopping_patience_counter = evaluations_without_improvement(
            values, args.greater_is_better, self.early_stopping_threshold
        )

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if (
            control.should_training_stop
            and self.early_stopping_patience_counter >= self.early_stopping_patience
        ):
            logger.info(
                "Early stopping at step %d: %s has not improved on %s for %d evaluations",
                state.global_step,
                args.metric_for_best_model,
                state.best_metric,
                self.early_stopping_patience_counter,
            )

"""Which weights a run ends with: early stopping ends training, checkpoint averaging sets the final weights.

    final model = mean of the last N complete checkpoints (``--average_checkpoints N``), saved before any stop

``FinalModelMixin`` goes on any transformers ``Trainer`` subclass whose config has the
``CheckpointAveragingArguments`` and ``EarlyStoppingArguments`` fields (the library's trainers and TRL's
``SFTTrainer`` alike). ``train(resume_from_checkpoint=True)`` resumes from the last *complete* checkpoint, so a
run killed during a save resumes, stops and averages as the uninterrupted run would. A resumed run logs,
evaluates and saves every ``logging_steps``/``eval_steps``/``save_steps`` of its own arguments (transformers
keeps the checkpoint's, with a warning), so a run continued on a longer schedule evaluates as it is told.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from .averaging import check_averaging, checkpoint_step, last_checkpoints, load_mean_into, mean_weights
from .checkpoints import last_complete_checkpoint
from .stopping import ResumableEarlyStopping

logger = logging.getLogger(__name__)


class FinalModelMixin:
    """Early stopping (``args.early_stopping_patience``) and checkpoint averaging (``args.average_checkpoints``)
    for a ``Trainer`` subclass; both are recorded in the train metrics (``all_results.json``)."""

    config_class: ClassVar[type]  # the trainer's config: a TrainingArguments subclass with these fields

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, self.config_class):
            raise TypeError(f"{type(self).__name__} needs args={self.config_class.__name__}(...)")
        self.add_callback(_StepIntervalsOfTheseArguments())
        self.averaged_checkpoints: list[str] = []  # the checkpoints the final model is the mean of
        if self.args.average_checkpoints and hasattr(
            self.accelerator.unwrap_model(self.model), "peft_config"
        ):
            raise ValueError(
                "--average_checkpoints averages whole models, but a PEFT model's checkpoints hold only its "
                "adapter (and the mean of LoRA factors is not the mean of their product): set it to 0"
            )
        if self.args.average_checkpoints:
            self.add_callback(_CheckAveragingOnTrainBegin())
        if self.args.early_stopping_patience and not any(
            isinstance(cb, EarlyStoppingCallback) for cb in self.callback_handler.callbacks
        ):
            self.add_callback(
                ResumableEarlyStopping(self.args.early_stopping_patience, self.args.early_stopping_threshold)
            )

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``resume_from_checkpoint=True`` picks the last *complete* checkpoint in output_dir."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output directory ({self.args.output_dir})")
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if self.args.early_stopping_patience:
            output.metrics["train_global_step"] = self.state.global_step
            output.metrics["train_stopped_early"] = int(self.stopped_early())
        if self.args.average_checkpoints:
            self.average_last_checkpoints()
            output.metrics["train_averaged_checkpoints"] = len(self.averaged_checkpoints)
            output.metrics["train_averaged_checkpoint_steps"] = ",".join(
                map(str, self.averaged_checkpoint_steps())
            )
        return output

    def average_last_checkpoints(self) -> None:
        """Make the model the element-wise mean of the last ``args.average_checkpoints`` saved checkpoints.

        The main process reads the checkpoints (they are where it saved them) and sends the mean to the others.
        """
        self.averaged_checkpoints = last_checkpoints(self.args.output_dir, self.args.average_checkpoints)
        model = self.accelerator.unwrap_model(self.model)
        if self.accelerator.is_main_process:
            load_mean_into(model, mean_weights(self.averaged_checkpoints))
        if self.accelerator.num_processes > 1:
            for tensor in model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        logger.info("Final model: the mean of %s", ", ".join(self.averaged_checkpoints))

    def stopped_early(self) -> bool:
        """Whether early stopping ended training before its last step."""
        return bool(self.args.early_stopping_patience) and 0 < self.state.global_step < self.state.max_steps

    def averaged_checkpoint_steps(self) -> list[int]:
        return [checkpoint_step(p) for p in self.averaged_checkpoints]

    def final_model_hyperparameters(self) -> dict[str, str]:
        """The model card's lines for early stopping and averaging (none when both are off)."""
        values = {}
        if self.args.early_stopping_patience:
            values["early_stopping"] = (
                f"patience {self.args.early_stopping_patience} on {self.args.metric_for_best_model}"
                + (" (stopped at step " + str(self.state.global_step) + ")" if self.stopped_early() else "")
            )
        if self.averaged_checkpoints:
            steps = ", ".join(map(str, self.averaged_checkpoint_steps()))
            values["average_checkpoints"] = (
                f"{len(self.averaged_checkpoints)} (mean of the checkpoints at steps {steps})"
            )
        return values


class _StepIntervalsOfTheseArguments(TrainerCallback):
    """On (re)start, take the logging, evaluation and save intervals from the arguments, not the checkpoint."""

    def on_train_begin(self, args, state, control, **kwargs):
        before = (state.logging_steps, state.eval_steps, state.save_steps)
        state.compute_steps(args, state.max_steps)
        if (state.logging_steps, state.eval_steps, state.save_steps) != before:
            logger.info(
                "Resumed with the step intervals of these arguments: logging every %s, evaluating every %s, "
                "saving every %s steps (the checkpoint had %s)",
                state.logging_steps,
                state.eval_steps,
                state.save_steps,
                before,
            )


class _CheckAveragingOnTrainBegin(TrainerCallback):
    """Refuse, before the first step, a run too short to save the checkpoints ``--average_checkpoints`` needs."""

    def on_train_begin(self, args, state, control, **kwargs):
        check_averaging(args, state.max_steps)

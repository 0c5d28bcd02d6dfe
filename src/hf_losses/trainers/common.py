"""What both trainers share: exact loss normalisation, statistics, the non-finite guard, the card hooks.

Normalisation: ``compute_loss`` returns ``sum of item losses / N * P`` where N is the number of loss items
(non-ignored target tokens, or label entries) in the whole optimiser step, over all gradient-accumulation
micro-batches and all P processes. DDP averages gradients over P, and accumulation adds the micro-batches,
so one step follows the gradient of the exact mean over the global batch, whatever the split.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..cards import (
    DatasetInfo,
    split_for_card,
    trainer_model_card,
    training_hyperparameters,
    write_model_card,
)
from .base_config import label_names_refusal
from .evaluation_rows import real_examples
from .final_model import FinalModelMixin

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class LossTrainerMixin(FinalModelMixin):
    """Mixin for a transformers ``Trainer`` subclass that computes its own summed loss.

    It counts the loss items of each optimiser step over all processes (``get_batch_samples``), divides the
    summed loss by that count (``compute_loss``), stops at a non-finite loss (``training_step``), logs the
    per-item means of the statistics (``log``, ``evaluation_loop``) and writes the model card on every save.

    A subclass sets ``config_class``, ``card_task`` ("translation" or "classification", the card template)
    and ``nonfinite_hint``, and implements or overrides these hooks:

    - ``loss_terms(outputs, labels) -> (loss_sum, num_items, stats)`` (required): ``stats`` maps names to
      detached sums over the items, logged as per-item means;
    - ``count_items(labels)`` (required): the loss items of a batch;
    - ``model_inputs(model, inputs, labels)``: the forward arguments; ``run_model(model, inputs, labels)``:
      the outputs ``loss_terms`` reads (e.g. without the LM head);
    - ``record_evaluation(outputs, labels)`` and ``evaluation_metrics()``: task statistics accumulated over an
      evaluation of real examples (see trainers/evaluation_rows.py), reported with its metrics;
    - ``card_extra()``, ``card_hyperparameters()``, ``card_metrics()``: what the model card says beyond the
      common facts (assembled by ``hf_losses.cards.trainer_model_card``).

    Early stopping and checkpoint averaging come from ``FinalModelMixin``.
    """

    # The loss is already divided by the step's global item count: Trainer must not divide it again.
    loss_is_scaled_for_ga = True
    card_task: ClassVar[str]  # the card template: "translation" or "classification"
    card_tags: ClassVar[list[str]] = ["hf_losses"]
    nonfinite_hint: ClassVar[str] = "lower the learning rate or check the data"

    def __init__(self, *args, dataset_info: DatasetInfo | None = None, **kwargs):
        """``dataset_info``: what the model card says about the data (default: the training set's own ``info``)."""
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                f"{type(self).__name__} computes its loss from args (loss=...), so compute_loss_func is not "
                "used; pass the loss settings in the config, or use the stock Trainer with "
                "compute_loss_func=hf_losses.trainer_loss_func(...)"
            )
        super().__init__(*args, **kwargs)
        refusal = label_names_refusal(
            self.args.label_names,
            "class names go into the model config's id2label, or --class_names in the scripts",
        )
        if refusal:
            raise ValueError(f"label_names={self.args.label_names} {refusal}")
        if self.args.dataloader_pin_memory and self.args.device.type == "cpu":
            self.args.dataloader_pin_memory = False  # pinning needs an accelerator: on the CPU it only warns
        self.loss_fn = self.args.build_loss(reduction="sum")
        self.dataset_info = dataset_info or DatasetInfo.from_dataset(self.train_dataset)
        self.split_metrics: dict[str, dict[str, Any]] = {}  # metric prefix -> metrics of the last evaluation
        self._card_overrides: dict[str, Any] = {}

    def loss_terms(
        self, outputs, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- model card --------------------------------------------------------------------------------
    def card_extra(self) -> dict[str, Any]:
        """Task-specific card fields (threshold, label names, ...)."""
        return {}

    def card_hyperparameters(self) -> dict[str, Any]:
        return {**training_hyperparameters(self.args), **self.final_model_hyperparameters()}

    def card_metrics(self) -> tuple[str | None, dict[str, Any]]:
        """(split, metrics) for the card: the test split if evaluated, else validation, else any other."""
        return split_for_card(self.split_metrics)

    def model_card(self):
        """The ``huggingface_hub.ModelCard`` for the current state of training."""
        split, metrics = self.card_metrics()
        return trainer_model_card(
            self.card_task,
            args=self.args,
            model=self.accelerator.unwrap_model(self.model),
            dataset_info=self.dataset_info,
            split=split,
            metrics=metrics,
            hyperparameters=self.card_hyperparameters(),
            extra=self.card_extra(),
            tags=self.card_tags,
            stock_arguments=self._card_overrides,
        )

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write our card to output_dir; the stock arguments are kept for every later card of this trainer."""
        given = dict(
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            finetuned_from=finetuned_from,
            tasks=tasks,
            dataset_tags=dataset_tags,
            dataset=dataset,
            dataset_args=dataset_args,
        )
        self._card_overrides.update({k: v for k, v in given.items() if v is not None})
        if self.args.should_save:
            write_model_card(self.model_card(), self.args.output_dir)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _stat_sums(self, split: str) -> dict[str, torch.Tensor]:
        if not hasattr(self, "_stats"):
            self._stats = {"train": defaultdict(float), "eval": defaultdict(float)}
        return self._stats[split]

    def _record(self, split: str, num_items: torch.Tensor, loss_sum: torch.Tensor, stats: dict) -> None:
        sums = self._stat_sums(split)
        sums["items"] = sums["items"] + num_items.detach().double()
        sums["loss"] = sums["loss"] + loss_sum.detach().double()
        for name, value in stats.items():
            sums[name] = sums[name] + value.detach().double()

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over all processes (collective)."""
        if self.accelerator.num_processes > 1:
            return self.accelerator.reduce(tensor, reduction="sum")
        return tensor

    def _pop_means(self, split: str) -> dict[str, float]:
        """Per-item means of the recorded sums over all processes since the last call (collective)."""
        sums = self._stat_sums(split)
        if not sums:
            return {}
        names = sorted(sums)
        device = self.args.device
        packed = torch.stack([torch.as_tensor(sums[n], dtype=torch.float64, device=device) for n in names])
        totals = dict(zip(names, self._reduce_sum(packed).tolist(), strict=True))
        sums.clear()
        items = totals.pop("items")
        return {name: value / items for name, value in totals.items()} if items > 0 else {}

    # -- Trainer hooks -----------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator: Iterator, num_batches: int, device: torch.device):
        """Fetch one optimiser step of micro-batches and count their loss items over all processes."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        count = torch.zeros((), dtype=torch.long, device=device)
        for batch in batches:
            if "labels" in batch:
                count = count + self.count_items(batch["labels"]).to(device)
        return batches, self._reduce_sum(count)

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None
    ) -> torch.Tensor:
        """The stock step, stopped (on every process) as soon as any process's loss is NaN or infinite.

        The check costs one host sync per micro-batch; it runs before the optimiser step, so no update
        and no checkpoint ever contains the bad step.
        """
        loss = super().training_step(model, inputs, num_items_in_batch)
        bad = self._reduce_sum((~torch.isfinite(loss)).float())
        if bad.item() > 0:
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}); "
                f"stopped before the optimizer update, so no checkpoint holds it: {self.nonfinite_hint}"
            )
        return loss

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Training: summed loss / global item count * processes. Evaluation: mean over this batch."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = self.run_model(model, inputs, labels)
        if model.training and num_items_in_batch is not None:
            loss_sum, num_items, stats = self.loss_terms(outputs, labels)
            divisor = torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
            loss = loss_sum / divisor * self.accelerator.num_processes
            self._record("train", num_items, loss_sum, stats)
        else:
            # In evaluation count only real examples, as the stock metrics do (predictions keep every row).
            kept_outputs, kept_labels = (
                (outputs, labels) if model.training else real_examples(self.accelerator, outputs, labels)
            )
            loss_sum, num_items, stats = self.loss_terms(kept_outputs, kept_labels)
            if not model.training:
                self.record_evaluation(kept_outputs, kept_labels)
            loss = loss_sum / num_items.clamp(min=1)
            self._record("eval", num_items, loss_sum, stats)
        return (loss, outputs) if return_outputs else loss

    def run_model(self, model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor):
        """The model's outputs that ``loss_terms`` turns into the loss (`inputs` without the labels)."""
        return model(**self.model_inputs(model, inputs, labels))

    def record_evaluation(self, outputs, labels: torch.Tensor) -> None:
        """Accumulate task statistics of one evaluation batch of real examples (see ``evaluation_metrics``)."""

    def evaluation_metrics(self) -> dict[str, float]:
        """Metrics from what ``record_evaluation`` accumulated over the whole evaluation set (collective)."""
        return {}

    def model_inputs(self, model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
        """The forward arguments (labels are kept out so the model computes no loss of its own)."""
        return inputs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the per-item means of our extra statistics to the training logs."""
        if "loss" in logs:
            logs.update({k: round(v, 6) for k, v in self._pop_means("train").items() if k != "loss"})
        super().log(logs, start_time)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Run the stock loop, then report exact per-item means (loss and statistics) over the whole set."""
        self._stat_sums("eval").clear()
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        extra = {**self._pop_means("eval"), **self.evaluation_metrics()}
        for name, value in extra.items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        if metric_key_prefix != "tune":
            self.split_metrics[metric_key_prefix] = dict(output.metrics)
        return output

    def _finalize_training(self, *args, **kwargs):
        """Make the final ``train_loss`` a mean over all processes (collective).

        Trainer adds the loss of the steps since the last log from this process alone; each process's share is
        ``its loss sum / global item count * processes``, so the mean over processes is the exact value.
        """
        if self.accelerator.num_processes > 1 and torch.is_tensor(getattr(self, "_tr_loss", None)):
            self._tr_loss = self.accelerator.reduce(self._tr_loss.detach().clone(), reduction="mean")
        return super()._finalize_training(*args, **kwargs)

    def _issue_warnings_after_load(self, load_result) -> None:
        """The stock warnings on resume, without the keys no checkpoint holds: weights tied to a saved one
        (Marian's ``embed_tokens`` and ``lm_head`` are the shared embedding) and ones the model never saves
        (sinusoidal positions). Any other missing key is still reported."""
        model = self.accelerator.unwrap_model(self.model)
        missing = set(load_result.missing_keys)
        tied = getattr(model, "all_tied_weights_keys", None) or {}
        never_saved = {target for target, source in tied.items() if source not in missing}
        never_saved |= set(getattr(model, "_keys_to_ignore_on_save", None) or ())
        if missing & never_saved:
            model.tie_weights()
        real = [key for key in load_result.missing_keys if key not in never_saved]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=real))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save as usual, then write the current model card next to the weights."""
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            write_model_card(
                self.model_card(), output_dir if output_dir is not None else self.args.output_dir
            )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """A checkpoint push uploads output_dir (not the checkpoint): put the current card there first."""
        if self.args.should_save:
            write_model_card(self.model_card(), self.args.output_dir)
        super()._push_from_checkpoint(checkpoint_folder)

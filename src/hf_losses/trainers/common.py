"""What both trainers share: exact loss normalisation, per-token logging, and the model card on every save.

Normalisation: ``compute_loss`` returns ``sum of item losses / N * P`` where N is the number of loss items
(non-ignored target tokens, or label entries) in the whole optimiser step, over all gradient-accumulation
micro-batches and all P processes. DDP averages gradients over P, and accumulation adds the micro-batches,
so one step follows the gradient of the exact mean over the global batch, whatever the split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cards import render_model_card, write_model_card


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class OmitSecretsWhenPickled:
    """Mixin for ``TrainingArguments`` subclasses: a pickled copy carries no Hub token.

    ``Trainer`` writes ``torch.save(self.args)`` (training_args.bin) into output_dir and every checkpoint,
    and the output folder is what gets pushed to the Hub; the stock object would store ``--hub_token`` in
    clear there. Every ``*_token`` field is pickled as None (``to_dict`` already masks the same fields);
    the live object keeps its token for pushing.
    """

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in state:
            if key.endswith("_token"):
                state[key] = None
        return state


class LossTrainerMixin:
    """Mixin for a transformers ``Trainer`` subclass that computes its own summed loss.

    Subclasses implement ``loss_terms(outputs, labels) -> (loss_sum, num_items, stats)`` where ``stats`` maps
    names to detached sums over the items (logged as per-item means), and ``count_items(labels)``.
    """

    # The loss is already divided by the step's global item count: Trainer must not divide it again.
    loss_is_scaled_for_ga = True
    # Template name in model_cards/ ("translation" or "classification").
    card_task: str = ""

    def __init__(self, *args, card_info: dict | None = None, **kwargs):
        """``card_info``: model_name, base_model, dataset (dict), metrics and extra fields for the model card."""
        super().__init__(*args, **kwargs)
        self.card_info = dict(card_info or {})
        self.last_eval_metrics: dict[str, float] = {}

    def loss_terms(
        self, outputs, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def model_card(self):
        """The ``huggingface_hub.ModelCard`` for the current state of training."""
        info = self.card_info
        return render_model_card(
            self.card_task,
            model_name=info.get("model_name") or self.args.hub_model_id or Path(self.args.output_dir).name,
            base_model=info.get("base_model"),
            dataset=info.get("dataset", {}),
            loss=self.args.loss_settings(),
            hyperparameters=training_hyperparameters(self.args),
            metrics=info.get("metrics") or self.last_eval_metrics,
            extra=info.get("extra"),
        )

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

    def _pop_means(self, split: str) -> dict[str, float]:
        """Per-item means of the recorded sums over all processes since the last call (collective)."""
        sums = self._stat_sums(split)
        if not sums:
            return {}
        names = sorted(sums)
        device = self.args.device
        packed = torch.stack([torch.as_tensor(sums[n], dtype=torch.float64, device=device) for n in names])
        if self.accelerator.num_processes > 1:
            packed = self.accelerator.reduce(packed, reduction="sum")
        totals = dict(zip(names, packed.tolist(), strict=True))
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
        if self.accelerator.num_processes > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        return batches, count

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None
    ) -> torch.Tensor:
        """The stock step, stopped (on every process) as soon as any process's loss is NaN or infinite.

        The check costs one host sync per micro-batch; it runs before the optimiser step, so no update
        and no checkpoint ever contains the bad step.
        """
        loss = super().training_step(model, inputs, num_items_in_batch)
        bad = (~torch.isfinite(loss)).float()
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item() > 0:
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}); "
                "stopped before the optimizer update, so no checkpoint holds it: lower the learning rate, "
                "use --log_end < 1 (cel), or check the data"
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
        outputs = model(**self.model_inputs(model, inputs, labels))
        loss_sum, num_items, stats = self.loss_terms(outputs, labels)
        if model.training and num_items_in_batch is not None:
            divisor = torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
            loss = loss_sum / divisor * self.accelerator.num_processes
            self._record("train", num_items, loss_sum, stats)
        else:
            if not model.training:  # count only real examples, as the stock metrics do
                loss_sum, num_items, stats = self._eval_terms(outputs, labels)
            loss = loss_sum / num_items.clamp(min=1)
            self._record("eval", num_items, loss_sum, stats)
        return (loss, outputs) if return_outputs else loss

    def _eval_terms(self, outputs, labels: torch.Tensor):
        """``loss_terms`` over the rows of an evaluation batch that are real examples (collective).

        With several processes accelerate repeats examples to even out the last evaluation batch;
        ``gather_for_metrics`` drops the repeats from predictions, and this drops them from the loss sums
        in exactly the same way, so evaluation means do not depend on the number of processes.
        """
        keep = self._real_rows(labels.shape[0], labels.device)
        if keep is not None and not bool(keep.all()):
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            outputs, labels = {"logits": logits[keep]}, labels[keep]
        return self.loss_terms(outputs, labels)

    def _real_rows(self, num_rows: int, device: torch.device) -> torch.Tensor | None:
        """Mask of this process's batch rows that ``gather_for_metrics`` keeps; None on a single process."""
        if self.accelerator.num_processes == 1:
            return None
        rank = self.accelerator.process_index
        rows = torch.stack([torch.full((num_rows,), rank), torch.arange(num_rows)], dim=1).to(device)
        rows = self.accelerator.pad_across_processes(rows, dim=0, pad_index=-1)
        kept = self.accelerator.gather_for_metrics(rows)
        keep = torch.zeros(num_rows, dtype=torch.bool, device=device)
        keep[kept[kept[:, 0] == rank, 1]] = True
        return keep

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
        for name, value in self._pop_means("eval").items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        if metric_key_prefix == "eval":
            self.last_eval_metrics = dict(output.metrics)
        return output

    def _finalize_training(self, *args, **kwargs):
        """Make the final ``train_loss`` a mean over all processes (collective).

        Trainer adds the loss of the steps since the last log from this process alone; each process's share is
        ``its loss sum / global item count * processes``, so the mean over processes is the exact value.
        """
        if self.accelerator.num_processes > 1 and torch.is_tensor(getattr(self, "_tr_loss", None)):
            self._tr_loss = self.accelerator.reduce(self._tr_loss.detach().clone(), reduction="mean")
        return super()._finalize_training(*args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save as usual, then write the current model card next to the weights."""
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            write_model_card(
                self.model_card(), output_dir if output_dir is not None else self.args.output_dir
            )

    def create_model_card(self, *args, **kwargs) -> None:
        """``push_to_hub`` calls this: write our card instead of the generic Trainer draft."""
        if self.args.should_save:
            write_model_card(self.model_card(), self.args.output_dir)


def training_hyperparameters(args) -> dict:
    """The training hyperparameters worth a line in a model card."""
    keys = (
        "learning_rate",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "max_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "seed",
        "optim",
        "bf16",
        "fp16",
    )
    values = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    values["total_train_batch_size"] = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    return values

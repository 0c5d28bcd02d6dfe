"""EL/CEL for TRL's ``SFTTrainer``: ``EncouragingSFTConfig`` + ``EncouragingSFTTrainer`` (``pip install hf_losses[trl]``).

TRL 1.16 deprecates ``compute_loss_func`` in ``SFTTrainer`` (it costs an extra forward pass per step) and asks
for a subclass that overrides ``compute_loss``; this is that subclass. TRL prepares the data as usual
(prompt-completion datasets with ``completion_only_loss``, chat templates with ``assistant_only_loss``,
packing, truncation: every token it excludes carries the label -100); the loss is EL/CEL of the next token,
from one forward pass:

- ``fused_lm_head=False``: the model's logits, as TRL's own label-smoothed path forms them;
- ``fused_lm_head=True``: the model runs without its output projection and the loss applies it in chunks,
  so the ``[tokens, V]`` logits are never formed (training only; evaluation uses the logits).

Each optimiser step follows the gradient of the exact mean over the scored tokens of all its micro-batches
(and of all processes, with ``average_tokens_across_devices``, the default). TRL's ``entropy`` and
``mean_token_accuracy`` need the full distribution and are not logged (nor is ``num_tokens``); ``nll_loss``, ``bonus`` and
``bonus_weight`` are, as means over the micro-batches since the last log (TRL's convention).
``--early_stopping_patience`` and ``--average_checkpoints`` work as in the library's trainers (full models;
a PEFT adapter's checkpoints are not averaged). The model card is TRL's, with a section added for the loss
settings and how the final weights were formed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard

try:
    from trl import SFTConfig, SFTTrainer
except ImportError:  # pragma: no cover - exercised with TRL hidden
    raise ImportError("hf_losses.integrations.trl needs TRL: pip install hf_losses[trl]") from None

from ..cards import loss_section
from ..trainers.averaging import CheckpointAveragingArguments
from ..trainers.causal_lm import next_token_labels
from ..trainers.encouraging_config import EncouragingLossArguments
from ..trainers.final_model import FinalModelMixin
from ..trainers.lm_head import lm_head_parameters, run_without_lm_head
from ..trainers.stopping import EarlyStoppingArguments

__all__ = ["EncouragingSFTConfig", "EncouragingSFTTrainer"]


@dataclass
class EncouragingSFTConfig(
    EncouragingLossArguments, CheckpointAveragingArguments, EarlyStoppingArguments, SFTConfig
):
    """TRL's ``SFTConfig`` plus the encouraging-loss settings (``loss``, its knobs, the bonus schedule and
    ``fused_lm_head``; see ``EncouragingLossArguments``), ``early_stopping_patience`` and
    ``average_checkpoints``. ``label_smoothing_factor`` smooths the EL as in the other configs; TRL's
    ``loss_type`` must stay "nll" (the EL replaces it)."""


class EncouragingSFTTrainer(FinalModelMixin, SFTTrainer):
    """``SFTTrainer`` whose loss is EL/CEL (``args.loss``) of the next token, with or without the fused head.

    Example::

        from hf_losses.integrations.trl import EncouragingSFTConfig, EncouragingSFTTrainer

        args = EncouragingSFTConfig(output_dir="out", loss="cel", fused_lm_head=True)
        trainer = EncouragingSFTTrainer(model=model, args=args, train_dataset=prompt_completion_dataset)
        trainer.train()
    """

    _tag_names = ["trl", "sft", "hf_losses"]
    # compute_loss divides by the step's global token count: Trainer must not divide by the accumulation steps.
    loss_is_scaled_for_ga = True
    config_class = EncouragingSFTConfig
    args: EncouragingSFTConfig

    def __init__(self, model, args: EncouragingSFTConfig | None = None, *rest, **kwargs):
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "EncouragingSFTTrainer computes its loss from args (loss=...), so compute_loss_func is not used"
            )
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = EncouragingSFTConfig(f"{name.split('/')[-1] or 'model'}-SFT")
        if not isinstance(args, EncouragingSFTConfig):
            raise TypeError("EncouragingSFTTrainer needs args=EncouragingSFTConfig(...)")
        if args.loss_type != "nll":
            raise ValueError(
                f"loss_type={args.loss_type!r} selects one of TRL's own losses; EncouragingSFTTrainer uses "
                "loss=ce|el|cel: leave loss_type at 'nll'"
            )
        with (
            warnings.catch_warnings()
        ):  # the smoothing goes into our loss, without the extra pass it warns of
            warnings.filterwarnings(
                "ignore", message="`label_smoothing_factor` is deprecated in `SFTTrainer`"
            )
            super().__init__(model, args, *rest, **kwargs)
        self.loss_fn = self.args.build_loss("sum")
        self.linear_loss_fn = None
        if self.args.fused_lm_head:
            self._check_fused_lm_head()
            self.linear_loss_fn = self.args.build_linear_loss("sum")

    def _check_fused_lm_head(self) -> None:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if self.is_fsdp_enabled or is_deepspeed_zero3_enabled():
            raise ValueError(
                "fused_lm_head needs the whole output projection on every process: it does not work with "
                "FSDP or DeepSpeed ZeRO-3 (use DDP or ZeRO-1/2, or fused_lm_head=False)"
            )
        lm_head_parameters(self.model)  # raises for heads the loss cannot apply (soft-capped logits, ...)

    @staticmethod
    def scored_labels(batch: dict[str, Any]) -> torch.Tensor:
        """The target of each position: ``shift_labels`` if the collator made them, else the next label."""
        return batch["shift_labels"] if "shift_labels" in batch else next_token_labels(batch["labels"])

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The step's micro-batches and the number of tokens they score, over all processes."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = torch.zeros((), dtype=torch.long, device=device)
        for batch in batches:
            if "labels" in batch:
                count = count + self.scored_labels(batch).ne(-100).sum().to(device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: summed EL / the step's token count (times the processes, which DDP averages over).
        Evaluation: the mean over the batch. One forward pass either way."""
        mode = "train" if self.model.training else "eval"
        targets = self.scored_labels(inputs)
        inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
        inputs["use_cache"] = False
        weight = self.args.bonus_weight_at(self.state.global_step, max(self.state.max_steps or 0, 0))
        if self.linear_loss_fn is not None and model.training:
            outputs = run_without_lm_head(model, **inputs)
            hidden, head_weight, bias = outputs
            self.linear_loss_fn.bonus_weight = weight
            out = self.linear_loss_fn(hidden, head_weight, targets, bias=bias, return_stats=True)
        else:
            outputs = model(**inputs)
            self.loss_fn.bonus_weight = weight
            out = self.loss_fn(outputs.logits, targets, return_stats=True)
        if model.training and num_items_in_batch is not None:
            loss = out.loss / torch.as_tensor(num_items_in_batch, device=out.loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        else:  # evaluation: the mean over this batch
            loss = out.loss / out.num_tokens.clamp(min=1)
        self._log_terms(mode, out, weight)
        return (loss, outputs) if return_outputs else loss

    def train(self, *args, **kwargs):
        """Train as ``SFTTrainer`` does, then rewrite the card for the final weights (TRL writes it only at
        checkpoints, before any averaging)."""
        output = super().train(*args, **kwargs)
        self.create_model_card(
            model_name=(self.args.hub_model_id or self.args.output_dir).rstrip("/").split("/")[-1]
        )
        return output

    def create_model_card(self, model_name=None, dataset_name=None, tags=None) -> None:
        """TRL's card (written at each checkpoint and on push), plus the loss settings and how the final weights
        were formed (early stopping, checkpoint averaging)."""
        super().create_model_card(model_name, dataset_name, tags)
        if not self.is_world_process_zero():
            return
        path = Path(self.args.output_dir) / "README.md"
        card = ModelCard.load(path)
        section = "\n" + loss_section(self.args, self.final_model_hyperparameters())
        at = card.text.find("\n## Citations")  # TRL's last section: ours goes before it
        at = len(card.text.rstrip("\n")) if at < 0 else at
        card.text = card.text[:at].rstrip("\n") + "\n" + section + card.text[at:]
        card.save(path)

    def _log_terms(self, mode: str, out, weight: float) -> None:
        """Per-token means of this micro-batch over all processes, for TRL's ``log``."""
        sums = torch.stack([out.nll.detach(), out.bonus.detach(), out.num_tokens.to(out.nll.dtype)])
        nll, bonus, tokens = self.accelerator.gather_for_metrics(sums.unsqueeze(0)).sum(0).tolist()
        if tokens > 0:
            self._metrics[mode]["nll_loss"].append(nll / tokens)
            self._metrics[mode]["bonus"].append(bonus / tokens)
        if mode == "train":
            self._metrics[mode]["bonus_weight"].append(weight)

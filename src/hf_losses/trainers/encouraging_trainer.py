"""What the EL/CEL trainers share: the loss from hidden states or logits, the bonus schedule, calibration.

A subclass says which labels each output position is scored against (``scored_labels``: the labels
themselves for a seq2seq decoder, the next token for a causal LM) and checks its model (``check_model``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..metrics.calibration import TokenCalibration, token_calibration_counts
from .common import LossTrainerMixin
from .encouraging_config import EncouragingLossArguments
from .lm_head import LMHeadInputs, lm_head_parameters, run_without_lm_head
from .outputs import logits_of


class EncouragingTrainerMixin(LossTrainerMixin):
    """Token-level EL/CEL for a transformers ``Trainer`` subclass (see :class:`LossTrainerMixin`).

    Logs ``nll_loss`` (plain per-token -log p_y), ``bonus`` (mean b(p_y)) and ``bonus_weight`` (the weight of
    the last step, which ``bonus_schedule`` ramps up) beside ``loss``; evaluation adds ``ece`` and ``mean_p_y``.
    """

    args: EncouragingLossArguments
    nonfinite_hint = "lower the learning rate, use --loss cel with --log_end < 1, or check the data"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_model()
        if self.args.fused_lm_head:
            self._check_fused_lm_head()
            self.linear_loss_fn = self.args.build_linear_loss("sum")

    def check_model(self) -> None:
        """Refuse, at construction, a model this trainer cannot train (a one-line ValueError)."""

    def scored_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The target of each output position (-100: not scored)."""
        return labels

    def _check_fused_lm_head(self) -> None:
        """One-line errors for setups where the loss cannot apply the model's output projection itself."""
        from transformers.integrations import is_deepspeed_zero3_enabled

        if self.is_fsdp_enabled or is_deepspeed_zero3_enabled():
            raise ValueError(
                "--fused_lm_head needs the whole output projection on every process: it does not work with "
                "FSDP or DeepSpeed ZeRO-3 (use DDP or ZeRO-1/2, or drop --fused_lm_head)"
            )
        lm_head_parameters(self.model)  # raises, naming the flag and the supported models

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        return self.scored_labels(labels).ne(-100).sum()

    def run_model(self, model, inputs, labels):
        """With ``fused_lm_head`` in training: the last hidden states and the head, not the logits."""
        inputs = self.model_inputs(model, inputs, labels)
        if self.args.fused_lm_head and model.training:
            return run_without_lm_head(model, **inputs)
        return model(**inputs)

    def set_bonus_weight(self) -> float:
        """The scheduled bonus weight of the current optimizer step (from ``state.global_step``, so a resumed
        run continues the ramp where it was), set on the loss Modules."""
        max_steps = self.state.max_steps or self.args.max_steps
        weight = self.args.bonus_weight_at(self.state.global_step, max(max_steps, 0))
        for fn in (self.loss_fn, getattr(self, "linear_loss_fn", None)):
            if fn is not None:
                fn.bonus_weight = weight
        return weight

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and getattr(self, "_train_bonus_weight", None) is not None:
            logs["bonus_weight"] = self._train_bonus_weight
        super().log(logs, start_time)

    def loss_terms(self, outputs, labels):
        weight = self.set_bonus_weight()
        if self.model.training:
            self._train_bonus_weight = weight
        labels = self.scored_labels(labels)
        if isinstance(outputs, LMHeadInputs):
            hidden, weight, bias = outputs
            out = self.linear_loss_fn(hidden, weight, labels, bias=bias, return_stats=True)
        else:
            logits = logits_of(outputs)
            out = self.loss_fn(logits, labels, return_stats=True)
        return out.loss, out.num_tokens, {"nll_loss": out.nll, "bonus": out.bonus}

    def record_evaluation(self, outputs, labels):
        logits = logits_of(outputs)
        counts = token_calibration_counts(logits, self.scored_labels(labels))
        self._calibration = (
            counts if getattr(self, "_calibration", None) is None else self._calibration.merge(counts)
        )

    def evaluation_metrics(self) -> dict[str, float]:
        """``ece`` (top-1 token probability vs accuracy, 15 bins) and ``mean_p_y``, teacher-forced, exact over
        all processes; the full counts stay in ``self.calibration`` for reliability diagrams."""
        local = getattr(self, "_calibration", None) or TokenCalibration.zeros(device=self.args.device)
        self._calibration = None
        self.calibration = TokenCalibration.unflatten(self._reduce_sum(local.flatten().to(self.args.device)))
        return self.calibration.metrics() if self.calibration.num_tokens else {}

    def card_hyperparameters(self) -> dict[str, Any]:
        """Adds the decoding settings when evaluation generates (``predict_with_generate``)."""
        values = super().card_hyperparameters()
        if getattr(self.args, "predict_with_generate", False):
            generation = getattr(self.accelerator.unwrap_model(self.model), "generation_config", None)
            values["generation_num_beams"] = self.args.generation_num_beams or getattr(
                generation, "num_beams", None
            )
            values["generation_max_length"] = self.args.generation_max_length
        return values

    def card_metrics(self) -> tuple[str | None, dict[str, Any]]:
        """Adds the sacreBLEU signatures of ``compute_metrics`` (``Seq2SeqMetrics``) to the scores they sign."""
        split, metrics = super().card_metrics()
        signatures = getattr(self.compute_metrics, "signatures", None)
        if metrics and signatures:
            metrics = {**metrics, **signatures}
        return split, metrics

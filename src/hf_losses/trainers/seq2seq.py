"""EncouragingSeq2SeqConfig + EncouragingSeq2SeqTrainer: token-level EL/CEL (or CE) for sequence-to-sequence models."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from ..losses import encouraging_loss_with_stats
from ..losses._common import check_non_negative, check_range
from .common import LossTrainerMixin, OmitSecretsWhenPickled

SEQ2SEQ_LOSSES = ("ce", "el", "cel")


@dataclass
class EncouragingSeq2SeqConfig(OmitSecretsWhenPickled, Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus the encouraging-loss settings (exposed as CLI flags by HfArgumentParser).

    ``label_smoothing_factor`` smooths the NLL and the bonus alike, as in the paper's translation criterion.
    """

    loss: str = field(
        default="cel",
        metadata={
            "help": "ce: cross-entropy; el: full bonus log(1-p) (log_end=1); cel: conservative bonus (log_end)."
        },
    )
    log_end: float = field(
        default=0.5,
        metadata={"help": "LE in (0, 1]: where the CEL bonus turns linear (ignored by el and ce)."},
    )
    bonus_weight: float = field(
        default=1.0, metadata={"help": "rho >= 0: weight of the bonus (0 is cross-entropy)."}
    )

    def __post_init__(self):
        if self.loss not in SEQ2SEQ_LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(SEQ2SEQ_LOSSES)}; got {self.loss!r}")
        check_range("--log_end", self.log_end, 0.0, 1.0, low_open=True, high_open=False)
        check_non_negative("--bonus_weight", self.bonus_weight)
        check_range(
            "--label_smoothing_factor", self.label_smoothing_factor, 0.0, 1.0, low_open=False, high_open=True
        )
        super().__post_init__()

    @property
    def effective_log_end(self) -> float:
        """The LE the loss uses: 1 for "el" (and irrelevant for "ce"), ``log_end`` for "cel"."""
        return self.log_end if self.loss == "cel" else 1.0

    @property
    def effective_bonus_weight(self) -> float:
        """rho as used: 0 for "ce"."""
        return 0.0 if self.loss == "ce" else self.bonus_weight

    def loss_settings(self) -> dict[str, float | str]:
        """The resolved loss settings, as recorded in model cards."""
        return {
            "loss": self.loss,
            "log_end": self.effective_log_end,
            "bonus_weight": self.effective_bonus_weight,
            "label_smoothing_factor": self.label_smoothing_factor,
        }


class EncouragingSeq2SeqTrainer(LossTrainerMixin, Seq2SeqTrainer):
    """Seq2SeqTrainer whose loss is the fused encouraging loss, normalised exactly by the global token count.

    Logs ``nll_loss`` (plain per-token -log p_y) and ``bonus`` (mean b(p_y)) beside ``loss``: the EL value
    can be negative and is not comparable to cross-entropy. In evaluation ``eval_loss``, ``eval_nll_loss``
    and ``eval_bonus`` are exact per-token means over the evaluation set; with ``predict_with_generate`` they
    are still teacher-forced (computed from the same forward pass the stock trainer uses for its loss).
    """

    args: EncouragingSeq2SeqConfig
    card_task = "translation"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, EncouragingSeq2SeqConfig):
            raise TypeError("EncouragingSeq2SeqTrainer needs args=EncouragingSeq2SeqConfig(...)")
        # Seq2SeqTrainer's generation path scores the teacher-forced outputs with `label_smoother`.
        self.label_smoother = self._teacher_forced_loss

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.ne(-100).sum()

    def model_inputs(self, model, inputs, labels):
        if "decoder_input_ids" not in inputs and "decoder_inputs_embeds" not in inputs:
            inner = self.accelerator.unwrap_model(model)
            if hasattr(inner, "prepare_decoder_input_ids_from_labels"):
                inputs["decoder_input_ids"] = inner.prepare_decoder_input_ids_from_labels(labels=labels)
        return inputs

    def loss_terms(self, outputs, labels):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        out = encouraging_loss_with_stats(
            logits,
            labels,
            log_end=self.args.effective_log_end,
            label_smoothing=self.args.label_smoothing_factor,
            bonus_weight=self.args.effective_bonus_weight,
            ignore_index=-100,
            reduction="sum",
        )
        return out.loss, out.num_tokens, {"nll_loss": out.nll, "bonus": out.bonus}

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Also drop, from generated predictions, the examples accelerate repeats to even out the last batch.

        ``Seq2SeqTrainer.evaluate``/``predict`` gather generations with plain ``gather`` (so that
        ``num_return_sequences > 1`` keeps every sequence), which keeps those repeats: with several processes
        BLEU, chrF and the prediction files would count some examples twice. With one sequence per example
        ``gather_for_metrics`` is exact, so use it then.
        """
        gen_kwargs = getattr(self, "_gen_kwargs", None) or {}
        config = gen_kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        sequences = (
            gen_kwargs.get("num_return_sequences") or getattr(config, "num_return_sequences", None) or 1
        )
        if sequences == 1:
            self.gather_function = functools.partial(
                self.accelerator.gather_for_metrics, use_gather_object=self.args.eval_use_gather_object
            )
        return super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )

    def _teacher_forced_loss(self, outputs, labels, **_):
        loss_sum, num_items, stats = self._eval_terms(outputs, labels)
        self._record("eval", num_items, loss_sum, stats)
        return loss_sum / num_items.clamp(min=1)

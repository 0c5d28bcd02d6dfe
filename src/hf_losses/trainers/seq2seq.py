"""EncouragingSeq2SeqConfig + EncouragingSeq2SeqTrainer: token-level EL/CEL (or CE) for sequence-to-sequence models."""

from __future__ import annotations

import functools
import math
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from ..losses import EncouragingLoss, LinearEncouragingLoss
from ..losses.base import check_range
from ..metrics.calibration import TokenCalibration, token_calibration_counts
from .averaging import CheckpointAveragingArguments
from .base_config import LossConfigMixin, LossPreset
from .common import LossTrainerMixin
from .lm_head import LMHeadInputs, lm_head_parameters, run_without_lm_head
from .outputs import logits_of


@dataclass
class EncouragingSeq2SeqConfig(LossConfigMixin, CheckpointAveragingArguments, Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus the encouraging-loss settings (exposed as CLI flags by HfArgumentParser).

    ``label_smoothing_factor`` smooths the NLL and, unless ``bonus_smoothing`` is set, the bonus, as in the
    paper's translation criterion. What ce, el and cel mean: ``PRESETS`` below; ``bonus_schedule`` ramps the
    bonus weight up over the first steps (:meth:`bonus_weight_at`). The maths: docs/losses.md.
    """

    PRESETS = {
        "ce": LossPreset(
            "cross-entropy", baseline=True, fixed={"log_end": 1.0, "bonus_weight": 0.0, "bonus": "log"}
        ),
        "el": LossPreset(
            "encouraging loss (EL)", baseline=False, fixed={"log_end": 1.0}, defaults={"bonus_weight": 1.0}
        ),
        "cel": LossPreset(
            "conservative encouraging loss (CEL)",
            baseline=False,
            defaults={"log_end": 0.5, "bonus_weight": 1.0},
        ),
    }
    KNOBS = ("log_end", "bonus_weight", "bonus", "bonus_power", "bonus_start", "bonus_smoothing")
    BONUS_SCHEDULES = ("constant", "linear", "cosine", "exp")
    FIELD_OF_LOSS_ARGUMENT = {"label_smoothing": "label_smoothing_factor"}

    loss: str = field(
        default="cel",
        metadata={"help": "ce: cross-entropy; el: full bonus log(1-p) (log_end 1); cel: conservative bonus."},
    )
    log_end: float | None = field(
        default=None,
        metadata={"help": "LE in (0, 1]: where the cel bonus turns linear (default 0.5; cel only)."},
    )
    bonus_weight: float | None = field(
        default=None, metadata={"help": "rho >= 0: weight of the bonus (default 1; el and cel only)."}
    )
    bonus: str | None = field(
        default=None,
        metadata={
            "help": "Shape of the bonus b(p): log (log(1-p), default), power (-p**bonus_power) or cosine "
            "(cos(pi p) - 1); el and cel only (cel: log only)."
        },
    )
    bonus_power: float | None = field(
        default=None, metadata={"help": "a > 0: the exponent of --bonus power (default 1: NLL - p)."}
    )
    bonus_start: float | None = field(
        default=None,
        metadata={"help": "s in [0, 1): no bonus below p = s, b(p) - b(s) above it (default 0)."},
    )
    bonus_smoothing: float | None = field(
        default=None,
        metadata={
            "help": "e in [0, 1]: smoothing of the bonus, (1-e) b(p_y) + (e/V) sum_k b(p_k) (default: "
            "--label_smoothing_factor, which keeps smoothing the NLL)."
        },
    )
    bonus_schedule: str = field(
        default="constant",
        metadata={
            "help": "How the bonus weight ramps from 0 to --bonus_weight over the warmup: constant (no ramp), "
            "linear, cosine or exp."
        },
    )
    bonus_warmup_ratio: float = field(
        default=0.0, metadata={"help": "Fraction of the training steps over which the bonus weight ramps up."}
    )
    bonus_warmup_steps: int = field(
        default=0,
        metadata={"help": "Steps over which the bonus weight ramps up (overrides the ratio if > 0)."},
    )
    bonus_exp_rate: float = field(
        default=5.0, metadata={"help": "Rate of the exp ramp (1 - e^(-rate x)) / (1 - e^(-rate)), > 0."}
    )
    fused_lm_head: bool = field(
        default=False,
        metadata={
            "help": "Train without forming the [tokens, vocabulary] logits: the loss applies the output "
            "projection itself, in chunks (same updates; far less memory for large vocabularies). "
            "Evaluation and generation are unchanged."
        },
    )

    # Not a flag: the loss and knobs of the config ``dataclasses.replace`` copied this one from (see base_config).
    knobs_of: InitVar[dict | None] = None

    def __post_init__(self, knobs_of: dict | None = None):
        super().__post_init__()
        self.drop_inherited_knobs(knobs_of)
        self.check_loss()
        self.check_bonus_schedule()
        self.check_training_budget()
        self.knobs_of = self.record_knobs()  # what dataclasses.replace passes on as knobs_of

    def check_bonus_schedule(self) -> None:
        """One-line errors for the schedule flags."""
        if self.bonus_schedule not in self.BONUS_SCHEDULES:
            raise ValueError(
                f"--bonus_schedule must be one of {', '.join(self.BONUS_SCHEDULES)}; got {self.bonus_schedule!r}"
            )
        check_range(
            "--bonus_warmup_ratio", self.bonus_warmup_ratio, 0.0, 1.0, low_open=False, high_open=False
        )
        if not self.bonus_warmup_steps >= 0:
            raise ValueError(f"--bonus_warmup_steps must be >= 0, got {self.bonus_warmup_steps!r}")
        if not self.bonus_exp_rate > 0:
            raise ValueError(f"--bonus_exp_rate must be > 0, got {self.bonus_exp_rate!r}")
        ramp = self.bonus_warmup_ratio > 0 or self.bonus_warmup_steps > 0
        if ramp != (self.bonus_schedule != "constant"):
            raise ValueError(
                "--bonus_schedule linear, cosine or exp needs --bonus_warmup_ratio or --bonus_warmup_steps > 0, "
                f"and a warmup needs one of those schedules; got --bonus_schedule {self.bonus_schedule} with "
                f"--bonus_warmup_ratio {self.bonus_warmup_ratio} and --bonus_warmup_steps {self.bonus_warmup_steps}"
            )

    def bonus_warmup(self, max_steps: int) -> int:
        """Optimizer steps of the ramp: bonus_warmup_steps if set, else ceil(ratio * max_steps)."""
        if self.bonus_warmup_steps > 0:
            return self.bonus_warmup_steps
        return math.ceil(self.bonus_warmup_ratio * max_steps)

    def bonus_weight_at(self, step: int, max_steps: int) -> float:
        """rho * f(min(step / W, 1)) at optimizer step `step` (0-based) of `max_steps`, W the warmup steps.

        f(x) = 1 (constant), x (linear), (1 - cos(pi x)) / 2 (cosine), (1 - e^{-r x}) / (1 - e^{-r}) (exp).
        """
        rho = self.resolved_knobs().get("bonus_weight", 1.0)
        warmup = self.bonus_warmup(max_steps)
        if self.bonus_schedule == "constant" or warmup <= 0 or step >= warmup:
            return rho
        x = step / warmup
        if self.bonus_schedule == "linear":
            return rho * x
        if self.bonus_schedule == "cosine":
            return rho * (1.0 - math.cos(math.pi * x)) / 2.0
        rate = self.bonus_exp_rate
        return rho * -math.expm1(-rate * x) / -math.expm1(-rate)

    def loss_kwargs(self) -> dict[str, Any]:
        return {**self.resolved_knobs(), "label_smoothing": self.label_smoothing_factor, "ignore_index": -100}

    def loss_settings(self) -> dict[str, Any]:
        knobs = self.resolved_knobs()
        settings = {
            "loss": self.loss,
            **knobs,
            "bonus": knobs.get("bonus", "log"),
            "label_smoothing_factor": self.label_smoothing_factor,
            "bonus_schedule": self.bonus_schedule,
        }
        if self.bonus_schedule != "constant":
            if self.bonus_warmup_steps > 0:
                settings["bonus_warmup_steps"] = self.bonus_warmup_steps
            else:
                settings["bonus_warmup_ratio"] = self.bonus_warmup_ratio
            if self.bonus_schedule == "exp":
                settings["bonus_exp_rate"] = self.bonus_exp_rate
        return settings

    def build_loss(self, reduction: str = "sum") -> EncouragingLoss:
        return EncouragingLoss(**self.loss_kwargs(), reduction=reduction)

    def build_linear_loss(self, reduction: str = "sum") -> LinearEncouragingLoss:
        """The same loss applied to hidden states and the output projection (``--fused_lm_head``)."""
        return LinearEncouragingLoss(**self.loss_kwargs(), reduction=reduction)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: ``[start, y_1, ..., y_{T-1}]`` with ignored (-100) positions as padding."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[..., 1:] = labels[..., :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


class EncouragingSeq2SeqTrainer(LossTrainerMixin, Seq2SeqTrainer):
    """Seq2SeqTrainer whose loss is the fused encouraging loss, normalised exactly by the global token count.

    Logs ``nll_loss`` (plain per-token -log p_y), ``bonus`` (mean b(p_y)) and ``bonus_weight`` (the weight
    of the last step, which ``bonus_schedule`` ramps up) beside ``loss``: the EL value can be negative and is
    not comparable to cross-entropy. In evaluation ``eval_loss``, ``eval_nll_loss``
    and ``eval_bonus`` are exact per-token means over the evaluation set; with ``predict_with_generate`` they
    are still teacher-forced, from one forward pass without labels (the model computes no loss of its own).

    Example::

        from transformers import DataCollatorForSeq2Seq
        from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer

        args = EncouragingSeq2SeqConfig(output_dir="out", loss="cel", log_end=0.5, label_smoothing_factor=0.1)
        trainer = EncouragingSeq2SeqTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        )
        trainer.train()
    """

    args: EncouragingSeq2SeqConfig
    config_class = EncouragingSeq2SeqConfig
    card_task = "translation"
    nonfinite_hint = "lower the learning rate, use --loss cel with --log_end < 1, or check the data"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_encoder_decoder()
        if self.args.fused_lm_head:
            self._check_fused_lm_head()
            self.linear_loss_fn = self.args.build_linear_loss("sum")

    def _check_encoder_decoder(self) -> None:
        """A decoder-only model has no decoder inputs to build: refuse it now, not at the first step."""
        config = getattr(self.model, "config", None)
        if config is not None and not getattr(config, "is_encoder_decoder", False):
            raise ValueError(
                f"{type(self).__name__} trains encoder-decoder models; {type(self.model).__name__} is decoder-only: "
                "use transformers' Trainer with compute_loss_func=hf_losses.trainer_loss_func("
                "EncouragingLoss(...), shift_labels=True)"
            )

    def _check_fused_lm_head(self) -> None:
        """One-line errors for setups where the loss cannot apply the model's output projection itself."""
        from transformers.integrations import is_deepspeed_zero3_enabled

        if self.is_fsdp_enabled or is_deepspeed_zero3_enabled():
            raise ValueError(
                "--fused_lm_head needs the whole output projection on every process: it does not work with "
                "FSDP or DeepSpeed ZeRO-3 (use DDP or ZeRO-1/2, or drop --fused_lm_head)"
            )
        lm_head_parameters(self.model)  # raises, naming the flag and the supported model types

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.ne(-100).sum()

    def run_model(self, model, inputs, labels):
        """With ``fused_lm_head`` in training: the decoder's hidden states and the head, not the logits."""
        inputs = self.model_inputs(model, inputs, labels)
        if self.args.fused_lm_head and model.training:
            return run_without_lm_head(model, **inputs)
        return model(**inputs)

    def model_inputs(self, model, inputs, labels):
        """Decoder inputs from the labels when the collator did not add them (shifted with the model's config)."""
        if "decoder_input_ids" not in inputs and "decoder_inputs_embeds" not in inputs:
            inner = self.accelerator.unwrap_model(model)
            if hasattr(inner, "prepare_decoder_input_ids_from_labels"):
                inputs["decoder_input_ids"] = inner.prepare_decoder_input_ids_from_labels(labels=labels)
            else:
                config = inner.config
                start = config.decoder_start_token_id
                if start is None:
                    raise ValueError(
                        f"{type(inner).__name__} has no decoder_start_token_id in its config: set it, or let "
                        "the data collator build decoder_input_ids"
                    )
                inputs["decoder_input_ids"] = shift_tokens_right(labels, config.pad_token_id, start)
        return inputs

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
        if isinstance(outputs, LMHeadInputs):
            hidden, weight, bias = outputs
            out = self.linear_loss_fn(hidden, weight, labels, bias=bias, return_stats=True)
        else:
            logits = logits_of(outputs)
            out = self.loss_fn(logits, labels, return_stats=True)
        return out.loss, out.num_tokens, {"nll_loss": out.nll, "bonus": out.bonus}

    def record_evaluation(self, outputs, labels):
        logits = logits_of(outputs)
        counts = token_calibration_counts(logits, labels)
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

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs,
    ):
        """With generation: the teacher-forced loss through ``compute_loss`` (the one loss entry point), then
        generation from the source alone (no second forward pass with labels)."""
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        loss = None
        if labels is not None:
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs).detach()
        source = {
            k: v
            for k, v in inputs.items()
            if k not in ("labels", "decoder_input_ids", "decoder_attention_mask")
        }
        _, generated, _ = super().prediction_step(model, source, False, ignore_keys, **gen_kwargs)
        return loss, generated, labels

    def card_hyperparameters(self) -> dict[str, Any]:
        generation = getattr(self.accelerator.unwrap_model(self.model), "generation_config", None)
        return {
            **super().card_hyperparameters(),
            "generation_num_beams": self.args.generation_num_beams or getattr(generation, "num_beams", None),
            "generation_max_length": self.args.generation_max_length,
        }

    def card_metrics(self) -> tuple[str | None, dict[str, Any]]:
        split, metrics = super().card_metrics()
        signatures = getattr(self.compute_metrics, "signatures", None)
        if metrics and signatures:
            metrics = {**metrics, **signatures}
        return split, metrics

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

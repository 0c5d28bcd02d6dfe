"""The EL/CEL settings every encouraging-loss config shares: the loss presets, the bonus knobs and schedule,
``--fused_lm_head``, and the loss Modules built from them."""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, field
from typing import Any

from ..losses import EncouragingLoss, LinearEncouragingLoss
from ..losses.base import check_range
from .base_config import LossConfigMixin, LossPreset


@dataclass
class EncouragingLossArguments(LossConfigMixin):
    """The encouraging-loss settings of a ``TrainingArguments`` subclass (a dataclass mixin; CLI flags through
    HfArgumentParser), shared by the seq2seq, causal-LM and TRL configs.

    ``label_smoothing_factor`` (a ``TrainingArguments`` field) smooths the NLL and, unless ``bonus_smoothing`` is set, the bonus, as in the
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

"""MultiLabelConfig + MultiLabelTrainer: APL and its special cases (BCE, ASL, focal, Poly-1) for multi-label models."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from ..losses import asymmetric_polynomial_loss
from ..losses._common import check_non_negative, check_range
from ..metrics import MultiLabelMetrics, sigmoid, tune_threshold
from .common import LossTrainerMixin, OmitSecretsWhenPickled

LOSS_KNOBS = ("gamma_pos", "gamma_neg", "clip", "alpha1", "alpha2", "beta1", "detach_focusing_weight")

# Each --loss is a preset of SPEC section 2; "poly1" takes alpha1 = beta1 = poly_epsilon when resolved.
PRESETS: dict[str, dict[str, float | bool]] = {
    "bce": dict(
        gamma_pos=0.0, gamma_neg=0.0, clip=0.0, alpha1=0.0, alpha2=0.0, beta1=0.0, detach_focusing_weight=True
    ),
    "asl": dict(
        gamma_pos=0.0,
        gamma_neg=4.0,
        clip=0.05,
        alpha1=0.0,
        alpha2=0.0,
        beta1=0.0,
        detach_focusing_weight=True,
    ),
    "focal": dict(
        gamma_pos=2.0,
        gamma_neg=2.0,
        clip=0.0,
        alpha1=0.0,
        alpha2=0.0,
        beta1=0.0,
        detach_focusing_weight=False,
    ),
    "poly1": dict(
        gamma_pos=0.0,
        gamma_neg=0.0,
        clip=0.0,
        alpha1=None,
        alpha2=0.0,
        beta1=None,
        detach_focusing_weight=True,
    ),
    "apl": dict(
        gamma_pos=0.0,
        gamma_neg=4.0,
        clip=0.05,
        alpha1=-1.0,
        alpha2=1.25,
        beta1=0.0,
        detach_focusing_weight=True,
    ),
}


@dataclass
class MultiLabelConfig(OmitSecretsWhenPickled, TrainingArguments):
    """TrainingArguments plus the multi-label loss: a preset (``loss``) whose knobs any flag you set overrides.

    After construction every knob holds its resolved value, so checkpoints and cards record what ran.
    """

    loss: str = field(
        default="apl", metadata={"help": f"One of {', '.join(PRESETS)}: a preset of the knobs below."}
    )
    gamma_pos: float | None = field(default=None, metadata={"help": "Focusing exponent of positives (>= 0)."})
    gamma_neg: float | None = field(default=None, metadata={"help": "Focusing exponent of negatives (>= 0)."})
    clip: float | None = field(default=None, metadata={"help": "Probability shift of negatives, in [0, 1)."})
    alpha1: float | None = field(
        default=None, metadata={"help": "Weight of (1-p) in the positive polynomial."}
    )
    alpha2: float | None = field(
        default=None, metadata={"help": "Weight of (1-p)^2 in the positive polynomial."}
    )
    beta1: float | None = field(default=None, metadata={"help": "Weight of p_m in the negative polynomial."})
    poly_epsilon: float = field(
        default=1.0, metadata={"help": "Epsilon of the poly1 preset (alpha1 = beta1)."}
    )
    detach_focusing_weight: bool | None = field(
        default=None,
        metadata={"help": "Treat the focusing weights as constants in backward (APL/ASL default)."},
    )
    threshold: float = field(
        default=0.5, metadata={"help": "Decision threshold on sigmoid scores, in (0, 1)."}
    )
    tune_threshold: bool = field(
        default=False, metadata={"help": "Pick the global threshold that maximises validation micro-F1."}
    )

    def __post_init__(self):
        if self.loss not in PRESETS:
            raise ValueError(f"--loss must be one of {', '.join(PRESETS)}; got {self.loss!r}")
        preset = dict(PRESETS[self.loss])
        if self.loss == "poly1":
            preset.update(alpha1=self.poly_epsilon, beta1=self.poly_epsilon)
        for knob in LOSS_KNOBS:
            if getattr(self, knob) is None:
                setattr(self, knob, preset[knob])
        check_non_negative("--gamma_pos", self.gamma_pos)
        check_non_negative("--gamma_neg", self.gamma_neg)
        check_range("--clip", self.clip, 0.0, 1.0, low_open=False, high_open=True)
        check_range("--threshold", self.threshold, 0.0, 1.0, low_open=True, high_open=True)
        super().__post_init__()

    def loss_settings(self) -> dict[str, float | str | bool]:
        """The resolved loss settings, as recorded in model cards."""
        settings = {"loss": self.loss, **{knob: getattr(self, knob) for knob in LOSS_KNOBS}}
        if self.loss == "poly1":
            settings["poly_epsilon"] = self.poly_epsilon
        return settings


class MultiLabelTrainer(LossTrainerMixin, Trainer):
    """Trainer for ``AutoModelForSequenceClassification`` multi-label models with the fused APL family.

    The loss is the mean over all label entries of the whole accumulated, all-process batch (the
    ``BCEWithLogitsLoss`` convention, so BCE learning rates carry over). ``compute_metrics`` defaults to
    :class:`MultiLabelMetrics` at ``args.threshold``.
    """

    args: MultiLabelConfig
    card_task = "classification"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, MultiLabelConfig):
            raise TypeError("MultiLabelTrainer needs args=MultiLabelConfig(...)")
        if self.compute_metrics is None:
            self.compute_metrics = MultiLabelMetrics(threshold=self.args.threshold)

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tensor(labels.numel(), device=labels.device)

    def loss_terms(self, outputs, labels):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        a = self.args
        loss = asymmetric_polynomial_loss(
            logits,
            labels.to(logits.dtype),
            gamma_pos=a.gamma_pos,
            gamma_neg=a.gamma_neg,
            clip=a.clip,
            alpha1=a.alpha1,
            alpha2=a.alpha2,
            beta1=a.beta1,
            detach_focusing_weight=a.detach_focusing_weight,
            reduction="sum",
        )
        return loss, self.count_items(labels), {}

    def tune_threshold(self, eval_dataset=None) -> tuple[float, float]:
        """Set the global threshold maximising micro-F1 on `eval_dataset`; store it in args, metrics and model config."""
        output = self.predict(
            eval_dataset if eval_dataset is not None else self.eval_dataset, metric_key_prefix="tune"
        )
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        threshold, f1 = tune_threshold(sigmoid(logits), np.asarray(output.label_ids))
        self.args.threshold = threshold
        if isinstance(self.compute_metrics, MultiLabelMetrics):
            self.compute_metrics.threshold = threshold
        self.accelerator.unwrap_model(self.model).config.threshold = threshold
        return threshold, f1

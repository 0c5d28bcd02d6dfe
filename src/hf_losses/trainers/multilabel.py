"""MultiLabelConfig + MultiLabelTrainer: APL and its special cases (BCE, ASL, focal, Poly-1) for multi-label models."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from ..losses import AsymmetricPolynomialLoss, asymmetric_polynomial_loss
from ..losses.base import keyword_defaults
from ..metrics import MultiLabelMetrics, sigmoid, tune_class_thresholds, tune_threshold
from .averaging import CheckpointAveragingArguments
from .base_config import LossConfigMixin, LossPreset
from .common import LossTrainerMixin
from .outputs import logits_of
from .stopping import EarlyStoppingArguments

_NO_POLY = {"alpha1": 0.0, "alpha2": 0.0, "beta1": 0.0}
# the authors' released settings: the defaults of the loss itself
APL_DEFAULTS = {k: v for k, v in keyword_defaults(asymmetric_polynomial_loss).items() if k != "reduction"}


@dataclass
class MultiLabelConfig(
    LossConfigMixin, CheckpointAveragingArguments, EarlyStoppingArguments, TrainingArguments
):
    """TrainingArguments plus the multi-label loss: a preset (``loss``) whose knobs any flag you set overrides.

    What each preset means: ``PRESETS`` below (the maths: docs/losses.md). ``poly1`` sets alpha1 = beta1 =
    ``poly_epsilon``. The knobs stay ``None`` unless set; the preset is applied whenever the loss is built.
    """

    PRESETS = {
        "bce": LossPreset(
            "binary cross-entropy (BCE)",
            baseline=True,
            defaults={
                "gamma_pos": 0.0,
                "gamma_neg": 0.0,
                "clip": 0.0,
                **_NO_POLY,
                "detach_focusing_weight": True,
            },
        ),
        "asl": LossPreset(
            "asymmetric loss (ASL)",
            baseline=True,
            defaults={
                "gamma_pos": 0.0,
                "gamma_neg": 4.0,
                "clip": 0.05,
                **_NO_POLY,
                "detach_focusing_weight": True,
            },
        ),
        "focal": LossPreset(
            "focal loss",
            baseline=True,
            defaults={
                "gamma_pos": 2.0,
                "gamma_neg": 2.0,
                "clip": 0.0,
                **_NO_POLY,
                "detach_focusing_weight": False,
            },
        ),
        "poly1": LossPreset(
            "Poly-1 loss",
            baseline=True,
            defaults={
                "gamma_pos": 0.0,
                "gamma_neg": 0.0,
                "clip": 0.0,
                "alpha2": 0.0,
                "detach_focusing_weight": True,
            },
        ),
        "apl": LossPreset(
            "asymmetric polynomial loss (APL)",
            baseline=False,
            defaults=APL_DEFAULTS,
        ),
    }
    KNOBS = ("gamma_pos", "gamma_neg", "clip", "alpha1", "alpha2", "beta1", "detach_focusing_weight")

    loss: str = field(
        default="apl", metadata={"help": "One of bce, asl, focal, poly1, apl: a preset of the knobs below."}
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
    poly_epsilon: float | None = field(
        default=None, metadata={"help": "Epsilon of the poly1 preset: alpha1 = beta1 = epsilon (default 1)."}
    )
    detach_focusing_weight: bool | None = field(
        default=None,
        # nargs/const: a bare `--detach_focusing_weight` means True, as for the other bool flags.
        metadata={
            "help": "Treat the focusing weights as constants in backward (APL/ASL default).",
            "nargs": "?",
            "const": True,
        },
    )
    threshold: float = field(
        default=0.5, metadata={"help": "Decision threshold on sigmoid scores, in (0, 1)."}
    )
    tune_threshold: bool = field(
        default=False,
        metadata={
            "help": "After training, set the global threshold that maximises micro-F1 on the eval set."
        },
    )

    tune_class_thresholds: bool = field(
        default=False,
        metadata={
            "help": "With --tune_threshold: also tune one threshold per class (maximising that class's F1) on "
            "the same data; reported beside the global threshold's F1 as *_f1_{micro,macro}_per_class."
        },
    )

    # Not a flag: the loss and knobs of the config ``dataclasses.replace`` copied this one from (see base_config).
    knobs_of: InitVar[dict | None] = None

    def __post_init__(self, knobs_of: dict | None = None):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"--threshold must be in (0, 1), got {self.threshold!r}")
        if self.tune_class_thresholds and not self.tune_threshold:
            raise ValueError("--tune_class_thresholds tunes on the data of --tune_threshold: set both")
        super().__post_init__()
        self.drop_inherited_knobs(knobs_of)
        self.check_loss()
        self.check_training_budget()
        self.knobs_of = self.record_knobs()  # what dataclasses.replace passes on as knobs_of

    def resolved_knobs(self) -> dict[str, Any]:
        knobs = super().resolved_knobs()
        if self.loss == "poly1":
            epsilon = 1.0 if self.poly_epsilon is None else self.poly_epsilon
            knobs = {"alpha1": epsilon, "beta1": epsilon, **knobs}
        elif self.poly_epsilon is not None:
            raise ValueError(f"--poly_epsilon applies to --loss poly1 only; got --loss {self.loss}")
        return knobs

    def loss_settings(self) -> dict[str, Any]:
        settings = super().loss_settings()
        if self.loss == "poly1":
            settings["poly_epsilon"] = 1.0 if self.poly_epsilon is None else self.poly_epsilon
        return settings

    def build_loss(self, reduction: str = "sum") -> AsymmetricPolynomialLoss:
        return AsymmetricPolynomialLoss(**self.loss_kwargs(), reduction=reduction)


class MultiLabelTrainer(LossTrainerMixin, Trainer):
    """Trainer for ``AutoModelForSequenceClassification`` multi-label models with the fused APL family.

    The loss is the mean over all label entries of the whole accumulated, all-process batch (the
    ``BCEWithLogitsLoss`` convention, so BCE learning rates carry over). ``compute_metrics`` defaults to
    :class:`MultiLabelMetrics` at ``args.threshold``; with ``args.tune_threshold`` the threshold is tuned on
    the eval set (or on ``threshold_dataset``) at the end of ``train()``, or call :meth:`tune_threshold`.

    Example::

        from transformers import DataCollatorWithPadding
        from hf_losses import MultiLabelConfig, MultiLabelTrainer

        args = MultiLabelConfig(output_dir="out", loss="apl", tune_threshold=True)
        trainer = MultiLabelTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        trainer.train()
    """

    args: MultiLabelConfig
    config_class = MultiLabelConfig
    card_task = "classification"
    nonfinite_hint = "lower the learning rate, or check the data and the loss knobs"

    def __init__(
        self, *args, threshold_dataset=None, threshold_dataset_split: str = "held-out data", **kwargs
    ):
        """``threshold_dataset``: where ``tune_threshold=True`` tunes (default: the eval set), named in the card
        as ``threshold_dataset_split``; pass data held out from training to keep the evaluation honest."""
        super().__init__(*args, **kwargs)
        if self.compute_metrics is None:
            self.compute_metrics = MultiLabelMetrics(threshold=self.args.threshold)
        self.threshold_dataset, self.threshold_dataset_split = threshold_dataset, threshold_dataset_split
        one_eval_set = self.eval_dataset is not None and not isinstance(self.eval_dataset, dict)
        if self.args.tune_threshold and threshold_dataset is None and not one_eval_set:
            raise ValueError(
                "tune_threshold=True needs one eval_dataset (not a dict of them) or a threshold_dataset to tune "
                "the threshold on after training (or leave it False and call trainer.tune_threshold(data))"
            )
        self.threshold_split: str | None = None  # where the threshold was tuned, if it was
        self.class_thresholds: list[float] | None = None  # per-class thresholds, if tuned

    def count_items(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tensor(labels.numel(), device=labels.device)

    def loss_terms(self, outputs, labels):
        logits = logits_of(outputs)
        return self.loss_fn(logits, labels.to(logits.dtype)), self.count_items(labels), {}

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.args.tune_threshold and self.threshold_dataset is not None:
            self.tune_threshold(self.threshold_dataset, split=self.threshold_dataset_split)
        elif self.args.tune_threshold:  # __init__ checked that there is one eval_dataset
            self.tune_threshold()
        return output

    def tune_threshold(self, dataset=None, split: str = "validation") -> tuple[float, float]:
        """Set the global threshold maximising micro-F1 on `dataset` (default: the eval set), everywhere it is used.

        The threshold goes into args, the metrics, the model config (saved with the model) and the card, which
        names `split` as the data it was tuned on. With ``args.tune_class_thresholds`` the per-class thresholds
        (each maximising its class's F1) are tuned on the same predictions and go to the same places.
        """
        output = self.predict(dataset if dataset is not None else self.eval_dataset, metric_key_prefix="tune")
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        scores, targets = sigmoid(logits), np.asarray(output.label_ids)
        threshold, f1 = tune_threshold(scores, targets)
        self.args.threshold = threshold
        config = self.accelerator.unwrap_model(self.model).config
        config.threshold = threshold
        if self.args.tune_class_thresholds:
            self.class_thresholds = tune_class_thresholds(scores, targets, fallback=threshold).tolist()
            config.class_thresholds = self.class_thresholds
        if isinstance(self.compute_metrics, MultiLabelMetrics):
            self.compute_metrics.threshold = threshold
            self.compute_metrics.class_thresholds = self.class_thresholds
        self.threshold_split = split
        return threshold, f1

    def card_extra(self) -> dict[str, Any]:
        config = self.accelerator.unwrap_model(self.model).config
        names = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
        default_names = [f"LABEL_{i}" for i in range(len(names))]
        return {
            "threshold": self.args.threshold,
            "threshold_tuned": self.threshold_split is not None,
            "threshold_split": self.threshold_split,
            "class_thresholds": self.class_thresholds,
            "label_names": names if names != default_names else self.dataset_info.label_names,
        }

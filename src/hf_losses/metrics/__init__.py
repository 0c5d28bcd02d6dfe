"""Evaluation metrics: BLEU/chrF for translation (sacreBLEU), multi-label metrics (scikit-learn), calibration."""

from .calibration import (
    TokenCalibration,
    expected_calibration_error,
    reliability_counts,
    token_calibration_counts,
)
from .multilabel import (
    MultiLabelMetrics,
    classwise_ece,
    multilabel_metrics,
    sigmoid,
    tune_class_thresholds,
    tune_threshold,
)
from .translation import Seq2SeqMetrics, translation_metrics

__all__ = [
    "MultiLabelMetrics",
    "Seq2SeqMetrics",
    "TokenCalibration",
    "classwise_ece",
    "expected_calibration_error",
    "multilabel_metrics",
    "reliability_counts",
    "sigmoid",
    "token_calibration_counts",
    "translation_metrics",
    "tune_class_thresholds",
    "tune_threshold",
]

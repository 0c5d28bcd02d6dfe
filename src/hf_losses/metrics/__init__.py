"""Evaluation metrics: BLEU/chrF for translation (sacreBLEU) and multi-label metrics (scikit-learn)."""

from .multilabel import MultiLabelMetrics, multilabel_metrics, sigmoid, tune_threshold
from .translation import Seq2SeqMetrics, translation_metrics

__all__ = [
    "MultiLabelMetrics",
    "Seq2SeqMetrics",
    "multilabel_metrics",
    "sigmoid",
    "translation_metrics",
    "tune_threshold",
]

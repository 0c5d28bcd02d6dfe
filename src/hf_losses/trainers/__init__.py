"""Trainer + config pairs: EL/CEL for seq2seq models, APL for multi-label classifiers."""

from .multilabel import MultiLabelConfig, MultiLabelTrainer
from .seq2seq import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer

__all__ = ["EncouragingSeq2SeqConfig", "EncouragingSeq2SeqTrainer", "MultiLabelConfig", "MultiLabelTrainer"]

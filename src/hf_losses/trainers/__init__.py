"""Trainer + config pairs: EL/CEL for seq2seq and decoder-only models, APL for multi-label classifiers;
``trainer_loss_func`` for the stock trainers."""

from .causal_lm import EncouragingCausalLMConfig, EncouragingCausalLMTrainer
from .loss_func import trainer_loss_func
from .multilabel import MultiLabelConfig, MultiLabelTrainer
from .seq2seq import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer

__all__ = [
    "EncouragingCausalLMConfig",
    "EncouragingCausalLMTrainer",
    "EncouragingSeq2SeqConfig",
    "EncouragingSeq2SeqTrainer",
    "MultiLabelConfig",
    "MultiLabelTrainer",
    "trainer_loss_func",
]

"""The losses as ``compute_loss_func`` for the stock transformers ``Trainer`` and ``Seq2SeqTrainer``.

``trainer_loss_func(loss)`` wraps an :class:`EncouragingLoss` or :class:`AsymmetricPolynomialLoss` into the
function transformers calls as ``compute_loss_func(outputs, labels, num_items_in_batch=...)``::

    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ds,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                             compute_loss_func=trainer_loss_func(EncouragingLoss(log_end=0.5)))
    trainer = Trainer(model=causal_lm, args=args, train_dataset=ds,      # predict token t+1 from t
                      compute_loss_func=trainer_loss_func(EncouragingLoss(), shift_labels=True))
    trainer = Trainer(model=multi_label_classifier, args=args, train_dataset=ds,
                      compute_loss_func=trainer_loss_func(AsymmetricPolynomialLoss()))

The returned function computes ``sum of item losses / num_items_in_batch``, or the mean over the batch's
items when transformers passes no count. Items are non-ignored target tokens for EL and label entries for
APL. The settings of ``loss`` (log_end, gamma_neg, ...) are used as they are; its ``reduction`` is not.

How transformers counts the items and where this differs from the library's own trainers: docs/trainers.md
("With the stock Trainer"); tests/test_trainer_loss.py checks the counts and the updates under gradient
accumulation 1, 2 and 4.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from ..losses import AsymmetricPolynomialLoss, EncouragingLoss
from .outputs import logits_of

TrainerLossFunc = Callable[..., torch.Tensor]


def trainer_loss_func(
    loss: EncouragingLoss | AsymmetricPolynomialLoss, *, shift_labels: bool = False
) -> TrainerLossFunc:
    """``f(outputs, labels, num_items_in_batch=None)`` = summed ``loss`` / ``num_items_in_batch`` (else the mean).

    Args:
        loss: the configured loss Module, read at every call; its ``reduction`` is replaced by "sum" (or
            "mean" without a count) in a shallow copy.
        shift_labels: score the logits at position t against the label at t+1 (decoder-only causal LMs,
            as transformers' own causal-LM loss does). Only for :class:`EncouragingLoss`.
    """
    if not isinstance(loss, (EncouragingLoss, AsymmetricPolynomialLoss)):
        raise TypeError(
            f"trainer_loss_func takes an EncouragingLoss or AsymmetricPolynomialLoss, got {type(loss).__name__}"
        )
    multi_hot = isinstance(loss, AsymmetricPolynomialLoss)
    if multi_hot and shift_labels:
        raise ValueError(
            "shift_labels=True is for token-level losses; AsymmetricPolynomialLoss has no tokens"
        )

    def compute_loss_func(outputs, labels: torch.Tensor | None, num_items_in_batch=None) -> torch.Tensor:
        if labels is None:
            raise ValueError("compute_loss_func got no labels: the batches need a 'labels' entry")
        logits = logits_of(outputs)
        if shift_labels:
            logits, labels = logits[..., :-1, :], labels[..., 1:]
        # APL: multi-hot labels in the logits' dtype (collators often yield int64 or float32).
        target = labels.to(logits.dtype) if multi_hot else labels
        if num_items_in_batch is None:
            return _with_reduction(loss, "mean")(logits, target)
        total = _with_reduction(loss, "sum")(logits, target)
        return total / torch.as_tensor(num_items_in_batch, device=logits.device).clamp(min=1)

    return compute_loss_func


def _with_reduction(loss: torch.nn.Module, reduction: str) -> torch.nn.Module:
    """A shallow copy of ``loss`` with another ``reduction`` (the user's Module is left as it is)."""
    copied = copy.copy(loss)
    copied.reduction = reduction
    return copied

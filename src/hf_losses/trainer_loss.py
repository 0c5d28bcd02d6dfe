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

How transformers 5.23 (the pinned version) drives it, read from ``Trainer.compute_loss``:

- With ``compute_loss_func`` set, ``Trainer`` pops ``labels`` from the batch before the forward, so the
  model computes no loss of its own, and passes them to the function unchanged (a model whose forward takes
  ``**kwargs``, ``model_accepts_loss_kwargs``, also gets ``num_items_in_batch``, unused without labels). A
  seq2seq batch must therefore already hold ``decoder_input_ids``: ``DataCollatorForSeq2Seq(tokenizer,
  model=model)`` builds them for models with ``prepare_decoder_input_ids_from_labels`` (Marian, T5, BART,
  ...); for M2M100, NLLB-MoE or Blenderbot, which lack it, add them in the collator.
- ``num_items_in_batch`` is ``labels.ne(-100).sum()`` over all micro-batches of the optimiser step (and over
  all processes when ``average_tokens_across_devices``, the default, in which case ``Trainer`` multiplies
  the returned loss by the number of processes before DDP averages the gradients).
  - Encoder-decoder models: every non-ignored label, exactly the tokens EL scores without a shift.
  - Decoder-only models whose ``loss_type`` is "ForCausalLM" (set from the class name: ``LlamaForCausalLM``,
    ``Qwen2ForCausalLM``, ...): ``labels[..., 1:]``, exactly the tokens ``shift_labels=True`` scores.
    ``GPT2LMHeadModel`` (and other causal LMs whose class name lacks "ForCausalLM") has ``loss_type`` None,
    so transformers counts every label, one per row more than are scored, and each update comes out
    ``(tokens - rows) / tokens`` too small; set ``model.loss_type = "ForCausalLM"`` before building the
    ``Trainer`` to get the exact count.
  - Multi-label classifiers with 0/1 labels: no entry equals -100, so the count is the number of label
    entries N x L, which is APL's item count (not the number of examples N).

  So on 5.23 each optimiser step follows the gradient of the exact mean over the whole accumulated batch, as
  ``EncouragingSeq2SeqTrainer`` and ``MultiLabelTrainer`` do (tests/test_trainer_loss.py checks the counts
  and the updates under gradient accumulation 1, 2 and 4).
- ``Trainer`` treats the returned loss as already normalised for gradient accumulation (it does not divide
  by the number of accumulation steps).

Where this differs from our own trainers:

- Counting is transformers', not ours. transformers releases that count ``labels[..., 1:]`` for every model
  whose ``loss_type`` is the causal-LM loss (huggingface/transformers PR 46204) but do not yet exclude
  encoder-decoder models (PR 46903) count a seq2seq batch of a ``*ForConditionalGeneration`` model (T5, BART,
  ...) one token per row short, which scales every update up by ``tokens / (tokens - rows)``. Our
  trainers count non-ignored target tokens (or label entries) themselves, for any version. A label entry of
  -100 in multi-label targets would be left out of transformers' count but is not a valid APL target.
- When transformers passes no count (a batch without a ``labels`` key, or labels it cannot compare) the
  function returns the micro-batch mean, and ``Trainer`` still does not divide it by the accumulation
  steps: the update is then the sum, not the mean, of the micro-batch means.
- Evaluation: ``Trainer`` passes the count of each evaluation batch, so ``eval_loss`` is a mean of per-batch
  means; ours is the exact per-item mean over the evaluation set. When ``Seq2SeqTrainer``
  generates (``predict_with_generate`` and a ``compute_metrics``, or ``predict``), it does not call
  ``compute_loss_func``: ``eval_loss`` is then the model's own cross-entropy (or the label smoother's), not EL.
- Only ``loss`` is logged; our trainers also log the plain NLL and the bonus, stop before the update on a
  non-finite loss, build the decoder inputs themselves, and write model cards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from .losses import AsymmetricPolynomialLoss, EncouragingLoss

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
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
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

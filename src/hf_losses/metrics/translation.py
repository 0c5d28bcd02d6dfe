"""Corpus BLEU and chrF with sacreBLEU, and a `compute_metrics` callable for `Seq2SeqTrainer`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

__all__ = ["Seq2SeqMetrics", "translation_metrics"]


def translation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacreBLEU defaults, one reference per sentence) and their signatures."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("translation_metrics needs at least one prediction/reference pair")
    hyps = [str(p).strip() for p in predictions]
    refs = [[str(r).strip() for r in references]]
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hyps, refs).score
    chrf_score = chrf.corpus_score(hyps, refs).score
    return {
        "bleu": float(bleu_score),
        "chrf": float(chrf_score),
        # The signature is only complete (nrefs) once the metric has been evaluated.
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


class Seq2SeqMetrics:
    """`compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)`: BLEU, chrF and mean generated length.

    Negative ids (the -100 used to pad labels and to pad generations gathered across processes) are
    replaced by the pad id before decoding; special tokens are skipped. The decoded predictions and
    references of the last call are kept in ``last_predictions`` / ``last_references`` and the sacreBLEU
    signatures in ``signatures`` (keys ``bleu_signature``, ``chrf_signature``), because the Trainer
    only accepts numbers in the returned dict.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.last_predictions: list[str] = []
        self.last_references: list[str] = []
        self.signatures: dict[str, str] = {}

    @property
    def pad_token_id(self) -> int:
        """The id used in place of -100; falls back to eos, then 0, for tokenizers without a pad token."""
        for candidate in (self.tokenizer.pad_token_id, getattr(self.tokenizer, "eos_token_id", None)):
            if candidate is not None:
                return int(candidate)
        return 0

    def _ids(self, array: Any, what: str) -> np.ndarray:
        """Integer id matrix [N, T] with negative ids replaced by the pad id."""
        ids = np.asarray(array)
        if ids.ndim != 2:
            raise ValueError(
                f"{what} must be token ids of shape [batch, length], got shape {ids.shape}; "
                "did you forget predict_with_generate=True?"
            )
        if not np.issubdtype(ids.dtype, np.integer):
            ids = ids.astype(np.int64)
        return np.where(ids < 0, self.pad_token_id, ids)

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        """Decode generated ids and labels and return ``bleu``, ``chrf`` and ``gen_len``."""
        predictions = eval_pred.predictions
        if isinstance(predictions, tuple):  # some models return (generated_ids, ...)
            predictions = predictions[0]
        preds = self._ids(predictions, "predictions")
        labels = self._ids(eval_pred.label_ids, "label_ids")
        decode = self.tokenizer.batch_decode
        self.last_predictions = [s.strip() for s in decode(preds.tolist(), skip_special_tokens=True)]
        self.last_references = [s.strip() for s in decode(labels.tolist(), skip_special_tokens=True)]
        scores = translation_metrics(self.last_predictions, self.last_references)
        self.signatures = {k: scores[k] for k in ("bleu_signature", "chrf_signature")}
        gen_len = float(np.mean(self.generated_lengths(preds)))
        return {"bleu": scores["bleu"], "chrf": scores["chrf"], "gen_len": gen_len}

    def generated_lengths(self, preds: np.ndarray) -> np.ndarray:
        """Tokens of each generation up to and including its first eos, padding not counted. (Beam search
        fills finished sequences with eos, not padding: counting every non-pad token would give the batch's
        longest length.)"""
        counted = preds != self.pad_token_id
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            is_eos = preds == eos
            counted &= (np.cumsum(is_eos, axis=1) - is_eos) == 0  # nothing after the first eos
        return counted.sum(axis=1)

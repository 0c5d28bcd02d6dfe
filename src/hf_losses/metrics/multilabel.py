"""Multi-label classification metrics (F1, mAP, P@k, nDCG@k, Hamming loss, ECE) and threshold tuning.

Conventions:

- A label is predicted when its probability is ``>= threshold``.
- F1/precision/recall use scikit-learn with ``zero_division=0``.
- ``map`` is the mean over labels with at least one positive of scikit-learn's
  ``average_precision_score``; it is NaN when no label has a positive.
- ``p@k`` (as in the AAPD literature) is the number of relevant labels among the k top-scored ones
  divided by k, averaged over all examples. Ties in score are broken by label index.
- ``ndcg@k`` uses binary gains, DCG = sum_i rel_i / log2(i + 1) over ranks i = 1..k, divided by the ideal
  DCG of min(k, #positives) relevant labels at the top. Examples without any positive label score 0 and
  are still counted in the average (the AAPD convention of averaging over all examples).
- When there are fewer labels L than k, k = L is used, but the key keeps its name (``p@5`` with L = 3).
- ``ece`` is classwise: every (example, label) probability p is a prediction with outcome t in {0, 1};
  ECE = sum over 15 equal-width bins of p of (n_b / N) * |mean p_b - mean t_b| (N = examples x labels;
  see :mod:`hf_losses.metrics.calibration`). It does not depend on the threshold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_score, recall_score

from .calibration import expected_calibration_error, reliability_counts

__all__ = [
    "MultiLabelMetrics",
    "classwise_ece",
    "multilabel_metrics",
    "sigmoid",
    "tune_class_thresholds",
    "tune_threshold",
]

TOP_K = (1, 3, 5)


def sigmoid(logits: Any) -> np.ndarray:
    """Numerically stable logistic function in float64 (no overflow for large |x|)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (float64 scores [N, L], int targets [N, L])."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must both be [N, L]; got {s.shape} and {t.shape}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError("scores and targets must not be empty")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("targets must be 0/1")
    return s, t.astype(np.int64)


def _top_k_gains(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Relevance (0/1) of the k top-scored labels of each example, best first: [N, k]."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(targets, order, axis=1)


def precision_at_k(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean over examples of (#relevant among the top k) / k, with k capped at L."""
    k = min(k, scores.shape[1])
    return float(np.mean(_top_k_gains(scores, targets, k).sum(axis=1) / k))


def ndcg_at_k(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean over all examples of binary-relevance nDCG@k (0 for examples without positives)."""
    k = min(k, scores.shape[1])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # rank i -> 1 / log2(i + 1)
    dcg = (_top_k_gains(scores, targets, k) * discounts).sum(axis=1)
    n_ideal = np.minimum(targets.sum(axis=1), k)
    idcg = np.concatenate([[0.0], np.cumsum(discounts)])[n_ideal]
    ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return float(np.mean(ndcg))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean of per-label average precision over labels with at least one positive (NaN if none)."""
    aps = [
        average_precision_score(targets[:, j], scores[:, j])
        for j in range(targets.shape[1])
        if targets[:, j].any()
    ]
    return float(np.mean(aps)) if aps else float("nan")


def multilabel_metrics(
    scores: Any, targets: Any, threshold: float = 0.5, class_thresholds: Any = None
) -> dict[str, float]:
    """F1/precision/recall (micro, macro), mAP, P@1/3/5, nDCG@1/3/5, Hamming loss and classwise ECE of probabilities.

    With ``class_thresholds`` (one per label) also ``f1_micro_per_class`` and ``f1_macro_per_class``: the F1s
    of predicting label j when its probability is ``>= class_thresholds[j]``.
    """
    s, t = _check(scores, targets)
    pred = (s >= threshold).astype(np.int64)
    out: dict[str, float] = {}
    for name, fn in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
        for average in ("micro", "macro"):
            out[f"{name}_{average}"] = float(fn(t, pred, average=average, zero_division=0))
    if class_thresholds is not None:
        per_class = _check_class_thresholds(class_thresholds, s.shape[1])
        pred_per_class = (s >= per_class).astype(np.int64)
        for average in ("micro", "macro"):
            out[f"f1_{average}_per_class"] = float(
                f1_score(t, pred_per_class, average=average, zero_division=0)
            )
    out["map"] = mean_average_precision(s, t)
    for k in TOP_K:
        out[f"p@{k}"] = precision_at_k(s, t, k)
    for k in TOP_K:
        out[f"ndcg@{k}"] = ndcg_at_k(s, t, k)
    out["hamming_loss"] = float(hamming_loss(t, pred))
    out["ece"] = classwise_ece(s, t)
    return out


def classwise_ece(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """ECE over all (example, label) pairs: probability p vs outcome t, 15 equal-width bins."""
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("scores must be probabilities in [0, 1] for the ECE; apply sigmoid to logits first")
    counts = reliability_counts(torch.from_numpy(probabilities.ravel()), torch.from_numpy(targets.ravel()))
    return expected_calibration_error(counts)


def _micro_f1(scores: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    """Micro-F1 = 2TP / (2TP + FP + FN) from integer counts (0 when undefined)."""
    pred = scores >= threshold
    tp = int(np.sum(pred & (targets == 1)))
    fp = int(np.sum(pred & (targets == 0)))
    fn = int(np.sum(~pred & (targets == 1)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def default_thresholds() -> np.ndarray:
    """The default grid: 0.05, 0.10, ..., 0.95 (which includes 0.5)."""
    return np.unique(np.round(np.append(np.linspace(0.05, 0.95, 19), 0.5), 10))


def tune_threshold(
    scores: Any, targets: Any, candidates: Iterable[float] | None = None
) -> tuple[float, float]:
    """Global threshold in the grid that maximises micro-F1, and that F1 (ties: the one closest to 0.5)."""
    s, t = _check(scores, targets)
    grid = default_thresholds() if candidates is None else np.asarray(list(candidates), dtype=np.float64)
    if grid.size == 0:
        raise ValueError("candidates must not be empty")
    best: tuple[float, float] | None = None
    # Visit candidates closest to 0.5 first (lower one first on equal distance) and only move on a strict gain.
    for thr in sorted(grid.tolist(), key=lambda c: (round(abs(c - 0.5), 9), c)):
        f1 = _micro_f1(s, t, thr)
        if best is None or f1 > best[1] + 1e-12:
            best = (float(thr), float(f1))
    assert best is not None
    return best


def _check_class_thresholds(thresholds: Any, num_labels: int) -> np.ndarray:
    values = np.asarray(thresholds, dtype=np.float64)
    if values.shape != (num_labels,) or not np.all((values > 0) & (values < 1)):
        raise ValueError(f"class_thresholds must be {num_labels} values in (0, 1); got shape {values.shape}")
    return values


def _f1_counts(pred: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-label F1 = 2TP / (2TP + FP + FN) of 0/1 predictions [N, L] (0 where undefined)."""
    tp = np.sum(pred & (targets == 1), axis=0)
    wrong = np.sum(pred != (targets == 1), axis=0)
    denom = 2 * tp + wrong
    return np.divide(2 * tp, denom, out=np.zeros(pred.shape[1]), where=denom > 0)


def tune_class_thresholds(
    scores: Any, targets: Any, fallback: float = 0.5, candidates: Iterable[float] | None = None
) -> np.ndarray:
    """One threshold per label from the grid, maximising that label's F1 (ties: the one closest to 0.5).

    A label without any positive in ``targets`` cannot be tuned (its F1 is 0 everywhere) and gets ``fallback``.
    """
    s, t = _check(scores, targets)
    grid = default_thresholds() if candidates is None else np.asarray(list(candidates), dtype=np.float64)
    if grid.size == 0:
        raise ValueError("candidates must not be empty")
    order = sorted(grid.tolist(), key=lambda c: (round(abs(c - 0.5), 9), c))
    f1 = np.stack([_f1_counts(s >= thr, t) for thr in order])  # [candidates, L], closest to 0.5 first
    best = np.asarray(order)[np.argmax(f1 > f1.max(axis=0) - 1e-12, axis=0)]
    return np.where(t.any(axis=0), best, fallback)


class MultiLabelMetrics:
    """`compute_metrics` for `Trainer`: sigmoid of logits [N, L] vs 0/1 labels [N, L] -> `multilabel_metrics`.

    ``threshold`` may be changed between evaluations (e.g. after `tune_threshold`); the probabilities and
    targets of the last call are kept in ``last_scores`` / ``last_targets`` for that purpose.
    """

    def __init__(self, threshold: float = 0.5, class_thresholds: Any = None):
        self.threshold = float(threshold)
        self.class_thresholds = class_thresholds
        self.last_scores: np.ndarray | None = None
        self.last_targets: np.ndarray | None = None

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        """Metrics of one evaluation at the current threshold."""
        logits = eval_pred.predictions
        if isinstance(logits, tuple):  # models that also return hidden states etc.
            logits = logits[0]
        self.last_scores = sigmoid(logits)
        self.last_targets = np.asarray(eval_pred.label_ids)
        return multilabel_metrics(
            self.last_scores, self.last_targets, self.threshold, class_thresholds=self.class_thresholds
        )

"""Paired significance tests between a baseline and a variant.

- Translation: sacreBLEU's own paired bootstrap resampling (``sacrebleu.significance.PairedTest``,
  ``test_type="bs"``) for BLEU and chrF over test sentences.
- Classification: the same paired bootstrap over test examples, written here for multi-label metrics:
  resample the N examples with replacement B times (the same resample for both systems), recompute the metric
  of each system on each resample, and with d_i = |m_variant,i - m_baseline,i| and d = the observed
  |difference|, p = (1 + #{d_i - mean(d_i) >= d}) / (B + 1): sacreBLEU's rule (from MultEval), two-sided,
  with >= instead of > so that identical systems get p = 1 (sacreBLEU's > gives them 1/(B+1); the
  translation wrapper returns p = 1 for identical outputs without running the test).
  Resamples are applied as multiplicity weights, so every metric is exact for the resampled set.
- Over seeds: a paired t-test of the per-seed values (scipy's ``ttest_rel``), which measures whether the
  difference stands out against the spread between training seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from hf_losses.metrics.calibration import NUM_BINS

__all__ = [
    "bootstrap_p_value",
    "multilabel_paired_bootstrap",
    "sacrebleu_paired_bootstrap",
    "seed_t_test",
    "weighted_multilabel_metrics",
]

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345  # sacreBLEU's default SACREBLEU_SEED
CHUNK = 250  # resamples processed at once (bounds memory: CHUNK x N weights)
CLASSIFICATION_METRICS = ("f1_micro", "f1_macro", "map", "ece")
PER_CLASS_METRICS = ("f1_micro_per_class", "f1_macro_per_class")  # F1 at per-class thresholds


def sacrebleu_paired_bootstrap(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    n_samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, float]:
    """p-values of sacreBLEU's paired bootstrap test of `system` against `baseline` for ``bleu`` and ``chrf``."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    if not len(baseline) == len(system) == len(references) > 0:
        raise ValueError(
            f"paired test needs as many baseline ({len(baseline)}) and system ({len(system)}) sentences "
            f"as references ({len(references)}), at least one"
        )
    ours = {"bleu": BLEU(), "chrf": CHRF()}
    if [s.strip() for s in baseline] == [s.strip() for s in system]:
        return dict.fromkeys(ours, 1.0)
    quiet = logging.getLogger("sacrebleu")
    level, quiet.level = quiet.level, logging.WARNING
    try:
        test = PairedTest(
            [("baseline", [s.strip() for s in baseline]), ("system", [s.strip() for s in system])],
            ours,
            references=[[r.strip() for r in references]],
            test_type="bs",
            n_samples=n_samples,
        )
        _, scores = test()
    finally:
        quiet.setLevel(level)
    names = [k for k in scores if k != "System"]  # sacreBLEU's metric names, in the order given
    return {key: float(scores[name][1].p_value) for key, name in zip(ours, names, strict=True)}


def seed_t_test(baseline: Sequence[float], system: Sequence[float]) -> float | None:
    """Two-sided paired t-test over seeds (same seed paired); None with fewer than 2 pairs or no spread."""
    if len(baseline) != len(system) or len(baseline) < 2:
        return None
    from scipy.stats import ttest_rel

    diffs = np.asarray(system, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if np.all(diffs == diffs[0]):  # no spread: the t statistic is undefined
        return None
    p = float(ttest_rel(system, baseline).pvalue)
    return None if math.isnan(p) else p


def bootstrap_p_value(observed: float, baseline_samples: np.ndarray, system_samples: np.ndarray) -> float:
    """(1 + #{d_i - mean(d) >= |observed|}) / (B + 1) with d_i = |system_i - baseline_i|."""
    d = np.abs(np.asarray(system_samples) - np.asarray(baseline_samples))
    keep = ~np.isnan(d)
    d = d[keep]
    return float((1 + np.sum(d - d.mean() >= abs(observed) - 1e-12)) / (d.size + 1))


def _ece(prob: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Classwise ECE per row of weights: (1 / (sum w * L)) sum_b |sum_w p_b - sum_w t_b|."""
    bins = np.minimum(np.floor(prob * NUM_BINS).astype(np.int64), NUM_BINS - 1)
    n, num_labels = prob.shape
    rows = np.repeat(np.arange(n), num_labels)
    gap = np.zeros((n, NUM_BINS))
    np.add.at(gap, (rows, bins.ravel()), (prob - targets).ravel())  # per example and bin: sum p - sum t
    return np.abs(weights @ gap).sum(axis=1) / (weights.sum(axis=1) * num_labels)


def _average_precision(prob: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over labels with a (weighted) positive of average precision, per row of weights; ties as sklearn.

    AP = sum_t tp_t * TP(<= t) / SEEN(<= t) / TP(all), over the groups t of tied scores that hold a positive
    (sklearn reads precision at the last example of each group). Which example falls in which group's segment
    does not depend on the weights, so each label's sort is done once and the weighted sums of all labels'
    segments are two sparse products with the weights."""
    from scipy import sparse

    n = prob.shape[0]
    seen_at, tp_at, spans = [], [], []  # (example, segment) pairs; each label's segment range
    for j in range(prob.shape[1]):
        if not targets[:, j].any():
            continue
        order = np.argsort(-prob[:, j], kind="stable")
        scores = prob[order, j]
        group_end = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), n - 1]
        end_of = np.repeat(group_end, np.diff(np.r_[-1, group_end]))  # rank -> last rank of its tie group
        positive_ranks = np.flatnonzero(targets[order, j])
        ends = np.unique(end_of[positive_ranks])  # where precision is read
        ranks = np.arange(ends[-1] + 1)
        first = spans[-1][1] if spans else 0
        segment = first + np.searchsorted(ends, ranks)  # the first reading that counts this rank
        seen_at.append((order[ranks], segment))
        tp_at.append((order[positive_ranks], segment[positive_ranks]))
        spans.append((first, first + ends.size))
    if not spans:
        return np.full(weights.shape[0], np.nan)
    by_example = np.ascontiguousarray(weights.T)  # [N, B]

    def segment_sums(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        examples, segments = (np.concatenate(part) for part in zip(*pairs, strict=True))
        member = sparse.csr_array((np.ones(examples.size), (segments, examples)), shape=(spans[-1][1], n))
        return (member @ by_example).T  # [B, segments]

    seen, true_pos = segment_sums(seen_at), segment_sums(tp_at)
    per_label = []
    for a, b in spans:
        tp_cum, seen_cum = np.cumsum(true_pos[:, a:b], axis=1), np.cumsum(seen[:, a:b], axis=1)
        precision = np.divide(tp_cum, seen_cum, out=np.zeros_like(seen_cum), where=seen_cum > 0)
        total = tp_cum[:, -1]
        ap = np.divide(
            (true_pos[:, a:b] * precision).sum(axis=1),
            total,
            out=np.full_like(total, np.nan),
            where=total > 0,
        )
        per_label.append(ap)
    stacked = np.stack(per_label, axis=1)
    counted = (~np.isnan(stacked)).sum(axis=1)
    sums = np.nansum(stacked, axis=1)
    return np.divide(sums, counted, out=np.full_like(sums, np.nan), where=counted > 0)


def _f1s(pred: np.ndarray, t: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(micro-F1, macro-F1 with zero_division 0) of 0/1 predictions, per row of weights [B, N]."""
    p = pred.astype(bool)
    tp, fp, fn = (weights @ m.astype(np.float64) for m in (p & t, p & ~t, ~p & t))  # [B, L]

    def f1(a, b, c):
        denom = 2 * a + b + c
        return np.divide(2 * a, denom, out=np.zeros_like(denom), where=denom > 0)

    return f1(tp.sum(1), fp.sum(1), fn.sum(1)), f1(tp, fp, fn).mean(axis=1)


def weighted_multilabel_metrics(
    prob: np.ndarray,
    pred: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    per_class_pred: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """f1_micro, f1_macro (zero_division 0), map, ece of the examples counted with `weights` [B, N], each [B];
    with the predictions at per-class thresholds also f1_micro_per_class and f1_macro_per_class."""
    t = targets.astype(bool)
    out = dict(zip(("f1_micro", "f1_macro"), _f1s(pred, t, weights), strict=True))
    out["map"] = _average_precision(prob, t, weights)
    out["ece"] = _ece(prob, t.astype(np.float64), weights)
    if per_class_pred is not None:
        out.update(zip(PER_CLASS_METRICS, _f1s(per_class_pred, t, weights), strict=True))
    return out


def multilabel_paired_bootstrap(
    baseline: tuple[np.ndarray, ...],
    system: tuple[np.ndarray, ...],
    targets: np.ndarray,
    n_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float]:
    """p-value per metric of ``CLASSIFICATION_METRICS``; each system is (probabilities [N, L], 0/1 predictions)
    or (probabilities, predictions, predictions at per-class thresholds), the latter adding
    ``PER_CLASS_METRICS``."""
    n = targets.shape[0]
    if len(baseline) != len(system):
        raise ValueError("both systems need predictions at per-class thresholds, or neither")
    for name, scores in (("baseline", baseline), ("system", system)):
        if any(a.shape != targets.shape for a in scores):
            raise ValueError(
                f"{name} scores/predictions {[a.shape for a in scores]} do not match targets {targets.shape}"
            )
    metrics = CLASSIFICATION_METRICS + (PER_CLASS_METRICS if len(system) == 3 else ())
    unit = np.ones((1, n))
    observed = {
        k: float(weighted_multilabel_metrics(*system[:2], targets, unit, *system[2:])[k][0])
        - float(weighted_multilabel_metrics(*baseline[:2], targets, unit, *baseline[2:])[k][0])
        for k in metrics
    }
    rng = np.random.default_rng(seed)
    samples = {k: ([], []) for k in metrics}
    for start in range(0, n_samples, CHUNK):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(CHUNK, n_samples - start)).astype(
            np.float64
        )
        for which, (prob, pred, *per_class) in enumerate((baseline, system)):
            for k, values in weighted_multilabel_metrics(prob, pred, targets, weights, *per_class).items():
                samples[k][which].append(values)
    return {
        k: bootstrap_p_value(observed[k], np.concatenate(samples[k][0]), np.concatenate(samples[k][1]))
        for k in metrics
    }

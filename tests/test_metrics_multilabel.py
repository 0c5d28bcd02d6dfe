"""Multi-label metrics against hand-computed values."""

import math
import warnings

import numpy as np
import pytest
from transformers import EvalPrediction

from hf_losses.metrics import (
    MultiLabelMetrics,
    multilabel_metrics,
    sigmoid,
    tune_class_thresholds,
    tune_threshold,
)
from hf_losses.metrics.multilabel import default_thresholds

# Fixture: 3 examples x 4 labels, no ties within a row or within a column.
SCORES = np.array(
    [
        [0.9, 0.8, 0.3, 0.1],  # ranking: l0 (+), l1 (-), l2 (+), l3 (-)
        [0.2, 0.6, 0.7, 0.4],  # ranking: l2 (-), l1 (+), l3 (-), l0 (-)
        [0.1, 0.2, 0.25, 0.4],  # no positive label
    ]
)
TARGETS = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
D2 = 1 / math.log2(3)  # discount at rank 2; rank 1 -> 1, rank 3 -> 1/log2(4) = 0.5

# Threshold 0.5 -> predictions [[1,1,0,0], [0,1,1,0], [0,0,0,0]].
# Per label (tp, fp, fn): l0 (1,0,0), l1 (1,1,0), l2 (0,1,1), l3 (0,0,0).
# Micro: TP=2, FP=2, FN=1 -> P = 2/4, R = 2/3, F1 = 2*2 / (2*2 + 2 + 1) = 4/7.
# Macro F1: l0 = 1, l1 = 2/(2+1) = 2/3, l2 = 0, l3 = 0 (zero_division) -> (5/3)/4 = 5/12.
# Macro P: 1, 1/2, 0, 0 -> 3/8.  Macro R: 1, 1, 0, 0 -> 1/2.
# Hamming: wrong cells (0,1), (0,2), (1,2) -> 3/12.
# AP per label with a positive: l0 scores .9(+) .2 .1 -> 1; l1 .8(-) .6(+) .2 -> 1/2; l2 .7(-) .3(+) .25 -> 1/2.
# mAP = (1 + 1/2 + 1/2) / 3 = 2/3.
# P@1: row0 1, row1 0, row2 0 -> 1/3.  P@3: 2/3, 1/3, 0 -> 1/3.  P@5 (k = L = 4): 2/4, 1/4, 0 -> 1/4.
# nDCG@1: 1, 0, 0 -> 1/3.
# nDCG@3: row0 DCG = 1 + 0.5, IDCG (2 positives) = 1 + D2; row1 DCG = D2, IDCG = 1; row2 0.
# nDCG@5 (k = 4): same as @3 since rank-4 gains are 0 and the ideal has at most 2 ones.
# ECE (15 bins of width 1/15, every (example, label) pair): |sum p - sum t| per bin:
# bin 1 {.1, .1}: .2; bin 3 {.2, .2, .25}: .65; bin 4 {.3(+)}: .7; bin 6 {.4, .4}: .8; bin 9 {.6(+)}: .4;
# bin 10 {.7}: .7; bin 12 {.8}: .8; bin 13 {.9(+)}: .1 -> 4.35 / 12. (The values on bin edges, .2, .4 and .6,
# would land in an empty bin below, so the edge convention does not change the value.)
NDCG3 = (1.5 / (1 + D2) + D2 + 0) / 3
EXPECTED = {
    "f1_micro": 4 / 7,
    "f1_macro": 5 / 12,
    "precision_micro": 0.5,
    "precision_macro": 3 / 8,
    "recall_micro": 2 / 3,
    "recall_macro": 0.5,
    "map": 2 / 3,
    "p@1": 1 / 3,
    "p@3": 1 / 3,
    "p@5": 1 / 4,
    "ndcg@1": 1 / 3,
    "ndcg@3": NDCG3,
    "ndcg@5": NDCG3,
    "hamming_loss": 3 / 12,
    "ece": 4.35 / 12,
}


def test_hand_computed_fixture():
    out = multilabel_metrics(SCORES, TARGETS)
    assert set(out) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert all(isinstance(v, float) for v in out.values())


def test_ndcg_numbers_spelled_out():
    # 1/log2(3) = 0.63093; row0 = 1.5 / 1.63093 = 0.91972; mean = (0.91972 + 0.63093) / 3 = 0.51688.
    assert multilabel_metrics(SCORES, TARGETS)["ndcg@3"] == pytest.approx(0.51688, abs=1e-5)


def test_threshold_changes_set_metrics_only():
    # Threshold 0.22 -> predictions [[1,1,1,0], [0,1,1,1], [0,0,1,1]]: TP=3 (row0 l0, l2; row1 l1),
    # FP=5 (row0 l1; row1 l2, l3; row2 l2, l3), FN=0 -> F1 = 6 / (6 + 5) = 6/11; Hamming 5/12.
    out = multilabel_metrics(SCORES, TARGETS, threshold=0.22)
    assert out["f1_micro"] == pytest.approx(6 / 11)
    assert out["hamming_loss"] == pytest.approx(5 / 12)
    assert out["ece"] == pytest.approx(EXPECTED["ece"])
    assert out["p@1"] == pytest.approx(EXPECTED["p@1"])
    assert out["map"] == pytest.approx(EXPECTED["map"])


def test_fewer_labels_than_k():
    # L = 2: p@3 and p@5 use k = 2 -> 1/2; nDCG@5: DCG = 1, IDCG = 1 -> 1.
    out = multilabel_metrics(np.array([[0.9, 0.1]]), np.array([[1, 0]]))
    assert out["p@1"] == 1.0
    assert out["p@3"] == pytest.approx(0.5)
    assert out["p@5"] == pytest.approx(0.5)
    assert out["ndcg@3"] == pytest.approx(1.0)
    assert out["ndcg@5"] == pytest.approx(1.0)


def test_ndcg_with_more_positives_than_k():
    # 3 positives, k = 1: ideal DCG uses min(k, 3) = 1 one -> top-1 relevant gives 1.
    # k = 3: ranking (+, -, +) -> DCG = 1 + 0.5; ideal 1 + D2 + 0.5.
    out = multilabel_metrics(np.array([[0.9, 0.8, 0.7, 0.6]]), np.array([[1, 0, 1, 1]]))
    assert out["ndcg@1"] == pytest.approx(1.0)
    assert out["ndcg@3"] == pytest.approx(1.5 / (1.5 + D2))
    assert out["p@3"] == pytest.approx(2 / 3)


def test_map_is_nan_without_positives():
    out = multilabel_metrics(np.array([[0.2, 0.7]]), np.array([[0, 0]]))
    assert math.isnan(out["map"])
    assert out["ndcg@1"] == 0.0 and out["p@1"] == 0.0


@pytest.mark.parametrize(
    "scores, targets",
    [
        (np.zeros((2, 3)), np.zeros((2, 4))),
        (np.zeros(3), np.zeros(3)),
        (np.zeros((2, 2)), np.array([[0, 2], [1, 0]])),
        (np.array([[np.nan, 0.1]]), np.array([[0, 1]])),
        (np.zeros((0, 3)), np.zeros((0, 3))),
    ],
)
def test_invalid_inputs(scores, targets):
    with pytest.raises(ValueError):
        multilabel_metrics(scores, targets)


def test_tune_threshold_hand_computed_with_tie():
    scores = np.array([[0.32, 0.6], [0.2, 0.8]])
    targets = np.array([[1, 1], [0, 1]])
    # t <= 0.2: all predicted, TP=3 FP=1 -> F1 = 6/7.  0.2 < t <= 0.32 (0.25, 0.30): TP=3 -> F1 = 1.
    # 0.32 < t <= 0.6: TP=2 FN=1 -> 4/5.  Tie between 0.25 and 0.30 -> 0.30 (closer to 0.5).
    threshold, f1 = tune_threshold(scores, targets)
    assert threshold == pytest.approx(0.30)
    assert f1 == pytest.approx(1.0)


def test_tune_threshold_custom_grid_and_symmetric_tie():
    scores = np.array([[0.5, 0.5]])
    targets = np.array([[1, 1]])
    # Both 0.4 and 0.6? 0.6 predicts nothing (F1 0); 0.4 and 0.45 predict both (F1 1) -> 0.45 closest to 0.5.
    assert tune_threshold(scores, targets, [0.4, 0.45, 0.6]) == (pytest.approx(0.45), pytest.approx(1.0))
    # Equal F1 and equal distance from 0.5: the lower threshold wins.
    assert tune_threshold(np.array([[0.9, 0.1]]), np.array([[1, 0]]), [0.6, 0.4])[0] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        tune_threshold(scores, targets, [])


def test_default_grid():
    grid = default_thresholds()
    assert len(grid) == 19 and 0.5 in grid
    assert grid[0] == pytest.approx(0.05) and grid[-1] == pytest.approx(0.95)


def test_sigmoid_is_stable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sigmoid(np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0]))
    assert out == pytest.approx([0.0, 1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-1)), 1.0])


def test_compute_metrics_callable_from_logits():
    logits = np.log(SCORES / (1 - SCORES)).astype(np.float32)
    metrics = MultiLabelMetrics()
    out = metrics(EvalPrediction(predictions=logits, label_ids=TARGETS.astype(np.float32)))
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value, abs=1e-6), key
    assert metrics.last_scores.shape == SCORES.shape
    # Tuple predictions (logits, hidden states) and a changed threshold.
    metrics.threshold = 0.22
    out = metrics(EvalPrediction(predictions=(logits, np.zeros(3)), label_ids=TARGETS))
    assert out["f1_micro"] == pytest.approx(6 / 11)
    # The stored probabilities feed tune_threshold directly.
    threshold, f1 = tune_threshold(metrics.last_scores, metrics.last_targets)
    assert 0.05 <= threshold <= 0.95 and f1 >= 4 / 7


# Per-class thresholds, worked by hand on the grid (0.3, 0.5, 0.7):
#   label 0: F1 0.8 / 1 / 0.667 -> 0.5;  label 1: F1 1 / 0 / 0 -> 0.3;
#   label 2: no positive -> the fallback 0.4;  label 3: F1 0.667 / 1 / 1 -> 0.5 (the tie closest to 0.5).
PER_CLASS_SCORES = np.array(
    [[0.9, 0.35, 0.8, 0.8], [0.6, 0.1, 0.75, 0.4], [0.4, 0.32, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]
)
PER_CLASS_TARGETS = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])


def test_class_thresholds_maximise_each_label_f1():
    found = tune_class_thresholds(
        PER_CLASS_SCORES, PER_CLASS_TARGETS, fallback=0.4, candidates=[0.3, 0.5, 0.7]
    )
    np.testing.assert_allclose(found, [0.5, 0.3, 0.4, 0.5])


def test_per_class_f1_uses_each_label_threshold():
    # predictions: label 0 rows 0-1, label 1 rows 0 and 2, label 2 rows 0-1 (both false), label 3 row 0:
    # per-label F1 1, 1, 0, 1 -> macro 0.75; micro TP 5, FP 2, FN 0 -> 10 / 12.
    out = multilabel_metrics(PER_CLASS_SCORES, PER_CLASS_TARGETS, class_thresholds=[0.5, 0.3, 0.4, 0.5])
    assert out["f1_macro_per_class"] == pytest.approx(0.75)
    assert out["f1_micro_per_class"] == pytest.approx(10 / 12)
    assert "f1_macro_per_class" not in multilabel_metrics(PER_CLASS_SCORES, PER_CLASS_TARGETS)


def test_class_thresholds_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="class_thresholds must be 4 values"):
        multilabel_metrics(PER_CLASS_SCORES, PER_CLASS_TARGETS, class_thresholds=[0.5, 0.5])

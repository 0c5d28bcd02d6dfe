"""Calibration counts and ECE against hand-computed fixtures and a plain float64 reference."""

import json
import math

import numpy as np
import pytest
import torch

from hf_losses.metrics import (
    TokenCalibration,
    classwise_ece,
    expected_calibration_error,
    reliability_counts,
    token_calibration_counts,
)

# 15 bins of width 1/15: 0.05 -> bin 0, 0.10 -> 1, 0.50 and 0.52 -> 7, 0.95 -> 14, 1.0 -> 14 (last), 0.0 -> 0.
CONF = [0.05, 0.10, 0.50, 0.52, 0.95, 1.0, 0.0]
CORRECT = [0, 0, 1, 0, 1, 1, 0]
EXPECTED_ROWS = {0: (2, 0.05, 0), 1: (1, 0.10, 0), 7: (2, 1.02, 1), 14: (2, 1.95, 2)}
# ECE = (2/7)|0.025 - 0| + (1/7)|0.1 - 0| + (2/7)|0.51 - 0.5| + (2/7)|0.975 - 1| = (0.05 + 0.1 + 0.02 + 0.05) / 7
EXPECTED_ECE = 0.22 / 7


def test_reliability_counts_hand_computed():
    counts = reliability_counts(torch.tensor(CONF), torch.tensor(CORRECT))
    assert counts.dtype == torch.float64 and counts.shape == (15, 3)
    for b in range(15):
        expected = EXPECTED_ROWS.get(b, (0, 0.0, 0))
        assert counts[b].tolist() == pytest.approx(expected, abs=1e-7), b
    assert expected_calibration_error(counts) == pytest.approx(EXPECTED_ECE, abs=1e-7)


def test_bin_edges_belong_to_the_upper_bin_and_one_to_the_last():
    counts = reliability_counts([0.0, 0.25, 0.5, 0.75, 1.0], [True, False, True, False, True], num_bins=4)
    assert counts[:, 0].tolist() == [1, 1, 1, 2]
    assert counts[:, 2].tolist() == [1, 0, 1, 1]


def test_counts_add_up_over_batches():
    g = torch.Generator().manual_seed(1)
    conf = torch.rand(1000, generator=g, dtype=torch.float64)
    hit = torch.rand(1000, generator=g) < conf
    whole = reliability_counts(conf, hit)
    parts = sum(reliability_counts(c, h) for c, h in zip(conf.split(333), hit.split(333), strict=True))
    assert torch.allclose(whole, parts, rtol=1e-14, atol=0)
    assert whole[:, 0].sum() == 1000 and whole[:, 2].sum() == hit.sum()


def plain_ece(conf: list[float], hit: list[int], num_bins: int) -> float:
    """sum_b (n_b / N) |mean conf_b - acc_b| with bin b = [b/B, (b+1)/B), the last one closed."""
    total = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        members = [i for i, c in enumerate(conf) if lo <= c < hi or (b == num_bins - 1 and c == 1.0)]
        if members:
            mean_conf = sum(conf[i] for i in members) / len(members)
            accuracy = sum(hit[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(mean_conf - accuracy)
    return total


def test_ece_matches_plain_reference():
    rng = np.random.default_rng(0)
    conf = rng.random(500) ** 0.5
    hit = (rng.random(500) < conf**2).astype(int)
    counts = reliability_counts(torch.from_numpy(conf), torch.from_numpy(hit))
    assert expected_calibration_error(counts) == pytest.approx(
        plain_ece(conf.tolist(), hit.tolist(), 15), rel=1e-12
    )


def test_perfect_and_worst_calibration():
    # Confidence 1 and always right: ECE 0. Confidence 1 and always wrong: ECE 1.
    assert expected_calibration_error(reliability_counts([1.0, 1.0], [1, 1])) == 0.0
    assert expected_calibration_error(reliability_counts([1.0, 1.0], [0, 0])) == 1.0


def test_empty_input_gives_zero_counts_and_nan_ece():
    counts = reliability_counts(torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    assert counts.sum() == 0
    assert math.isnan(expected_calibration_error(counts))


@pytest.mark.parametrize(
    "conf, correct, num_bins",
    [
        ([0.5, 1.2], [1, 0], 15),
        ([-0.1], [1], 15),
        ([float("nan")], [1], 15),
        ([0.5, 0.5], [1], 15),
        ([0.5], [2], 15),
        ([0.5], [1], 0),
    ],
)
def test_reliability_counts_rejects_bad_input(conf, correct, num_bins):
    with pytest.raises(ValueError):
        reliability_counts(conf, correct, num_bins=num_bins)


def test_ece_rejects_bad_counts_shape():
    with pytest.raises(ValueError, match=r"\[num_bins, 3\]"):
        expected_calibration_error(torch.zeros(15, 2))


# ---------------------------------------------------------------------------------------- tokens

Q = math.e / (2 * math.e + 2)  # softmax([1, 1, 0, 0]) of the first two classes: 0.36553
# Four kept tokens (probabilities written as log-probabilities) and one ignored token.
TOKENS = [
    ([0.72, 0.18, 0.05, 0.05], 0),  # conf .72 (bin 10), right, p_y .72 (p_y bin 14)
    ([0.23, 0.62, 0.12, 0.03], 2),  # conf .62 (bin 9), wrong, p_y .12 (p_y bin 2)
    (None, 1),  # logits [1, 1, 0, 0]: tie -> argmax 0, wrong; conf = p_y = Q (bin 5, p_y bin 7)
    ([0.88, 0.04, 0.04, 0.04], 0),  # conf .88 (bin 13), right, p_y .88 (p_y bin 17)
]
TOKEN_ECE = (0.28 + 0.62 + Q + 0.12) / 4  # each token alone in its bin: (1/N) sum |conf - correct|
TOKEN_MEAN_P_Y = (0.72 + 0.12 + Q + 0.88) / 4


def token_fixture(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [2, 3, 4] and labels [2, 3]; position (0, 2) is ignored and holds an extreme logit."""
    rows = [torch.tensor([1.0, 1.0, 0.0, 0.0]) if p is None else torch.tensor(p).log() for p, _ in TOKENS]
    ignored = torch.tensor([1e4, 0.0, 0.0, -1e4])
    logits = torch.stack([rows[0], rows[1], ignored, rows[2], rows[3], rows[0]]).reshape(2, 3, 4)
    labels = torch.tensor([[0, 2, -100], [1, 0, -100]])
    return logits.to(dtype), labels


def test_token_calibration_hand_computed():
    logits, labels = token_fixture()
    stats = token_calibration_counts(logits, labels)
    rel = stats.reliability
    assert rel.dtype == torch.float64 and rel.shape == (15, 3)
    assert rel[:, 0].nonzero().flatten().tolist() == [5, 9, 10, 13]
    assert rel[[5, 9, 10, 13], 1].tolist() == pytest.approx([Q, 0.62, 0.72, 0.88], abs=1e-6)
    assert rel[[5, 9, 10, 13], 2].tolist() == [0, 0, 1, 1]
    assert stats.p_y_histogram.shape == (20,)
    assert stats.p_y_histogram.nonzero().flatten().tolist() == [2, 7, 14, 17]
    assert stats.num_tokens == 4
    metrics = stats.metrics()
    assert metrics["ece"] == pytest.approx(TOKEN_ECE, abs=1e-6)
    assert metrics["mean_p_y"] == pytest.approx(TOKEN_MEAN_P_Y, abs=1e-6)


def test_token_calibration_bf16_logits():
    logits, labels = token_fixture(torch.bfloat16)
    metrics = token_calibration_counts(logits, labels).metrics()
    assert metrics["ece"] == pytest.approx(TOKEN_ECE, abs=1e-2)
    assert metrics["mean_p_y"] == pytest.approx(TOKEN_MEAN_P_Y, abs=1e-2)


def test_token_calibration_matches_float64_softmax_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g) * 4
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, 5:] = -100
    stats = token_calibration_counts(logits, labels)
    keep = labels != -100
    p = torch.softmax(logits[keep].double(), dim=-1)
    y = labels[keep]
    conf, pred = p.max(dim=-1)
    expected = reliability_counts(conf, pred == y)
    assert torch.allclose(stats.reliability, expected, atol=1e-5)
    p_y = p[torch.arange(len(y)), y]
    assert float(stats.p_y_sum) == pytest.approx(float(p_y.sum()), rel=1e-6)
    assert stats.p_y_histogram.tolist() == reliability_counts(p_y, torch.ones_like(y), 20)[:, 0].tolist()


def test_token_calibration_sums_over_batches_and_processes():
    logits, labels = token_fixture()
    whole = token_calibration_counts(logits, labels)
    merged = TokenCalibration.zeros()
    for i in range(2):  # one "batch" (or process) per sentence
        merged = merged.merge(token_calibration_counts(logits[i : i + 1], labels[i : i + 1]))
    for a, b in zip(whole, merged, strict=True):
        assert torch.equal(a, b)
    flat = whole.flatten() + merged.flatten()  # what a sum all-reduce over two processes gives
    doubled = TokenCalibration.unflatten(flat)
    assert doubled.num_tokens == 8
    assert doubled.metrics() == pytest.approx(whole.metrics())
    with pytest.raises(ValueError, match="expected 66 values"):
        TokenCalibration.unflatten(flat[:-1])


def test_token_calibration_json_round_trip():
    stats = token_calibration_counts(*token_fixture())
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["ece"] == pytest.approx(TOKEN_ECE, abs=1e-6)
    assert data["num_tokens"] == 4
    again = TokenCalibration.from_dict(data)
    for a, b in zip(stats, again, strict=True):
        assert torch.equal(a, b)


def test_token_calibration_all_ignored_and_extreme_logits():
    logits, labels = token_fixture()
    empty = token_calibration_counts(logits, torch.full_like(labels, -100))
    assert empty.num_tokens == 0
    assert all(math.isnan(v) for v in empty.metrics().values())
    # Logits of +-1e4: confidence 1, p_y 1 or 0, all finite.
    stats = token_calibration_counts(torch.tensor([[1e4, -1e4], [1e4, -1e4]]), torch.tensor([0, 1]))
    assert stats.reliability[14].tolist() == [2, 2, 1]
    assert stats.p_y_histogram[[0, 19]].tolist() == [1, 1]
    assert stats.metrics() == {"ece": 0.5, "mean_p_y": 0.5}


def test_token_calibration_rejects_bad_input():
    logits, labels = token_fixture()
    with pytest.raises(ValueError, match="must agree"):
        token_calibration_counts(logits, labels[:, :2])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        token_calibration_counts(logits, torch.where(labels == 0, 4, labels))


# ---------------------------------------------------------------------------------------- multi-label


def test_classwise_ece_hand_computed():
    # 2 examples x 3 labels; bins of width 1/15: .1 -> 1, .15 -> 2, .9 and .92 -> 13, .5 -> 7, .05 -> 0.
    probs = np.array([[0.1, 0.9, 0.5], [0.15, 0.92, 0.05]])
    targets = np.array([[0, 1, 1], [1, 0, 0]])
    # |sum p - sum t| per bin: bin1 .1, bin2 .85, bin13 |1.82 - 1| = .82, bin7 .5, bin0 .05 -> 2.32 / 6
    assert classwise_ece(probs, targets) == pytest.approx(2.32 / 6, abs=1e-12)
    with pytest.raises(ValueError, match="probabilities"):
        classwise_ece(probs * 3, targets)

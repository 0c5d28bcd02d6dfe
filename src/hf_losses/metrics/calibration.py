"""Calibration counts and the expected calibration error (ECE), summable across batches and processes.

Definitions (in words: docs/trainers.md, "Calibration metrics"):

- Bins: ``num_bins`` equal-width bins of confidence on [0, 1]; confidence c falls in bin
  ``min(floor(c * num_bins), num_bins - 1)``, computed in float64 (so bin b is [b/B, (b+1)/B) and 1.0 is
  in the last bin).
- Reliability counts: per bin b, ``n_b`` (how many predictions), ``sum conf_b`` and ``sum correct_b``.
  Counts of several batches or processes add up exactly (float64 sums of 0/1 and of confidences).
- ``ECE = sum_b (n_b / N) * |sum conf_b / n_b - sum correct_b / n_b| = (1/N) sum_b |sum conf_b - sum correct_b|``
  with N = sum_b n_b; it is NaN when N = 0 (nothing to measure, like ``map`` without positives).
- Translation, token level (:func:`token_calibration_counts`): over every non-ignored target token under
  teacher forcing, confidence = max_j p_j and correct = [argmax_j p_j == y] (the first maximal index on
  ties); also the sum of p_y and a histogram of p_y (``num_p_y_bins`` equal-width bins on [0, 1], same
  binning rule), so the mean p_y and its distribution are exact too.
- Multi-label, classwise: every (example, label) pair is a prediction with confidence p = sigmoid(x) and
  outcome t in {0, 1} (see :func:`hf_losses.metrics.multilabel.multilabel_metrics`, key ``ece``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

__all__ = [
    "NUM_BINS",
    "NUM_P_Y_BINS",
    "TokenCalibration",
    "expected_calibration_error",
    "reliability_counts",
    "token_calibration_counts",
]

NUM_BINS = 15
NUM_P_Y_BINS = 20
F64 = torch.float64


def _bin_index(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Equal-width bin of each value in [0, 1]: min(floor(v * num_bins), num_bins - 1), in float64."""
    return (values.to(F64) * num_bins).floor().long().clamp_(0, num_bins - 1)


def _binned_sums(bins: torch.Tensor, columns: list[torch.Tensor], num_bins: int) -> torch.Tensor:
    """[num_bins, len(columns)] float64: per bin, the sum of each column over the entries in that bin."""
    values = torch.stack([c.to(F64) for c in columns], dim=1)
    out = torch.zeros(num_bins, len(columns), dtype=F64, device=values.device)
    return out.index_add_(0, bins, values)


def _check_num_bins(name: str, num_bins: int) -> None:
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(f"{name} must be a positive integer; got {num_bins!r}")


def reliability_counts(confidence: Any, correct: Any, num_bins: int = NUM_BINS) -> torch.Tensor:
    """[num_bins, 3] float64 per equal-width confidence bin: (count, sum of confidence, sum of correct).

    ``confidence`` in [0, 1] and ``correct`` (bool or 0/1) of the same shape, any shape; float64 on the
    device of ``confidence``. Raises ``ValueError`` for mismatched shapes, NaN or out-of-range confidences.
    """
    _check_num_bins("num_bins", num_bins)
    conf = torch.as_tensor(confidence).reshape(-1).to(F64)
    hit = torch.as_tensor(correct, device=conf.device).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(
            f"confidence and correct must have as many entries; got {conf.numel()} and {hit.numel()}"
        )
    if conf.numel() and not bool(((conf >= 0) & (conf <= 1)).all()):
        raise ValueError("confidence must lie in [0, 1] (and not be NaN)")
    if hit.numel() and not bool(((hit == 0) | (hit == 1)).all()):
        raise ValueError("correct must be boolean or 0/1")
    return _binned_sums(_bin_index(conf, num_bins), [torch.ones_like(conf), conf, hit], num_bins)


def expected_calibration_error(counts: torch.Tensor) -> float:
    """ECE = (1/N) sum_b |sum conf_b - sum correct_b| from [num_bins, 3] reliability counts; NaN when N = 0."""
    counts = torch.as_tensor(counts, dtype=F64)
    if counts.ndim != 2 or counts.shape[1] != 3:
        raise ValueError(
            f"counts must be [num_bins, 3] (count, sum conf, sum correct); got {tuple(counts.shape)}"
        )
    total = float(counts[:, 0].sum())
    if total == 0:
        return math.nan
    return float((counts[:, 1] - counts[:, 2]).abs().sum()) / total


class TokenCalibration(NamedTuple):
    """Summable token-level calibration statistics of a translation model (all float64 tensors).

    ``reliability`` [num_bins, 3]: (count, sum max_j p_j, sum [argmax == y]) per confidence bin;
    ``p_y_histogram`` [num_p_y_bins]: how many tokens have p_y in each equal-width bin of [0, 1];
    ``p_y_sum`` []: the sum of p_y. The number of tokens is ``reliability[:, 0].sum()``.
    Accumulate with :meth:`merge`; reduce across processes with ``accelerator.reduce(c.flatten(), "sum")``
    and :meth:`unflatten`; report :meth:`metrics`; store with :meth:`to_dict` / :meth:`from_dict`.
    """

    reliability: torch.Tensor
    p_y_histogram: torch.Tensor
    p_y_sum: torch.Tensor

    @classmethod
    def zeros(
        cls, num_bins: int = NUM_BINS, num_p_y_bins: int = NUM_P_Y_BINS, device=None
    ) -> TokenCalibration:
        """Empty statistics to accumulate into."""
        return cls(
            torch.zeros(num_bins, 3, dtype=F64, device=device),
            torch.zeros(num_p_y_bins, dtype=F64, device=device),
            torch.zeros((), dtype=F64, device=device),
        )

    @property
    def num_tokens(self) -> float:
        return float(self.reliability[:, 0].sum())

    def merge(self, other: TokenCalibration) -> TokenCalibration:
        """Elementwise sum (statistics of the union of both token sets)."""
        return TokenCalibration(*(a + b.to(a.device) for a, b in zip(self, other, strict=True)))

    def flatten(self) -> torch.Tensor:
        """One 1-D float64 tensor, for a single all-reduce (sum) across processes."""
        return torch.cat([t.reshape(-1) for t in self])

    @classmethod
    def unflatten(
        cls, flat: torch.Tensor, num_bins: int = NUM_BINS, num_p_y_bins: int = NUM_P_Y_BINS
    ) -> TokenCalibration:
        """Inverse of :meth:`flatten`."""
        if flat.numel() != 3 * num_bins + num_p_y_bins + 1:
            raise ValueError(
                f"expected {3 * num_bins + num_p_y_bins + 1} values for {num_bins} bins and "
                f"{num_p_y_bins} p_y bins; got {flat.numel()}"
            )
        reliability, histogram, p_y_sum = flat.split([3 * num_bins, num_p_y_bins, 1])
        return cls(reliability.reshape(num_bins, 3), histogram, p_y_sum.reshape(()))

    def metrics(self) -> dict[str, float]:
        """``ece`` (top-1 confidence vs accuracy) and ``mean_p_y``; both NaN without tokens."""
        n = self.num_tokens
        return {
            "ece": expected_calibration_error(self.reliability),
            "mean_p_y": float(self.p_y_sum) / n if n else math.nan,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the raw counts plus the derived metrics (the runner reads this as test_calibration.json)."""
        return {
            "num_tokens": self.num_tokens,
            **self.metrics(),
            "reliability": self.reliability.cpu().tolist(),
            "p_y_histogram": self.p_y_histogram.cpu().tolist(),
            "p_y_sum": float(self.p_y_sum),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenCalibration:
        """Inverse of :meth:`to_dict` (derived metrics are recomputed, not read)."""
        reliability = torch.tensor(data["reliability"], dtype=F64)
        if reliability.ndim != 2 or reliability.shape[1] != 3:
            raise ValueError("reliability must be a list of [count, sum conf, sum correct] rows")
        return cls(
            reliability,
            torch.tensor(data["p_y_histogram"], dtype=F64),
            torch.tensor(float(data["p_y_sum"]), dtype=F64),
        )


@torch.no_grad()
def token_calibration_counts(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    num_bins: int = NUM_BINS,
    num_p_y_bins: int = NUM_P_Y_BINS,
) -> TokenCalibration:
    """Calibration statistics of teacher-forced logits [..., V] against labels [...] (``ignore_index`` skipped).

    One pass in float32 over the kept tokens, no softmax: with lse = logsumexp(z), confidence =
    exp(max z - lse), p_y = exp(z_y - lse), correct = [argmax z == y]. Results are float64 on the logits'
    device. Labels outside [0, V) other than ``ignore_index`` raise ``ValueError``.
    """
    _check_num_bins("num_bins", num_bins)
    _check_num_bins("num_p_y_bins", num_p_y_bins)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits [..., V] and labels [...] must agree; got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    keep = labels != ignore_index
    z = logits[keep].float()  # [n, V]
    y = labels[keep].long()
    if y.numel() and not bool(((y >= 0) & (y < logits.shape[-1])).all()):
        raise ValueError(f"labels must be in [0, {logits.shape[-1]}) or {ignore_index}")
    lse = torch.logsumexp(z, dim=-1)
    top, argmax = z.max(dim=-1)
    confidence = (top - lse).exp().clamp_(max=1.0)
    p_y = (z.gather(-1, y[:, None]).squeeze(-1) - lse).exp().clamp_(max=1.0)
    reliability = _binned_sums(
        _bin_index(confidence, num_bins), [torch.ones_like(confidence), confidence, argmax == y], num_bins
    )
    histogram = _binned_sums(_bin_index(p_y, num_p_y_bins), [torch.ones_like(p_y)], num_p_y_bins)[:, 0]
    return TokenCalibration(reliability, histogram, p_y.to(F64).sum())

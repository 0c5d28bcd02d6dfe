"""hf_losses.apps.runs.skeleton: an evaluation that measured nothing is an error (the runs themselves:
tests/apps/test_translate.py, test_classify.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hf_losses.apps.runs import NoMetricsError, predict


class Trainer:
    def __init__(self, metrics: dict):
        self.metrics = metrics

    def predict(self, dataset, metric_key_prefix: str):
        return SimpleNamespace(metrics={f"{metric_key_prefix}_{k}": v for k, v in self.metrics.items()})


TIMING = {"runtime": 0.1, "samples_per_second": 50.0, "steps_per_second": 5.0, "model_preparation_time": 0.01}


def test_timings_alone_are_no_metrics():
    with pytest.raises(NoMetricsError, match="the eval split produced no metrics"):
        predict(Trainer(TIMING), dataset=None, prefix="eval")


@pytest.mark.parametrize("measured", [{"loss": 0.5}, {"f1_micro": 0.0}])
def test_a_loss_or_a_score_is_a_result(measured):
    output = predict(Trainer({**TIMING, **measured}), dataset=None, prefix="test")
    assert output.metrics[f"test_{next(iter(measured))}"] == next(iter(measured.values()))

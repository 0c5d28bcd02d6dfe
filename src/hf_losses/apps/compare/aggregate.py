"""Read the finished runs of a grid, summarise them over seeds and compare every variant with the baseline.

What a run directory may hold (written by the task scripts; the runner uses each file when it is there):

- ``all_results.json``: the metrics (required for a run to count);
- translation: ``{test,eval}_predictions.txt`` (one hypothesis per line), ``{test,eval}_references.txt``
  (the references the script scored, same order; without it the references are read from the grid's data
  flags), ``{test,eval}_calibration.json`` (:meth:`TokenCalibration.to_dict`);
- classification: ``{test,eval}_scores.npz`` with ``probabilities`` [N, L] (sigmoid of the logits),
  ``labels`` [N, L] (0/1), ``threshold`` (the one used for the F1 metrics) and, where tuned,
  ``class_thresholds`` [L] (older runs: ``class_thresholds`` in ``config.json``);
- ``trainer_state.json``: the training log (``nll_loss`` curves).

The test split is used when the run has it, else validation.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.outputs import ALL_RESULTS, PREDICTIONS, REFERENCES, SCORES, split_file
from .grid import PLACEMENT_FLAGS, Grid
from .runner import DONE_FILE, FLAGS_FILE, is_finished, run_dir
from .significance import (
    BOOTSTRAP_SAMPLES,
    CLASSIFICATION_METRICS,
    PER_CLASS_METRICS,
    multilabel_paired_bootstrap,
    sacrebleu_paired_bootstrap,
    seed_t_test,
)

__all__ = ["BOOTSTRAP_TEST", "RunResult", "collect_runs", "compare", "summarise"]

BOOTSTRAP_TEST = "paired bootstrap, pooled over seeds"

# Bookkeeping numbers in all_results.json that are not worth a comparison.
NOT_COMPARED = re.compile(r"(runtime|per_second|samples|epoch|total_flos|_steps$|threshold$)")


@dataclass
class RunResult:
    variant: str
    seed: int
    path: Path
    finished: bool
    metrics: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    wall_time_s: float | None = None
    # the PLACEMENT_FLAGS it was last started with, where they differ from the grid file
    placement: dict[str, Any] = field(default_factory=dict)

    def split_prefix(self, kind: str) -> str | None:
        """'test' if the run wrote ``test_<kind>``, else 'eval' if it wrote ``eval_<kind>``, else None."""
        for prefix in ("test", "eval"):
            if (self.path / split_file(prefix, kind)).is_file():
                return prefix
        return None

    def log_history(self) -> list[dict[str, Any]]:
        """trainer_state.json's log_history ([] without it)."""
        state = self.path / "trainer_state.json"
        if not state.is_file():
            return []
        return json.loads(state.read_text(encoding="utf-8")).get("log_history", [])


def collect_runs(grid: Grid, output_dir: Path) -> list[RunResult]:
    """Every (variant, seed) of the grid with its metrics when finished."""
    results = []
    for variant, seed in grid.runs():
        path = run_dir(output_dir, variant, seed)
        run = RunResult(variant, seed, path, finished=is_finished(path))
        all_results = path / ALL_RESULTS
        if run.finished and all_results.is_file():
            data = json.loads(all_results.read_text(encoding="utf-8"))
            run.metrics = {
                k: float(v)
                for k, v in data.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            run.texts = {k: v for k, v in data.items() if isinstance(v, str)}
            run.wall_time_s = json.loads((path / DONE_FILE).read_text(encoding="utf-8")).get("wall_time_s")
            run.placement = _placement(grid, variant, path)
        else:
            run.finished = False
        results.append(run)
    return results


def _placement(grid: Grid, variant: str, path: Path) -> dict[str, Any]:
    """The placement flags (``use_cpu``, ...) the run was last started with where they differ from the grid
    file's (a ``--set use_cpu=false`` on a GPU machine, say)."""
    flags_file = path / FLAGS_FILE
    if not flags_file.is_file():
        return {}
    ran = json.loads(flags_file.read_text(encoding="utf-8")).get("flags", {})
    planned = json.loads(json.dumps({**grid.args, **grid.variants[variant]}))
    return {k: ran.get(k) for k in PLACEMENT_FLAGS if ran.get(k) != planned.get(k)}


def summarise(runs: list[RunResult]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """variant -> metric -> {mean, std (sample, ddof 1; None for one run), n} over finished runs."""
    by_variant: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        if run.finished:
            for key, value in run.metrics.items():
                by_variant.setdefault(run.variant, {}).setdefault(key, []).append(value)
    return {
        variant: {
            key: {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "n": len(values),
            }
            for key, values in sorted(metrics.items())
        }
        for variant, metrics in by_variant.items()
    }


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def references_from_data(grid: Grid, prefix: str) -> list[str]:
    """The target side of the grid's test (or validation) data, as the script reads it, truncated alike."""
    import datasets

    from hf_losses.apps.corpora import synthetic_translation_corpus
    from hf_losses.data import load_raw_datasets, select_translation_columns

    datasets.disable_progress_bars()
    flags = grid.flags(grid.baseline)
    split = "test" if prefix == "test" else "validation"
    file_flag = "test_file" if split == "test" else "validation_file"
    if flags.get("dataset_name"):
        raw = load_raw_datasets(
            dataset_name=flags["dataset_name"],
            dataset_config_name=flags.get("dataset_config_name"),
            dataset_revision=flags.get("dataset_revision"),
            cache_dir=flags.get("cache_dir"),
        )
    elif flags.get(file_flag):
        raw = load_raw_datasets(**{file_flag: str(flags[file_flag])}, cache_dir=flags.get("cache_dir"))
    elif not any(flags.get(k) for k in ("train_file", "validation_file", "test_file")):
        raw = synthetic_translation_corpus()
    else:
        raise ValueError(f"no {split} data in the grid's flags to read references from")
    pairs = select_translation_columns(
        raw,
        source_lang=str(flags.get("source_lang", "de")).split("_")[0],
        target_lang=str(flags.get("target_lang", "en")).split("_")[0],
        source_column=flags.get("source_column"),
        target_column=flags.get("target_column"),
    )
    targets = list(pairs[split]["target"])
    limit = flags.get("max_predict_samples" if split == "test" else "max_eval_samples")
    return targets[: int(limit)] if limit is not None else targets


class _References:
    """References per run: the run's own ``{prefix}_references.txt``, else the grid's data (read once)."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.from_data: dict[str, list[str]] = {}
        self.sources: set[str] = set()

    def __call__(self, run: RunResult, prefix: str) -> list[str]:
        own = run.path / split_file(prefix, REFERENCES)
        if own.is_file():
            self.sources.add(f"`{split_file(prefix, REFERENCES)}` written by each run")
            return _lines(own)
        if prefix not in self.from_data:
            self.from_data[prefix] = references_from_data(self.grid, prefix)
        self.sources.add("the target side of the grid's data files, read with the project's data loader")
        return self.from_data[prefix]


def _translation_bootstrap(grid, base_runs, var_runs, n_samples, references) -> dict[str, dict]:
    """metric -> {"pooled": p, "per_seed": {seed: p}} for BLEU and chrF on the split both runs predicted."""
    pairs = []
    for seed, base in base_runs.items():
        var = var_runs.get(seed)
        prefix = base.split_prefix(PREDICTIONS)
        if var is None or prefix is None or var.split_prefix(PREDICTIONS) != prefix:
            continue
        refs = references(base, prefix)
        hyps_b, hyps_v = (
            _lines(base.path / split_file(prefix, PREDICTIONS)),
            _lines(var.path / split_file(prefix, PREDICTIONS)),
        )
        if not len(hyps_b) == len(hyps_v) == len(refs):
            raise ValueError(
                f"seed {seed}: {len(hyps_b)} baseline and {len(hyps_v)} {var.variant} predictions "
                f"but {len(refs)} references"
            )
        pairs.append((seed, prefix, hyps_b, hyps_v, refs))
    if not pairs:
        return {}
    out: dict[str, dict] = {}
    for seed, prefix, hyps_b, hyps_v, refs in pairs:
        for name, p in sacrebleu_paired_bootstrap(hyps_b, hyps_v, refs, n_samples).items():
            out.setdefault(f"{prefix}_{name}", {}).setdefault("per_seed", {})[seed] = p
    pooled = sacrebleu_paired_bootstrap(
        [h for *_, hb, _, _ in pairs for h in hb],
        [h for *_, hv, _ in pairs for h in hv],
        [r for *_, refs in pairs for r in refs],
        n_samples,
    )
    prefix = pairs[0][1]
    for name, p in pooled.items():
        out[f"{prefix}_{name}"]["pooled"] = p
    return out


def _scores(run: RunResult, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(probabilities, predictions at the run's threshold, predictions at its per-class thresholds or None,
    labels) from ``{prefix}_scores.npz`` (per-class thresholds of older runs: from ``config.json``)."""
    with np.load(run.path / split_file(prefix, SCORES)) as data:
        prob = np.asarray(data["probabilities"], dtype=np.float64)
        labels = np.asarray(data["labels"]).astype(np.int64)
        threshold = float(data["threshold"])
        class_thresholds = data["class_thresholds"] if "class_thresholds" in data.files else None
    config = run.path / "config.json"
    if class_thresholds is None and config.is_file():
        class_thresholds = json.loads(config.read_text()).get("class_thresholds")
    per_class = None if class_thresholds is None else prob >= np.asarray(class_thresholds, dtype=np.float64)
    return prob, prob >= threshold, per_class, labels


def _classification_bootstrap(base_runs, var_runs, n_samples) -> dict[str, dict]:
    """metric -> {"pooled": p, "per_seed": {seed: p}} for the multi-label metrics, from the scores files; the
    per-class F1s get {"skipped": why} instead when a run has no per-class thresholds."""
    per_seed: list[tuple[int, str, tuple, tuple, np.ndarray]] = []
    for seed, base in base_runs.items():
        var = var_runs.get(seed)
        prefix = base.split_prefix(SCORES)
        if var is None or prefix is None or var.split_prefix(SCORES) != prefix:
            continue
        *base_scores, tb = _scores(base, prefix)
        *var_scores, tv = _scores(var, prefix)
        if not np.array_equal(tb, tv):
            raise ValueError(f"seed {seed}: baseline and {var.variant} were scored on different labels")
        per_seed.append((seed, prefix, base_scores, var_scores, tb))
    if not per_seed:
        return {}
    out: dict[str, dict] = {}
    without = [  # runs whose scores file (or config.json) has no per-class thresholds
        f"{run.variant}/seed-{seed}"
        for seed, _, b, v, _ in per_seed
        for run, scores in ((base_runs[seed], b), (var_runs[seed], v))
        if scores[2] is None
    ]
    if without:  # per-class F1 only where all have it
        per_seed = [(seed, prefix, b[:2], v[:2], t) for seed, prefix, b, v, t in per_seed]
        for name in PER_CLASS_METRICS:
            out[f"{per_seed[0][1]}_{name}"] = {"skipped": f"no per-class thresholds for {', '.join(without)}"}
    for seed, prefix, base, var, labels in per_seed:
        for name, p in multilabel_paired_bootstrap(tuple(base), tuple(var), labels, n_samples).items():
            out.setdefault(f"{prefix}_{name}", {}).setdefault("per_seed", {})[seed] = p
    width = len(per_seed[0][2])
    pooled = multilabel_paired_bootstrap(
        tuple(np.concatenate([b[i] for _, _, b, _, _ in per_seed]) for i in range(width)),
        tuple(np.concatenate([v[i] for _, _, _, v, _ in per_seed]) for i in range(width)),
        np.concatenate([t for *_, t in per_seed]),
        n_samples,
    )
    prefix = per_seed[0][1]
    for name, p in pooled.items():
        out[f"{prefix}_{name}"]["pooled"] = p
    return out


def compare(
    grid: Grid, runs: list[RunResult], n_samples: int = BOOTSTRAP_SAMPLES
) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """variant -> metric -> {delta, p_value, test, p_value_pooled_bootstrap, p_value_per_seed, p_value_seeds,
    n_pairs} against the baseline, and where the references came from (translation). ``delta`` is the mean
    difference over the seeds both finished, the pairs the tests use; a variant that shares no finished seed
    with the baseline is not compared yet."""
    by_variant: dict[str, dict[int, RunResult]] = {}
    for run in runs:
        if run.finished:
            by_variant.setdefault(run.variant, {})[run.seed] = run
    base_runs = by_variant.get(grid.baseline, {})
    references = _References(grid)
    comparisons: dict[str, dict[str, dict]] = {}
    for variant, var_runs in by_variant.items():
        common = sorted(set(base_runs) & set(var_runs))
        if variant == grid.baseline or not common:
            continue  # compared only on the seeds both finished
        if grid.task == "translation":
            bootstrap = _translation_bootstrap(grid, base_runs, var_runs, n_samples, references)
        else:
            bootstrap = _classification_bootstrap(base_runs, var_runs, n_samples)
        metrics = sorted(
            set.intersection(*(set(r.metrics) for r in (*base_runs.values(), *var_runs.values())))
        )
        table = {}
        for metric in metrics:
            if NOT_COMPARED.search(metric):
                continue
            base_vals = [base_runs[s].metrics[metric] for s in common]
            var_vals = [var_runs[s].metrics[metric] for s in common]
            # over the seeds both ran, as the tests pair them (a partial grid has unpaired seeds)
            delta = float(np.mean(var_vals)) - float(np.mean(base_vals))
            p_seeds = seed_t_test(base_vals, var_vals)
            boot = bootstrap.get(metric, {})
            if "pooled" in boot:
                p_value, test = boot["pooled"], BOOTSTRAP_TEST
            elif p_seeds is not None:
                p_value, test = p_seeds, "paired t-test over seeds"
            else:
                p_value, test = None, None
            if "skipped" in boot:
                test = "; ".join(filter(None, (test, f"no bootstrap: {boot['skipped']}")))
            table[metric] = {
                "delta": delta,
                "p_value": p_value,
                "test": test,
                "p_value_pooled_bootstrap": boot.get("pooled"),
                "p_value_per_seed": {str(s): p for s, p in sorted(boot.get("per_seed", {}).items())},
                "p_value_seeds": p_seeds,
                "n_pairs": len(common),
            }
        comparisons[variant] = table
    return comparisons, sorted(references.sources)


def json_ready(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def tested_metrics(task: str) -> tuple[str, ...]:
    """Metric names (without split prefix) that get a paired bootstrap."""
    return ("bleu", "chrf") if task == "translation" else CLASSIFICATION_METRICS

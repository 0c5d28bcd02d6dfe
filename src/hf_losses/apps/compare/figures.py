"""PNG figures of a comparison (matplotlib, headless): metrics with error bars, reliability, p_y, NLL curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hf_losses.metrics.calibration import TokenCalibration, reliability_counts

from ...files import replaced_atomically
from ..runs.outputs import CALIBRATION, SCORES, split_file
from .aggregate import RunResult

__all__ = ["missing_matplotlib", "write_figures"]


def missing_matplotlib() -> str | None:
    """Why the figures cannot be drawn (matplotlib, of the ``experiments`` extra, is not installed), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'hf_losses[experiments]')"
    return None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finished_by_variant(runs: list[RunResult], variants: list[str]) -> dict[str, list[RunResult]]:
    return {v: [r for r in runs if r.variant == v and r.finished] for v in variants}


def metric_figure(plt, path: Path, runs, variants: list[str], metrics: list[str]) -> Path | None:
    """One panel per metric: mean +- std over seeds per variant, with each seed as a dot."""
    by_variant = _finished_by_variant(runs, variants)
    metrics = [m for m in metrics if any(m in r.metrics for rs in by_variant.values() for r in rs)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, variant in enumerate(variants):
            values = [r.metrics[metric] for r in by_variant[variant] if metric in r.metrics]
            if not values:
                continue
            std = np.std(values, ddof=1) if len(values) > 1 else 0.0
            ax.errorbar(i, np.mean(values), yerr=std, fmt="o", capsize=5, color=f"C{i}", markersize=7)
            ax.scatter(np.full(len(values), i + 0.15), values, s=12, color=f"C{i}", alpha=0.5)
        ax.set_xticks(range(len(variants)), variants, rotation=30)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean ± std over seeds (dots: single seeds)", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def _calibration(run: RunResult, task: str) -> tuple[torch.Tensor, np.ndarray | None] | None:
    """(reliability counts, p_y histogram or None) of a run, from the files the script wrote."""
    if task == "translation":
        prefix = run.split_prefix(CALIBRATION)
        if prefix is None:
            return None
        data = json.loads((run.path / split_file(prefix, CALIBRATION)).read_text(encoding="utf-8"))
        stats = TokenCalibration.from_dict(data)
        return stats.reliability, stats.p_y_histogram.numpy()
    prefix = run.split_prefix(SCORES)
    if prefix is None:
        return None
    with np.load(run.path / split_file(prefix, SCORES)) as data:
        counts = reliability_counts(
            torch.from_numpy(data["probabilities"]).double(), torch.from_numpy(data["labels"])
        )
    return counts, None


def calibration_figures(plt, output_dir: Path, runs, variants, task: str) -> list[Path]:
    """Reliability diagram per variant (counts summed over seeds) and, for translation, the p_y histograms."""
    summed: dict[str, tuple[torch.Tensor, np.ndarray | None]] = {}
    for variant, rs in _finished_by_variant(runs, variants).items():
        for run in rs:
            found = _calibration(run, task)
            if found is None:
                continue
            counts, hist = found
            if variant in summed:
                old_counts, old_hist = summed[variant]
                counts, hist = old_counts + counts, (None if hist is None else old_hist + hist)
            summed[variant] = (counts, hist)
    if not summed:
        return []
    written = []
    names = [v for v in variants if v in summed]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, variant in zip(axes[0], names, strict=True):
        counts = summed[variant][0].numpy()
        num_bins = counts.shape[0]
        edges = np.linspace(0, 1, num_bins + 1)
        filled = counts[:, 0] > 0
        accuracy = np.divide(counts[:, 2], counts[:, 0], out=np.zeros(num_bins), where=filled)
        confidence = np.divide(counts[:, 1], counts[:, 0], out=np.zeros(num_bins), where=filled)
        ax.bar(
            edges[:-1][filled],
            accuracy[filled],
            width=1 / num_bins,
            align="edge",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot(confidence[filled], accuracy[filled], "k.", markersize=4, label="(mean conf, acc)")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        ece = float(np.abs(counts[:, 1] - counts[:, 2]).sum() / max(counts[:, 0].sum(), 1))
        ax.set_title(f"{variant}: ECE {ece:.4f}", fontsize=9)
        ax.set_xlabel("confidence" if task == "translation" else "p = sigmoid(x)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy" if task == "translation" else "fraction positive")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    written.append(_save(plt, fig, output_dir / "reliability.png"))

    with_p_y = [v for v in names if summed[v][1] is not None]
    if with_p_y:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for variant in with_p_y:
            hist = summed[variant][1]
            edges = np.linspace(0, 1, hist.size + 1)
            ax.stairs(hist / max(hist.sum(), 1), edges, label=variant, color=f"C{variants.index(variant)}")
        ax.set_xlabel("p_y (probability of the reference token, teacher-forced)")
        ax.set_ylabel("fraction of tokens")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(plt, fig, output_dir / "p_y_distribution.png"))
    return written


def _save(plt, fig, path: Path) -> Path:
    """Write `fig` to the PNG `path` in one step (a report refreshed mid-grid is never half a picture); close it."""
    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _save_line_plot(plt, fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend one single-panel figure, write it to `path` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path)


def nll_curves_figure(plt, path: Path, runs, variants: list[str]) -> Path | None:
    """Training (and evaluation, dashed) plain NLL per step from each run's trainer_state.json."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plotted = False
    for variant, rs in _finished_by_variant(runs, variants).items():
        color = f"C{variants.index(variant)}"
        for j, run in enumerate(rs):
            history = run.log_history()
            train = [(e["step"], e["nll_loss"]) for e in history if "nll_loss" in e and "step" in e]
            evals = [(e["step"], e["eval_nll_loss"]) for e in history if "eval_nll_loss" in e and "step" in e]
            label = variant if j == 0 else None
            if train:
                ax.plot(*zip(*train, strict=True), color=color, alpha=0.8, linewidth=1, label=label)
                plotted = True
                label = None
            if evals:
                ax.plot(*zip(*evals, strict=True), "--", color=color, alpha=0.8, linewidth=1, label=label)
                plotted = True
    if not plotted:
        plt.close(fig)
        return None
    return _save_line_plot(
        plt,
        fig,
        ax,
        path,
        xlabel="optimizer step",
        ylabel="plain NLL per token (-log p_y)",
        title="training (solid) and validation (dashed) NLL, one line per seed",
    )


def validation_curves_figure(plt, path: Path, runs, variants: list[str], metric: str) -> Path | None:
    """The validation ``metric`` (``eval_bleu``, ...) logged during training against the step, one line per seed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plotted = False
    for variant, rs in _finished_by_variant(runs, variants).items():
        for j, run in enumerate(rs):
            points = [(e["step"], e[metric]) for e in run.log_history() if metric in e and "step" in e]
            if points:
                label = variant if j == 0 else None
                ax.plot(
                    *zip(*points, strict=True),
                    "o-",
                    color=f"C{variants.index(variant)}",
                    alpha=0.8,
                    label=label,
                )
                plotted = True
    if not plotted:
        plt.close(fig)
        return None
    return _save_line_plot(
        plt,
        fig,
        ax,
        path,
        xlabel="optimizer step",
        ylabel=metric,
        title=f"{metric} during training (before checkpoint averaging), one line per seed",
    )


def log_end_figure(plt, path: Path, runs, variants: list[str], log_ends: dict, metric: str) -> Path | None:
    """``metric`` (mean ± std over seeds) against LE for the variants with a bonus; no-bonus variants as bands."""
    by_variant = _finished_by_variant(runs, variants)
    values = {v: [r.metrics[metric] for r in by_variant[v] if metric in r.metrics] for v in variants}
    bonus = [v for v in variants if log_ends.get(v) is not None and values[v]]
    if not bonus:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for variant in variants:
        if not values[variant]:
            continue
        mean = float(np.mean(values[variant]))
        std = float(np.std(values[variant], ddof=1)) if len(values[variant]) > 1 else 0.0
        color = f"C{variants.index(variant)}"
        if variant in bonus:
            ax.errorbar(log_ends[variant], mean, yerr=std, fmt="o", capsize=5, color=color, label=variant)
        else:
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.2)
            ax.axhline(mean, color=color, linestyle="--", linewidth=1, label=f"{variant} (no bonus)")
    return _save_line_plot(
        plt,
        fig,
        ax,
        path,
        xlabel="LE (log_end): where the bonus turns linear; 1 = full EL",
        ylabel=metric,
        title=f"{metric} against LE, mean ± std over seeds",
    )


def write_figures(
    output_dir: Path,
    runs: list[RunResult],
    variants: list[str],
    task: str,
    metrics: list[str],
    log_ends: dict[str, float | None] | None = None,
) -> list[Path]:
    """All figures the runs have data for; returns the files written.

    ``log_ends``: each variant's LE (None without a bonus), for the translation figure of the metric against LE.
    """
    plt = _pyplot()
    output_dir = Path(output_dir)
    written = [metric_figure(plt, output_dir / "metrics.png", runs, variants, metrics)]
    written += calibration_figures(plt, output_dir, runs, variants, task)
    written.append(nll_curves_figure(plt, output_dir / "nll_curves.png", runs, variants))
    headline = metrics[0] if metrics else None  # test before validation (report.main_metrics)
    if headline is not None:
        validation = "eval_" + headline.split("_", 1)[1]
        written.append(
            validation_curves_figure(plt, output_dir / "validation_curves.png", runs, variants, validation)
        )
        if log_ends:
            written.append(
                log_end_figure(plt, output_dir / "log_end.png", runs, variants, log_ends, headline)
            )
    return [p for p in written if p is not None]

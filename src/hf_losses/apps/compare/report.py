"""report.md: settings, the exact command, tables over seeds, comparisons with their test, figures."""

from __future__ import annotations

from pathlib import Path

from ...files import replaced_atomically
from .aggregate import BOOTSTRAP_TEST, RunResult
from .grid import Grid, as_text
from .significance import BOOTSTRAP_SAMPLES

__all__ = ["MAIN_METRICS", "main_metrics", "write_report"]

MAIN_METRICS = {
    "translation": ("bleu", "chrf", "ece", "mean_p_y", "nll_loss", "gen_len"),
    "classification": ("f1_macro", "f1_macro_per_class", "f1_micro", "map", "ece", "threshold"),
}


SUMMARY_METRICS = {
    "translation": ("bleu", "chrf", "ece", "mean_p_y"),
    "classification": ("f1_macro", "f1_macro_per_class", "f1_micro", "map", "ece"),
}


def summary_table(task: str, variants: list[str], summary: dict, comparisons: dict) -> list[str]:
    """The short table for a front page: the headline metrics on test (else validation), each cell the mean ± std
    over seeds (n) and, for a variant, its paired Δ to the baseline with p (pooled bootstrap; seed t-test)."""
    present = {m for metrics in summary.values() for m in metrics}
    split = "test" if any(f"test_{m}" in present for m in SUMMARY_METRICS[task]) else "eval"
    metrics = [f"{split}_{m}" for m in SUMMARY_METRICS[task] if f"{split}_{m}" in present]
    if not metrics:
        return []
    lines = ["| variant | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for variant in variants:
        cells = []
        for metric in metrics:
            s, c = summary.get(variant, {}).get(metric), comparisons.get(variant, {}).get(metric)
            size = abs(s["mean"]) if s is not None else 1.0
            digits = 2 if size >= 1 else 3 if size >= 0.01 else 4
            cell = "–" if s is None else f"{s['mean']:.{digits}f} ± {_fixed(s['std'], digits)} ({s['n']})"
            if c is not None:
                delta = f"{c['delta']:+.{digits}f}".replace("-", "−")  # the minus sign, as in prose
                cell += f"<br>Δ {delta}, " + (
                    f"p {_p_bootstrap(c['p_value'])}; seeds {_p(c['p_value_seeds'])}"
                    if c["test"] == BOOTSTRAP_TEST
                    else f"p seeds {_p(c['p_value_seeds'])}"
                )
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def main_metrics(task: str, summary: dict) -> list[str]:
    """The headline metrics present in the summary: test first, then validation."""
    present = {m for metrics in summary.values() for m in metrics}
    return [f"{p}_{m}" for p in ("test", "eval") for m in MAIN_METRICS[task] if f"{p}_{m}" in present]


def _number(value: float | None, digits: int = 4) -> str:
    return (
        "–"
        if value is None
        else f"{value:.{digits}g}"
        if abs(value) < 1e-3 and value
        else f"{value:.{digits}f}"
    )


def _fixed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _p_bootstrap(value: float | None) -> str:
    """A bootstrap p; its floor 1 / (B + 1) (no resample as extreme as observed) reads `< 1/B`."""
    floor = 1 / (BOOTSTRAP_SAMPLES + 1)
    return f"< {1 / BOOTSTRAP_SAMPLES:g}" if value is not None and value <= floor * (1 + 1e-9) else _p(value)


SIGNIFICANCE_TEXT = {
    "translation": (
        "BLEU and chrF: sacreBLEU's paired bootstrap resampling (`sacrebleu.significance.PairedTest`, "
        f"`test_type='bs'`, {BOOTSTRAP_SAMPLES} resamples, seed 12345), two-sided, between the baseline and the "
        "variant trained with the same seed, on the test sentences (validation when the runs did not predict on "
        "test). The headline p-value (`p_value`) runs that test once on the concatenation of all seed pairs "
        "(sentence i of seed k of the baseline is paired with sentence i of seed k of the variant), so it "
        "measures how sure we can be of the difference in corpus score over these trained models given the "
        "finite test set; the per-seed p-values are the same test on each seed pair alone. It does not "
        "resample training seeds: `p_value_seeds`, a paired t-test of the per-seed scores, is the check "
        "against the spread between seeds (weak with 2-3 seeds). Metrics without a bootstrap (ECE, mean p_y, "
        "NLL) carry only the seed t-test."
    ),
    "classification": (
        "F1 (micro, macro; at the global and, where tuned, the per-class thresholds), mAP and ECE: paired "
        "bootstrap over test examples (validation when there is no "
        f"test split), {BOOTSTRAP_SAMPLES} resamples with seed 12345: the same resampled examples score both "
        "systems, each metric is recomputed exactly on the resample (F1 at the thresholds each run used), and "
        "p = (1 + #{|Δ_i| - mean|Δ| >= |Δ|}) / (B + 1), the rule sacreBLEU uses for its paired bootstrap. "
        "`p_value` pools all seed pairs (examples of seed k of the baseline paired with those of seed k of the "
        "variant); per-seed p-values are listed; `p_value_seeds` is a paired t-test of the per-seed values, "
        "the check against the spread between seeds. Other metrics carry only the seed t-test."
    ),
}


def write_report(
    path: Path,
    grid: Grid,
    command: str,
    runs: list[RunResult],
    summary: dict,
    comparisons: dict,
    figures: list[Path],
    reference_sources: list[str],
    example_command: list[str],
    figures_skipped: str | None = None,
) -> None:
    """Write report.md."""
    variants = list(grid.variants)
    metrics = main_metrics(grid.task, summary)
    finished = [r for r in runs if r.finished]
    lines = [f"# Comparison: {Path(grid.source).stem or 'grid'}", ""]
    if grid.description:
        lines += [grid.description, ""]
    lines += [
        "## Command",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Task `{grid.task}` (`hf-losses {grid.app}`), seeds {list(grid.seeds)}"
        + "".join(f", `{name}` only {list(seeds)}" for name, seeds in grid.variant_seeds.items())
        + f", baseline `{grid.baseline}`. "
        f"Runs finished: {len(finished)} of {len(runs)}.",
        "",
        "## Settings",
        "",
        "Flags shared by every run:",
        "",
        "```yaml",
        *(f"{k}: {v}" for k, v in grid.args.items()),
        "```",
        "",
        *(
            [
                f"Set on the command line for every variant: {', '.join(f'--{k} {x}' for k, x in grid.overrides.items())}.",
                "",
            ]
            if grid.overrides
            else []
        ),
        "| variant | its flags |",
        "|---|---|",
        *(
            f"| {v} | {', '.join(f'--{k} {x}' for k, x in f.items()) or '(shared flags only)'} |"
            for v, f in grid.variants.items()
        ),
        "",
        "One run, as the runner starts it:",
        "",
        "```bash",
        " ".join(example_command),
        "```",
        "",
    ]
    missing = [f"{r.variant}/seed-{r.seed}" for r in runs if not r.finished]
    if missing:
        lines += [f"**Not finished (not in the tables):** {', '.join(missing)}.", ""]

    short = summary_table(grid.task, variants, summary, comparisons)
    if short:
        lines += [
            "## Summary",
            "",
            "Mean ± std over seeds (n runs); Δ = variant − baseline over the seeds both finished; p = the paired "
            "bootstrap pooled over those seed pairs, seeds = the paired t-test over seeds (– with fewer than "
            "two pairs or no spread). Every metric and test: the sections below.",
            "",
            *short,
            "",
        ]
    lines += ["## Results (mean ± std over seeds, n runs)", ""]
    if metrics:
        lines += ["| variant | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for variant in variants:
            cells = []
            for metric in metrics:
                s = summary.get(variant, {}).get(metric)
                cells.append("–" if s is None else f"{_number(s['mean'])} ± {_number(s['std'])} ({s['n']})")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    else:
        lines.append("No finished runs yet.")
    lines.append("")

    lines += [f"## Against the baseline `{grid.baseline}`", ""]
    compared = [m for m in metrics if any(m in c for c in comparisons.values())]
    if comparisons and compared:
        lines += [
            "Δ = mean(variant) − mean(baseline) over the seeds both finished (the pairs the tests use); "
            "p = `p_value` (its test below); p seeds = paired t-test over seeds.",
            "",
            "| variant | metric | Δ | p | test | p per seed | p seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, table in comparisons.items():
            for metric in compared:
                c = table.get(metric)
                if c is None:
                    continue
                per_seed = (
                    ", ".join(f"{s}: {_p_bootstrap(p)}" for s, p in c["p_value_per_seed"].items()) or "–"
                )
                p_value = _p_bootstrap(c["p_value"]) if c["test"] == BOOTSTRAP_TEST else _p(c["p_value"])
                lines.append(
                    f"| {variant} | {metric} | {c['delta']:+.4f} | {p_value} | {c['test'] or '–'} | "
                    f"{per_seed} | {_p(c['p_value_seeds'])} |"
                )
    else:
        lines.append("No comparison yet (the baseline and a variant both need finished runs).")
    lines += ["", "### The significance test", "", SIGNIFICANCE_TEXT[grid.task], ""]
    if reference_sources:
        lines += [f"References for the bootstrap: {'; '.join(reference_sources)}.", ""]

    signatures = sorted(
        {f"`{k}`: `{v}`" for r in finished for k, v in r.texts.items() if k.endswith("signature")}
    )
    if signatures:
        lines += ["## sacreBLEU signatures", "", *(f"- {s}" for s in signatures), ""]
    if figures or figures_skipped:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in figures] or [f"Skipped: {figures_skipped}."]
        lines.append("")
    lines += [
        "## Runs",
        "",
        "| run | finished | wall time of its last sitting (s) | started with, unlike the grid file |",
        "|---|---|---|---|",
    ]
    for r in runs:
        wall = "–" if r.wall_time_s is None else f"{r.wall_time_s:.0f}"
        placement = " ".join(f"--{k} {as_text(v)}" for k, v in r.placement.items()) or "–"
        lines.append(
            f"| {r.variant}/seed-{r.seed} | {'yes' if r.finished else 'no'} | {wall} | {placement} |"
        )
    with replaced_atomically(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

"""``scripts/compare.py GRID.yaml [--output_dir DIR]``: run a grid, then write results.json, report.md, figures."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .aggregate import collect_runs, compare, json_ready, summarise
from .figures import write_figures
from .grid import Grid, GridError, load_grid
from .report import main_metrics, write_report
from .runner import RunFailed, run_dir, run_grid
from .significance import BOOTSTRAP_SAMPLES

__all__ = ["aggregate_grid", "main"]


def aggregate_grid(
    grid: Grid,
    output_dir: Path,
    command: str,
    scripts_dir: Path,
    n_samples: int = BOOTSTRAP_SAMPLES,
    figures: bool = True,
    suffix: str = "",
) -> dict:
    """Read the finished runs and write results{suffix}.json, report{suffix}.md and the figures."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(grid, output_dir)
    summary = summarise(runs)
    comparisons, reference_sources = compare(grid, runs, n_samples)
    metrics = main_metrics(grid.task, summary)
    figures = (
        write_figures(output_dir, runs, list(grid.variants), grid.task, metrics)
        if summary and figures
        else []
    )
    example = grid.command(
        grid.baseline, grid.seeds[0], run_dir(output_dir, grid.baseline, grid.seeds[0]), scripts_dir
    )
    script = (
        os.path.relpath(example[1]) if Path(example[1]).resolve().is_relative_to(Path.cwd()) else example[1]
    )
    example = ["python", *[shlex.quote(a) for a in [script, *example[2:]]]]
    results = {
        "grid": {
            "source": grid.source,
            "task": grid.task,
            "seeds": list(grid.seeds),
            "baseline": grid.baseline,
            "description": grid.description,
            "args": grid.args,
            "variants": grid.variants,
        },
        "command": command,
        "runs": [
            {
                "variant": r.variant,
                "seed": r.seed,
                "finished": r.finished,
                "run_dir": str(r.path),
                "wall_time_s": r.wall_time_s,
                "metrics": r.metrics,
                "texts": r.texts,
            }
            for r in runs
        ],
        "summary": summary,
        "comparisons": comparisons,
        "significance": {"n_samples": n_samples, "reference_sources": reference_sources},
        "figures": [p.name for p in figures],
    }
    (output_dir / f"results{suffix}.json").write_text(
        json.dumps(json_ready(results), indent=2) + "\n", encoding="utf-8"
    )
    write_report(
        output_dir / f"report{suffix}.md",
        grid,
        command,
        runs,
        summary,
        comparisons,
        figures,
        reference_sources,
        example,
    )
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="compare.py",
        description="Run a grid of translate.py/classify.py runs over variants and seeds; compare them with the baseline.",
    )
    parser.add_argument("grid", help="YAML grid file (task, seeds, baseline, args, variants)")
    parser.add_argument(
        "--output_dir", help="where the runs and the report go (default: outputs/<grid name>)"
    )
    parser.add_argument(
        "--report_only", action="store_true", help="start no run; report on the finished ones"
    )
    parser.add_argument("--dry_run", action="store_true", help="print the command of every unfinished run")
    parser.add_argument("--bootstrap_samples", type=int, default=BOOTSTRAP_SAMPLES, help="resamples per test")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--no_figures", action="store_true", help="skip the PNG figures (faster report)")
    parser.add_argument(
        "--baseline",
        help="report only, against this variant instead of the grid's baseline, into results-vs-NAME.json "
        "and report-vs-NAME.md (results.json and report.md are left as they are)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, scripts_dir: Path | None = None) -> int:
    """The command line; returns the exit status (0 ok, 1 a run failed, 2 bad grid or arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    prog = "compare.py"
    scripts_dir = Path(scripts_dir or Path(sys.argv[0]).resolve().parent)
    try:
        grid = load_grid(args.grid)
        if args.bootstrap_samples < 1:
            raise GridError("--bootstrap_samples must be at least 1")
        output_dir = Path(args.output_dir or Path("outputs") / Path(args.grid).stem)
        suffix = ""
        if args.baseline and args.baseline != grid.baseline:
            # another baseline is a second report on the same runs: no run starts, the figures stay
            grid, suffix = grid.with_baseline(args.baseline), f"-vs-{args.baseline}"
        report_only, figures = args.report_only or bool(suffix), not (args.no_figures or suffix)
        command = " ".join(shlex.quote(a) for a in ["python", "scripts/compare.py", *argv])
        status = 0
        if args.dry_run:
            from .runner import is_finished

            for variant, seed in grid.runs():
                path = run_dir(output_dir, variant, seed)
                if not is_finished(path):
                    print(shlex.join(grid.command(variant, seed, path, scripts_dir)))
            return 0
        if not report_only:
            try:
                run_grid(grid, output_dir, scripts_dir, progress=not args.no_progress)
            except RunFailed as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                status = 1
        aggregate_grid(grid, output_dir, command, scripts_dir, args.bootstrap_samples, figures, suffix)
        written = [output_dir / f"results{suffix}.json", output_dir / f"report{suffix}.md"]
        print(f"{prog}: wrote {', '.join(map(str, written))}{' and the figures' if figures else ''}")
        return status
    except (GridError, ValueError, FileNotFoundError) as err:
        if os.environ.get("HF_LOSSES_DEBUG"):
            raise
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2

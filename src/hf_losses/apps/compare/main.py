"""``hf-losses compare GRID.yaml [--output_dir DIR]``: run a grid, then write results.json, report.md, figures."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from ...files import replaced_atomically
from ..runs.errors import UsageError, report_error
from .aggregate import collect_runs, compare, json_ready, summarise
from .figures import missing_matplotlib, write_figures
from .grid import Grid, GridError, load_grid
from .report import main_metrics, write_report
from .runner import RunFailed, RunOutcome, is_finished, run_dir, run_grid, start_checkpoint_to_copy
from .runner import command as run_command
from .significance import BOOTSTRAP_SAMPLES

__all__ = ["aggregate_grid", "check_variants", "main"]


def check_variants(grid: Grid, output_dir: Path) -> None:
    """Parse every variant's flags with its task's own parser (its dataclasses and their checks), before any
    run starts: a typo or a bad value is one GridError naming the variant, not a failure hours in."""
    app = importlib.import_module(f"hf_losses.apps.{grid.app}")
    seed = grid.seeds[0]
    for variant in grid.variants:
        try:
            app.make_parser().parse_args_and_recipe(
                grid.argv(variant, seed, run_dir(output_dir, variant, seed))[1:]
            )
        except (ValueError, FileNotFoundError) as err:  # UsageError is a ValueError
            raise GridError(f"{grid.source}: variant {variant}: {' '.join(str(err).split())}") from None


def variant_log_ends(grid: Grid) -> dict[str, float | None]:
    """Each translation variant's LE as its loss preset resolves it (None for a loss without a bonus)."""
    if grid.task != "translation":
        return {}
    from ...trainers.seq2seq import EncouragingSeq2SeqConfig

    log_ends = {}
    for variant in grid.variants:
        flags = grid.flags(variant)
        preset = EncouragingSeq2SeqConfig.PRESETS.get(str(flags.get("loss", "cel")))
        if preset is None or preset.baseline:
            log_ends[variant] = None
        else:
            knobs = {**preset.defaults, **preset.fixed}
            log_ends[variant] = float(flags.get("log_end", knobs.get("log_end", 1.0)))
    return log_ends


def aggregate_grid(
    grid: Grid,
    output_dir: Path,
    command: str,
    n_samples: int = BOOTSTRAP_SAMPLES,
    figures: bool = True,
    suffix: str = "",
) -> dict:
    """Read the finished runs and write results{suffix}.json, report{suffix}.md and, with matplotlib, the figures."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(grid, output_dir)
    summary = summarise(runs)
    comparisons, reference_sources = compare(grid, runs, n_samples)
    metrics = main_metrics(grid.task, summary)
    figures_skipped = missing_matplotlib() if figures else None
    figures = (
        write_figures(output_dir, runs, list(grid.variants), grid.task, metrics, variant_log_ends(grid))
        if summary and figures and not figures_skipped
        else []
    )
    example = [shlex.quote(a) for a in run_command(grid, grid.baseline, grid.seeds[0], output_dir)]
    results = {
        "grid": {
            "source": grid.source,
            "task": grid.task,
            "seeds": list(grid.seeds),
            "variant_seeds": {name: list(seeds) for name, seeds in grid.variant_seeds.items()},
            "baseline": grid.baseline,
            "description": grid.description,
            "args": grid.args,
            "variants": grid.variants,
            "overrides": grid.overrides,
        },
        "command": command,
        "runs": [
            {
                "variant": r.variant,
                "seed": r.seed,
                "finished": r.finished,
                "run_dir": str(r.path),
                "wall_time_s": r.wall_time_s,
                "placement": r.placement,
                "metrics": r.metrics,
                "texts": r.texts,
            }
            for r in runs
        ],
        "summary": summary,
        "comparisons": comparisons,
        "significance": {"n_samples": n_samples, "reference_sources": reference_sources},
        "figures": [p.name for p in figures],
        "figures_skipped": figures_skipped,
    }
    with replaced_atomically(output_dir / f"results{suffix}.json") as tmp:
        tmp.write_text(json.dumps(json_ready(results), indent=2) + "\n", encoding="utf-8")
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
        figures_skipped,
    )
    return results


def program() -> str:
    """How the user called the runner: ``hf-losses compare`` (hf_losses.cli names it so), else ``compare.py``."""
    return sys.argv[0] if sys.argv[0].startswith("hf-losses") else "compare.py"


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        """argparse prints the usage and exits; the runner reports one line instead."""
        raise UsageError(message)


def comma_list(kind: type) -> Callable[[str], list]:
    """An argparse type: ``a,b,c`` as a list of ``kind`` (``int`` or ``str``)."""

    def parse(text: str) -> list:
        return [kind(item.strip()) for item in text.split(",") if item.strip()]

    parse.__name__ = f"comma-separated {kind.__name__} list"  # argparse names the type in its error
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(
        prog=program(),
        description="Run a grid of translate/classify runs over variants and seeds; compare them with the baseline.",
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
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at a time (default: one per --devices entry, else 1); without OMP_NUM_THREADS set, "
        "the cores are shared out among them",
    )
    parser.add_argument(
        "--devices",
        type=comma_list(str),
        default=[],
        help="GPU ids, e.g. 0,1,2,3: each run sees one of them (CUDA_VISIBLE_DEVICES), round-robin over the jobs",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a flag for every variant, e.g. --set use_cpu=false on a GPU machine (repeatable; "
        "a finished or started run keeps its folder only if nothing but where it runs changed)",
    )
    parser.add_argument(
        "--variants",
        type=comma_list(str),
        default=[],
        help="start only these variants' runs, e.g. ce,cel (default: all); the report still covers every "
        "finished run",
    )
    parser.add_argument(
        "--seeds",
        type=comma_list(int),
        default=[],
        help="start only these seeds' runs, e.g. 3 or 1,2 (default: all of the grid's)",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--no_figures", action="store_true", help="skip the PNG figures (faster report)")
    parser.add_argument(
        "--baseline",
        help="report only, against this variant instead of the grid's baseline, into results-vs-NAME.json "
        "and report-vs-NAME.md (results.json and report.md are left as they are)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 ok, 1 a run failed, 2 bad grid or arguments, or a run
    folder held by another runner)."""
    argv = sys.argv[1:] if argv is None else argv
    prog = program()
    try:
        args = parse_args(argv)
        grid = load_grid(args.grid).with_overrides(args.overrides)
        if args.bootstrap_samples < 1:
            raise GridError("--bootstrap_samples must be at least 1")
        jobs = args.jobs if args.jobs is not None else max(1, len(args.devices))
        if jobs < 1:
            raise GridError(f"--jobs must be at least 1; got {jobs}")
        output_dir = Path(args.output_dir or Path("outputs") / Path(args.grid).stem)
        suffix = ""
        if args.baseline and args.baseline != grid.baseline:
            # another baseline is a second report on the same runs: no run starts, the figures stay
            grid, suffix = grid.with_baseline(args.baseline), f"-vs-{args.baseline}"
        report_only, figures = args.report_only or bool(suffix), not (args.no_figures or suffix)
        launcher = (
            ["hf-losses", "compare"] if prog.startswith("hf-losses") else ["python", "scripts/compare.py"]
        )
        command_line = " ".join(shlex.quote(a) for a in [*launcher, *argv])
        status = 0
        selected = grid.select(args.variants, args.seeds)
        if not report_only:
            check_variants(grid, output_dir)
        if args.dry_run:  # stdout: one command per run left (scripts count them); stderr: what else happens
            for variant, seed in selected:
                path = run_dir(output_dir, variant, seed)
                if not is_finished(path):
                    start = start_checkpoint_to_copy(grid, path, variant, seed)
                    if start is not None:
                        print(f"{prog}: {variant}/seed-{seed} starts from a copy of {start}", file=sys.stderr)
                    print(shlex.join(run_command(grid, variant, seed, output_dir)))
            return 0
        if figures and missing_matplotlib():
            print(
                f"{prog}: warning: the report will have no figures: {missing_matplotlib()}", file=sys.stderr
            )
        if not report_only:

            def refresh_report(outcomes: list[RunOutcome]) -> None:
                """Rewrite the report after each finished run, so that a long grid can be read (and committed)
                as it goes; a failure here is a warning: the runs go on, and the final report says it again."""
                last = outcomes[-1]
                try:
                    aggregate_grid(grid, output_dir, command_line, args.bootstrap_samples, figures, suffix)
                except Exception as err:  # noqa: BLE001 (any bug in the report must not stop hours of runs)
                    print(
                        f"{prog}: warning: report not refreshed after {last.variant}/seed-{last.seed}: {err}",
                        file=sys.stderr,
                    )
                    return
                print(
                    f"{prog}: {last.variant}/seed-{last.seed} finished; {output_dir / 'report.md'} refreshed"
                )

            try:
                run_grid(
                    grid,
                    output_dir,
                    progress=not args.no_progress,
                    jobs=jobs,
                    devices=args.devices,
                    runs=selected,
                    between_runs=refresh_report,
                )
            except RunFailed as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                status = 1
        results = aggregate_grid(grid, output_dir, command_line, args.bootstrap_samples, figures, suffix)
        written = [output_dir / f"results{suffix}.json", output_dir / f"report{suffix}.md"]
        print(
            f"{prog}: wrote {', '.join(map(str, written))}{' and the figures' if results['figures'] else ''}"
        )
        return status
    except (GridError, ValueError, FileNotFoundError) as err:
        return report_error(err, prog)

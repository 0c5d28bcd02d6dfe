"""Side-by-side experiments: a grid of task runs over variants and seeds, compared with a baseline.

    hf-losses compare compare-multi30k-de-en --output_dir results/multi30k-de-en
    python scripts/compare.py scripts/recipes/compare-multi30k-de-en.yaml --output_dir results/multi30k-de-en

That is :func:`main`. Each run is ``python -m hf_losses translate|classify <flags> --seed k --output_dir
DIR/<variant>/seed-<k>``; running the command again skips finished runs and resumes killed ones from their
last checkpoint. Writes ``DIR/results.json``, ``DIR/report.md`` and, with matplotlib (the ``experiments``
extra), PNG figures, after each finished run and at the end. ``--report_only`` rebuilds them from the runs so
far; ``--dry_run`` prints the commands.
The pieces are the grid file (:mod:`.grid`), the resumable runner (:mod:`.runner`), aggregation over seeds
and the comparisons (:mod:`.aggregate`), the paired significance tests (:mod:`.significance`), figures and
the report.
"""

from .aggregate import collect_runs, compare, summarise
from .grid import Grid, GridError, load_grid, parse_grid
from .main import aggregate_grid, main
from .runner import RunFailed, run_grid

__all__ = [
    "Grid",
    "GridError",
    "RunFailed",
    "aggregate_grid",
    "collect_runs",
    "compare",
    "load_grid",
    "main",
    "parse_grid",
    "run_grid",
    "summarise",
]

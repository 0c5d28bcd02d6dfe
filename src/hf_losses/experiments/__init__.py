"""Side-by-side experiments: a grid of task-script runs over variants and seeds, compared with a baseline.

``scripts/compare.py GRID.yaml [--output_dir DIR]`` is :func:`main`; the pieces are the grid file
(:mod:`.grid`), the resumable runner (:mod:`.runner`), aggregation over seeds and the comparisons
(:mod:`.aggregate`), the paired significance tests (:mod:`.significance`), figures and the report.
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

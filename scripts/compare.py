#!/usr/bin/env python
"""Compare losses side by side: every variant of a grid file, over several seeds, against a baseline.

    python scripts/compare.py scripts/recipes/compare-multi30k-de-en.yaml --output_dir results/multi30k-de-en

Each run is ``python scripts/translate.py|classify.py <flags> --seed k --output_dir DIR/<variant>/seed-<k>``;
running the command again skips finished runs and resumes killed ones from their last checkpoint. Writes
``DIR/results.json``, ``DIR/report.md`` and PNG figures. ``--report_only`` rebuilds them from the runs so
far; ``--dry_run`` prints the commands. See ``hf_losses.experiments`` for the grid format.
"""

import sys
from pathlib import Path

from hf_losses.experiments import main

if __name__ == "__main__":
    sys.exit(main(scripts_dir=Path(__file__).resolve().parent))

"""The command-line applications: ``translate`` and ``classify`` (one task run each); ``hf-losses`` dispatches.

Each module has ``make_parser()`` (its flags and recipes), ``main(...)`` (the run, from parsed dataclasses)
and ``cli(argv)`` (the command line with the one-line error contract). The recipes shipped with the package
are in ``RECIPES`` (``scripts/recipes`` in a checkout points there).
"""

from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

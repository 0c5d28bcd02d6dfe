"""The application layer: the command-line programs built on the library (``hf-losses`` dispatches here).

- ``translate`` and ``classify``: one task run each, over the shared run in ``runs`` (arguments, recipes,
  the error contract, launch/resume/Hub checks). Each has ``make_parser()``, ``main(...)`` and ``cli(argv)``.
- ``compare``: the comparison runner, a grid of task runs over variants and seeds against a baseline.
- ``models`` (model presets), ``tokenizers`` (tokenizer training), ``corpora`` (the embedded demo corpora).
- ``RECIPES``: the recipes shipped with the package (``scripts/recipes`` in a checkout points there).

Nothing in the library (``hf_losses.losses``, ``trainers``, ``metrics``, ``cards``, ``data``) imports this
package; see docs/layout.md.
"""

from pathlib import Path

RECIPES = Path(__file__).resolve().parent / "recipes"

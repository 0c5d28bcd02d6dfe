"""``hf-losses translate|classify|compare [RECIPE] [--flag value ...]``: the package's command line.

Each command takes the flags of its application (``hf-losses translate --help``); ``python scripts/<name>.py``
in a checkout is the same command. RECIPE is a YAML/JSON file or the name of a recipe shipped with the package
(``hf-losses translate opus-mt-de-en-cel``, ``hf-losses compare compare-multi30k-de-en``).
"""

from __future__ import annotations

import importlib
import sys

from .apps import RECIPES

# command -> "module:function"; the function takes argv and returns an exit status or None
COMMANDS = {
    "translate": "hf_losses.apps.translate:cli",
    "classify": "hf_losses.apps.classify:cli",
    "compare": "hf_losses.apps.compare:main",
}


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def usage() -> str:
    return (
        f"usage: hf-losses {{{','.join(COMMANDS)}}} [RECIPE] [--flag value ...]\n"
        "  hf-losses translate --help    the flags of a command\n"
        f"recipes shipped with the package: {', '.join(shipped_recipes())}"
    )


def with_shipped_recipe(argv: list[str]) -> list[str]:
    """``argv`` with a leading recipe name (no suffix, e.g. ``demo-translate``) replaced by its path."""
    if argv and argv[0] in shipped_recipes():
        return [str(RECIPES / f"{argv[0]}.yaml"), *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for an unknown command)."""
    if argv is None:  # the real command line: messages and --help name the command ("hf-losses translate")
        argv, sys.argv[0] = sys.argv[1:], f"hf-losses {sys.argv[1] if len(sys.argv) > 1 else ''}".strip()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(
            f"hf-losses: error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    module, function = COMMANDS[argv[0]].split(":")
    status = getattr(importlib.import_module(module), function)(with_shipped_recipe(argv[1:]))
    return status or 0

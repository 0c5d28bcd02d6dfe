"""The two layers: the library (losses, trainers, metrics, cards, data) imports nothing of the
application (``hf_losses.apps``, ``hf_losses.cli``); see docs/layout.md."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_losses"
APPLICATION = ("hf_losses.apps", "hf_losses.cli", "hf_losses.__main__")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import``/``from ... import`` in ``path`` names, relative imports made absolute."""
    package = ".".join(("hf_losses", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return names


def library_files() -> list[Path]:
    return [
        p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in ("apps", "cli.py", "__main__.py")
    ]


def test_the_library_imports_nothing_of_the_application():
    files = library_files()
    assert len(files) > 20 and PACKAGE / "losses" / "encouraging.py" in files
    upward = {
        f"{p.relative_to(PACKAGE)} -> {name}"
        for p in files
        for name in imported_modules(p)
        if name.startswith(APPLICATION)
    }
    assert not upward


def test_the_import_reader_sees_relative_and_absolute_imports(tmp_path):
    assert "hf_losses.apps.runs" in imported_modules(PACKAGE / "apps" / "translate.py")
    assert "hf_losses.losses" in imported_modules(
        PACKAGE / "trainers" / "loss_func.py"
    )  # `from ..losses import ...`

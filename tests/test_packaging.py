"""What a ``pip install`` user gets: the applications, the recipes, the ``hf-losses`` command, the licence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_applications_recipes_command_and_licence(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # built from a copy: the build leaves nothing in the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("hf_losses-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    recipes = {p.name for p in (ROOT / "src" / "hf_losses" / "apps" / "recipes").glob("*.yaml")}
    assert {f"hf_losses/apps/recipes/{r}" for r in recipes} <= names and "demo-translate.yaml" in recipes
    assert {"hf_losses/apps/translate.py", "hf_losses/apps/classify.py", "hf_losses/cli.py"} <= names
    assert "hf-losses = hf_losses.cli:main" in entry_points
    assert any(n.endswith("licenses/LICENSE") for n in names) and "License-Expression: Apache-2.0" in metadata
    assert 'matplotlib>=3.8; extra == "experiments"' in metadata and "Requires-Dist: evaluate" not in metadata

"""The shell scripts in dev/ (finishing grids on a lent GPU): they parse, and what they name exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "dev").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_dev_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_the_device_grids_are_recipes_and_their_data_is_in_the_kit():
    text = (ROOT / "dev" / "device-grids.sh").read_text()
    grids = re.search(r"grids=\$\{GRIDS-([^}]*)\}", text).group(1).split()
    assert grids
    for grid in grids:
        recipe = (ROOT / "scripts" / "recipes" / f"compare-{grid}.yaml").read_text()
        # the kit carries ../shared/data/multi30k only, and the script links it there
        assert set(re.findall(r"\.\./shared/data/([^/\s]+)/", recipe)) == {"multi30k"}
    assert "cp -r ../shared/data/multi30k" in (ROOT / "dev" / "device-kit.sh").read_text()
    assert ".device-kit/" in (ROOT / ".gitignore").read_text().splitlines()

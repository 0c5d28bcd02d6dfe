"""The shell scripts in dev/ (finishing grids on a lent GPU): they parse, and what they name exists."""

from __future__ import annotations

import importlib.util
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


def _sync_module():
    spec = importlib.util.spec_from_file_location(
        "sync_result_tables", ROOT / "dev" / "sync_result_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pages_quote_the_current_summary_tables_of_the_grid_reports():
    sync = _sync_module()
    quoted = [m[2] for name in sync.PAGES for m in sync.QUOTE.finditer((ROOT / name).read_text())]
    assert "results/multi30k-de-en-converged/report.md" in quoted  # the front page quotes the converged grids
    assert sync.main(["--check"]) == 0, "run: python dev/sync_result_tables.py"


def test_sync_replaces_a_stale_table_and_leaves_out_variants_without_runs(tmp_path, monkeypatch):
    sync = _sync_module()
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "report.md").write_text(
        "# Comparison\n\n## Summary\n\nSome words.\n\n| variant | test_bleu |\n|---|---|\n| ce | 30.00 ± – (1) |\n"
        "| cel | 31.00 ± – (1)<br>Δ +1.00, p 0.2; seeds – |\n| el | – |\n\n## Results\n\n| variant | x |\n"
    )
    monkeypatch.setattr(sync, "ROOT", tmp_path)
    page = "Intro.\n\n<!-- summary-table grid/report.md -->\n| old | table |\n<!-- /summary-table -->\n\nAfter.\n"
    assert sync.synced(page) == (
        "Intro.\n\n<!-- summary-table grid/report.md -->\n| variant | test_bleu |\n|---|---|\n| ce | 30.00 ± – (1) |\n"
        "| cel | 31.00 ± – (1)<br>Δ +1.00, p 0.2; seeds – |\n<!-- /summary-table -->\n\nAfter.\n"
    )
    (tmp_path / "grid" / "report.md").write_text("# Comparison written before the summary table\n")
    with pytest.raises(ValueError, match="no '## Summary' section"):
        sync.synced(page)

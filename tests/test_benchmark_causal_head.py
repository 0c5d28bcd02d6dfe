"""benchmarks/causal_head.py runs end to end on tiny shapes and writes its table, one row per variant."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_the_table(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "benchmarks.causal_head", "--quick", "--heads", "gemma3", "--tokens", "64", "--steps", "1",
         "--threads", "1", "--output-dir", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    rows = json.loads((tmp_path / "causal_head.json").read_text())["rows"]
    assert [(r["head"], r["vocab"], r["fused_lm_head"]) for r in rows] == [
        ("gemma3", 2000, False),
        ("gemma3", 2000, True),
    ]
    assert all(r["tokens"] == 64 and r["step_s"] > 0 for r in rows)
    table = (tmp_path / "causal_head.md").read_text()
    assert table.count("| fused head |") == 1 and "--quick" in table


def test_bad_token_count_is_a_one_line_error():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.causal_head", "--tokens", "6"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--tokens must be a positive multiple of 4; got 6" in done.stderr


def test_a_variant_that_would_not_fit_is_not_run(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "benchmarks.causal_head", "--quick", "--memory-margin", "1e9",
         "--output-dir", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    rows = json.loads((tmp_path / "causal_head.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["skipped"].startswith("needs ~") for r in rows)
    assert (tmp_path / "causal_head.md").read_text().count("| not run: needs ~") == 4

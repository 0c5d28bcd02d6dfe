"""The benchmark script runs end to end on tiny shapes and writes its table and chart."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_table_and_chart(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "scripts/benchmark_losses.py",
            "--quick",
            "--min-run-time",
            "0.01",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    table = (tmp_path / "results.md").read_text()
    assert "F.cross_entropy(ls=0.1)" in table and "hf_losses apl (defaults)" in table
    assert (tmp_path / "results.png").stat().st_size > 1000

"""benchmarks/losses.py runs end to end on tiny shapes, writes its tables and charts, and selects groups;
benchmarks/fused_head.py runs on tiny shapes."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import losses as bench

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_table_and_charts(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.losses",
            "--quick",
            "--threads",
            "1",
            "--rounds",
            "1",
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
    for row in (
        "F.cross_entropy(ls=0.1)",
        "hf_losses asymmetric_polynomial_loss",
        "h @ W.T + F.cross_entropy(ls=0)",
        "16x250054",
        "Peak extra memory (MiB) of one forward+backward against the vocabulary size",
    ):
        assert row in table, row
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert (tmp_path / "memory_vs_vocab.png").stat().st_size > 1000


def test_full_cases_cover_the_issue_rows():
    cases, _ = bench.all_cases(False)
    rows = {(c.group, c.name, c.shape, str(c.dtype)) for c in cases}
    assert ("EL LS=0 LE=0.5", "plain formula + torch.compile", (4096, 32000), "torch.float32") in rows
    assert ("EL LS=0.1 LE=1", "hf_losses encouraging_loss", (4096, 32000), "torch.float32") in rows
    assert ("EL LS=0.1 LE=0.5", "F.cross_entropy(ls=0.1)", (4096, 32000), "torch.bfloat16") in rows
    for bonus in ("power", "cosine"):
        for dtype in ("torch.float32", "torch.bfloat16"):
            assert (f"EL {bonus} LS=0.1", "hf_losses encouraging_loss", (4096, 32000), dtype) in rows
    for shape in [(8192, 512), (2048, 4000)]:
        assert ("APL (defaults)", "plain formula + torch.compile", shape, "torch.float32") in rows
    assert (
        "linear LS=0",
        "torch F.linear_cross_entropy chunked (ls=0)",
        (4096, 512, 64000),
        "torch.float32",
    ) in rows
    assert any(c.shape == (512, 250054) for c in cases)
    assert [c.shape[2] for c in bench.chart_cases(False)][::3] == [32000, 64000, 128000, 256000]
    apl_only, _ = bench.all_cases(False, ("apl",))
    assert {c.group for c in apl_only} == {"APL (defaults)"}


def test_only_rejects_unknown_groups():
    assert bench.parse_groups("apl, linear") == ("apl", "linear")
    with pytest.raises(Exception, match="--only"):
        bench.parse_groups("apl,speed")


def test_quick_fused_head_benchmark_writes_its_table(tmp_path):
    command = [sys.executable, "-m", "benchmarks.fused_head", "--quick", "--steps", "1", "--threads", "1"]
    subprocess.run(
        [*command, "--output-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    table = (tmp_path / "fused_head.md").read_text()
    assert "`--fused_lm_head`" in table and "python -m benchmarks.fused_head --quick" in table


def test_el_threads_compares_its_layouts_on_a_small_batch():
    command = [
        sys.executable,
        "-m",
        "benchmarks.el_threads",
        "--rows",
        "64",
        "--vocab",
        "300",
        "--repeats",
        "1",
        "--layouts",
        "shipped,intra-op",
    ]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300).stdout
    lines = out.splitlines()
    assert lines[0].startswith("bf16 64x300, 2 threads")
    rows = [line.split(" | ")[0].strip("| ") for line in lines[3:]]
    assert rows == ["shipped", "intra-op"]
    assert all(line.count("x, ") == 2 for line in lines[3:])  # median ratio and its range per EL loss

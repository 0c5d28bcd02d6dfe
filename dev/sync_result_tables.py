"""Copy each grid report's summary table into the pages that quote it, so the front page never drifts.

A page quotes a report between two markers; everything between them is replaced by the report's "## Summary"
table, less the rows of variants with no finished run:

    <!-- summary-table results/multi30k-de-en-converged/report.md -->
    ...
    <!-- /summary-table -->

    python dev/sync_result_tables.py           # rewrite README.md and docs/results.md
    python dev/sync_result_tables.py --check   # exit 1 naming each stale table (the test suite runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/results.md")
QUOTE = re.compile(r"(<!-- summary-table (\S+) -->\n)(.*?)(<!-- /summary-table -->)", re.DOTALL)
EMPTY_ROW = re.compile(r"\| \S+ (\| – )+\|")


def summary_table(report: Path) -> str:
    """The report's summary table without the rows that have no finished run."""
    text = report.read_text(encoding="utf-8")
    if "\n## Summary\n" not in text:
        raise ValueError(f"{report}: no '## Summary' section (rerun the grid with --report_only)")
    section = text.split("\n## Summary\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not EMPTY_ROW.fullmatch(line)]
    return "\n".join(rows) + "\n"


def synced(page: str) -> str:
    """``page`` with every quoted table replaced by its report's current one (paths from the repository root)."""
    return QUOTE.sub(lambda m: m[1] + summary_table(ROOT / m[2]) + m[4], page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    stale = []
    for name in PAGES:
        page = ROOT / name
        text = page.read_text(encoding="utf-8")
        new = synced(text)
        if new != text:
            stale.append(name)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if stale and args.check:
        print(
            f"stale summary tables in {', '.join(stale)}: run python dev/sync_result_tables.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

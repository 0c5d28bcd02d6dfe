"""Run every (variant, seed) of a grid as a subprocess of the task script, resumably.

A run lives in ``DIR/<variant>/seed-<k>/``. Before it starts, its flags go to ``compare_flags.json``; its
output (stdout and stderr) is appended to ``compare_log.txt``; when the script exits with status 0 the runner
writes ``compare_done.json`` (command, wall time). A run with that marker is finished and skipped; a run
without it is started again with the same flags and no ``--overwrite_output_dir``, so the script resumes
from the last checkpoint in its output_dir (from scratch if it saved none).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .grid import Grid, GridError

__all__ = ["DONE_FILE", "RunFailed", "is_finished", "run_dir", "run_grid"]

DONE_FILE = "compare_done.json"
FLAGS_FILE = "compare_flags.json"
LOG_FILE = "compare_log.txt"


class RunFailed(RuntimeError):
    """A run's script exited with an error (one line, pointing at its log)."""


@dataclass
class RunOutcome:
    variant: str
    seed: int
    status: str  # "skipped" (already finished) or "done"
    wall_time_s: float | None = None


def run_dir(output_dir: Path, variant: str, seed: int) -> Path:
    return Path(output_dir) / variant / f"seed-{seed}"


def is_finished(path: Path) -> bool:
    return (Path(path) / DONE_FILE).is_file()


def _flags_record(grid: Grid, variant: str, seed: int) -> dict:
    return {"task": grid.task, "seed": seed, "flags": grid.flags(variant)}


def _check_same_flags(path: Path, record: dict) -> None:
    """Refuse to continue a run directory that was started with other flags."""
    saved_path = path / FLAGS_FILE
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    if saved != json.loads(json.dumps(record)):
        changed = sorted(
            k
            for k in {*saved.get("flags", {}), *record["flags"]}
            if saved.get("flags", {}).get(k) != record["flags"].get(k)
        )
        raise GridError(
            f"{path} was started with other settings ({', '.join(changed) or 'task/seed'} differ); "
            "use another --output_dir or delete that run directory"
        )


def _log_tail(log: Path, lines: int = 1) -> str:
    """The last non-empty lines of a run's log, joined on one line."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    tail = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(tail)[-300:]


def run_grid(
    grid: Grid,
    output_dir: Path,
    scripts_dir: Path,
    *,
    env: dict[str, str] | None = None,
    progress: bool = True,
) -> list[RunOutcome]:
    """Run what is not finished yet, in ``grid.runs()`` order; stop at the first run that fails (RunFailed)."""
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    runs = grid.runs()
    for variant, seed in runs:  # check every directory before spending time on any run
        _check_same_flags(run_dir(output_dir, variant, seed), _flags_record(grid, variant, seed))
    finished = [is_finished(run_dir(output_dir, v, s)) for v, s in runs]
    outcomes = [RunOutcome(v, s, "skipped") for (v, s), done in zip(runs, finished, strict=True) if done]
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    bar = tqdm(
        total=len(runs),
        initial=sum(finished),
        unit="run",
        desc=f"{grid.task} grid",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for (variant, seed), done in zip(runs, finished, strict=True):
            if done:
                continue
            path = run_dir(output_dir, variant, seed)
            path.mkdir(parents=True, exist_ok=True)
            record = _flags_record(grid, variant, seed)
            (path / FLAGS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            command = grid.command(variant, seed, path, scripts_dir)
            bar.set_postfix_str(f"{variant}/seed-{seed}")
            start = time.monotonic()
            with open(path / LOG_FILE, "a", encoding="utf-8") as log:
                log.write(f"\n$ {' '.join(command)}\n")
                log.flush()
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)
            wall = time.monotonic() - start
            if code != 0:
                raise RunFailed(
                    f"run {variant}/seed-{seed} failed (exit status {code}): {_log_tail(path / LOG_FILE)} "
                    f"(full log: {path / LOG_FILE})"
                )
            done_record = {"command": command, "returncode": code, "wall_time_s": round(wall, 1)}
            (path / DONE_FILE).write_text(json.dumps(done_record, indent=2) + "\n", encoding="utf-8")
            outcomes.append(RunOutcome(variant, seed, "done", wall))
            bar.update(1)
    finally:
        bar.close()
    return outcomes

"""Run every (variant, seed) of a grid as a subprocess (``python -m hf_losses translate|classify``), resumably,
one or several at a time (``jobs``).

A run lives in ``DIR/<variant>/seed-<k>/``. Before it starts, its flags go to ``compare_flags.json``; its
output (stdout and stderr) is appended to ``compare_log.txt``; when the run exits with status 0 the runner
writes ``compare_done.json`` (command, wall time). A run with that marker is finished and skipped; a run
without it is started again with the same flags and no ``--overwrite_output_dir``, so it resumes from the
last checkpoint in its output_dir (from scratch if it saved none; with the grid's ``start_from``, from a copy of
that checkpoint, made before the run's first start).

The command is recorded portably, as ``python -m hf_losses translate ... --output_dir DIR/...`` with DIR
relative to the working directory when it lies below it (results written before recorded the absolute
interpreter and script path; they are read all the same: only the wall time is read back).

One writer per run folder: while a run is going, the runner holds an exclusive ``flock`` on its
``compare_log.txt``, and the run inherits it as its stdout, so a second runner refuses that folder until both
have exited. On Linux the run also dies with the runner (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, asked for in
the child before it starts): a killed runner leaves no orphan training on, and the next runner resumes the run
from its last checkpoint as after any kill. Elsewhere a run outlives a killed runner; the lock still keeps a
second runner out of its folder while it lives.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hf_losses.files import replaced_atomically
from hf_losses.trainers.checkpoints import is_complete_checkpoint, last_complete_checkpoint

from .grid import PLACEMENT_FLAGS, Grid, GridError

__all__ = [
    "DONE_FILE",
    "RunFailed",
    "RunFolderBusy",
    "command",
    "is_finished",
    "run_dir",
    "run_grid",
    "start_checkpoint_to_copy",
]

DONE_FILE = "compare_done.json"
FLAGS_FILE = "compare_flags.json"
LOG_FILE = "compare_log.txt"
RECORDED = ["python", "-m", "hf_losses"]  # how a run's command is written down
LAUNCHER = [sys.executable, "-m", "hf_losses"]  # how it is started (the same, with this interpreter)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class RunFailed(RuntimeError):
    """A run exited with an error (one line, pointing at its log)."""


class RunFolderBusy(ValueError):
    """Another runner (or its run) is writing to this run folder."""


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


def portable(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    path = Path(path)
    return Path(os.path.relpath(path)) if path.resolve().is_relative_to(Path.cwd().resolve()) else path


def command(grid: Grid, variant: str, seed: int, output_dir: Path) -> list[str]:
    """The recorded command of one run: ``python -m hf_losses translate ... --output_dir DIR/<variant>/seed-<k>``."""
    return [*RECORDED, *grid.argv(variant, seed, portable(run_dir(output_dir, variant, seed)))]


def _die_with_runner() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel SIGKILL the run when the runner dies; elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None
    prctl, runner = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()  # looked up before the fork

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != runner:  # the runner died before the request took effect
            os._exit(1)

    return preexec


def _lock(log, path: Path) -> None:
    """Take the run folder's lock (an exclusive flock on its open log), or refuse in one line."""
    try:
        fcntl.flock(log.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunFolderBusy(
            f"run folder {path} is in use by another runner (it holds {path / LOG_FILE} locked); "
            "wait for it to finish or stop it"
        ) from None


def _flags_record(grid: Grid, variant: str, seed: int) -> dict:
    record = {"task": grid.task, "seed": seed, "flags": grid.flags(variant)}
    start = grid.start_checkpoint(variant, seed)
    return record if start is None else {**record, "start_from": str(start)}


def start_checkpoint_to_copy(grid: Grid, path: Path, variant: str, seed: int) -> Path | None:
    """The grid's ``start_from`` checkpoint of this run when its folder has no checkpoint yet (None: nothing to
    copy); GridError when that checkpoint is not there or not complete."""
    start = grid.start_checkpoint(variant, seed)
    if start is None or last_complete_checkpoint(path) is not None:
        return None
    if not is_complete_checkpoint(start):
        raise GridError(
            f"start_from: {start} (for {variant}/seed-{seed}) is not a complete checkpoint; finish the run it "
            "comes from first"
        )
    return start


def _copy_checkpoint(start: Path, path: Path) -> None:
    """Copy checkpoint ``start`` into run folder ``path`` under its own name, whole or not at all."""
    partial = path / f".{start.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(start, partial)
    partial.rename(path / start.name)


def _check_same_flags(path: Path, record: dict) -> None:
    """Refuse to continue a run directory that was started with other flags (``PLACEMENT_FLAGS`` may differ)."""
    saved_path = path / FLAGS_FILE
    if not saved_path.is_file():
        return
    saved, record = json.loads(saved_path.read_text(encoding="utf-8")), json.loads(json.dumps(record))
    before, now = saved.pop("flags", {}), record.pop("flags")
    changed = sorted(k for k in {*before, *now} if k not in PLACEMENT_FLAGS and before.get(k) != now.get(k))
    changed += sorted(k for k in {*saved, *record} if saved.get(k) != record.get(k))  # task, seed, start_from
    if changed:
        raise GridError(
            f"{path} was started with other settings ({', '.join(changed)} differ); "
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


@dataclass
class _Running:
    """A run in progress: its process, its open (locked) log, where it runs and since when."""

    variant: str
    seed: int
    path: Path
    recorded: list[str]
    process: subprocess.Popen
    log: TextIO
    slot: int
    start: float


def _start(grid: Grid, output_dir: Path, variant: str, seed: int, slot: int, env: dict[str, str]) -> _Running:
    """Lock the run's folder, record its flags and command, and start it with its log as stdout and stderr."""
    path = run_dir(output_dir, variant, seed)
    path.mkdir(parents=True, exist_ok=True)
    recorded = command(grid, variant, seed, output_dir)
    log = open(path / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 (closed when the run ends)
    try:
        _lock(log, path)
        record = _flags_record(grid, variant, seed)
        (path / FLAGS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        start = start_checkpoint_to_copy(grid, path, variant, seed)
        if start is not None:
            log.write(f"\nstarting from a copy of {start}\n")
            _copy_checkpoint(start, path)
        log.write(f"\n$ {shlex.join(recorded)}\n")
        log.flush()
        process = subprocess.Popen(
            [*LAUNCHER, *recorded[len(RECORDED) :]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_runner(),
        )
    except BaseException:
        log.close()
        raise
    return _Running(variant, seed, path, recorded, process, log, slot, time.monotonic())


def _finish(run: _Running, code: int) -> RunOutcome:
    """Close a run that exited: its marker (status 0) or one RunFailed line pointing at its log."""
    run.log.close()
    wall = time.monotonic() - run.start
    if code != 0:
        raise RunFailed(
            f"run {run.variant}/seed-{run.seed} failed (exit status {code}): {_log_tail(run.path / LOG_FILE)} "
            f"(full log: {run.path / LOG_FILE})"
        )
    done_record = {"command": run.recorded, "returncode": code, "wall_time_s": round(wall, 1)}
    with replaced_atomically(run.path / DONE_FILE) as tmp:  # the marker is whole or absent
        tmp.write_text(json.dumps(done_record, indent=2) + "\n", encoding="utf-8")
    return RunOutcome(run.variant, run.seed, "done", wall)


def _next_to_end(going: list[_Running], poll_s: float = 0.2) -> tuple[_Running, int]:
    """Wait for one of the runs going to exit; take it off the list and return it with its exit status."""
    while True:
        for run in going:
            code = run.process.poll()
            if code is not None:
                going.remove(run)
                return run, code
        time.sleep(poll_s)


def slot_env(env: dict[str, str], slot: int, jobs: int, devices: Sequence[str]) -> dict[str, str]:
    """The environment of a run in ``slot``: ``CUDA_VISIBLE_DEVICES`` from ``devices`` round-robin, and with
    several jobs and no ``OMP_NUM_THREADS`` set, the usable cores shared out (as torchrun does)."""
    env = dict(env)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // jobs))
    return env


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_grid(
    grid: Grid,
    output_dir: Path,
    *,
    env: dict[str, str] | None = None,
    progress: bool = True,
    jobs: int = 1,
    devices: Sequence[str] = (),
    runs: Sequence[tuple[str, int]] | None = None,
    between_runs: Callable[[list[RunOutcome]], None] | None = None,
) -> list[RunOutcome]:
    """Run what is not finished yet of ``runs`` (default ``grid.runs()``: all of them), ``jobs`` at a time,
    starting them in that order (with ``devices``,
    the runs of job slot ``k`` see only GPU ``devices[k % len(devices)]``). After a run finishes and the next
    ones have started, ``between_runs`` is called with the outcomes so far (the runner refreshes its report
    there). At the first run that fails (RunFailed) or whose folder another runner holds (RunFolderBusy),
    start no more runs, wait for the ones going, then raise it."""
    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    output_dir = Path(output_dir)
    runs = list(grid.runs() if runs is None else runs)
    for variant, seed in runs:  # check every directory before spending time on any run
        _check_same_flags(run_dir(output_dir, variant, seed), _flags_record(grid, variant, seed))
    finished = [is_finished(run_dir(output_dir, v, s)) for v, s in runs]
    for (variant, seed), done in zip(runs, finished, strict=True):
        if not done:
            start_checkpoint_to_copy(grid, run_dir(output_dir, variant, seed), variant, seed)
    outcomes = [RunOutcome(v, s, "skipped") for (v, s), done in zip(runs, finished, strict=True) if done]
    pending = [run for run, done in zip(runs, finished, strict=True) if not done]
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
    going: list[_Running] = []
    error: Exception | None = None
    unreported = False
    try:
        while going or (pending and error is None):
            while pending and error is None and len(going) < jobs:
                slot = min(set(range(jobs)) - {run.slot for run in going})
                variant, seed = pending.pop(0)
                try:
                    run = _start(
                        grid, output_dir, variant, seed, slot, slot_env(child_env, slot, jobs, devices)
                    )
                except RunFolderBusy as err:
                    error = err
                    break
                going.append(run)
                bar.set_postfix_str(", ".join(f"{r.variant}/seed-{r.seed}" for r in going))
            if not going:
                break
            if unreported and between_runs is not None:
                between_runs(outcomes)
            unreported = False
            run, code = _next_to_end(going)
            try:
                outcomes.append(_finish(run, code))
                bar.update(1)
                unreported = True
            except RunFailed as err:
                error = error or err
    finally:
        for run in going:  # interrupted (Ctrl-C): the runs die with us; close what we hold
            run.process.kill()
            run.process.wait()
            run.log.close()
        bar.close()
    if error is not None:
        raise error
    return outcomes

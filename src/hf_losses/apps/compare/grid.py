"""The grid file of a comparison: which script, which seeds, which variants, which shared flags.

    task: translation            # or classification: hf-losses translate or hf-losses classify
    seeds: [1, 2, 3]
    baseline: ce
    description: optional text for the report
    args: {train_file: ..., do_train: true, label_smoothing_factor: 0.1}   # flags shared by every run
    variants:
      ce: {loss: ce}
      cel: {loss: cel, log_end: 0.5}
    variant_seeds: {cel: [1, 2]}  # optional: a variant that runs fewer of the seeds (default: all of them)
    start_from: results/short/{variant}/seed-{seed}/checkpoint-2500  # optional: each run continues that one

Every run is ``python -m hf_losses <translate|classify> --flag value ... --seed k --output_dir DIR/<variant>/seed-<k>``:
variant flags override shared ones; a list value becomes several values (``text_column: [title, body]``);
booleans become ``true``/``false``. ``seed``, ``output_dir`` and ``overwrite_output_dir`` belong to the runner.
``--set KEY=VALUE`` on the runner's command line overrides a flag for every variant (``--set use_cpu=false`` on a
GPU machine). With ``start_from`` a run that has no checkpoint of its own starts from a copy of the named one
(``{variant}`` and ``{seed}`` filled in): a longer schedule continues a finished shorter grid instead of
retraining its steps. The flags in ``PLACEMENT_FLAGS`` say where and how a run executes, not what it computes, so a
started run may resume with them changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = ["GridError", "Grid", "PLACEMENT_FLAGS", "TASK_COMMANDS", "as_text", "load_grid"]

TASK_COMMANDS = {"translation": "translate", "classification": "classify"}  # hf-losses commands
RUNNER_FLAGS = ("seed", "output_dir", "overwrite_output_dir")
PLACEMENT_FLAGS = ("use_cpu", "dataloader_num_workers", "dataloader_pin_memory", "disable_tqdm", "report_to")
KEYS = ("task", "seeds", "baseline", "args", "variants", "variant_seeds", "description", "start_from")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FLAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GridError(ValueError):
    """A bad grid file, reported as one line."""


@dataclass(frozen=True)
class Grid:
    task: str
    seeds: tuple[int, ...]
    baseline: str
    args: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    description: str = ""
    variant_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # variants with fewer seeds
    overrides: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE: on top of every variant
    # a checkpoint path with {variant} and {seed}: where a run without checkpoints of its own starts
    start_from: str = ""
    source: str = field(default="", compare=False)

    @property
    def app(self) -> str:
        """The ``hf-losses`` command (and ``hf_losses.apps`` module) that runs the task."""
        return TASK_COMMANDS[self.task]

    def flags(self, variant: str) -> dict[str, Any]:
        """The shared flags, the variant's on top, the command line's ``--set`` overrides on top of both."""
        return {**self.args, **self.variants[variant], **self.overrides}

    def with_overrides(self, assignments: list[str]) -> Grid:
        """This grid with ``KEY=VALUE`` overrides (values read as YAML: ``true``, ``3``, ``1e-4``, text)."""
        overrides = {}
        for assignment in assignments:
            key, equals, value = assignment.partition("=")
            if not equals or not key:
                raise GridError(f"--set expects KEY=VALUE (e.g. --set use_cpu=false); got {assignment!r}")
            try:
                overrides[key] = yaml.safe_load(value) if value else ""
            except yaml.YAMLError:
                overrides[key] = value
        return replace(self, overrides={**self.overrides, **_check_flags("--set", overrides)})

    def with_baseline(self, name: str, where: str = "--baseline") -> Grid:
        """This grid compared against the variant ``name`` (``where`` names the setting in the error)."""
        if name not in self.variants:
            raise GridError(f"{where} {name!r} is not a variant; variants: {', '.join(self.variants)}")
        return replace(self, baseline=name)

    def seeds_of(self, variant: str) -> tuple[int, ...]:
        """The seeds ``variant`` runs: its ``variant_seeds`` entry, else all of them."""
        return self.variant_seeds.get(variant, self.seeds)

    def runs(self) -> list[tuple[str, int]]:
        """(variant, seed) in the order they run: seed by seed, so a partial grid has whole seeds."""
        return [(v, s) for s in self.seeds for v in self.variants if s in self.seeds_of(v)]

    def select(self, variants: Sequence[str] = (), seeds: Sequence[int] = ()) -> list[tuple[str, int]]:
        """The runs of ``runs()`` among ``variants`` and ``seeds`` (empty: all of them), in the same order."""
        for name in variants:
            if name not in self.variants:
                raise GridError(
                    f"--variants: {name!r} is not a variant; variants: {', '.join(self.variants)}"
                )
        for seed in seeds:
            if seed not in self.seeds:
                raise GridError(
                    f"--seeds: {seed} is not a seed of the grid; seeds: {', '.join(map(str, self.seeds))}"
                )
        return [
            (v, s) for v, s in self.runs() if (not variants or v in variants) and (not seeds or s in seeds)
        ]

    def start_checkpoint(self, variant: str, seed: int) -> Path | None:
        """The checkpoint a run of ``variant`` and ``seed`` starts from (None: from scratch)."""
        return Path(self.start_from.format(variant=variant, seed=seed)) if self.start_from else None

    def argv(self, variant: str, seed: int, output_dir: Path) -> list[str]:
        """The ``hf-losses`` arguments of one run: ``translate --flag value ... --seed k --output_dir DIR``."""
        argv = [self.app]
        for flag, value in self.flags(variant).items():
            values = value if isinstance(value, list) else [value]
            argv += [f"--{flag}", *(as_text(v) for v in values)]
        return [*argv, "--seed", str(seed), "--output_dir", str(output_dir)]


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_flags(where: str, flags: Any) -> dict[str, Any]:
    if flags is None:
        return {}
    if not isinstance(flags, dict):
        raise GridError(f"{where} must be a mapping of flag names to values; got {type(flags).__name__}")
    for name, value in flags.items():
        if not isinstance(name, str) or not FLAG.match(name.removeprefix("--")):
            raise GridError(f"{where}: {name!r} is not a flag name (letters, digits, underscores)")
        if name.removeprefix("--") in RUNNER_FLAGS:
            raise GridError(
                f"{where}: --{name.removeprefix('--')} is set by the runner; remove it from the grid"
            )
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise GridError(f"{where}.{name}: values must be strings, numbers, booleans or a list of them")
    return {name.removeprefix("--"): value for name, value in flags.items()}


def parse_grid(data: Any, source: str = "<grid>") -> Grid:
    """Validate a loaded grid mapping; every problem is one :class:`GridError` line naming the key."""
    if not isinstance(data, dict):
        raise GridError(f"{source}: a grid file must be a YAML mapping with keys {', '.join(KEYS)}")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise GridError(
            f"{source}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(KEYS)}"
        )
    missing = [k for k in ("task", "seeds", "baseline", "variants") if k not in data]
    if missing:
        raise GridError(f"{source}: missing key(s) {', '.join(missing)}")
    task = data["task"]
    if task not in TASK_COMMANDS:
        raise GridError(f"{source}: task must be one of {', '.join(TASK_COMMANDS)}; got {task!r}")
    seeds = data["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise GridError(f"{source}: seeds must be a non-empty list of non-negative integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"{source}: seeds must be distinct; got {seeds!r}")
    variants = data["variants"]
    if not isinstance(variants, dict) or len(variants) < 2:
        raise GridError(f"{source}: variants must map at least two names to flag mappings")
    for name in variants:
        if not isinstance(name, str) or not NAME.match(name):
            raise GridError(f"{source}: variant name {name!r} must be letters, digits, '_', '.', '-'")
    checked = {name: _check_flags(f"variants.{name}", flags) for name, flags in variants.items()}
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise GridError(f"{source}: description must be text")
    start_from = data.get("start_from") or ""
    try:
        if not isinstance(start_from, str):
            raise TypeError
        start_from.format(variant="v", seed=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise GridError(
            f"{source}: start_from must be a checkpoint path in which only {{variant}} and {{seed}} are filled "
            f"in; got {start_from!r}"
        ) from None
    return Grid(
        task=task,
        seeds=tuple(seeds),
        baseline=data["baseline"],
        args=_check_flags("args", data.get("args")),
        variants=checked,
        description=description.strip(),
        start_from=start_from,
        variant_seeds=_check_variant_seeds(source, data.get("variant_seeds"), seeds, checked),
        source=source,
    ).with_baseline(data["baseline"], where=f"{source}: baseline")


def _check_variant_seeds(
    source: str, value: Any, seeds: list[int], variants: dict
) -> dict[str, tuple[int, ...]]:
    """variant_seeds: variant -> a non-empty list of distinct seeds, each one of the grid's seeds."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{source}: variant_seeds must map variant names to lists of seeds")
    checked = {}
    for name, subset in value.items():
        if name not in variants:
            raise GridError(
                f"{source}: variant_seeds.{name} is not a variant; variants: {', '.join(variants)}"
            )
        if (
            not isinstance(subset, list)
            or not subset
            or len(set(subset)) != len(subset)
            or not all(s in seeds for s in subset)
        ):
            raise GridError(
                f"{source}: variant_seeds.{name} must be a non-empty list of distinct seeds out of {seeds}; "
                f"got {subset!r}"
            )
        checked[name] = tuple(s for s in seeds if s in subset)
    return checked


def load_grid(path: str | Path) -> Grid:
    """Read and validate a YAML grid file."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())
        raise GridError(f"{path}: not valid YAML ({first})") from None
    return parse_grid(data, source=str(path))

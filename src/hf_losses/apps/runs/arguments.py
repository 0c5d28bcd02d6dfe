"""Arguments shared by the task scripts, and the parser of ``[RECIPE] [--flag value ...]``.

A recipe is a YAML or JSON file of settings (``learning_rate: 1.0e-4``); flags on the command line override
it. The layers, lowest first: the dataclasses' defaults, the task's from-scratch defaults (only without
``--model_name_or_path``), the recipe, the flags. Without a recipe file and without any data or model
argument, the recipe is the task's demo recipe (``scripts/recipes/demo-*.yaml``).

Relative input paths in a recipe are relative to the recipe file's folder, so a recipe works from any working
directory: ``train_file``, ``validation_file`` and ``test_file`` always; ``dataset_name``,
``model_name_or_path``, ``tokenizer_name``, ``model_config`` and ``resume_from_checkpoint`` when a file or
folder of that name exists next to the recipe (otherwise they are Hub ids or presets). Output paths
(``output_dir``, ``cache_dir``) stay relative to the working directory, as on the command line.

A ``--loss`` on the command line drops, with a warning, the recipe's knobs that this loss pins to other values
(``log_end`` of a ``loss: cel`` recipe run with ``--loss el``); see ``hf_losses.trainers.base_config``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import yaml
from transformers import HfArgumentParser

from hf_losses.data import load_raw_datasets
from hf_losses.trainers.base_config import label_names_refusal, pinned_knobs

from .errors import UsageError
from .launch import check_launch_environment

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
DATA_FIELDS = ("dataset_name", "train_file", "validation_file", "test_file")
SPLIT_FLAGS = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}
RECIPE_FILE_PATHS = ("train_file", "validation_file", "test_file")  # always paths
RECIPE_MAYBE_PATHS = (
    "dataset_name",
    "model_name_or_path",
    "tokenizer_name",
    "model_config",
    "resume_from_checkpoint",
)


@dataclass
class RunArguments:
    """Run-level switches shared by the scripts."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start from scratch even if output_dir holds checkpoints (otherwise training resumes)."
        },
    )


@dataclass
class ModelSourceArguments:
    """Where a pre-trained model comes from (each script adds its from-scratch options)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local path of a checkpoint."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer to use instead of the model's."}
    )
    model_revision: str = field(default="main")
    cache_dir: str | None = field(default=None)
    token: str | None = field(default=None, metadata={"help": "Hub token (never written to disk)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})

    def hub_kwargs(self) -> dict:
        """Keyword arguments for ``from_pretrained``."""
        return dict(
            cache_dir=self.cache_dir,
            revision=self.model_revision,
            token=self.token,
            trust_remote_code=self.trust_remote_code,
        )


@dataclass
class DataSourceArguments:
    """Where the data comes from: a Hub dataset, a local Hub-like folder, or local files (else the demo corpus)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or local Hub-like folder."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub config (e.g. de-en)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "e.g. refs/convert/parquet."})
    train_file: str | None = field(default=None, metadata={"help": "json/jsonl/csv/tsv/parquet."})
    validation_file: str | None = field(default=None)
    test_file: str | None = field(default=None)
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    max_predict_samples: int | None = field(default=None)

    def uses_demo_corpus(self) -> bool:
        return not any(getattr(self, name) for name in DATA_FIELDS)

    def dataset_id(self) -> str | None:
        """What the model card names as the data: the Hub id or folder, else the first local file given."""
        return self.dataset_name or self.train_file or self.validation_file or self.test_file

    def load(self, model_args: ModelSourceArguments) -> datasets.DatasetDict:
        """The raw splits from the Hub or local files."""
        return load_raw_datasets(
            dataset_name=self.dataset_name,
            dataset_config_name=self.dataset_config_name,
            dataset_revision=self.dataset_revision,
            train_file=self.train_file,
            validation_file=self.validation_file,
            test_file=self.test_file,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )

    def select_splits(self, splits, training_args, extra: tuple[str, ...] = ()) -> datasets.DatasetDict:
        """The train/validation/test splits the run needs (--do_*), each cut to its --max_*_samples, and the
        task's `extra` splits (e.g. a part of train held out) as they are."""
        wanted = {
            "train": training_args.do_train,
            "validation": training_args.do_eval,
            "test": training_args.do_predict,
        }
        limits = {
            "train": self.max_train_samples,
            "validation": self.max_eval_samples,
            "test": self.max_predict_samples,
        }
        for split, needed in wanted.items():
            if needed and split not in splits:
                raise UsageError(
                    f"{SPLIT_FLAGS[split]} needs a {split} split; the data has: {', '.join(splits) or 'none'}"
                )
        kept = {split: splits[split] for split in extra if split in splits}
        for split in (s for s, needed in wanted.items() if needed):
            limit, data = limits[split], splits[split]
            kept[split] = data.select(range(min(limit, len(data)))) if limit is not None else data
        return datasets.DatasetDict(kept)


def check_label_names(training_args, hint: str) -> None:
    """UsageError for a --label_names other than 'labels' (see trainers.base_config.label_names_refusal)."""
    refusal = label_names_refusal(training_args.label_names, hint)
    if refusal:
        raise UsageError(f"--label_names {' '.join(training_args.label_names)} {refusal}")


def check_positive(arguments, *names: str) -> None:
    """UsageError naming the first of the integer flags `names` of `arguments` that is below 1."""
    for name in names:
        value = getattr(arguments, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1; got {value}")


def resolve_recipe_paths(settings: dict, folder: Path) -> dict:
    """`settings` with relative input paths made relative to `folder` (the recipe's), as the module says."""
    resolved = dict(settings)
    for name in (*RECIPE_FILE_PATHS, *RECIPE_MAYBE_PATHS):
        value = settings.get(name)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        candidate = folder / value
        if name in RECIPE_FILE_PATHS or candidate.exists():
            resolved[name] = str(candidate)
    return resolved


def read_recipe(path: Path) -> dict:
    """The settings of a YAML/JSON recipe file, as a mapping from argument name to value (input paths made
    relative to the recipe's folder)."""
    if not path.is_file():
        raise UsageError(f"recipe file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        settings = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"recipe file {path} is not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(settings, Mapping):
        raise UsageError(f"recipe file {path} must hold a mapping of argument names to values")
    return resolve_recipe_paths(dict(settings), path.parent)


class RecipeParser(HfArgumentParser):
    """``[RECIPE] [--flag value ...]`` into the dataclasses, with the layers of the module docstring."""

    def __init__(self, dataclass_types, *, demo_recipe: Path | None = None, scratch_defaults=None):
        super().__init__(dataclass_types)
        self.demo_recipe = demo_recipe
        self.scratch_defaults = dict(scratch_defaults or {})

    def error(self, message: str):
        """argparse prints the usage and exits; the scripts report one line instead."""
        raise UsageError(message)

    def parse_args_and_recipe(self, argv: list[str] | None = None) -> tuple:
        """The dataclasses filled from ``argv`` (default ``sys.argv[1:]``)."""
        check_launch_environment()  # before TrainingArguments exist: building them joins the process group
        argv = sys.argv[1:] if argv is None else list(argv)
        recipe_file = Path(argv[0]) if argv and argv[0].endswith(RECIPE_SUFFIXES) else None
        flags = argv[1:] if recipe_file else argv
        recipe = self._checked(read_recipe(recipe_file), recipe_file) if recipe_file else {}
        self.set_defaults(**recipe)
        chosen = vars(self.parse_args(flags))
        if (
            recipe_file is None
            and self.demo_recipe
            and not any(chosen.get(name) for name in (*DATA_FIELDS, "model_name_or_path"))
        ):
            recipe = self._checked(read_recipe(self.demo_recipe), self.demo_recipe)
        given = self._given(flags)
        if "loss" in given:
            recipe = self._without_pinned_knobs(
                {k: v for k, v in recipe.items() if k not in given}, chosen["loss"]
            )
        scratch = self.scratch_defaults if chosen.get("model_name_or_path") is None else {}
        self.set_defaults(**{**scratch, **recipe})
        return self.parse_args_into_dataclasses(args=flags, look_for_args_file=False)

    def _given(self, flags: list[str]) -> set[str]:
        """The names of the arguments that `flags` set (``--name value`` or ``--name=value``)."""
        dest = {option: action.dest for action in self._actions for option in action.option_strings}
        return {dest[f.split("=", 1)[0]] for f in flags if f.split("=", 1)[0] in dest}

    def _without_pinned_knobs(self, recipe: dict, loss: str) -> dict:
        """The recipe without the knobs it set for its own loss that the command line's `loss` pins."""
        for dtype in self.dataclass_types:
            if hasattr(dtype, "PRESETS"):
                settings = {"loss": self.get_default("loss"), **recipe}
                dropped = pinned_knobs(dtype, loss, settings)
                recipe = {**recipe, **dict.fromkeys(dropped)}  # None: unset, the loss decides
        return recipe

    def _checked(self, settings: dict, path: Path) -> dict:
        known = {action.dest for action in self._actions}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UsageError(
                f"recipe file {path}: unknown setting{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
                "(settings are the names of the script's flags, without --)"
            )
        return settings

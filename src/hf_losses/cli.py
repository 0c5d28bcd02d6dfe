"""What both training scripts share: argument parsing, one-line errors, launch checks, resume, and the final save.

Set ``HF_LOSSES_DEBUG=1`` to see full tracebacks instead of one-line error messages.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser


from .data import DataError, load_raw_datasets
from .trainers.common import NonFiniteLossError, last_complete_checkpoint

logger = logging.getLogger("hf_losses")

DEBUG_ENV = "HF_LOSSES_DEBUG"


class UsageError(ValueError):
    """A bad command line or environment, reported as one line."""


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
        return not (self.dataset_name or self.train_file or self.validation_file or self.test_file)

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

    def sample_limits(self) -> dict[str, int | None]:
        """--max_*_samples by split name, for :func:`select_samples`."""
        return {
            "train": self.max_train_samples,
            "validation": self.max_eval_samples,
            "test": self.max_predict_samples,
        }


def parse_arguments(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse CLI flags into the dataclasses; a single .yaml/.yml/.json argument is read as a config file."""
    parser = HfArgumentParser(dataclass_types)

    def one_line_error(message: str):
        raise UsageError(message)

    parser.error = one_line_error
    check_launch_environment()  # before TrainingArguments exist: building them joins the process group
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        path = Path(argv[0])
        if not path.is_file():
            raise UsageError(f"config file {path} does not exist")
        if path.suffix == ".json":
            return parser.parse_dict(json.loads(path.read_text()))
        return parser.parse_yaml_file(path)
    return parser.parse_args_into_dataclasses(args=argv)


def run_cli(main: Callable[[], None]) -> None:
    """Run `main`; user errors become one line on stderr and exit code 2 (tracebacks with HF_LOSSES_DEBUG=1)."""
    prog = Path(sys.argv[0]).name
    try:
        main()
    except (UsageError, DataError, ValueError, FileNotFoundError, NonFiniteLossError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def setup_logging(training_args) -> None:
    """Log like transformers' examples: info on the main process, warnings elsewhere."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    # Our own progress messages (e.g. "Resuming from ...") show on the main process unless --log_level says otherwise.
    passive = training_args.log_level == "passive" and training_args.should_log
    logger.setLevel(min(level, logging.INFO) if passive else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    if not os.environ.get(DEBUG_ENV):
        for builder in _FILE_BUILDERS:
            builder_logger = logging.getLogger(f"datasets.packaged_modules.{builder}.{builder}")
            if not any(isinstance(f, _DropBuilderErrors) for f in builder_logger.filters):
                builder_logger.addFilter(_DropBuilderErrors())


# datasets' file builders log an error right before raising it; load_raw_datasets reports the same problem
# as one DataError line, so the logged copy only doubles the message (it is kept with HF_LOSSES_DEBUG=1).
_FILE_BUILDERS = ("json", "csv", "parquet")


class _DropBuilderErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_LAUNCH_HINT = "launch with `accelerate launch --multi_gpu --num_processes N ...` (add --use_cpu without GPUs) or unset WORLD_SIZE"


def check_launch_environment() -> None:
    """Refuse WORLD_SIZE > 1 without the rendezvous variables a launcher sets (torchrun/accelerate/deepspeed).

    It runs before the TrainingArguments are built, because building them joins the process group: without
    MASTER_ADDR that fails with a message about multinode launches, and without the other processes it waits.
    """
    try:
        announced = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment is not an integer"
        ) from None
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if announced > 1 and missing:
        raise UsageError(
            f"WORLD_SIZE={announced} in the environment but this process was not started by a distributed launcher "
            f"({', '.join(missing)} unset), so it is not part of a {announced}-process group; {_LAUNCH_HINT}"
        )


def check_launch(training_args) -> None:
    """Refuse a run whose environment announces several processes that are not actually joined."""
    check_launch_environment()
    announced = int(os.environ.get("WORLD_SIZE", "1"))
    if announced > 1 and training_args.world_size != announced:
        raise UsageError(
            f"WORLD_SIZE={announced} in the environment but this process is not part of a {announced}-process "
            f"group (it sees world_size={training_args.world_size}); {_LAUNCH_HINT}"
        )


def resume_checkpoint(training_args, run_args: RunArguments) -> str | None:
    """The checkpoint to resume from: --resume_from_checkpoint, else the last one in output_dir (unless overwriting)."""
    if training_args.resume_from_checkpoint is not None:
        if not Path(training_args.resume_from_checkpoint).is_dir():
            raise UsageError(
                f"--resume_from_checkpoint {training_args.resume_from_checkpoint} is not a directory"
            )
        warn_if_loss_changed(training_args.resume_from_checkpoint, training_args)
        return training_args.resume_from_checkpoint
    output_dir = Path(training_args.output_dir)
    if not training_args.do_train or run_args.overwrite_output_dir or not output_dir.is_dir():
        return None
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir to start from scratch).", last)
        warn_if_loss_changed(last, training_args)
    return last


def warn_if_loss_changed(checkpoint: str | None, training_args) -> None:
    """Warn loudly when resuming a checkpoint that was trained with other loss settings."""
    saved_path = Path(checkpoint or "") / "training_args.bin"
    if checkpoint is None or not saved_path.is_file():
        return
    import torch

    try:
        saved = torch.load(saved_path, weights_only=False)
    except Exception:  # an unreadable or foreign file: nothing to compare
        return
    if not hasattr(saved, "loss_settings"):
        return
    before, now = saved.loss_settings(), training_args.loss_settings()
    changed = [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted({*before, *now})
        if before.get(k) != now.get(k)
    ]
    if changed:
        bar = "!" * 100
        logger.warning(
            "\n%s\nRESUMING %s WITH DIFFERENT LOSS SETTINGS: %s.\nThe continued run is not the run that "
            "produced this checkpoint; start a new output_dir (or --overwrite_output_dir) to compare losses.\n%s",
            bar,
            checkpoint,
            "; ".join(changed),
            bar,
        )


def save_split_metrics(trainer, split: str, metrics: dict, num_samples: int) -> None:
    """Log and save metrics of one split (`{split}_results.json`, merged into all_results.json)."""
    metrics[f"{split}_samples"] = num_samples
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)


def with_defaults(argv: list[str], defaults: list[str], *, triggers: tuple[str, ...]) -> list[str]:
    """Prepend a demo's default flags unless a trigger flag (data or model) or a config file is given.

    Later flags win in argparse, so anything the user passes overrides the defaults.
    """
    given = {a.split("=", 1)[0] for a in argv}
    config_file = len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json"))
    if config_file or given & set(triggers):
        return argv
    return [*defaults, *argv]


def check_hub_access(training_args) -> None:
    """With --push_to_hub, fail before training unless the Hub is reachable and the token can write the repo."""
    if not training_args.push_to_hub:
        return
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise UsageError(
            "--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set; unset it or drop --push_to_hub"
        )
    token = training_args.hub_token or get_token()
    if not token:
        raise UsageError(
            "--push_to_hub needs a Hub token: run `hf auth login`, set HF_TOKEN or pass --hub_token"
        )
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
        if "/" not in repo_id:
            repo_id = f"{user}/{repo_id}"
        api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True)
    except Exception as err:  # network errors, 401/403 from the Hub: all mean "cannot push"
        reason = " ".join(str(err).split())[:200]
        raise UsageError(
            f"--push_to_hub: cannot write to Hub repo {repo_id} ({type(err).__name__}: {reason})"
        ) from err


def select_samples(splits, training_args, **limits: int | None):
    """Keep the splits the run needs, each truncated to its --max_*_samples limit."""
    needed = {
        "train": training_args.do_train,
        "validation": training_args.do_eval,
        "test": training_args.do_predict,
    }
    for split, wanted in needed.items():
        if wanted and split not in splits:
            flag = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}[split]
            raise UsageError(f"{flag} needs a {split} split; the data has: {', '.join(splits) or 'none'}")
    kept = {}
    for split, wanted in needed.items():
        if wanted:
            limit = limits.get(split)
            data = splits[split]
            kept[split] = data.select(range(min(limit, len(data)))) if limit is not None else data
    return datasets.DatasetDict(kept)


def write_lines(path: Path, lines: list[str], training_args) -> None:
    """Write one line per item atomically (main process only)."""
    if not training_args.should_save:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: dict, training_args) -> None:
    """Write a JSON file atomically (main process only)."""
    if not training_args.should_save:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def finish_run(trainer, training_args) -> None:
    """Write the final model card; push to the Hub if asked, keeping everything in output_dir if that fails."""
    trainer.create_model_card()
    if not training_args.push_to_hub:
        return
    try:
        trainer.push_to_hub(commit_message="End of training")
    except Exception as err:
        repo = training_args.hub_model_id or Path(training_args.output_dir).name
        raise UsageError(
            f"training finished but the push to {repo} failed ({type(err).__name__}: {err}); the model, tokenizer "
            f"and card are complete in {training_args.output_dir}: upload them later with "
            f"`hf upload {repo} {training_args.output_dir}`"
        ) from err

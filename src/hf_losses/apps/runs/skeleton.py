"""One training run, the same steps in the same order for every task script.

    parse -> launch checks -> resume decision -> seed -> data -> tokenizer and model -> trainer -> train
    -> evaluate (validation) / predict (test) -> results, predictions, card -> push

A task subclasses :class:`TaskRun` and supplies only what differs: its corpus and columns, its tokenizer and
model, its trainer, and what it writes for an evaluated split.
"""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
from transformers import set_seed

from hf_losses.cards import DatasetInfo

from .arguments import RunArguments, check_label_names
from .errors import NoMetricsError
from .hub import check_hub_access, push_output_dir
from .launch import check_launch
from .logs import logger, setup_logging
from .outputs import save_split_metrics
from .resume import announce_resume, check_output_dir, resume_checkpoint

# Keys every Trainer evaluation reports, whether or not it measured anything.
_TIMING_KEYS = (
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "model_preparation_time",
    "jit_compilation_time",
)
EVALUATED_SPLITS = (("validation", "eval", "do_eval"), ("test", "test", "do_predict"))


class TaskRun:
    """A run of one task; :meth:`run` is the skeleton, the methods above it are what a task supplies."""

    demo_dataset: ClassVar[str]  # the card's name for the embedded demo corpus
    label_names_hint: ClassVar[str]  # what to pass instead of TrainingArguments' --label_names
    extra_splits: ClassVar[tuple[str, ...]] = ()  # splits of its own that prepare_data adds

    def __init__(self, model_args, data_args, training_args, run_args: RunArguments | None = None):
        self.model_args, self.data_args, self.args = model_args, data_args, training_args
        self.run_args = run_args or RunArguments()

    # -- what a task supplies ---------------------------------------------------------------------
    def check_arguments(self) -> None:
        """Task-specific checks of the arguments, before anything is loaded or written."""

    def demo_corpus(self) -> datasets.DatasetDict:
        raise NotImplementedError

    def prepare_data(self, raw: datasets.DatasetDict) -> datasets.DatasetDict:
        """The task's columns in every split (a task may also decide here what to run, from the splits)."""
        raise NotImplementedError

    def load_tokenizer_and_model(self, splits: datasets.DatasetDict, resume: str | None) -> tuple:
        raise NotImplementedError

    def tokenize(self, splits: datasets.DatasetDict, tokenizer) -> datasets.DatasetDict:
        raise NotImplementedError

    def card_data(self) -> dict[str, Any]:
        """Task-specific :class:`DatasetInfo` fields (languages, label names)."""
        return {}

    def make_trainer(self, tokenized: datasets.DatasetDict, **common):
        """The task's trainer from the keyword arguments every task passes (model, args, datasets, ...)."""
        raise NotImplementedError

    def evaluate(self, trainer, prefix: str, dataset, examples) -> dict[str, Any]:
        """Metrics of one split (``prefix`` eval or test) after writing its prediction files."""
        raise NotImplementedError

    def before_evaluation(self, trainer) -> None:
        """Changes to the trainer after training and before the final evaluations (e.g. decoding settings)."""

    def after_evaluation(self, trainer) -> None:
        """Last changes to output_dir before the card is written."""

    # -- the skeleton -----------------------------------------------------------------------------
    def run(self) -> None:
        args = self.args
        self.check_arguments()
        check_label_names(args, self.label_names_hint)
        setup_logging(args)
        check_launch(args)
        check_hub_access(args)
        check_output_dir(args, self.run_args.overwrite_output_dir)
        resume = resume_checkpoint(args, self.run_args.overwrite_output_dir)
        set_seed(args.seed)  # before the model is built: --seed fixes its initialisation too

        demo = self.data_args.uses_demo_corpus()
        raw = self.demo_corpus() if demo else self.data_args.load(self.model_args)
        splits = self.data_args.select_splits(self.prepare_data(raw), args, self.extra_splits)
        resume = resume if args.do_train else None
        tokenizer, model = self.load_tokenizer_and_model(splits, resume)
        with args.main_process_first(desc="tokenization"):
            tokenized = self.tokenize(splits, tokenizer)

        dataset_info = DatasetInfo(
            id=self.demo_dataset if demo else self.data_args.dataset_id(),
            config=self.data_args.dataset_config_name,
            revision=self.data_args.dataset_revision,
            **self.card_data(),
        )
        trainer = self.make_trainer(
            tokenized,
            model=model,
            args=args,
            train_dataset=tokenized.get("train"),
            eval_dataset=tokenized.get("validation"),
            processing_class=tokenizer,
            dataset_info=dataset_info,
        )

        if args.do_train:
            if resume is not None:
                announce_resume(resume, args)
            result = trainer.train(resume_from_checkpoint=resume)
            trainer.save_model()
            save_split_metrics(trainer, "train", result.metrics, len(tokenized["train"]))
            trainer.save_state()
        self.before_evaluation(trainer)
        for split, prefix, flag in EVALUATED_SPLITS:
            if getattr(args, flag):
                logger.info("*** %s: %s ***", prefix, split)
                metrics = self.evaluate(trainer, prefix, tokenized[split], splits[split])
                save_split_metrics(trainer, prefix, metrics, len(tokenized[split]))
        self.after_evaluation(trainer)
        trainer.create_model_card()
        push_output_dir(trainer, args)
        trainer.accelerator.end_training()  # a multi-process run leaves its process group before exit


def predict(trainer, dataset, prefix: str):
    """``trainer.predict`` that refuses an empty result: neither a loss nor any score is an error."""
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    measured = [k for k in output.metrics if k.removeprefix(f"{prefix}_") not in _TIMING_KEYS]
    if not measured:
        raise NoMetricsError(
            f"the {prefix} split produced no metrics at all (no loss, no scores): the labels did not reach the "
            "model; check the label arguments"
        )
    return output

"""Train or fine-tune a multi-label text classifier with the asymmetric polynomial loss (APL) or a baseline.

    accelerate launch scripts/classify.py --loss apl                 # offline demo (embedded corpus)
    accelerate launch scripts/classify.py --model_name_or_path bert-base-uncased \\
        --dataset_name google-research-datasets/go_emotions --dataset_config_name simplified \\
        --label_column labels --loss apl --tune_threshold --output_dir outputs/go-emotions-apl
    python scripts/classify.py --train_file train.jsonl --validation_file dev.jsonl \\
        --text_column title abstract --label_column labels --class_names cs.AI cs.LG ... --loss asl

Flags are those of transformers' ``TrainingArguments`` plus the loss flags of ``MultiLabelConfig`` (``--loss``
bce/asl/focal/poly1/apl, ``--gamma_neg``, ``--clip``, ... ``--threshold``, ``--tune_threshold``) and the data
and model flags below; class names go in ``--class_names`` (``--label_names`` is TrainingArguments' list of input
keys, refused). A YAML/JSON recipe as the first argument sets defaults that the flags after it override.
Defaults, each applied only to settings you do not give yourself:

* Without ``--model_name_or_path``: a small BERT (``hf_losses.apps.models.SMALL_BERT``, or ``--model_config``) and a
  tokenizer trained on the training texts, with ``SCRATCH_DEFAULTS`` below (lr 1e-3, 16 epochs, batch 32,
  warm-up 10%). A pre-trained model keeps transformers' own defaults (lr 5e-5, 3 epochs).
* With neither data nor model arguments: the demo recipe ``scripts/recipes/demo-classify.yaml`` on the
  embedded synthetic corpus (20 Zipf-distributed topics).
* Without any of ``--do_train``/``--do_eval``/``--do_predict`` (``--eval_strategy`` alone does not count): train
  on ``train``, evaluate on ``validation``, predict on ``test``, for each split the data has. Pass any of the
  three to choose exactly; a chosen split that is missing is then an error.

Outputs in ``--output_dir``: model, tokenizer, ``config.json`` (``id2label``, ``threshold``), ``README.md``
card, ``{train,eval,test}_results.json`` and ``all_results.json``, ``predictions.jsonl`` (one JSON object
per test example: text, predicted and gold label names), ``{eval,test}_scores.npz`` (sigmoid scores, gold
labels and threshold of each evaluated split). With ``--tune_threshold`` the global threshold that maximises
micro-F1 is chosen after training on validation (optimistic: prefer the test split), or on training examples
held out with ``--threshold_holdout 0.1``; it is reported as ``eval_threshold`` and stored in ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import DataCollatorWithPadding

from hf_losses import MultiLabelConfig, MultiLabelTrainer
from hf_losses.apps import RECIPES, runs
from hf_losses.apps.corpora import synthetic_multilabel_corpus
from hf_losses.apps.models import embedded_positions, load_classifier, set_classifier_bias_to_prior
from hf_losses.apps.runs.logs import logger
from hf_losses.apps.runs.outputs import SCORES, TEST_PREDICTIONS
from hf_losses.data import prepare_multilabel, read_class_names, tokenize_multilabel
from hf_losses.metrics import sigmoid

HOLDOUT = "threshold_holdout"
# Training a small model from scratch wants more steps and a higher learning rate than fine-tuning.
SCRATCH_DEFAULTS = dict(
    learning_rate=1e-3,
    num_train_epochs=16,
    warmup_steps=0.1,
    weight_decay=0.01,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=128,
    logging_steps=50,
    save_strategy="epoch",
    save_total_limit=1,
    seed=0,
)


@dataclass
class ModelArguments(runs.ModelSourceArguments):
    model_config: str | None = field(
        default=None,
        metadata={
            "help": "Without --model_name_or_path: Hub id or path of a config to build the model from "
            "(default: a small BERT, hidden 128, 2 layers, 2 heads)."
        },
    )
    vocab_size: int = field(
        default=4000, metadata={"help": "Vocabulary of the tokenizer trained from scratch."}
    )
    classifier_bias_prior: bool = field(
        default=False,
        metadata={
            "help": "Start the new classification head's bias at the log-odds of each label's frequency in the "
            "training split (not when resuming), so the first steps need not learn how rare each label is."
        },
    )


@dataclass
class DataArguments(runs.DataSourceArguments):
    text_column: list[str] = field(
        default_factory=lambda: ["text"],
        metadata={"help": "Text column(s), joined by a newline: --text_column title abstract."},
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Column of label ids or names per row (default: labels)."}
    )
    label_columns: list[str] | None = field(
        default=None, metadata={"help": "Instead: one 0/1 column per label."}
    )
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Label names in id order, or one file of them: a JSON list, a JSON {id: name} mapping or "
            "a text file with one name a line (optional; not --label_names, which TrainingArguments owns)."
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer texts are truncated."})
    threshold_holdout: float | None = field(
        default=None,
        metadata={
            "help": "With --tune_threshold: hold out this share (< 1) or number (>= 1) of training examples (the "
            "same ones for every seed) and tune the threshold on them after training, not on validation."
        },
    )

    def __post_init__(self):
        runs.check_positive(self, "max_seq_length")
        if self.class_names and len(self.class_names) == 1 and Path(self.class_names[0]).is_file():
            self.class_names = read_class_names(self.class_names[0])

    def split_holdout(self, splits) -> None:
        """Move --threshold_holdout training examples (seed 0) into a ``threshold_holdout`` split, in place."""
        size, train = self.threshold_holdout, splits["train"]
        whole = size is not None and size >= 1 and float(size).is_integer()
        if size is None or not (0 < size < 1 or (whole and size < len(train))):
            raise runs.UsageError(
                f"--threshold_holdout must be a share in (0, 1) or a whole number below the {len(train)} "
                f"training examples; got {size}"
            )
        parts = train.train_test_split(test_size=int(size) if whole else size, seed=0)
        splits["train"], splits[HOLDOUT] = parts["train"], parts["test"]


class ClassificationRun(runs.TaskRun):
    demo_dataset = "hf_losses synthetic multi-label corpus"
    label_names_hint = "class names go in --class_names"
    extra_splits = (HOLDOUT,)

    def demo_corpus(self):
        return synthetic_multilabel_corpus()

    def prepare_data(self, raw):
        """Text and label ids; what to run when no --do_* flag says; the threshold hold-out split."""
        data_args, args = self.data_args, self.args
        label_column = data_args.label_column or (None if data_args.label_columns else "labels")
        prepared, self.label_names = prepare_multilabel(
            raw,
            text_columns=data_args.text_column,
            label_column=label_column,
            label_columns=data_args.label_columns,
            label_names=data_args.class_names,
        )
        # TrainingArguments turns do_eval on for any --eval_strategy; that alone is not a choice of what to run.
        if not (args.do_train or args.do_predict or (args.do_eval and args.eval_strategy == "no")):
            args.do_train, args.do_eval, args.do_predict = (
                s in prepared for s in ("train", "validation", "test")
            )
        holdout = data_args.threshold_holdout is not None
        if holdout and not (args.tune_threshold and args.do_train):
            raise runs.UsageError("--threshold_holdout needs --tune_threshold and --do_train")
        if args.tune_threshold and not (args.do_eval or holdout):
            raise runs.UsageError(
                "--tune_threshold needs --do_eval and a validation split, or --threshold_holdout"
            )
        if holdout and "train" in prepared:
            data_args.split_holdout(prepared)
        return prepared

    def load_tokenizer_and_model(self, splits, resume):
        texts = splits["train"]["text"] if "train" in splits else []
        tokenizer, model = load_classifier(
            self.model_args, self.label_names, texts, self.data_args.max_seq_length, resume
        )
        positions = embedded_positions(model)
        if positions is not None and self.data_args.max_seq_length > positions:
            raise runs.UsageError(
                f"--max_seq_length {self.data_args.max_seq_length} is beyond the {positions} positions the model "
                f"can embed: pass --max_seq_length {positions} or less"
            )
        model.config.threshold = self.args.threshold
        if self.model_args.classifier_bias_prior and resume is None and "train" in splits:
            targets = np.zeros((len(splits["train"]), len(self.label_names)), dtype=np.int64)
            for row, ids in enumerate(splits["train"]["label_ids"]):
                targets[row, ids] = 1
            set_classifier_bias_to_prior(model, targets)
        return tokenizer, model

    def tokenize(self, splits, tokenizer):
        return tokenize_multilabel(
            splits, tokenizer, num_labels=len(self.label_names), max_length=self.data_args.max_seq_length
        )

    def card_data(self):
        return dict(label_names=self.label_names)

    def make_trainer(self, tokenized, **common):
        return MultiLabelTrainer(
            **common,
            data_collator=DataCollatorWithPadding(common["processing_class"]),
            threshold_dataset=tokenized.get(HOLDOUT),
            threshold_dataset_split="train (held out from training)",
        )

    def evaluate(self, trainer, prefix, dataset, examples):
        """Metrics at the (tuned) threshold, the split's scores; for test also predictions.jsonl."""
        args, output_dir = self.args, Path(self.args.output_dir)
        if prefix == "eval" and args.tune_threshold:
            if not args.do_train:  # after training, the trainer tunes it itself
                trainer.tune_threshold()
            logger.info("Tuned threshold %.2f on the %s split", args.threshold, trainer.threshold_split)
        output = runs.predict(trainer, dataset, prefix)
        write_scores(
            output_dir / runs.split_file(prefix, SCORES),
            output,
            args.threshold,
            trainer.class_thresholds,
            args,
        )
        if prefix == "test":
            rows = prediction_rows(output, examples["text"], self.label_names, args.threshold)
            runs.write_lines(output_dir / TEST_PREDICTIONS, rows, args)
            return dict(output.metrics)
        trainer.log(output.metrics)
        return {**output.metrics, "eval_threshold": args.threshold}

    def after_evaluation(self, trainer):
        if self.args.tune_threshold:
            trainer.save_model()  # config.json with the tuned threshold


def logits_of(output) -> np.ndarray:
    return output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions


def prediction_rows(output, texts, label_names: list[str], threshold: float) -> list[str]:
    """One JSON line per example: its text, the predicted label names (score >= threshold) and the gold ones."""
    predicted, gold = sigmoid(logits_of(output)) >= threshold, np.asarray(output.label_ids) == 1
    return [
        json.dumps(
            {
                "text": text,
                "predicted_labels": [label_names[j] for j in np.flatnonzero(p)],
                "gold_labels": [label_names[j] for j in np.flatnonzero(g)],
            },
            ensure_ascii=False,
        )
        for text, p, g in zip(texts, predicted, gold, strict=True)
    ]


def write_scores(path: Path, output, threshold: float, class_thresholds, training_args) -> None:
    """``probabilities`` [N, L] (float32), gold ``labels`` (uint8), the ``threshold`` used and, where tuned, the
    per-class ``class_thresholds`` [L], for later analysis."""
    if not training_args.should_save:
        return
    extra = {} if class_thresholds is None else {"class_thresholds": np.asarray(class_thresholds, np.float64)}
    with runs.replaced_atomically(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            probabilities=sigmoid(logits_of(output)).astype(np.float32),
            labels=np.asarray(output.label_ids).astype(np.uint8),
            threshold=np.float64(threshold),
            **extra,
        )


def make_parser() -> runs.RecipeParser:
    return runs.RecipeParser(
        (ModelArguments, DataArguments, MultiLabelConfig, runs.RunArguments),
        demo_recipe=RECIPES / "demo-classify.yaml",
        scratch_defaults=SCRATCH_DEFAULTS,
    )


def main(model_args, data_args, training_args, run_args=None) -> None:
    ClassificationRun(model_args, data_args, training_args, run_args).run()


def cli(argv: list[str] | None = None) -> None:
    """``hf-losses classify [RECIPE] [--flag value ...]`` (``argv`` defaults to ``sys.argv[1:]``)."""
    with runs.one_line_errors():
        main(*make_parser().parse_args_and_recipe(argv))


if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""Train or fine-tune a multi-label text classifier with the asymmetric polynomial loss (APL) or a baseline.

    accelerate launch scripts/classify.py --loss apl                 # offline demo (embedded corpus)
    accelerate launch scripts/classify.py --model_name_or_path bert-base-uncased \\
        --dataset_name google-research-datasets/go_emotions --dataset_config_name simplified \\
        --label_column labels --loss apl --tune_threshold --output_dir outputs/go-emotions-apl
    python scripts/classify.py --train_file train.jsonl --validation_file dev.jsonl \\
        --text_column title abstract --label_column labels --loss asl

Flags are those of transformers' ``TrainingArguments`` plus the loss flags of ``MultiLabelConfig`` (``--loss``
bce/asl/focal/poly1/apl, ``--gamma_neg``, ``--clip``, ... ``--threshold``, ``--tune_threshold``); a single
YAML/JSON argument is read as a config file (then the default flag lists below are not added; the last rule,
on what to run, still applies).

Defaults, each applied only to flags you do not pass yourself:

* Without ``--dataset_name``/``--*_file``: the embedded synthetic corpus (20 Zipf-distributed topics).
* Without ``--model_name_or_path``: a small BERT (hidden 128, 2 layers, 2 heads; or ``--model_config``) and a
  tokenizer trained on the training texts, with from-scratch training defaults (``SCRATCH_DEFAULTS``: lr 1e-3,
  16 epochs, batch 32, warm-up 10%). A pre-trained model keeps transformers' own defaults (lr 5e-5, 3 epochs).
* With neither: also ``--output_dir outputs/demo-classify --tune_threshold True --dataloader_pin_memory False``
  (APL/ASL shift probabilities up, so their best threshold is well above 0.5: 0.75 on the demo).
* Without any of ``--do_train``/``--do_eval``/``--do_predict`` (``--eval_strategy`` alone does not count): train
  on ``train``, evaluate on ``validation``, predict on ``test``, for each split the data has (transformers alone
  would do nothing). Pass any of the three to choose exactly; a chosen split that is missing is then an error.

Outputs in ``--output_dir``: model, tokenizer, ``config.json`` (``id2label``, ``threshold``), ``README.md``
card, ``{train,eval,test}_results.json`` and ``all_results.json``, ``predictions.jsonl`` (one JSON object
per test example: text, predicted and gold label names). With ``--tune_threshold`` the global threshold that
maximises validation micro-F1 is chosen after training, reported as ``eval_threshold`` and stored in
``config.json``; validation metrics are then measured at that threshold (optimistic: prefer the test split,
or tune on training examples held out with ``--threshold_holdout 0.1``). ``{eval,test}_scores.npz`` hold the
sigmoid scores, gold labels and threshold of each evaluated split.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    DataCollatorWithPadding,
    set_seed,
)

from hf_losses import MultiLabelConfig, MultiLabelTrainer
from hf_losses.cards import DatasetInfo
from hf_losses.cli import (
    DataSourceArguments,
    ModelSourceArguments,
    RunArguments,
    UsageError,
    check_hub_access,
    check_launch,
    finish_run,
    logger,
    parse_arguments,
    resume_checkpoint,
    run_cli,
    save_split_metrics,
    select_samples,
    setup_logging,
    with_defaults,
    write_lines,
)
from hf_losses.data import (
    prepare_multilabel,
    synthetic_multilabel_corpus,
    tokenize_multilabel,
    train_tokenizer,
)
from hf_losses.metrics import sigmoid

DEMO_DATASET = "hf_losses synthetic multi-label corpus"
DATA_FLAGS = ("--dataset_name", "--train_file", "--validation_file", "--test_file")
SCRATCH_DEFAULTS = [
    "--learning_rate",
    "1e-3",
    "--num_train_epochs",
    "16",
    "--warmup_steps",
    "0.1",
    "--weight_decay",
    "0.01",
    "--per_device_train_batch_size",
    "32",
    "--per_device_eval_batch_size",
    "128",
    "--logging_steps",
    "50",
    "--save_strategy",
    "epoch",
    "--save_total_limit",
    "1",
    "--seed",
    "0",
]
DEMO_DEFAULTS = [
    "--output_dir",
    "outputs/demo-classify",
    "--tune_threshold",
    "True",
    "--dataloader_pin_memory",
    "False",
]
# The from-scratch model: small enough to learn the demo corpus in about two minutes on a 2-core CPU.
SMALL_BERT = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


@dataclass
class ModelArguments(ModelSourceArguments):
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


@dataclass
class DataArguments(DataSourceArguments):
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
        metadata={"help": "Label names in id order (optional; TrainingArguments owns --label_names)."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer texts are truncated."})
    threshold_holdout: float | None = field(
        default=None,
        metadata={
            "help": "With --tune_threshold: hold out this share (< 1) or number (>= 1) of training examples (the "
            "same ones for every seed) and tune the threshold on them after training, not on validation."
        },
    )

    def split_holdout(self, splits) -> None:
        """Move --threshold_holdout training examples (seed 0) into a ``threshold_holdout`` split, in place."""
        size, train = self.threshold_holdout, splits["train"]
        whole = size is not None and size >= 1 and float(size).is_integer()
        if size is None or not (0 < size < 1 or (whole and size < len(train))):
            raise UsageError(
                f"--threshold_holdout must be a share in (0, 1) or a whole number below the {len(train)} "
                f"training examples; got {size}"
            )
        parts = train.train_test_split(test_size=int(size) if whole else size, seed=0)
        splits["train"], splits["threshold_holdout"] = parts["train"], parts["test"]


def load_tokenizer_and_model(
    model_args: ModelArguments, label_names: list[str], texts, max_length: int, resume
):
    """A Hub/local checkpoint with a fresh multi-label head, or a tokenizer trained on `texts` and a new model."""
    hub = model_args.hub_kwargs()
    labels = dict(
        num_labels=len(label_names),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    if model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(
            model_args.tokenizer_name or model_args.model_name_or_path, **hub
        )
        config = AutoConfig.from_pretrained(
            model_args.model_config or model_args.model_name_or_path, **labels, **hub
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True, **hub
        )
        return tokenizer, model
    if resume is not None:  # the tokenizer the checkpoint was trained with
        tokenizer = AutoTokenizer.from_pretrained(resume)
    elif model_args.tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name, **hub)
    else:
        if not texts:
            raise UsageError(
                "training a model from scratch needs a train split; pass --model_name_or_path to only evaluate"
            )
        tokenizer = train_tokenizer(
            texts, vocab_size=model_args.vocab_size, kind="classification", model_max_length=max_length
        )
    sizes = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **labels)
    if model_args.model_config:
        config = AutoConfig.from_pretrained(model_args.model_config, **hub)
        config.update(sizes)
    else:
        config = BertConfig(**SMALL_BERT, max_position_embeddings=max(512, max_length), **sizes)
    return tokenizer, AutoModelForSequenceClassification.from_config(
        config, trust_remote_code=model_args.trust_remote_code
    )


def prediction_rows(output, texts, label_names: list[str], threshold: float) -> list[str]:
    """One JSON line per example: its text, the predicted label names (score >= threshold) and the gold ones."""
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predicted, gold = sigmoid(logits) >= threshold, np.asarray(output.label_ids) == 1
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


def write_scores(path: Path, output, threshold: float, training_args) -> None:
    """``probabilities`` [N, L] (float32), gold ``labels`` (uint8) and the ``threshold`` used, for later analysis."""
    if not training_args.should_save:
        return
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            probabilities=sigmoid(logits).astype(np.float32),
            labels=np.asarray(output.label_ids).astype(np.uint8),
            threshold=np.float64(threshold),
        )
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = with_defaults(argv, SCRATCH_DEFAULTS, triggers=("--model_name_or_path",))
    argv = with_defaults(argv, DEMO_DEFAULTS, triggers=(*DATA_FLAGS, "--model_name_or_path"))
    model_args, data_args, args, run_args = parse_arguments(
        (ModelArguments, DataArguments, MultiLabelConfig, RunArguments), argv
    )
    setup_logging(args)
    check_launch(args)
    check_hub_access(args)

    demo = data_args.uses_demo_corpus()
    raw = synthetic_multilabel_corpus() if demo else data_args.load(model_args)
    label_column = data_args.label_column or (None if data_args.label_columns else "labels")
    prepared, label_names = prepare_multilabel(
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
        raise UsageError("--threshold_holdout needs --tune_threshold and --do_train")
    if args.tune_threshold and not (args.do_eval or holdout):
        raise UsageError("--tune_threshold needs --do_eval and a validation split, or --threshold_holdout")
    if holdout and "train" in prepared:
        data_args.split_holdout(prepared)
    splits = select_samples(prepared, args, **data_args.sample_limits())
    if holdout:
        splits["threshold_holdout"] = prepared["threshold_holdout"]
    resume = resume_checkpoint(args, run_args)

    set_seed(args.seed)  # the Trainer seeds only after the model exists: seed its initialisation too
    train_texts = splits["train"]["text"] if "train" in splits else []
    tokenizer, model = load_tokenizer_and_model(
        model_args, label_names, train_texts, data_args.max_seq_length, resume
    )
    model.config.threshold = args.threshold
    with args.main_process_first(desc="tokenization"):
        tokenized = tokenize_multilabel(
            splits, tokenizer, num_labels=len(label_names), max_length=data_args.max_seq_length
        )

    dataset_info = DatasetInfo(
        id=DEMO_DATASET
        if demo
        else (
            data_args.dataset_name
            or Path(data_args.train_file or data_args.test_file or data_args.validation_file).name
        ),
        config=data_args.dataset_config_name,
        revision=data_args.dataset_revision,
        label_names=label_names,
    )
    trainer = MultiLabelTrainer(
        model=model,
        args=args,
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        dataset_info=dataset_info,
        threshold_dataset=tokenized.get("threshold_holdout"),
        threshold_split="train (held out from training)",
    )

    if args.do_train:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        save_split_metrics(trainer, "train", result.metrics, len(tokenized["train"]))
        trainer.save_state()
    if args.do_eval:
        if args.tune_threshold and not args.do_train:  # after training, the trainer tunes it itself
            trainer.tune_threshold()
        if args.tune_threshold:
            logger.info("Tuned threshold %.2f on the %s split", args.threshold, trainer.threshold_split)
        output = trainer.predict(tokenized["validation"], metric_key_prefix="eval")
        trainer.log(output.metrics)
        write_scores(Path(args.output_dir) / "eval_scores.npz", output, args.threshold, args)
        metrics = {**output.metrics, "eval_threshold": args.threshold}
        save_split_metrics(trainer, "eval", metrics, len(tokenized["validation"]))
    if args.do_predict:
        output = trainer.predict(tokenized["test"], metric_key_prefix="test")
        write_scores(Path(args.output_dir) / "test_scores.npz", output, args.threshold, args)
        rows = prediction_rows(output, splits["test"]["text"], label_names, args.threshold)
        write_lines(Path(args.output_dir) / "predictions.jsonl", rows, args)
        save_split_metrics(trainer, "test", dict(output.metrics), len(tokenized["test"]))
    if args.tune_threshold:
        trainer.save_model()  # config.json with the tuned threshold
    finish_run(trainer, args)


if __name__ == "__main__":
    run_cli(main)

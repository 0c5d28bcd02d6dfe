"""scripts/classify.py end to end on tiny local data, the embedded demo, its recipes, bad input, GoEmotions (slow).

The Hub push, resume and launch checks are the shared run's, tested in tests/apps/runs/ and once through
scripts/translate.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertConfig

from hf_losses.apps.corpora import synthetic_multilabel_corpus

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "classify.py"
GO_EMOTIONS = ROOT.parent / "shared" / "data" / "go_emotions"
NUM_LABELS = 6
TINY_MODEL = [
    "--vocab_size",
    "300",
    "--max_seq_length",
    "64",
    "--per_device_train_batch_size",
    "16",
    "--per_device_eval_batch_size",
    "32",
    "--report_to",
    "none",
    "--disable_tqdm",
    "True",
]


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HF_LOSSES_DEBUG", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl with two text columns (title, body) and label names (topics), plus a tiny config."""
    root = tmp_path_factory.mktemp("classify_data")
    corpus = synthetic_multilabel_corpus(
        num_train=64, num_validation=24, num_test=20, num_labels=NUM_LABELS, seed=3
    )
    for split, ds in corpus.items():
        with open(root / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in ds:
                words = row["text"].split()
                handle.write(
                    json.dumps(
                        {"title": " ".join(words[:4]), "body": " ".join(words[4:]), "topics": row["labels"]}
                    )
                    + "\n"
                )
    BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(root / "tiny_config")
    return root


def data_args(data_dir: Path) -> list[str]:
    return [
        "--train_file",
        str(data_dir / "train.jsonl"),
        "--validation_file",
        str(data_dir / "validation.jsonl"),
        "--test_file",
        str(data_dir / "test.jsonl"),
        "--text_column",
        "title",
        "body",
        "--label_column",
        "topics",
        "--model_config",
        str(data_dir / "tiny_config"),
        *TINY_MODEL,
    ]


@pytest.fixture
def load_script():
    """The application behind scripts/classify.py."""
    return lambda: importlib.import_module("hf_losses.apps.classify")


def test_local_files_end_to_end(tmp_path, data_dir):
    out = tmp_path / "out"
    result = run_script(
        [
            *data_args(data_dir),
            "--loss",
            "asl",
            "--gamma_neg",
            "2",
            "--max_steps",
            "4",
            "--tune_threshold",
            "--output_dir",
            str(out),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((out / "all_results.json").read_text())
    expected = {
        "train_loss",
        "eval_loss",
        "eval_f1_micro",
        "eval_f1_macro",
        "eval_map",
        "eval_p@1",
        "eval_p@3",
        "eval_p@5",
        "eval_ndcg@5",
        "eval_threshold",
        "test_f1_micro",
        "test_map",
        "test_p@1",
    }
    assert expected <= results.keys()
    assert results["eval_samples"] == 24 and results["test_samples"] == 20

    config = json.loads((out / "config.json").read_text())
    names = sorted(
        {
            t
            for line in (data_dir / "train.jsonl").read_text().splitlines()
            for t in json.loads(line)["topics"]
        }
    )
    assert config["id2label"] == {str(i): name for i, name in enumerate(names)}
    assert config["problem_type"] == "multi_label_classification"
    assert config["threshold"] == results["eval_threshold"]  # the tuned threshold is stored with the model

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    gold = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    for row, source in zip(rows, gold, strict=True):
        assert row["text"] == source["title"] + "\n" + source["body"]
        assert row["gold_labels"] == source["topics"]
        assert set(row["predicted_labels"]) <= set(names)
    assert not list(out.glob("*.tmp"))

    card = (out / "README.md").read_text()
    assert "model-index" in card and "F1 (micro)" in card
    assert "generated_from_trainer" not in card  # our card, not the generic Trainer draft
    assert "| `loss` | asl |" in card and "| `gamma_neg` | 2 |" in card and "| `clip` | 0.05 |" in card
    assert "tuned for micro-F1 on the `validation` split" in card
    assert f"Threshold: **{results['eval_threshold']}**" in card
    assert all(f"`{name}`" in card for name in names)
    assert f"{results['test_f1_micro']}" in card  # the card reports the test split's metrics


def test_embedded_demo_with_reduced_budget(tmp_path):
    out = tmp_path / "demo"
    result = run_script(
        [
            "--loss",
            "apl",
            "--max_steps",
            "5",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
            "--max_predict_samples",
            "32",
            "--output_dir",
            str(out),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_samples"] == 64 and results["eval_samples"] == 32 and results["test_samples"] == 32
    assert {"eval_f1_micro", "eval_threshold", "test_f1_micro"} <= results.keys()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 32
    card = (out / "README.md").read_text()
    assert "hf_losses synthetic multi-label corpus" in card and "trained from scratch" in card
    assert "| `learning_rate` | 0.001 |" in card  # the from-scratch defaults applied
    assert "| `loss` | apl |" in card and "| `alpha2` | 1.25 |" in card
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 20
    assert not (tmp_path / "outputs").exists()  # --output_dir overrides the demo's default


def test_unknown_loss_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_script(["--loss", "xl", "--output_dir", str(out)], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--loss" in lines[0] and "xl" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_label_column_is_one_line_and_writes_nothing(
    tmp_path, data_dir, monkeypatch, capsys, load_script
):
    script = load_script()
    out = tmp_path / "out"
    args = [arg if arg != "topics" else "tags" for arg in data_args(data_dir)]
    monkeypatch.setattr(sys, "argv", ["classify.py", *args, "--output_dir", str(out)])
    monkeypatch.delenv("HF_LOSSES_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info, script.runs.one_line_errors():
        script.main(*script.make_parser().parse_args_and_recipe())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # dataset loading progress bars, then the error
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1] and "Traceback" not in err
    assert errors[0].startswith("classify.py: error: ") and "'tags'" in errors[0] and "topics" in errors[0]
    assert not out.exists()


def test_threshold_tuned_on_held_out_training_examples(tmp_path, data_dir):
    import numpy as np

    out = tmp_path / "out"
    flags = [*data_args(data_dir), "--max_steps", "3", "--tune_threshold", "--threshold_holdout", "16"]
    result = run_script([*flags, "--output_dir", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_samples"] == 64 - 16
    for prefix, rows in (("eval", 24), ("test", 20)):
        with np.load(out / f"{prefix}_scores.npz") as scores:
            assert scores["probabilities"].shape == (rows, NUM_LABELS)
            assert scores["probabilities"].dtype == np.float32 and scores["labels"].dtype == np.uint8
            assert float(scores["threshold"]) == results["eval_threshold"]
            assert ((scores["probabilities"] > 0) & (scores["probabilities"] < 1)).all()
    gold = [json.loads(line)["topics"] for line in (data_dir / "validation.jsonl").read_text().splitlines()]
    names = json.loads((out / "config.json").read_text())["id2label"]
    with np.load(out / "eval_scores.npz") as scores:
        assert [[names[str(j)] for j in np.flatnonzero(row)] for row in scores["labels"]] == [
            sorted(g, key=list(names.values()).index) for g in gold
        ]
    card = (out / "README.md").read_text()
    assert "tuned for micro-F1 on the `train (held out from training)` split" in card


def test_threshold_holdout_splits_the_same_examples_every_time(load_script):
    import datasets

    script = load_script()
    args = script.DataArguments(threshold_holdout=0.25)
    train = datasets.Dataset.from_dict({"text": [str(i) for i in range(40)]})
    first, second = {"train": train}, {"train": train}
    args.split_holdout(first)
    args.split_holdout(second)
    assert len(first["threshold_holdout"]) == 10 and len(first["train"]) == 30
    assert first["threshold_holdout"]["text"] == second["threshold_holdout"]["text"]
    assert not set(first["threshold_holdout"]["text"]) & set(first["train"]["text"])


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--tune_threshold", "--threshold_holdout", "1.5"], "--threshold_holdout must be"),
        (["--tune_threshold", "--threshold_holdout", "64"], "below the 64"),
        (["--threshold_holdout", "0.1"], "--threshold_holdout needs --tune_threshold"),
    ],
)
def test_bad_threshold_holdout_is_one_line(tmp_path, data_dir, flags, fragment):
    out = tmp_path / "out"
    result = run_script([*data_args(data_dir), *flags, "--output_dir", str(out)], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert fragment in lines[-1] and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()


def test_label_names_is_refused_with_a_pointer_to_class_names(tmp_path, data_dir):
    """--label_names is TrainingArguments' list of input keys: it used to silently empty the evaluation."""
    out = tmp_path / "out"
    result = run_script(
        [*data_args(data_dir), "--label_names", "a", "b", "--output_dir", str(out)], cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--label_names a b" in lines[0] and "--class_names" in lines[0]
    assert not out.exists()


def test_demo_recipe_and_scratch_defaults_under_the_flags(load_script):
    parser = load_script().make_parser
    _, data, args, _ = parser().parse_args_and_recipe(["--loss", "asl", "--num_train_epochs", "2"])
    assert (args.output_dir, args.tune_threshold, args.dataloader_pin_memory) == (
        "outputs/demo-classify",
        True,
        False,
    )
    assert (args.loss, args.num_train_epochs, args.learning_rate, args.seed) == ("asl", 2, 1e-3, 0)
    assert data.uses_demo_corpus()
    # own data, model from scratch: the from-scratch defaults, not the demo's output_dir
    _, _, args, _ = parser().parse_args_and_recipe(["--train_file", "t.jsonl", "--output_dir", "o"])
    assert (args.learning_rate, args.num_train_epochs, args.tune_threshold) == (1e-3, 16, False)
    # a pre-trained model keeps transformers' defaults
    _, _, args, _ = parser().parse_args_and_recipe(["--model_name_or_path", "m", "--output_dir", "o"])
    assert (args.learning_rate, args.num_train_epochs) == (5e-5, 3)
    # the demo recipe named explicitly, with a flag that overrides it
    recipe = str(ROOT / "scripts" / "recipes" / "demo-classify.yaml")
    _, _, args, _ = parser().parse_args_and_recipe([recipe, "--learning_rate", "1e-4"])
    assert (args.output_dir, args.learning_rate, args.num_train_epochs) == ("outputs/demo-classify", 1e-4, 16)


@pytest.mark.parametrize(
    "name, text",
    [
        ("labels.json", '["joy", "anger", "fear"]'),
        ("labels.json", '{"2": "fear", "0": "joy", "1": "anger"}'),
        ("labels.txt", "joy\nanger\n\nfear\n"),
    ],
)
def test_class_names_from_a_file(load_script, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    parse = load_script().make_parser().parse_args_and_recipe
    _, data, _, _ = parse(["--train_file", "t", "--output_dir", "o", "--class_names", str(tmp_path / name)])
    assert data.class_names == ["joy", "anger", "fear"]
    _, data, _, _ = parse(["--train_file", "t", "--output_dir", "o", "--class_names", "joy", "anger"])
    assert data.class_names == ["joy", "anger"]  # names, not files


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--class_names", "BAD"], "--class_names"),
        (["--max_seq_length", "0"], "--max_seq_length must be at least 1"),
        (["--learning_rate=-1"], "--learning_rate"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size"),
        (["--max_steps=-5", "--num_train_epochs", "0"], "--max_steps"),
    ],
)
def test_bad_flags_are_refused_at_parse_time(load_script, tmp_path, flags, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    flags = [str(bad) if f == "BAD" else f for f in flags]
    with pytest.raises(ValueError, match=fragment):
        load_script().make_parser().parse_args_and_recipe(["--train_file", "t", "--output_dir", "o", *flags])


@pytest.mark.slow
@pytest.mark.skipif(not GO_EMOTIONS.is_dir(), reason="needs ../shared/data/go_emotions")
def test_go_emotions_with_class_names_and_the_label_names_mistake(tmp_path):
    """The real GoEmotions files, read where they are: a short run with --class_names, and --label_names refused."""
    names = json.loads((GO_EMOTIONS / "labels.json").read_text())
    flags = [
        "--train_file",
        str(GO_EMOTIONS / "train.jsonl"),
        "--validation_file",
        str(GO_EMOTIONS / "validation.jsonl"),
        "--label_column",
        "labels",
        "--max_train_samples",
        "2000",
        "--max_eval_samples",
        "500",
        "--max_steps",
        "20",
        "--max_seq_length",
        "48",
        "--vocab_size",
        "2000",
        "--tune_threshold",
        "--report_to",
        "none",
        "--disable_tqdm",
        "True",
    ]
    refused = run_script(
        [*flags, "--label_names", *names[:2], "--output_dir", str(tmp_path / "bad")], cwd=tmp_path
    )
    assert refused.returncode == 2 and "--class_names" in refused.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "out"
    result = run_script([*flags, "--class_names", *names, "--output_dir", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_loss", "eval_f1_micro", "eval_f1_macro", "eval_map", "eval_threshold"} <= results.keys()
    assert results["eval_samples"] == 500 and results["train_samples"] == 2000
    assert json.loads((out / "config.json").read_text())["id2label"] == {
        str(i): n for i, n in enumerate(names)
    }


def test_class_thresholds_and_a_prior_bias_through_the_script(tmp_path, data_dir):
    import numpy as np
    from safetensors.torch import load_file

    out = tmp_path / "out"
    flags = [*data_args(data_dir), "--max_steps", "1", "--learning_rate", "1e-12", "--classifier_bias_prior"]
    flags += ["--tune_threshold", "--tune_class_thresholds"]
    result = run_script([*flags, "--output_dir", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert 0 <= results["eval_f1_macro_per_class"] <= 1 and "eval_f1_macro" in results
    config = json.loads((out / "config.json").read_text())
    assert len(config["class_thresholds"]) == NUM_LABELS
    with np.load(out / "eval_scores.npz") as scores:  # kept for the comparison runner's bootstrap
        np.testing.assert_array_equal(scores["class_thresholds"], config["class_thresholds"])
    # the bias barely moved in one step at lr 1e-12: it is the log-odds of the smoothed label frequencies
    names = [config["id2label"][str(j)] for j in range(NUM_LABELS)]
    rows = [json.loads(line)["topics"] for line in (data_dir / "train.jsonl").read_text().splitlines()]
    share = np.array([(sum(name in r for r in rows) + 1) / (len(rows) + 2) for name in names])
    bias = load_file(str(out / "model.safetensors"))["classifier.bias"].double().numpy()
    np.testing.assert_allclose(bias, np.log(share / (1 - share)), rtol=1e-5, atol=1e-6)


def test_max_seq_length_beyond_the_models_positions_is_one_line(
    tmp_path, data_dir, monkeypatch, capsys, load_script
):
    """A RoBERTa checkpoint numbers its 34 position rows after padding_idx 1: 32 tokens, so 33 is refused."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from hf_losses.apps.models import embedded_positions
    from hf_losses.apps.tokenizers import train_tokenizer

    checkpoint = tmp_path / "roberta"
    tokenizer = train_tokenizer(["a few words", "and some more words"], vocab_size=60, kind="classification")
    tokenizer.save_pretrained(checkpoint)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=34, pad_token_id=1,
    )  # fmt: skip
    model = RobertaForSequenceClassification(config)
    model.save_pretrained(checkpoint)
    assert embedded_positions(model) == 32
    script, out = load_script(), tmp_path / "out"
    args = data_args(data_dir)
    del args[args.index("--model_config") : args.index("--model_config") + 2]
    args += ["--model_name_or_path", str(checkpoint), "--max_seq_length", "33"]
    monkeypatch.setattr(sys, "argv", ["classify.py", *args, "--output_dir", str(out)])
    with pytest.raises(SystemExit) as exit_info, script.runs.one_line_errors():
        script.main(*script.make_parser().parse_args_and_recipe())
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        "classify.py: error: --max_seq_length 33 is beyond the 32 positions the model can embed: "
        "pass --max_seq_length 32 or less"
    )
    assert not out.exists()

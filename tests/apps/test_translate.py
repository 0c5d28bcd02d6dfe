"""scripts/translate.py end to end, offline: local data of each format, the demo, resume, bad input, Hub push.

Runs through a subprocess where the process boundary matters (exit codes, stderr, the embedded demo) and
in-process (``main()`` of the imported script) elsewhere, because every subprocess pays for importing torch
and transformers again. The Hub, resume and launch checks themselves are tested in tests/apps/runs/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_losses.data import load_raw_datasets, select_translation_columns
from tests.helpers.tiny import tiny_causal_lm, tiny_marian_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "translate.py"
TOKEN = "hf_FAKE123"

DE = [
    "das haus ist klein",
    "der hund ist gross",
    "die katze schläft",
    "ich bin müde",
    "wir gehen nach hause",
    "das buch ist gut",
    "der tag ist lang",
    "die frau liest",
]
EN = [
    "the house is small",
    "the dog is big",
    "the cat sleeps",
    "i am tired",
    "we go home",
    "the book is good",
    "the day is long",
    "the woman reads",
]
SIZES = {"train": 16, "validation": 5, "test": 4}


def pairs(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"de": DE[(i + offset) % len(DE)], "en": EN[(i + offset) % len(EN)]} for i in range(n)]


def translation_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"translation": pair} for pair in pairs(n, offset)]


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl with a `translation` column, and a tiny Marian config.json."""
    root = tmp_path_factory.mktemp("translate_data")
    for offset, (split, n) in enumerate(SIZES.items()):
        rows = translation_rows(n, offset)
        (root / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    config = tiny_marian_config(200)
    config.save_pretrained(root / "tiny-marian")
    tiny_causal_lm(
        "llama", hidden_size=64, intermediate_size=128, max_position_embeddings=96
    ).config.save_pretrained(root / "tiny-llama")
    return root


@pytest.fixture(scope="module")
def translate():
    """The application behind scripts/translate.py (its `main()` is run in-process)."""
    return importlib.import_module("hf_losses.apps.translate")


@pytest.fixture(autouse=True)
def _quiet_datasets():
    """No progress bars, so stderr holds nothing but what the script itself reports."""
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def files(data: Path, *splits: str) -> list[str]:
    flags = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}
    return [a for s in splits for a in (flags[s], str(data / f"{s}.jsonl"))]


def tiny(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The tiny model and a short budget; `extra` flags win (argparse keeps the last value)."""
    return [
        "--model_config",
        str(data / "tiny-marian" / "config.json"),
        "--vocab_size",
        "200",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--generation_max_length",
        "10",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--cache_dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def offline_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "HF_LOSSES_DEBUG")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def run_script(args: list[str], timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=offline_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(translate, monkeypatch, args: list[str]) -> None:
    """`main()` in-process with these flags (exceptions propagate)."""
    monkeypatch.setattr(sys, "argv", ["translate.py", *args])
    translate.main(*translate.make_parser().parse_args_and_recipe())


def run_cli(translate, monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    """What the script runs under ``__main__``, in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["translate.py", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info, translate.runs.one_line_errors():
        translate.main(*translate.make_parser().parse_args_and_recipe())
    return exit_info.value.code, capsys.readouterr().err


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under root whose bytes contain `needle` (pickles and safetensors included)."""
    return [
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()
    ]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("translate.py: error: "), stderr
    return lines[0]


# ----------------------------------------------------------------------------------------- end to end


def test_end_to_end_on_local_jsonl(data_dir, tmp_path):
    out = tmp_path / "out"
    args = [
        *files(data_dir, "train", "validation", "test"),
        *tiny(
            data_dir,
            tmp_path,
            "--do_train",
            "--do_eval",
            "--do_predict",
            "--predict_with_generate",
            "--loss",
            "cel",
            "--log_end",
            "0.5",
            "--bonus_weight",
            "1.0",
            "--label_smoothing_factor",
            "0.1",
            "--hub_token",
            TOKEN,
            "--output_dir",
            str(out),
        ),
    ]
    proc = run_script(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    results = json.loads((out / "all_results.json").read_text())
    for key in (
        "train_loss",
        "eval_loss",
        "eval_bleu",
        "eval_chrf",
        "eval_nll_loss",
        "eval_bonus",
        "test_bleu",
        "test_chrf",
        "test_nll_loss",
    ):
        assert key in results, key
    assert results["eval_nll_loss"] > 0 and results["eval_bonus"] < 0
    assert results["eval_samples"] == SIZES["validation"] and results["test_samples"] == SIZES["test"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert len((out / "eval_predictions.txt").read_text(encoding="utf-8").splitlines()) == SIZES["validation"]
    assert len((out / "test_predictions.txt").read_text(encoding="utf-8").splitlines()) == SIZES["test"]

    card = ModelCard.load(out / "README.md")
    index = card.data.to_dict()["model-index"][0]["results"][0]
    assert index["task"]["type"] == "translation"
    assert {m["type"] for m in index["metrics"]} >= {"sacrebleu"}
    assert [m["value"] for m in index["metrics"] if m["type"] == "sacrebleu"] == [results["test_bleu"]]
    for row in (
        "| `loss` | cel |",
        "| `log_end` | 0.5 |",
        "| `bonus_weight` | 1 |",
        "| `label_smoothing_factor` | 0.1 |",
    ):
        assert row in card.text, row
    assert "| BLEU |" in card.text and results["bleu_signature"] in card.text
    assert results["bleu_signature"].startswith("nrefs:1|")
    # a local file is not presented as a Hub dataset
    assert "huggingface.co/datasets/" not in card.text and not card.data.datasets

    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_args.bin",
    ):
        assert (out / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)
    assert files_containing(out, TOKEN) == []


# ------------------------------------------------------------------------------------------ formats


def _write_table(path: Path, rows: list[dict], fmt: str) -> str:
    frame = pd.DataFrame(rows)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_csv_and_tsv_with_source_and_target_columns(tmp_path, fmt):
    def rows(n, offset):
        return [{"id": i, "src": p["de"], "tgt": p["en"]} for i, p in enumerate(pairs(n, offset))]

    raw = load_raw_datasets(
        train_file=_write_table(tmp_path / f"train.{fmt}", rows(6, 0), fmt),
        validation_file=_write_table(tmp_path / f"dev.{fmt}", rows(3, 1), fmt),
        cache_dir=str(tmp_path / "cache"),
    )
    selected = select_translation_columns(
        raw, source_lang="de", target_lang="en", source_column="src", target_column="tgt"
    )
    assert set(selected) == {"train", "validation"}
    assert selected["train"].column_names == ["source", "target"]
    assert selected["train"][0] == {"source": DE[0], "target": EN[0]}
    assert selected["validation"].num_rows == 3 and selected["validation"][0] == {
        "source": DE[1],
        "target": EN[1],
    }


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_parquet_and_json_with_translation_column(tmp_path, fmt):
    raw = load_raw_datasets(
        train_file=_write_table(tmp_path / f"train.{fmt}", translation_rows(6), fmt),
        test_file=_write_table(tmp_path / f"test.{fmt}", translation_rows(2, 3), fmt),
        cache_dir=str(tmp_path / "cache"),
    )
    selected = select_translation_columns(raw, source_lang="en", target_lang="de")  # either direction
    assert set(selected) == {"train", "test"}
    assert selected["train"][1] == {"source": EN[1], "target": DE[1]}
    assert selected["test"][0] == {"source": EN[3], "target": DE[3]}


def hub_like_folder(root: Path) -> Path:
    """A local copy laid out like a parquet Hub dataset with two configs (de-en and fr-en)."""
    for config, lang in (("de-en", "de"), ("fr-en", "fr")):
        for offset, (split, n) in enumerate(SIZES.items()):
            rows = [{"translation": {lang: p["de"], "en": p["en"]}} for p in pairs(n, offset)]
            (root / config).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_parquet(root / config / f"{split}-00000-of-00001.parquet", index=False)
    return root


def test_hub_like_parquet_folder_through_the_script(translate, data_dir, tmp_path, monkeypatch):
    hub = hub_like_folder(tmp_path / "wmt-copy")
    raw = load_raw_datasets(
        dataset_name=str(hub), dataset_config_name="de-en", cache_dir=str(tmp_path / "cache")
    )
    assert {split: ds.num_rows for split, ds in raw.items()} == SIZES

    out = tmp_path / "out"
    run_main(
        translate,
        monkeypatch,
        [
            "--dataset_name",
            str(hub),
            "--dataset_config_name",
            "de-en",
            *tiny(
                data_dir, tmp_path, "--max_steps", "1", "--do_train", "--do_eval", "--output_dir", str(out)
            ),
        ],
    )
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_samples"] == SIZES["train"] and results["eval_samples"] == SIZES["validation"]
    assert "eval_nll_loss" in results and "eval_bleu" not in results  # teacher-forced evaluation only
    card = ModelCard.load(out / "README.md")
    assert "de-en" in card.text and "huggingface.co/datasets/" not in card.text


# ---------------------------------------------------------------------------------------- the demo


@pytest.mark.slow
def test_embedded_demo_with_a_small_budget(tmp_path):
    out = tmp_path / "demo"
    proc = run_script(
        [
            "--max_steps",
            "4",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "8",
            "--max_predict_samples",
            "8",
            "--output_dir",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval_bleu" in proc.stdout and "test_bleu" in proc.stdout
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_samples"] == 64 and results["eval_samples"] == 8 and results["test_samples"] == 8
    assert "synthetic" in (out / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- recipes

RECIPES = ROOT / "scripts" / "recipes"
TRANSLATION_RECIPES = sorted(
    p.name for p in RECIPES.glob("*.yaml") if not p.name.startswith(("compare-", "demo-classify"))
)


def test_demo_recipe_runs_without_data_or_model_arguments(translate):
    _, data, args, _ = translate.make_parser().parse_args_and_recipe(
        ["--loss", "el", "--num_train_epochs", "2"]
    )
    assert data.uses_demo_corpus() and args.output_dir == "outputs/demo-translate"
    assert args.do_train and args.do_predict and args.predict_with_generate and args.learning_rate == 2e-3
    assert (args.loss, args.num_train_epochs) == ("el", 2)  # flags override the recipe
    _, _, args, _ = translate.make_parser().parse_args_and_recipe(
        ["--train_file", "t.jsonl", "--output_dir", "o"]
    )
    assert not args.do_train and args.learning_rate == 5e-5  # own data: transformers' defaults


@pytest.mark.parametrize("recipe", TRANSLATION_RECIPES)
def test_every_recipe_parses_and_flags_override_it(translate, recipe):
    _, _, args, _ = translate.make_parser().parse_args_and_recipe(
        [str(RECIPES / recipe), "--learning_rate", "1e-4", "--use_cpu", "--bf16", "false"]
    )
    assert args.learning_rate == 1e-4 and args.output_dir and args.do_train


# ------------------------------------------------------------------------------------------- resume


def test_second_run_resumes_from_the_last_checkpoint(translate, data_dir, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    trainer_cls = translate.EncouragingSeq2SeqTrainer
    calls = {"steps": 0, "resume": []}
    train, step = trainer_cls.train, trainer_cls.training_step

    def spy_train(self, *args, **kwargs):
        calls["resume"].append(kwargs.get("resume_from_checkpoint"))
        return train(self, *args, **kwargs)

    def spy_step(self, *args, **kwargs):
        calls["steps"] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_cls, "train", spy_train)
    monkeypatch.setattr(trainer_cls, "training_step", spy_step)

    def run(max_steps: str) -> None:
        run_main(
            translate,
            monkeypatch,
            [
                *files(data_dir, "train"),
                *tiny(
                    data_dir,
                    tmp_path,
                    "--do_train",
                    "--max_steps",
                    max_steps,
                    "--save_steps",
                    "2",
                    "--save_strategy",
                    "steps",
                    "--logging_steps",
                    "1",
                    "--output_dir",
                    str(out),
                ),
            ],
        )

    run("4")
    assert calls == {"steps": 4, "resume": [None]}
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    first = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())

    calls["steps"] = 0
    with caplog.at_level("INFO", logger="hf_losses"):
        run("6")
    assert calls["resume"][-1] == str(out / "checkpoint-4")
    assert calls["steps"] == 2  # steps 5 and 6 only: it did not restart
    assert f"Resuming from {out / 'checkpoint-4'}" in caplog.text
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    losses = {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(losses[h["step"]] == h["loss"] for h in first["log_history"] if "loss" in h)


# ---------------------------------------------------------------------------------------- bad input


def _bad_cases(data: Path, tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (flags, fragments the one-line error must contain)."""
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text(json.dumps(translation_rows(1)[0]) + "\n{not json\n", encoding="utf-8")
    no_target = tmp_path / "no_target.jsonl"
    rows = [{"translation": {"de": "das haus", "en": "the house"}}, {"translation": {"de": "der hund"}}]
    no_target.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train = files(data, "train")
    return {
        "loss": (["--loss", "xl"], ["--loss", "xl"]),
        "log_end": (["--log_end", "1.5"], ["--log_end"]),
        "label_smoothing": (["--label_smoothing_factor", "1.0"], ["--label_smoothing_factor"]),
        "bonus_weight": (["--bonus_weight", "-1"], ["--bonus_weight"]),
        "missing_file": (
            ["--train_file", str(tmp_path / "missing.jsonl")],
            ["--train_file", "missing.jsonl"],
        ),
        "same_languages": (
            [*train, "--source_lang", "de", "--target_lang", "de"],
            ["--source_lang", "--target_lang"],
        ),
        "unknown_language": ([*train, "--source_lang", "xx"], ["--source_lang", "'xx'", "de, en"]),
        "malformed_jsonl": (["--train_file", str(malformed)], ["--train_file", "malformed.jsonl", "line 2"]),
        "missing_target": (["--train_file", str(no_target)], ["example 1", "--target_lang 'en'", "has: de"]),
        "learning_rate": ([*train, "--learning_rate=-1e-3"], ["--learning_rate", "-0.001"]),
        "batch_size": ([*train, "--per_device_train_batch_size", "0"], ["--per_device_train_batch_size"]),
        "max_source_length": ([*train, "--max_source_length", "0"], ["--max_source_length"]),
        "max_target_length": ([*train, "--max_target_length", "0"], ["--max_target_length"]),
        "no_budget": ([*train, "--max_steps=-5", "--num_train_epochs", "0"], ["--max_steps", "-5"]),
        "no_epochs": ([*train, "--max_steps=-1", "--num_train_epochs", "0"], ["--num_train_epochs"]),
        "beyond_positions": (
            [*train, "--max_source_length", "129"],
            ["--max_source_length 129", "128 positions"],
        ),
        "beyond_target_positions": (
            [*train, "--max_target_length", "200"],
            ["--max_target_length 200", "128"],
        ),
    }


BAD_CASES = [
    "loss",
    "log_end",
    "label_smoothing",
    "bonus_weight",
    "missing_file",
    "same_languages",
    "unknown_language",
    "malformed_jsonl",
    "missing_target",
    "learning_rate",
    "batch_size",
    "max_source_length",
    "max_target_length",
    "no_budget",
    "no_epochs",
    "beyond_positions",
    "beyond_target_positions",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_exit_2(translate, data_dir, tmp_path, monkeypatch, capsys, case):
    flags, fragments = _bad_cases(data_dir, tmp_path)[case]
    out = tmp_path / "out"
    code, stderr = run_cli(
        translate,
        monkeypatch,
        capsys,
        [*tiny(data_dir, tmp_path, "--do_train", "--output_dir", str(out)), *flags],
    )
    assert code == 2
    line = one_error_line(stderr)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not out.exists()


REAL_ENTRY_POINT_CASES = ["unknown_language", "malformed_jsonl"]  # data errors: datasets logs to stderr too


@pytest.mark.parametrize("case", REAL_ENTRY_POINT_CASES)
def test_bad_input_through_the_real_entry_point(data_dir, tmp_path, case):
    flags, fragments = _bad_cases(data_dir, tmp_path)[case]
    out = tmp_path / "out"
    proc = run_script([*tiny(data_dir, tmp_path, "--do_train", "--output_dir", str(out)), *flags])
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert all(fragment in line for fragment in fragments), line
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in BAD_CASES if c not in REAL_ENTRY_POINT_CASES])
def test_bad_input_through_the_real_entry_point_all(data_dir, tmp_path, case):
    test_bad_input_through_the_real_entry_point(data_dir, tmp_path, case)


# ---------------------------------------------------------------------------- decoder-only models


def decoder_only(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    """A tiny Llama (hidden 64, 96 positions) from its config.json, trained to memorise the training pairs."""
    flags = tiny(data, tmp_path, "--model_config", str(data / "tiny-llama" / "config.json"))
    return [
        *flags,
        *("--max_source_length", "48", "--max_target_length", "32", "--learning_rate", "5e-3"),
        *("--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8"),
        *extra,
    ]


@pytest.mark.parametrize("fused", [False, True])
def test_a_decoder_only_model_learns_to_translate_its_prompts(
    translate, data_dir, tmp_path, monkeypatch, fused
):
    """Prompt + target, the loss on the target only, generation from the prompt alone: a tiny Llama that
    memorises the 8 training pairs translates every one of them (BLEU 100 on the training file)."""
    out = tmp_path / "out"
    flags = decoder_only(data_dir, tmp_path, "--do_train", "--do_eval", "--predict_with_generate")
    flags += ["--max_steps", "120", "--loss", "cel", "--output_dir", str(out)]
    flags += ["--fused_lm_head"] if fused else []
    train = str(data_dir / "train.jsonl")
    run_main(translate, monkeypatch, ["--train_file", train, "--validation_file", train, *flags])

    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_bleu"] == pytest.approx(100.0) and results["eval_chrf"] == pytest.approx(100.0)
    assert results["eval_nll_loss"] < 0.1 and "eval_ece" in results
    predictions = (out / "eval_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert predictions == [p["en"] for p in pairs(SIZES["train"])]
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-generation"
    assert "AutoModelForCausalLM" in card.text and "'Translate German to English:\\nDas Haus" in card.text


def test_a_decoder_only_checkpoint_without_a_pad_token_pads_with_eos(
    translate, data_dir, tmp_path, monkeypatch
):
    """--model_name_or_path of a causal LM whose tokenizer has no pad token (as Llama's): it pads with eos."""
    from hf_losses.apps.tokenizers import train_tokenizer

    checkpoint = tmp_path / "llama"
    tokenizer = train_tokenizer([*DE, *EN], vocab_size=120, kind="seq2seq")
    tokenizer.pad_token = None
    tokenizer.save_pretrained(checkpoint)
    model = tiny_causal_lm("llama", vocab_size=len(tokenizer), pad_token_id=None, max_position_embeddings=96)
    model.save_pretrained(checkpoint)
    out = tmp_path / "out"
    flags = decoder_only(data_dir, tmp_path, "--do_train", "--do_eval", "--predict_with_generate")
    flags += ["--model_name_or_path", str(checkpoint), "--max_steps", "2", "--output_dir", str(out)]
    run_main(translate, monkeypatch, [*files(data_dir, "train", "validation"), *flags])
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_bleu", "eval_chrf", "eval_loss"} <= set(results)
    assert AutoTokenizer.from_pretrained(out).pad_token == "</s>"


def _decoder_only_bad_cases(data_dir):
    bert = data_dir / "tiny-bert"
    if not bert.exists():
        from transformers import BertConfig

        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
            bert
        )
    return {
        "source_prefix": (
            ["--source_prefix", "translate: "],
            ["--source_prefix", "decoder-only", "--prompt_template"],
        ),
        "forced_bos": (["--forced_bos_token", "en_XX"], ["--forced_bos_token", "decoder-only"]),
        "positions": (
            ["--max_source_length", "80", "--max_target_length", "32"],
            ["--max_source_length + --max_target_length = 112", "96 positions"],
        ),
        "generation_positions": (
            ["--generation_max_length", "60"],
            ["--max_source_length + --generation_max_length = 108", "96 positions"],
        ),
        "template": (
            ["--prompt_template", "Translate: {text}"],
            ["--prompt_template", "{source}", "unknown: text"],
        ),
        "not_a_generator": (
            ["--model_config", str(bert / "config.json")],
            ["--model_config", "bert", "encoder-decoder", "decoder-only"],
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["source_prefix", "forced_bos", "positions", "generation_positions", "template", "not_a_generator"],
)
def test_decoder_only_bad_input_is_one_line_and_exit_2(
    translate, data_dir, tmp_path, monkeypatch, capsys, case
):
    flags, fragments = _decoder_only_bad_cases(data_dir)[case]
    out = tmp_path / "out"
    args = [
        *files(data_dir, "train"),
        *decoder_only(data_dir, tmp_path, "--do_train", "--output_dir", str(out)),
    ]
    code, stderr = run_cli(translate, monkeypatch, capsys, [*args, *flags])
    assert code == 2
    line = one_error_line(stderr)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not out.exists()


@pytest.mark.slow
def test_a_decoder_only_model_on_the_real_multi30k_files(translate, tmp_path, monkeypatch):
    """The real Multi30k De-En files (../shared/data), a tiny Llama from its config: trains, generates, scores."""
    data = ROOT.parent / "shared" / "data" / "multi30k"
    if not (data / "train.jsonl").is_file():
        pytest.skip("../shared/data/multi30k is not on this machine")
    config = tmp_path / "llama"
    tiny_causal_lm(
        "llama", hidden_size=64, intermediate_size=128, max_position_embeddings=160
    ).config.save_pretrained(config)
    out = tmp_path / "out"
    flags = [
        *("--train_file", str(data / "train.jsonl"), "--validation_file", str(data / "validation.jsonl")),
        *("--source_lang", "de", "--target_lang", "en", "--model_config", str(config / "config.json")),
        *("--vocab_size", "2000", "--max_train_samples", "2000", "--max_eval_samples", "64"),
        *("--max_source_length", "64", "--max_target_length", "64", "--generation_max_length", "32"),
        *("--do_train", "--do_eval", "--predict_with_generate", "--loss", "cel", "--fused_lm_head"),
        *("--max_steps", "60", "--learning_rate", "3e-3", "--per_device_train_batch_size", "32"),
        *("--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(out)),
    ]
    run_main(translate, monkeypatch, flags)
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 64 and results["eval_bleu"] >= 0 and results["eval_chrf"] > 5
    assert results["train_loss"] < results["eval_loss"] + 5 and results["eval_nll_loss"] < 7.6  # < log(2000)
    assert len((out / "eval_predictions.txt").read_text(encoding="utf-8").splitlines()) == 64


# ------------------------------------------------------------------------------------- output_dir


def test_output_dir_naming_a_file_is_one_line_and_exit_2(translate, data_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.write_text("mine")
    flags = [*files(data_dir, "train"), *tiny(data_dir, tmp_path, "--do_train", "--output_dir", str(out))]
    code, stderr = run_cli(translate, monkeypatch, capsys, flags)
    assert code == 2 and "--output_dir" in one_error_line(stderr) and "is a file" in stderr
    assert out.read_text() == "mine"


def test_foreign_files_in_output_dir_are_refused_unless_overwriting(
    translate, data_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "config.json").write_text("{}")
    flags = [*files(data_dir, "train"), *tiny(data_dir, tmp_path, "--do_train", "--max_steps", "1")]
    code, stderr = run_cli(translate, monkeypatch, capsys, [*flags, "--output_dir", str(out)])
    line = one_error_line(stderr)
    assert code == 2 and "--output_dir" in line and "--overwrite_output_dir" in line and "README.md" in line
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json"]
    assert (out / "README.md").read_text() == "my notes"
    run_main(translate, monkeypatch, [*flags, "--output_dir", str(out), "--overwrite_output_dir"])
    assert (out / "model.safetensors").is_file()


def test_the_comparison_runners_files_do_not_count_as_foreign(translate, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "variant" / "seed-0"
    out.mkdir(parents=True)
    (out / "compare_flags.json").write_text("{}")  # what compare.py writes before it starts the script
    (out / "compare_log.txt").write_text("$ translate.py\n")
    flags = [*files(data_dir, "train"), *tiny(data_dir, tmp_path, "--do_train", "--max_steps", "1")]
    run_main(translate, monkeypatch, [*flags, "--output_dir", str(out)])
    assert (out / "model.safetensors").is_file() and (
        out / "compare_log.txt"
    ).read_text() == "$ translate.py\n"


def test_t5_from_a_config_json_saves_checkpoints_with_its_generation_config(
    translate, data_dir, tmp_path, monkeypatch
):
    """Generation settings go into generation_config: T5's config refuses them at the first save."""
    from tests.helpers.tiny import SEQ2SEQ_ARCHITECTURES, tiny_seq2seq

    assert "t5" in SEQ2SEQ_ARCHITECTURES
    tiny_seq2seq("t5").config.save_pretrained(tmp_path / "t5")
    out = tmp_path / "out"
    flags = tiny(data_dir, tmp_path, "--do_train", "--max_steps", "2", "--save_strategy", "steps")
    flags += ["--save_steps", "1", "--model_config", str(tmp_path / "t5" / "config.json")]
    run_main(translate, monkeypatch, [*files(data_dir, "train"), *flags, "--output_dir", str(out)])
    for folder in (out / "checkpoint-1", out / "checkpoint-2", out):
        assert (folder / "model.safetensors").is_file(), folder
        generation = json.loads((folder / "generation_config.json").read_text())
        assert generation["forced_eos_token_id"] == 1, folder  # the trained tokenizer's </s>
        assert "forced_eos_token_id" not in json.loads((folder / "config.json").read_text())


# -------------------------------------------------------------------------------------- Hub push


def test_push_to_hub_uploads_output_dir_with_card_and_never_writes_the_token(
    translate, data_dir, tmp_path, monkeypatch, fake_hub
):
    hub = fake_hub
    out = tmp_path / "tiny-push"
    run_main(
        translate,
        monkeypatch,
        [
            *files(data_dir, "train", "validation"),
            *tiny(
                data_dir,
                tmp_path,
                "--do_train",
                "--do_eval",
                "--predict_with_generate",
                "--save_strategy",
                "steps",
                "--save_steps",
                "2",
                "--push_to_hub",
                "--hub_model_id",
                "tester/tiny-push",
                "--hub_token",
                TOKEN,
                "--output_dir",
                str(out),
            ),
        ],
    )
    hub.whoami.assert_called_once()
    assert hub.check_create_repo.call_args.args[0] == "tester/tiny-push"
    hub.api.create_repo.assert_called()
    assert hub.api.create_repo.call_args.kwargs.get("token") == TOKEN

    final = hub.uploads[-1]
    assert final["commit_message"] == "End of training"
    assert Path(final["folder_path"]) == out and final["repo_id"] == "tester/tiny-push"
    assert final["token"] == TOKEN  # used for the upload ...
    assert "model-index" in final["readme"] and "sacrebleu" in final["readme"]
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(final["files"])
    assert len(hub.uploads) >= 2  # the checkpoints were pushed too (hub_strategy every_save)

    assert (
        files_containing(out, TOKEN) == []
    )  # ... but written nowhere: not in training_args.bin, state or card
    saved = torch.load(out / "training_args.bin", weights_only=False)
    assert saved.hub_token is None and saved.push_to_hub and saved.loss == "cel"


def test_push_to_hub_refused_offline_before_anything_is_written(
    translate, data_dir, tmp_path, monkeypatch, capsys, fake_hub
):
    import huggingface_hub

    hub = fake_hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    code, stderr = run_cli(
        translate,
        monkeypatch,
        capsys,
        [
            *files(data_dir, "train"),
            *tiny(
                data_dir,
                tmp_path,
                "--do_train",
                "--push_to_hub",
                "--hub_token",
                TOKEN,
                "--output_dir",
                str(out),
            ),
        ],
    )
    assert code == 2
    assert "HF_HUB_OFFLINE" in one_error_line(stderr) and TOKEN not in stderr
    assert not out.exists()
    hub.whoami.assert_not_called()
    hub.api.upload_folder.assert_not_called()


def test_num_beams_decodes_the_final_evaluations_and_generation_num_beams_those_during_training(
    translate, data_dir, tmp_path, monkeypatch
):
    beams = []
    original = translate.EncouragingSeq2SeqTrainer.prediction_step

    def spy(self, *args, **kwargs):
        beams.append((self.state.global_step, self.args.generation_num_beams))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(translate.EncouragingSeq2SeqTrainer, "prediction_step", spy)
    out = tmp_path / "out"
    flags = [
        "--do_train",
        "--do_eval",
        "--predict_with_generate",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
    ]
    flags += ["--max_steps", "2", "--generation_num_beams", "1", "--num_beams", "2", "--output_dir", str(out)]
    run_main(
        translate, monkeypatch, [*files(data_dir, "train", "validation"), *tiny(data_dir, tmp_path, *flags)]
    )
    during, final = beams[0], beams[-1]
    assert during == (2, 1) and final == (2, 2) and {b for _, b in beams} == {1, 2}
    assert "num_beams=2" in (out / "README.md").read_text()

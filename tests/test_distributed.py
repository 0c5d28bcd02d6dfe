"""Two CPU processes under `accelerate launch`: exact updates, process-count-independent results, launch refusal.

Run alone with ``pytest -m distributed``. Every launch forces the CPU (CUDA_VISIBLE_DEVICES="" and the
scripts' --use_cpu) and the gloo backend, so the tests need no accelerator and behave the same with one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithPadding

from hf_losses import asymmetric_polynomial_loss
from tests.helpers import ddp_step
from tests.helpers.tiny import (
    multilabel_dataset,
    prompt_completion_dataset,
    seq2seq_dataset,
    tiny_bert,
    tiny_marian_config,
    tiny_tokenizer,
)
from tests.test_trainer_causal_lm import formula_step as causal_formula_step
from tests.test_trainer_seq2seq import exact_reference_step

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
DDP_STEP = ROOT / "tests" / "helpers" / "ddp_step.py"
TRANSLATE = ROOT / "scripts" / "translate.py"
SEQ2SEQ_LOSS = dict(
    loss="cel", log_end=0.5, bonus_weight=1.0, label_smoothing_factor=0.1
)  # as in ddp_step.py
LAUNCHER_VARS = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "ACCELERATE_USE_CPU",
    "HF_LOSSES_DEBUG",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        **extra,
    )
    return env


def launch(script: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` on 2 CPU processes (torchrun underneath, gloo backend)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(script),
        *args,
    ]
    proc = subprocess.run(command, cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


# ------------------------------------------------------------------------- (a) one exact optimiser step


def multilabel_reference_step() -> dict[str, torch.Tensor]:
    """theta - lr * grad of the APL mean over all label entries of all 8 examples, by hand."""
    model = tiny_bert()
    batch = DataCollatorWithPadding(tiny_tokenizer())(list(multilabel_dataset(8)))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    asymmetric_polynomial_loss(logits, batch["labels"].float(), reduction="mean").backward()
    return {k: (v - 1.0 * v.grad if v.grad is not None else v).detach() for k, v in model.named_parameters()}


def test_two_processes_take_the_exact_full_batch_step(tmp_path):
    out = tmp_path / "params.pt"
    launch(DDP_STEP, str(out), "--batch_size", "4")  # 2 processes x 4 = the 8 examples in one step
    saved = torch.load(out)
    assert saved["world_size"] == 2

    expected = exact_reference_step(seq2seq_dataset(8), **SEQ2SEQ_LOSS)
    assert expected.keys() == saved["seq2seq"].keys()
    for name, value in expected.items():
        torch.testing.assert_close(saved["seq2seq"][name], value, atol=2e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(saved["seq2seq_fused"][name], value, atol=2e-6, rtol=1e-5, msg=name)

    assert saved["multilabel"] is not None, "MultiLabelTrainer is exported, so the helper must have run it"
    expected = multilabel_reference_step()
    assert expected.keys() == saved["multilabel"].keys()
    for name, value in expected.items():
        torch.testing.assert_close(saved["multilabel"][name], value, atol=2e-6, rtol=1e-5, msg=name)

    # Evaluation after the step, on 5 examples in per-process batches of 2: the same numbers as one process
    # (the repeats accelerate adds to the last batch count neither in the loss nor in the metrics).
    single = ddp_step.run(str(tmp_path / "single"), batch_size=8)
    assert single["world_size"] == 1
    for key in ("eval_loss", "eval_nll_loss", "eval_bonus"):
        assert saved["seq2seq_eval"][key] == pytest.approx(single["seq2seq_eval"][key], rel=1e-5), key
    shared = {
        k
        for k in single["multilabel_eval"]
        if k.startswith("eval_") and "runtime" not in k and "per_second" not in k
    }
    assert {"eval_loss", "eval_f1_micro"} <= shared
    for key in sorted(shared):
        assert saved["multilabel_eval"][key] == pytest.approx(
            single["multilabel_eval"][key], rel=1e-5, abs=1e-7
        ), key

    # Decoder-only, with the fused head through the DDP wrapper: our trainer, and TRL's on the same data
    expected = causal_formula_step("llama", prompt_completion_dataset(8), **SEQ2SEQ_LOSS)
    for name in ("causal_lm", "sft"):
        if name == "sft" and saved["sft"] is None:
            continue  # TRL is an optional extra
        for key, value in expected.items():
            torch.testing.assert_close(saved[name][key], value, atol=2e-6, rtol=1e-5, msg=f"{name} {key}")


# ------------------------------------------------------------- (b) the script: 2 processes vs 1 process


def _write_data(root: Path) -> dict[str, Path]:
    de = [
        "das haus ist klein",
        "der hund ist gross",
        "die katze schläft",
        "ich bin müde",
        "wir gehen nach hause",
    ]
    en = ["the house is small", "the dog is big", "the cat sleeps", "i am tired", "we go home"]
    # 5 validation examples: the 2-process run's last evaluation batch holds repeats that must not count
    sizes = {"train": 16, "validation": 5, "test": 4}
    paths = {}
    for offset, (split, n) in enumerate(sizes.items()):
        rows = [
            {"translation": {"de": de[(i + offset) % 5], "en": en[(i * 3 + offset) % 5]}} for i in range(n)
        ]
        paths[split] = root / f"{split}.jsonl"
        paths[split].write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    tiny_marian_config(200).save_pretrained(root / "tiny-marian")
    paths["config"] = root / "tiny-marian" / "config.json"
    return paths


def _script_args(paths: dict[str, Path], out: Path, per_device_batch: int) -> list[str]:
    return [
        "--train_file",
        str(paths["train"]),
        "--validation_file",
        str(paths["validation"]),
        "--test_file",
        str(paths["test"]),
        "--model_config",
        str(paths["config"]),
        "--vocab_size",
        "200",
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--predict_with_generate",
        "--generation_max_length",
        "8",
        "--max_steps",
        "3",
        "--learning_rate",
        "1e-3",
        "--seed",
        "7",
        "--label_smoothing_factor",
        "0.1",
        "--per_device_train_batch_size",
        str(per_device_batch),
        "--per_device_eval_batch_size",
        "2",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "--cache_dir",
        str(out.parent / "cache"),
        "--output_dir",
        str(out),
    ]


def _run_in_process(args: list[str], monkeypatch) -> None:
    module = importlib.import_module("hf_losses.apps.translate")
    module.main(*module.make_parser().parse_args_and_recipe(args))


def test_script_on_two_processes_matches_one_process(tmp_path, monkeypatch):
    paths = _write_data(tmp_path)
    two, one = tmp_path / "two-processes", tmp_path / "one-process"
    launch(TRANSLATE, *_script_args(paths, two, per_device_batch=2))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    _run_in_process(_script_args(paths, one, per_device_batch=4), monkeypatch)  # same global batch of 4

    got = json.loads((two / "all_results.json").read_text())
    want = json.loads((one / "all_results.json").read_text())
    for key in ("train_loss", "eval_loss", "eval_nll_loss", "eval_bonus", "test_loss", "test_nll_loss"):
        assert got[key] == pytest.approx(want[key], abs=1e-4), key
    assert got["eval_samples"] == want["eval_samples"] == 5
    # the repeats that even out the last batch are dropped from generations too
    for split, n in (("eval", 5), ("test", 4)):
        for out in (one, two):
            assert len((out / f"{split}_predictions.txt").read_text(encoding="utf-8").splitlines()) == n
    state = json.loads((two / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # the card records the global batch, not the per-device one
    assert "| `total_train_batch_size` | 4 |" in (two / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------ (c) refusal of a broken launch


def test_world_size_without_a_launcher_is_refused(tmp_path):
    out = tmp_path / "out"
    env = cpu_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    proc = subprocess.run(
        [sys.executable, str(TRANSLATE), "--max_steps", "1", "--output_dir", str(out), "--use_cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("translate.py: error: WORLD_SIZE=2")
    assert "accelerate launch" in lines[0] and "MASTER_ADDR" in lines[0]
    assert not out.exists()

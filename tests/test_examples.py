"""The Python examples of README.md and docs/, and the trainers' docstring examples, run as written (tiny local
stand-ins)."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from unittest import mock

import datasets
import pytest
import transformers

from hf_losses import EncouragingCausalLMTrainer, EncouragingSeq2SeqTrainer, MultiLabelTrainer
from tests.helpers.tiny import (
    multilabel_dataset,
    prompt_completion_dataset,
    quick_tiny_training,
    seq2seq_dataset,
    tiny_bert,
    tiny_causal_lm,
    tiny_marian,
    tiny_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# decoder-only.md loads Hub models: its own test below runs it on tiny stand-ins
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "decoder-only.md")

try:
    from hf_losses.integrations.trl import EncouragingSFTConfig

    @dataclasses.dataclass
    class CpuSFTConfig(EncouragingSFTConfig):
        use_cpu: bool = True  # TRL configs default to bf16, which the CPU of the tests may lack

except ImportError:  # TRL is an optional extra
    CpuSFTConfig = None


def python_blocks(section: str | None = None, page: Path = README) -> list[str]:
    """The ```python blocks of a page, or of one of its sections (from its heading to the next ## heading)."""
    text = page.read_text(encoding="utf-8")
    body = text if section is None else text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def tiny_translation_corpus(*args, **kwargs) -> datasets.DatasetDict:
    pairs = [
        {"de": " ".join(f"w{(i + j) % 30}" for j in range(5)), "en": f"w{i} w{i + 1} w{i + 2}"}
        for i in range(20)
    ]
    return datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"translation": pairs[:16]}),
        validation=datasets.Dataset.from_dict({"translation": pairs[16:]}),
    )


def small_marian(*args, **kwargs):
    model = tiny_marian()
    model.generation_config.max_length = 8
    return model


def test_trainer_example_trains_evaluates_and_pushes_with_a_card(tmp_path, monkeypatch):
    uploads = []
    api = mock.Mock()
    api.create_repo.return_value = mock.Mock(repo_id="you/opus-mt-de-en-cel")
    api.upload_folder.side_effect = lambda *, folder_path, **kw: uploads.append(
        (Path(folder_path) / "README.md").read_text(encoding="utf-8")
    )
    monkeypatch.setattr("transformers.trainer.hf_api", lambda *a, **k: api)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny_tokenizer())
    monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained", small_marian)
    monkeypatch.setattr(datasets, "load_dataset", tiny_translation_corpus)
    monkeypatch.chdir(tmp_path)

    trainers, stock = python_blocks("Use from Python")
    namespace: dict = {}
    with quick_tiny_training():
        exec(compile(trainers, "README.md", "exec"), namespace)
        metrics = namespace["trainer"].state.log_history
        assert any("eval_bleu" in entry and "eval_ece" in entry for entry in metrics)
        card = (tmp_path / "opus-mt-de-en-cel" / "README.md").read_text(encoding="utf-8")
        assert "IWSLT/iwslt2017" in card and "| `loss` | cel |" in card and "apache-2.0" in card
        assert uploads and "IWSLT/iwslt2017" in uploads[-1]

        exec(compile(stock, "README.md", "exec"), namespace)  # the stock Seq2SeqTrainer, same model and data
        assert type(namespace["trainer"]) is transformers.Seq2SeqTrainer
        assert namespace["trainer"].state.global_step == 2  # 16 pairs, batch 8, one epoch


def test_loss_examples_run():
    (losses,) = python_blocks("The losses")
    exec(compile(losses, "README.md", "exec"), {})


def test_the_readme_examples_are_all_tested():
    assert (
        len(python_blocks()) == len(python_blocks("The losses")) + len(python_blocks("Use from Python")) == 3
    )


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_docs_examples_run(tmp_path, monkeypatch, page):
    """Every ```python block of a docs/ page runs as written, each page in a fresh namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in python_blocks(page=page):
        exec(compile(block, str(page.name), "exec"), namespace)


def test_the_docs_have_examples():
    assert python_blocks(page=ROOT / "docs" / "trainers.md")


def docstring_example(cls) -> str:
    """The indented block after ``Example::`` in a class docstring."""
    block = cls.__doc__.split("Example::", 1)[1]
    return textwrap.dedent(block.split("\n\n", 1)[1])


@pytest.mark.parametrize(
    "trainer_class, stand_ins",
    [
        (
            EncouragingSeq2SeqTrainer,
            lambda: dict(model=tiny_marian(), train=seq2seq_dataset(16), valid=seq2seq_dataset(4, seed=1)),
        ),
        (
            EncouragingCausalLMTrainer,
            lambda: dict(model=tiny_causal_lm("llama"), train=prompt_completion_dataset(16)),
        ),
        (
            MultiLabelTrainer,
            lambda: dict(
                model=tiny_bert(), train=multilabel_dataset(16), valid=multilabel_dataset(8, seed=1)
            ),
        ),
    ],
)
def test_trainer_docstring_example_runs(tmp_path, monkeypatch, trainer_class, stand_ins):
    monkeypatch.chdir(tmp_path)
    namespace = {**stand_ins(), "tokenizer": tiny_tokenizer()}
    with quick_tiny_training():
        exec(compile(docstring_example(trainer_class), trainer_class.__name__, "exec"), namespace)
    assert namespace["trainer"].state.global_step > 0
    assert (tmp_path / "out").is_dir()


def test_decoder_only_doc_examples_run(tmp_path, monkeypatch):
    """docs/decoder-only.md: the causal-LM trainer, TRL's SFTTrainer and the stock Trainer, on a tiny Qwen2."""
    if CpuSFTConfig is None:
        pytest.skip("TRL is not installed")
    import hf_losses.integrations.trl as trl_integration

    monkeypatch.setattr(trl_integration, "EncouragingSFTConfig", CpuSFTConfig)

    doc = (README.parent / "docs" / "decoder-only.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny_tokenizer())
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny_causal_lm("qwen2")
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with quick_tiny_training():
        for block, trainer in zip(
            blocks, ("EncouragingCausalLMTrainer", "EncouragingSFTTrainer", "Trainer"), strict=True
        ):
            exec(compile(block, "docs/decoder-only.md", "exec"), namespace)
            assert (
                type(namespace["trainer"]).__name__ == trainer and namespace["trainer"].state.global_step == 2
            )

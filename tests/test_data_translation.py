"""select_translation_columns and tokenize_translation."""

from __future__ import annotations

import datasets
import pytest

from hf_losses.apps.corpora import synthetic_translation_corpus
from hf_losses.apps.tokenizers import train_tokenizer
from hf_losses.data import (
    DataError,
    select_translation_columns,
    tokenize_translation,
)


def _dd(**splits):
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


PAIRS = [
    {"translation": {"de": "Hallo Welt.", "en": "Hello world."}},
    {"translation": {"de": "Gut.", "en": "Good."}},
]


@pytest.fixture(scope="module")
def seq2seq_tokenizer():
    corpus = synthetic_translation_corpus(num_train=300, num_validation=10, num_test=10)
    texts = [t for row in corpus["train"]["translation"] for t in (row["de"], row["en"])]
    return train_tokenizer(texts, vocab_size=300, kind="seq2seq")


def test_translation_dict_column_both_directions():
    raw = _dd(train=PAIRS, validation=PAIRS[:1])
    out = select_translation_columns(raw, source_lang="de", target_lang="en")
    assert out["train"].column_names == ["source", "target"]
    assert out["train"][0] == {"source": "Hallo Welt.", "target": "Hello world."}
    assert out["validation"].num_rows == 1
    back = select_translation_columns(raw, source_lang="en", target_lang="de")
    assert back["train"][1] == {"source": "Good.", "target": "Gut."}


def test_synthetic_corpus_translation_feature():
    corpus = synthetic_translation_corpus(num_train=20, num_validation=5, num_test=5)
    out = select_translation_columns(corpus, source_lang="de", target_lang="en")
    assert out["test"].num_rows == 5 and out["train"].features["source"].dtype == "string"


def test_explicit_columns_and_swapped_names():
    raw = _dd(train=[{"target": "Hallo", "source": "Hello", "id": 1}])
    out = select_translation_columns(
        raw, source_lang="de", target_lang="en", source_column="target", target_column="source"
    )
    assert out["train"][0] == {"source": "Hallo", "target": "Hello"}


def test_top_level_language_columns():
    raw = _dd(train=[{"de": "Hallo", "en": "Hello"}])
    out = select_translation_columns(raw, source_lang="de", target_lang="en")
    assert out["train"][0] == {"source": "Hallo", "target": "Hello"}


def test_missing_language_lists_languages_present():
    with pytest.raises(
        DataError, match=r"--source_lang 'xx' is not in the 'translation' column; languages present: de, en"
    ):
        select_translation_columns(_dd(train=PAIRS), source_lang="xx", target_lang="en")
    with pytest.raises(
        DataError, match=r"--target_lang 'fr' is not in the 'translation' column; languages present: de, en"
    ):
        select_translation_columns(_dd(train=PAIRS), source_lang="de", target_lang="fr")


def test_same_language_rejected():
    with pytest.raises(DataError, match=r"--source_lang and --target_lang are both 'de'"):
        select_translation_columns(_dd(train=PAIRS), source_lang="de", target_lang="de")


def test_missing_columns_named():
    raw = _dd(train=[{"src": "a", "tgt": "b"}])
    with pytest.raises(
        DataError, match=r"--target_column 'target' is not a column of split 'train'; columns: src, tgt"
    ):
        select_translation_columns(
            raw, source_lang=None, target_lang=None, source_column="src", target_column="target"
        )
    with pytest.raises(DataError, match=r"no 'translation' column.*columns: src, tgt"):
        select_translation_columns(raw, source_lang="de", target_lang="en")
    with pytest.raises(DataError, match=r"both --source_column and --target_column"):
        select_translation_columns(raw, source_lang="de", target_lang="en", source_column="src")


def test_none_and_non_string_entries_named():
    raw = _dd(train=PAIRS, validation=[*PAIRS, {"translation": {"de": "Nur Deutsch.", "en": None}}])
    with pytest.raises(
        DataError, match=r"'translation.en' of split 'validation' has no text \(None\) at example 2"
    ):
        select_translation_columns(raw, source_lang="de", target_lang="en")
    numbers = _dd(train=[{"src": 1, "tgt": "b"}])
    with pytest.raises(DataError, match=r"column 'src' of split 'train' must hold strings"):
        select_translation_columns(
            numbers, source_lang=None, target_lang=None, source_column="src", target_column="tgt"
        )


def test_tokenize_translation(seq2seq_tokenizer):
    tok = seq2seq_tokenizer
    raw = _dd(train=PAIRS * 3, validation=PAIRS)
    pairs = select_translation_columns(raw, source_lang="de", target_lang="en")
    out = tokenize_translation(
        pairs, tok, max_source_length=16, max_target_length=4, source_prefix="translate: "
    )
    assert set(out) == {"train", "validation"}
    assert sorted(out["train"].column_names) == ["attention_mask", "input_ids", "labels"]
    row = out["train"][0]
    assert row["input_ids"] == tok("translate: Hallo Welt.", max_length=16, truncation=True)["input_ids"]
    assert row["input_ids"][-1] == tok.eos_token_id and len(row["attention_mask"]) == len(row["input_ids"])
    assert len(row["labels"]) <= 4 and row["labels"][-1] == tok.eos_token_id
    assert out["train"][1]["labels"] == tok(text_target="Good.", max_length=4, truncation=True)["input_ids"]
    untruncated = tokenize_translation(pairs, tok, max_source_length=64, max_target_length=64)
    assert tok.decode(untruncated["validation"][1]["labels"], skip_special_tokens=True) == "Good."


def test_tokenize_translation_with_collator(seq2seq_tokenizer):
    from transformers import DataCollatorForSeq2Seq

    pairs = select_translation_columns(_dd(train=PAIRS), source_lang="de", target_lang="en")
    out = tokenize_translation(pairs, seq2seq_tokenizer, max_source_length=32, max_target_length=32)
    batch = DataCollatorForSeq2Seq(seq2seq_tokenizer, label_pad_token_id=-100)(
        [out["train"][0], out["train"][1]]
    )
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"] == -100).any()


# -------------------------------------------------------------------- decoder-only: prompt + target


def with_bos(tokenizer):
    """A copy of ``tokenizer`` that, like Llama's and Gemma's, starts every sequence with <s> (and adds no eos)."""
    from tokenizers import processors

    copy = tokenizer.__class__(
        tokenizer_object=tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str()),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    copy.add_special_tokens({"bos_token": "<s>"})
    copy.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", copy.bos_token_id)]
    )
    return copy


def test_causal_examples_are_prompt_then_target_with_the_loss_on_the_target(seq2seq_tokenizer):
    from hf_losses.data import tokenize_causal_translation

    tok = seq2seq_tokenizer
    pairs = select_translation_columns(_dd(train=PAIRS), source_lang="de", target_lang="en")
    out = tokenize_causal_translation(
        pairs, tok, source_lang="de", target_lang="en", max_source_length=64, max_target_length=64
    )["train"]
    assert sorted(out.column_names) == ["attention_mask", "input_ids", "labels"]
    for row, pair in zip(out, PAIRS, strict=True):
        prompt = tok(f"Translate German to English:\n{pair['translation']['de']}\n", add_special_tokens=False)
        target = tok(pair["translation"]["en"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = len(prompt["input_ids"])
        assert row["input_ids"] == prompt["input_ids"] + target  # this tokenizer adds no bos: none added
        assert row["labels"] == [-100] * n + target
        assert row["attention_mask"] == [1] * len(row["input_ids"])
        assert tok.eos_token_id not in row["input_ids"][:n]  # its post-processor's </s> is not in the prompt
    assert tok.decode([t for t in out[1]["labels"] if t >= 0], skip_special_tokens=True) == "Good."


def test_causal_examples_start_with_bos_when_the_tokenizer_adds_one_and_truncate_each_part(seq2seq_tokenizer):
    from hf_losses.data import tokenize_causal_translation

    tok = with_bos(seq2seq_tokenizer)
    assert tok("a")["input_ids"][0] == tok.bos_token_id
    pairs = select_translation_columns(_dd(train=PAIRS), source_lang="de", target_lang="en")
    out = tokenize_causal_translation(
        pairs,
        tok,
        prompt_template="{source} =>",
        source_lang="de",
        target_lang="en",
        max_source_length=3,
        max_target_length=2,
    )["train"]
    for row in out:
        assert row["input_ids"][0] == tok.bos_token_id and len(row["input_ids"]) == 3 + 2
        assert row["labels"][:3] == [-100] * 3 and row["labels"][-1] == tok.eos_token_id
        assert row["labels"][3] == row["input_ids"][3] != tok.eos_token_id


@pytest.mark.parametrize(
    "template, words",
    [
        ("Translate {source_lang}: ", ["{source}"]),
        ("{source} in {language}", ["unknown: language"]),
        ("{source", ["not a format string"]),
    ],
)
def test_bad_prompt_templates_are_one_line_errors_naming_the_flag(template, words):
    from hf_losses.data import check_prompt_template

    with pytest.raises(DataError, match="--prompt_template") as error:
        check_prompt_template(template)
    for word in words:
        assert word in str(error.value)
    assert "\n" not in str(error.value).replace(repr(template), "")


def test_language_names_for_prompts():
    from hf_losses.data import language_name

    assert [language_name(c) for c in ("de", "en", "fr", "de_DE", "zh-Hans", "xx")] == [
        "German",
        "English",
        "French",
        "German",
        "Chinese",
        "xx",
    ]

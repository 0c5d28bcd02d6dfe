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

"""prepare_multilabel (label mapping edge cases) and tokenize_multilabel."""

from __future__ import annotations

import logging

import datasets
import pytest

from hf_losses.apps.corpora import synthetic_multilabel_corpus
from hf_losses.apps.tokenizers import train_tokenizer
from hf_losses.data import (
    DataError,
    load_raw_datasets,
    prepare_multilabel,
    tokenize_multilabel,
)


def _dd(features=None, **splits):
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows, features=features) for name, rows in splits.items()}
    )


def _ids(prepared, split="train"):
    return prepared[split]["label_ids"][:]


def test_label_names_sorted_from_train_and_unseen_dropped(caplog):
    raw = _dd(
        train=[
            {"text": "a", "topics": ["earn", "acq"]},
            {"text": "b", "topics": ["crude"]},
            {"text": "c", "topics": []},
        ],
        test=[
            {"text": "d", "topics": ["earn", "gold"]},
            {"text": "e", "topics": ["gold", "zinc"]},
            {"text": "f", "topics": ["acq"]},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="hf_losses.data.classification"):
        prepared, names = prepare_multilabel(raw, text_columns=["text"], label_column="topics")
    assert names == ["acq", "crude", "earn"]
    assert _ids(prepared) == [[0, 2], [1], []]
    assert _ids(prepared, "test") == [[2], [], [0]]
    assert prepared["train"].column_names == ["text", "label_ids"]
    assert (
        "split 'test': dropped 2 label name(s) not seen in the train split (gold, zinc) from 2 example(s)"
        in caplog.text
    )


def test_given_label_names_for_names_and_ids():
    raw = _dd(train=[{"text": "a", "labels": ["b", "a"]}])
    prepared, names = prepare_multilabel(
        raw, text_columns=["text"], label_column="labels", label_names=["b", "a", "c"]
    )
    assert names == ["b", "a", "c"] and _ids(prepared) == [[0, 1]]
    with pytest.raises(DataError, match=r"holds 'b' at example 0, which is not in --label_names: x, y"):
        prepare_multilabel(raw, text_columns=["text"], label_column="labels", label_names=["x", "y"])

    ids = _dd(train=[{"text": "a", "labels": [3, 1, 3]}])
    prepared, names = prepare_multilabel(
        ids, text_columns=["text"], label_column="labels", label_names=list("abcd")
    )
    assert names == list("abcd") and _ids(prepared) == [[1, 3]]
    with pytest.raises(
        DataError, match=r"label column 'labels' of split 'train' holds id 3 at example 0; allowed: 0..2"
    ):
        prepare_multilabel(ids, text_columns=["text"], label_column="labels", label_names=list("abc"))


def test_ids_without_names_use_max_over_all_splits():
    raw = _dd(train=[{"text": "a", "labels": [0, 2]}], validation=[{"text": "b", "labels": [5]}])
    prepared, names = prepare_multilabel(raw, text_columns=["text"], label_column="labels")
    assert names == ["0", "1", "2", "3", "4", "5"] and _ids(prepared, "validation") == [[5]]
    negative = _dd(train=[{"text": "a", "labels": [-1]}])
    with pytest.raises(DataError, match=r"holds id -1 at example 0"):
        prepare_multilabel(negative, text_columns=["text"], label_column="labels")


def test_class_label_feature_names():
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=["joy", "anger", "fear"])),
        }
    )
    raw = _dd(features, train=[{"text": "a", "labels": [2]}, {"text": "b", "labels": []}])
    prepared, names = prepare_multilabel(raw, text_columns=["text"], label_column="labels")
    assert names == ["joy", "anger", "fear"] and _ids(prepared) == [[2], []]


def test_single_label_per_row_and_none():
    raw = _dd(train=[{"text": "a", "label": "x"}, {"text": "b", "label": None}, {"text": "c", "label": "y"}])
    prepared, names = prepare_multilabel(raw, text_columns=["text"], label_column="label")
    assert names == ["x", "y"] and _ids(prepared) == [[0], [], [1]]
    ints = _dd(train=[{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    assert _ids(prepare_multilabel(ints, text_columns=["text"], label_column="label")[0]) == [[1], [0]]


def test_csv_list_strings(tmp_path):
    ids_csv = tmp_path / "ids.csv"
    ids_csv.write_text('title,body,labels\nT1,B1,"[1, 4]"\nT2,B2,[]\nT3,,3\n', encoding="utf-8")
    raw = load_raw_datasets(train_file=str(ids_csv), cache_dir=str(tmp_path / "cache"))
    prepared, names = prepare_multilabel(raw, text_columns=["title", "body"], label_column="labels")
    assert names == ["0", "1", "2", "3", "4"]
    assert _ids(prepared) == [[1, 4], [], [3]]
    assert prepared["train"]["text"][:] == ["T1\nB1", "T2\nB2", "T3"]

    names_tsv = tmp_path / "names.tsv"
    names_tsv.write_text('text\ttopics\nx\tearn;acq\ny\t["crude"]\nz\t\n', encoding="utf-8")
    raw = load_raw_datasets(train_file=str(names_tsv), cache_dir=str(tmp_path / "cache"))
    prepared, names = prepare_multilabel(raw, text_columns=["text"], label_column="topics")
    assert names == ["acq", "crude", "earn"] and _ids(prepared) == [[0, 2], [1], []]


def test_indicator_columns():
    raw = _dd(
        train=[
            {"text": "a", "sports": 1, "art": 0},
            {"text": "b", "sports": 0, "art": 1.0},
            {"text": "c", "sports": 0, "art": 0},
        ]
    )
    prepared, names = prepare_multilabel(raw, text_columns=["text"], label_columns=["sports", "art"])
    assert names == ["sports", "art"] and _ids(prepared) == [[0], [1], []]
    bad = _dd(train=[{"text": "a", "sports": 2}])
    with pytest.raises(
        DataError, match=r"label column 'sports' of split 'train' holds 2 at example 0; expected 0 or 1"
    ):
        prepare_multilabel(bad, text_columns=["text"], label_columns=["sports"])


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([[0], [1.5]], r"holds float 1.5"),
        ([[], [{"id": 1}]], r"holds dict \{'id': 1\}"),
        (["[0]", "[1, "], r"holds '\[1,', which is not a valid JSON list"),
        ([True, False], r"holds bool True"),
    ],
)
def test_wrong_label_types_name_column_split_and_index(cells, message):
    raw = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a"], "labels": [cells[0]]}),
            "validation": datasets.Dataset.from_dict({"text": ["b", "c"], "labels": cells}),
        }
    )
    index = 0 if cells[0] is True else 1
    with pytest.raises(
        DataError, match=rf"label column 'labels' of split '(train|validation)' at example {index} {message}"
    ):
        prepare_multilabel(raw, text_columns=["text"], label_column="labels")


def test_missing_columns_and_bad_arguments():
    raw = _dd(train=[{"text": "a", "labels": [0]}])
    with pytest.raises(
        DataError, match=r"column 'topics' is not in split 'train'; columns present: text, labels"
    ):
        prepare_multilabel(raw, text_columns=["text"], label_column="topics")
    with pytest.raises(
        DataError, match=r"column 'title' is not in split 'train'; columns present: text, labels"
    ):
        prepare_multilabel(raw, text_columns=["title"], label_column="labels")
    with pytest.raises(DataError, match="exactly one of --label_column"):
        prepare_multilabel(raw, text_columns=["text"])
    mixed = _dd(train=[{"text": "a", "labels": "1;x"}])
    with pytest.raises(DataError, match="mixes label ids"):
        prepare_multilabel(mixed, text_columns=["text"], label_column="labels")
    numbers = _dd(train=[{"text": 5, "labels": [0]}])
    with pytest.raises(DataError, match=r"text column 'text' of split 'train' holds int 5 at example 0"):
        prepare_multilabel(numbers, text_columns=["text"], label_column="labels")


def test_tokenize_multilabel_on_synthetic_corpus():
    corpus = synthetic_multilabel_corpus(num_train=200, num_validation=20, num_test=20, num_labels=8)
    prepared, names = prepare_multilabel(corpus, text_columns=["text"], label_column="labels")
    assert len(names) <= 8 and names == sorted(names)
    tok = train_tokenizer(
        prepared["train"]["text"], vocab_size=500, kind="classification", model_max_length=128
    )
    out = tokenize_multilabel(prepared, tok, num_labels=len(names), max_length=24)
    assert sorted(out["train"].column_names) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    assert out["train"].features["labels"].feature.dtype == "float32"
    row, source = out["train"][0], prepared["train"][0]
    assert len(row["input_ids"]) <= 24 and row["input_ids"][0] == tok.cls_token_id
    assert row["labels"] == [1.0 if i in source["label_ids"] else 0.0 for i in range(len(names))]
    with pytest.raises(DataError, match=r"outside 0\.\.0 \(num_labels=1\)"):
        tokenize_multilabel(prepared, tok, num_labels=1, max_length=24)

    from transformers import DataCollatorWithPadding

    batch = DataCollatorWithPadding(tok)([out["train"][i] for i in range(4)])
    assert batch["labels"].shape == (4, len(names)) and str(batch["labels"].dtype) == "torch.float32"

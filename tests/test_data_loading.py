"""load_raw_datasets: local files of each format, local Hub-like directories, and the error messages."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_losses.data import DataError, load_raw_datasets

ROWS = [
    {"text": "first example", "labels": "[1, 4]"},
    {"text": "second example", "labels": "a;b"},
    {"text": "third example", "labels": "[]"},
]


def _write(path, rows, fmt):
    if fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        quote = (lambda v: '"' + v.replace('"', '""') + '"') if fmt == "csv" else (lambda v: v)
        lines = [sep.join(rows[0])] + [sep.join(quote(str(v)) for v in r.values()) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _load(tmp_path, **kwargs):
    return load_raw_datasets(cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv", "parquet"])
def test_each_local_format(tmp_path, fmt):
    train = _write(tmp_path / f"train.{fmt}", ROWS, fmt)
    valid = _write(tmp_path / f"valid.{fmt}", ROWS[:2], fmt)
    raw = _load(tmp_path, train_file=train, validation_file=valid)
    assert set(raw) == {"train", "validation"}
    assert raw["train"].num_rows == 3 and raw["validation"].num_rows == 2
    assert raw["train"]["text"][:] == ["first example", "second example", "third example"]
    assert raw["train"]["labels"][0] == "[1, 4]"


def test_json_and_jsonl_mix(tmp_path):
    raw = _load(
        tmp_path,
        train_file=_write(tmp_path / "train.jsonl", ROWS, "jsonl"),
        test_file=_write(tmp_path / "test.json", ROWS, "json"),
    )
    assert set(raw) == {"train", "test"}


def _hub_copy(root, config, splits, layout="flat"):
    for split, rows in splits.items():
        if layout == "flat":
            path = root / config / f"{split}-00000-of-00001.parquet"
        else:  # refs/convert/parquet layout
            path = root / config / split / "0000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)


PAIRS = [
    {"translation": {"de": "hallo welt", "en": "hello world"}},
    {"translation": {"de": "gut", "en": "good"}},
]


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_local_hub_copy_with_config_subfolders(tmp_path, layout):
    root = tmp_path / "wmt14"
    _hub_copy(root, "de-en", {"train": PAIRS, "validation": PAIRS[:1], "test": PAIRS[:1]}, layout)
    _hub_copy(root, "fr-en", {"train": PAIRS * 3}, layout)
    raw = _load(
        tmp_path, dataset_name=str(root), dataset_config_name="de-en", dataset_revision="ignored-locally"
    )
    assert {split: ds.num_rows for split, ds in raw.items()} == {"train": 2, "validation": 1, "test": 1}
    assert raw["train"][0]["translation"] == {"de": "hallo welt", "en": "hello world"}

    with pytest.raises(DataError, match=r"--dataset_config_name 'xx-en'.*configs present: de-en, fr-en"):
        _load(tmp_path, dataset_name=str(root), dataset_config_name="xx-en")
    with pytest.raises(DataError, match=r"several configs \(de-en, fr-en\).*--dataset_config_name"):
        _load(tmp_path, dataset_name=str(root))


def test_local_hub_copy_data_folder_and_split_aliases(tmp_path):
    root = tmp_path / "ds"
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(PAIRS), root / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(PAIRS[:1]), root / "data" / "dev-00000-of-00001.parquet")
    raw = _load(tmp_path, dataset_name=str(root))
    assert set(raw) == {"train", "validation"}
    assert raw["validation"].num_rows == 1
    # a flat copy of one config: the config name (as in a recipe) is ignored with a warning
    assert set(_load(tmp_path, dataset_name=str(root), dataset_config_name="de-en")) == {
        "train",
        "validation",
    }


def test_local_hub_copy_single_config_without_config_name(tmp_path):
    root = tmp_path / "go"
    _hub_copy(
        root,
        "simplified",
        {"train": [{"text": "x", "labels": [1]}], "validation": [{"text": "y", "labels": []}]},
    )
    assert set(_load(tmp_path, dataset_name=str(root))) == {"train", "validation"}
    assert set(_load(tmp_path, dataset_name=str(root), dataset_config_name="simplified")) == {
        "train",
        "validation",
    }


# ------------------------------------------------------------------------------------------ errors


def test_missing_file_names_path_and_argument(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"--validation_file .*nope\.jsonl does not exist"):
        _load(tmp_path, train_file=_write(tmp_path / "t.jsonl", ROWS, "jsonl"), validation_file=missing)


def test_unsupported_extension_lists_allowed(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("hello\n")
    with pytest.raises(
        DataError,
        match=r"--train_file .*train\.txt has unsupported extension '\.txt'; allowed: .json, .jsonl, .csv, .tsv, .parquet",
    ):
        _load(tmp_path, train_file=str(path))


def test_mixed_formats(tmp_path):
    with pytest.raises(DataError, match=r"same format.*--train_file is json, --validation_file is csv"):
        _load(
            tmp_path,
            train_file=_write(tmp_path / "t.jsonl", ROWS, "jsonl"),
            validation_file=_write(tmp_path / "v.csv", ROWS, "csv"),
        )


def test_bad_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok too"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"--train_file .*train\.jsonl could not be parsed as json: line 3"):
        _load(tmp_path, train_file=str(path))


def test_bad_parquet_names_file(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match=r"--train_file .*train\.parquet could not be parsed as parquet"):
        _load(tmp_path, train_file=str(path))


def test_bad_csv_names_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,labels\na,1\nb,2,3,4\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"--train_file .*train\.csv could not be parsed as csv"):
        _load(tmp_path, train_file=str(path))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_empty_split_is_named(tmp_path, fmt):
    train = _write(tmp_path / f"train.{fmt}", ROWS, fmt)
    empty = tmp_path / f"test.{fmt}"
    if fmt == "parquet":
        pq.write_table(
            pa.table({"text": pa.array([], pa.string()), "labels": pa.array([], pa.string())}), empty
        )
    else:
        empty.write_text({"jsonl": "", "json": "[]", "csv": "text,labels\n"}[fmt], encoding="utf-8")
    with pytest.raises(DataError, match=r"split 'test' is empty"):
        _load(tmp_path, train_file=train, test_file=str(empty))


def test_argument_combinations(tmp_path):
    with pytest.raises(DataError, match="--dataset_name or at least one of --train_file"):
        _load(tmp_path)
    with pytest.raises(DataError, match="either --dataset_name or --train_file"):
        _load(tmp_path, dataset_name="wmt/wmt14", train_file=_write(tmp_path / "t.jsonl", ROWS, "jsonl"))


def test_hub_arguments_and_split_aliases(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        rows = datasets.Dataset.from_list(PAIRS)
        return datasets.DatasetDict({"train": rows, "valid": rows, "test": rows})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    raw = _load(
        tmp_path,
        dataset_name="IWSLT/iwslt2017",
        dataset_config_name="iwslt2017-de-en",
        dataset_revision="refs/convert/parquet",
        token="hf_x",
    )
    assert set(raw) == {"train", "validation", "test"}
    path, name, kwargs = calls[0]
    assert (path, name, kwargs["revision"], kwargs["token"]) == (
        "IWSLT/iwslt2017",
        "iwslt2017-de-en",
        "refs/convert/parquet",
        "hf_x",
    )
    assert "trust_remote_code" not in kwargs


def test_hub_failures_become_data_errors(tmp_path, monkeypatch):
    import datasets

    def unreachable(path, name=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(
        DataError, match=r"could not load --dataset_name 'wmt/wmt14' \(config 'de-en'\): Couldn't reach"
    ):
        _load(tmp_path, dataset_name="wmt/wmt14", dataset_config_name="de-en")
    with pytest.raises(DataError, match=r"--dataset_name ./no/such/dir is not a directory"):
        _load(tmp_path, dataset_name="./no/such/dir")

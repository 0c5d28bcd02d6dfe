"""Translation preprocessing: pick the source/target text, then tokenise for a seq2seq model."""

from __future__ import annotations

import datasets
import pyarrow.compute as pc

from .errors import DataError

TRANSLATION_COLUMN = "translation"


def check_language_pair(source_lang: str | None, target_lang: str | None) -> None:
    """DataError when the source and target languages are the same."""
    if source_lang is not None and source_lang == target_lang:
        raise DataError(f"--source_lang and --target_lang are both {source_lang!r}; they must differ")


def select_translation_columns(
    raw: datasets.DatasetDict,
    *,
    source_lang: str | None,
    target_lang: str | None,
    source_column: str | None = None,
    target_column: str | None = None,
) -> datasets.DatasetDict:
    """Reduce every split to two string columns, ``source`` and ``target``.

    The text comes from, in this order of preference:

    1. ``source_column``/``target_column`` when given (both or neither);
    2. the keys ``source_lang``/``target_lang`` of a ``translation`` dict column (wmt14, iwslt2017);
    3. top-level columns named ``source_lang``/``target_lang`` (e.g. a csv with ``de`` and ``en``).

    Raises:
        DataError: naming the missing language or column and what is present, when the languages are
            equal, or when an entry is not a string (naming the split and example index).
    """
    check_language_pair(source_lang, target_lang)
    if (source_column is None) != (target_column is None):
        raise DataError("give both --source_column and --target_column, or neither")
    if source_column is not None and source_column == target_column:
        raise DataError(f"--source_column and --target_column are both {source_column!r}; they must differ")

    selected = {}
    for split, ds in raw.items():
        columns = ds.column_names
        if source_column is not None:
            for flag, column in (("--source_column", source_column), ("--target_column", target_column)):
                if column not in columns:
                    raise DataError(
                        f"{flag} {column!r} is not a column of split '{split}'; columns: {', '.join(columns)}"
                    )
            pairs = (source_column, target_column)
        elif TRANSLATION_COLUMN in columns:
            ds, pairs = _flatten_translation(ds, split, source_lang, target_lang)
        elif source_lang in columns and target_lang in columns:
            pairs = (source_lang, target_lang)
        else:
            raise DataError(
                f"split '{split}' has no 'translation' column and no --source_column/--target_column was given; "
                f"columns: {', '.join(columns)}"
            )
        selected[split] = _to_source_target(ds, split, *pairs)
    return datasets.DatasetDict(selected)


def _flatten_translation(
    ds: datasets.Dataset, split: str, source_lang, target_lang
) -> tuple[datasets.Dataset, tuple[str, str]]:
    feature = ds.features[TRANSLATION_COLUMN]
    if isinstance(feature, datasets.Translation):
        languages = list(feature.languages)
    elif isinstance(feature, dict):
        languages = list(feature)
    elif type(feature).__name__ == "Json":  # rows whose dicts differ in their keys
        return _pairs_from_dicts(ds, split, source_lang, target_lang)
    else:
        raise DataError(
            f"column 'translation' of split '{split}' must hold {{language: text}} dicts, not {feature}"
        )
    for flag, lang in (("--source_lang", source_lang), ("--target_lang", target_lang)):
        if lang is None:
            raise DataError(
                f"{flag} is required for the 'translation' column; languages present: {', '.join(languages)}"
            )
        if lang not in languages:
            raise DataError(
                f"{flag} {lang!r} is not in the 'translation' column; languages present: {', '.join(languages)}"
            )
    flat = ds.select_columns([TRANSLATION_COLUMN]).flatten()
    return flat, (f"{TRANSLATION_COLUMN}.{source_lang}", f"{TRANSLATION_COLUMN}.{target_lang}")


def _pairs_from_dicts(
    ds: datasets.Dataset, split: str, source_lang, target_lang
) -> tuple[datasets.Dataset, tuple[str, str]]:
    """The two languages of a ``translation`` column of free-form dicts, naming the first row that lacks one."""
    rows = ds[TRANSLATION_COLUMN]
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"column 'translation' of split '{split}' must hold {{language: text}} dicts; example {index} "
                f"holds {type(row).__name__}"
            )
        for flag, lang in (("--source_lang", source_lang), ("--target_lang", target_lang)):
            if lang not in row:
                raise DataError(
                    f"example {index} of split '{split}' has no {flag} {lang!r} in its 'translation' dict; "
                    f"it has: {', '.join(map(str, row)) or 'nothing'}"
                )
    columns = {lang: [row[lang] for row in rows] for lang in (source_lang, target_lang)}
    return datasets.Dataset.from_dict(columns), (source_lang, target_lang)


def _to_source_target(ds: datasets.Dataset, split: str, source: str, target: str) -> datasets.Dataset:
    for column in (source, target):
        feature = ds.features[column]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"column {column!r} of split '{split}' must hold strings, not {feature}")
        nulls = pc.is_null(ds.data.column(column))
        if pc.any(nulls).as_py():
            index = pc.index(nulls, True).as_py()
            raise DataError(f"column {column!r} of split '{split}' has no text (None) at example {index}")
    ds = ds.select_columns([source, target])
    ds = ds.rename_columns({source: "__source__", target: "__target__"})
    ds = ds.rename_columns({"__source__": "source", "__target__": "target"})
    features = datasets.Features({"source": datasets.Value("string"), "target": datasets.Value("string")})
    return ds if ds.features == features else ds.cast(features)


def tokenize_translation(
    ds: datasets.DatasetDict,
    tokenizer,
    *,
    max_source_length: int,
    max_target_length: int,
    source_prefix: str = "",
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Tokenise ``source``/``target`` into ``input_ids``, ``attention_mask`` and ``labels``.

    Targets go through ``tokenizer(text_target=...)``, so Marian (separate target vocabulary), T5 and
    mBART (set ``tokenizer.src_lang``/``tgt_lang`` first) get their target-side special tokens. Both
    sides are truncated, not padded: ``DataCollatorForSeq2Seq`` pads per batch and sets padded labels
    to -100. ``source_prefix`` is prepended to every source (e.g. ``"translate German to English: "``
    for T5). All other columns are removed.
    """

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        inputs = [source_prefix + text for text in batch["source"]]
        encoded = tokenizer(inputs, max_length=max_source_length, truncation=True)
        targets = tokenizer(text_target=batch["target"], max_length=max_target_length, truncation=True)
        encoded["labels"] = targets["input_ids"]
        return dict(encoded)

    return datasets.DatasetDict(
        {
            split: split_ds.map(
                encode,
                batched=True,
                remove_columns=split_ds.column_names,
                num_proc=num_proc,
                desc=f"Tokenizing {split}",
            )
            for split, split_ds in ds.items()
        }
    )

"""Translation preprocessing: pick the source/target text, then tokenise for a seq2seq model."""

from __future__ import annotations

import string

import datasets
import pyarrow.compute as pc

from .errors import DataError

TRANSLATION_COLUMN = "translation"
DEFAULT_PROMPT_TEMPLATE = "Translate {source_lang} to {target_lang}:\n{source}\n"
PROMPT_FIELDS = ("source_lang", "target_lang", "source")
# English names of the languages of common translation corpora (WMT, IWSLT, Multi30k, FLORES), for prompts.
LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "et": "Estonian",
    "fi": "Finnish", "fr": "French", "gu": "Gujarati", "ha": "Hausa", "hi": "Hindi", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "kk": "Kazakh", "km": "Khmer", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "nl": "Dutch", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "ta": "Tamil", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip


def language_name(code: str) -> str:
    """The English name of a language code (``de`` and mBART's ``de_DE`` give German); unknown codes as given."""
    return LANGUAGE_NAMES.get(code.split("_")[0].split("-")[0].lower(), code)


def check_prompt_template(template: str) -> None:
    """DataError unless ``template`` is a format string of only {source_lang}, {target_lang} and {source},
    with {source}."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise DataError(f"--prompt_template {template!r} is not a format string: {error}") from None
    unknown = sorted(names - set(PROMPT_FIELDS))
    if unknown or "source" not in names:
        raise DataError(
            f"--prompt_template must contain {{source}} and may contain {{source_lang}} and {{target_lang}}; "
            f"got {template!r}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )


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

    return _tokenize_splits(ds, encode, num_proc)


def tokenize_causal_translation(
    ds: datasets.DatasetDict,
    tokenizer,
    *,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    source_lang: str,
    target_lang: str,
    max_source_length: int,
    max_target_length: int,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Tokenise ``source``/``target`` for a decoder-only model: ``input_ids`` = prompt + target + eos, and
    ``labels`` the same with -100 on the prompt, so that only the target (and its end) is scored.

    The prompt is ``prompt_template`` filled with the source text and the languages' English names
    (:func:`language_name`), after the tokenizer's BOS token if the tokenizer adds one itself; it is truncated
    to ``max_source_length`` tokens and the target to ``max_target_length`` tokens, eos included. Both are
    tokenised apart (no special tokens of their own), so the prompt is exactly what generation is given.
    ``DataCollatorForSeq2Seq`` pads them per batch (labels with -100). All other columns are removed.
    """
    check_prompt_template(prompt_template)
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token: a decoder-only model needs one to end its targets")
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    names = {"source_lang": language_name(source_lang), "target_lang": language_name(target_lang)}

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        prompts = [prompt_template.format(source=text, **names) for text in batch["source"]]
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
        input_ids, labels = [], []
        for prompt, target in zip(prompt_ids, target_ids, strict=True):
            prompt = ([bos] if adds_bos else []) + prompt
            prompt = prompt[:max_source_length]
            target = target[: max_target_length - 1] + [tokenizer.eos_token_id]
            input_ids.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        return {"input_ids": input_ids, "attention_mask": [[1] * len(x) for x in input_ids], "labels": labels}

    return _tokenize_splits(ds, encode, num_proc)


def _tokenize_splits(ds: datasets.DatasetDict, encode, num_proc: int | None) -> datasets.DatasetDict:
    """``encode`` (batched) over every split, keeping only the columns it returns."""
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

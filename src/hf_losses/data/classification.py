"""Multi-label classification preprocessing: text + label ids, then tokens + multi-hot float labels.

Label cells are accepted in the shapes real datasets use:

* a list of ids (``go_emotions``: ``labels: List(ClassLabel(names=...))``) or of names
  (``reuters21578``: ``topics: list[str]``);
* a single id or name per row;
* in CSV/TSV files, a JSON list string (``"[1, 4]"``, ``'["earn", "acq"]'``) or a ``;``-separated
  string (``"earn;acq"``; parts made of digits only are ids);
* ``None``/empty: no labels (an all-zero target);
* or, with ``label_columns``, one 0/1 column per label.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import datasets

from .errors import DataError

logger = logging.getLogger(__name__)

TEXT_SEPARATOR = "\n"  # between the text columns of one example (e.g. title and abstract)
_FEATURES = datasets.Features(
    {"text": datasets.Value("string"), "label_ids": datasets.List(datasets.Value("int64"))}
)


def prepare_multilabel(
    raw: datasets.DatasetDict,
    *,
    text_columns: Sequence[str],
    label_column: str | None = None,
    label_columns: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> tuple[datasets.DatasetDict, list[str]]:
    """Reduce every split to ``text`` (the text columns joined by a newline) and ``label_ids``.

    Args:
        raw: the loaded splits.
        text_columns: columns holding text; ``None`` cells count as empty.
        label_column: one column of label ids or names per row (see the module docstring).
        label_columns: alternatively, one 0/1 column per label; the column names are the label names.
        label_names: the label names, index = id. With ids, they fix the number of labels and every
            id must be below it; with names, every name must be one of them. Without them the names
            come from a ``ClassLabel`` feature, else from the sorted names of the train split (a name
            seen only in another split is dropped, with a warning), else for ids ``"0" .. str(max id)``.

    Returns:
        ``(dataset, label_names)`` where ``label_ids`` are sorted distinct ints indexing ``label_names``.

    Raises:
        DataError: naming the column, split and example index of a bad cell, or the columns present.
    """
    if (label_column is None) == (label_columns is None):
        raise DataError(
            "give exactly one of --label_column (ids or names per row) or --label_columns (0/1 columns)"
        )
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    if not text_columns:
        raise DataError("--text_columns is empty; give at least one text column")
    needed = [*text_columns, *([label_column] if label_column is not None else label_columns)]
    for split, ds in raw.items():
        missing = [column for column in needed if column not in ds.column_names]
        if missing:
            raise DataError(
                f"column {missing[0]!r} is not in split '{split}'; columns present: {', '.join(ds.column_names)}"
            )

    if label_columns is not None:
        names = list(label_names) if label_names is not None else list(label_columns)
        if len(names) != len(label_columns):
            raise DataError(
                f"--label_names has {len(names)} names but --label_columns has {len(label_columns)} columns"
            )
        ids = {split: _read_indicator_columns(ds, split, label_columns) for split, ds in raw.items()}
    else:
        cells = {split: _read_label_column(ds, split, label_column) for split, ds in raw.items()}
        ids, names = _map_labels(raw, cells, label_column, label_names)

    prepared = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"text": _join_texts(ds, split, text_columns), "label_ids": ids[split]}, features=_FEATURES
            )
            for split, ds in raw.items()
        }
    )
    return prepared, names


def read_class_names(path: str | Path) -> list[str]:
    """Class names in id order from a file: a JSON list, a JSON ``{id: name}`` mapping, or one name a line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"--class_names {path} is not valid JSON: {err}") from None
        if isinstance(names, dict):
            try:
                names = [names[key] for key in sorted(names, key=int)]
            except ValueError:
                raise DataError(f"--class_names {path}: a mapping must have ids 0, 1, ... as keys") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(
            f"--class_names {path} must hold a list of names, an {{id: name}} mapping or one name a line"
        )
    return names


def tokenize_multilabel(
    ds: datasets.DatasetDict, tokenizer, *, num_labels: int, max_length: int
) -> datasets.DatasetDict:
    """Tokenise ``text`` (truncated to ``max_length``, not padded) and turn ``label_ids`` into ``labels``.

    ``labels`` are float32 multi-hot lists of length ``num_labels``, the targets of a
    ``problem_type="multi_label_classification"`` model. Keeps ``token_type_ids`` when the tokenizer
    produces them; removes ``text`` and ``label_ids``.
    """
    for split, split_ds in ds.items():
        for index, ids in enumerate(split_ds["label_ids"]):
            bad = [i for i in ids if not 0 <= i < num_labels]
            if bad:
                raise DataError(
                    f"label id {bad[0]} at example {index} of split '{split}' is outside 0..{num_labels - 1} (num_labels={num_labels})"
                )

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = dict(tokenizer(batch["text"], max_length=max_length, truncation=True))
        encoded["labels"] = [_multi_hot(ids, num_labels) for ids in batch["label_ids"]]
        return encoded

    return datasets.DatasetDict(
        {
            split: split_ds.map(
                encode, batched=True, remove_columns=split_ds.column_names, desc=f"Tokenizing {split}"
            ).cast_column("labels", datasets.List(datasets.Value("float32")))
            for split, split_ds in ds.items()
        }
    )


# ------------------------------------------------------------------------------------------- text


def _join_texts(ds: datasets.Dataset, split: str, columns: Sequence[str]) -> list[str]:
    values = [list(ds[column]) for column in columns]
    texts = []
    for index, row in enumerate(zip(*values, strict=True)):
        parts = []
        for column, value in zip(columns, row, strict=True):
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataError(
                    f"text column {column!r} of split '{split}' holds {type(value).__name__} {value!r} at example {index}; expected a string"
                )
            parts.append(value)
        texts.append(TEXT_SEPARATOR.join(parts))
    return texts


# ----------------------------------------------------------------------------------------- labels


def _read_indicator_columns(ds: datasets.Dataset, split: str, columns: Sequence[str]) -> list[list[int]]:
    values = [list(ds[column]) for column in columns]
    ids = []
    for index, row in enumerate(zip(*values, strict=True)):
        example = []
        for label_id, (column, value) in enumerate(zip(columns, row, strict=True)):
            if isinstance(value, bool | Integral | float) and value in (0, 1):
                if value == 1:
                    example.append(label_id)
            else:
                raise DataError(
                    f"label column {column!r} of split '{split}' holds {value!r} at example {index}; expected 0 or 1"
                )
        ids.append(example)
    return ids


def _read_label_column(ds: datasets.Dataset, split: str, column: str) -> list[list[int | str]]:
    """Every cell of ``column`` as a list of ids (int) or names (str)."""
    cells = []
    for index, value in enumerate(ds[column]):
        where = f"label column {column!r} of split '{split}' at example {index}"
        cells.append(_parse_cell(value, where))
    return cells


def _parse_cell(value, where: str) -> list[int | str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{where} holds {text!r}, which is not a valid JSON list ({err.msg})"
                ) from err
        else:
            return [
                int(part) if part.isdigit() else part for part in (p.strip() for p in text.split(";")) if part
            ]
    items = value if isinstance(value, list | tuple) else [value]
    return [_parse_item(item, where) for item in items]


def _parse_item(item, where: str) -> int | str:
    if isinstance(item, Integral) and not isinstance(item, bool):
        return int(item)
    if isinstance(item, float) and item.is_integer():
        return int(item)
    if isinstance(item, str) and item.strip():
        return item.strip()
    raise DataError(f"{where} holds {type(item).__name__} {item!r}; expected label ids (int) or names (str)")


def _map_labels(
    raw: datasets.DatasetDict,
    cells: dict[str, list[list[int | str]]],
    column: str,
    label_names: Sequence[str] | None,
) -> tuple[dict[str, list[list[int]]], list[str]]:
    """Turn parsed cells into sorted distinct ids and decide the label names."""
    kinds = {type(item) for split_cells in cells.values() for cell in split_cells for item in cell}
    if kinds == {int, str}:
        raise DataError(
            f"label column {column!r} mixes label ids (ints) and label names (strings); use one or the other"
        )
    if not kinds:
        raise DataError(f"label column {column!r} has no labels in any split; nothing to learn")

    if kinds == {int}:
        names = list(label_names) if label_names is not None else _class_label_names(raw, column)
        ids = {}
        for split, split_cells in cells.items():
            for index, cell in enumerate(split_cells):
                for label_id in cell:
                    if label_id < 0 or (names is not None and label_id >= len(names)):
                        allowed = f"0..{len(names) - 1}" if names is not None else "non-negative ids"
                        raise DataError(
                            f"label column {column!r} of split '{split}' holds id {label_id} at example {index}; allowed: {allowed}"
                        )
            ids[split] = [sorted(set(cell)) for cell in split_cells]
        if names is None:
            names = [
                str(i)
                for i in range(1 + max(i for split_ids in ids.values() for cell in split_ids for i in cell))
            ]
        return ids, names

    if label_names is not None:
        names = list(label_names)
        index_of = {name: i for i, name in enumerate(names)}
        for split, split_cells in cells.items():
            for index, cell in enumerate(split_cells):
                unknown = [name for name in cell if name not in index_of]
                if unknown:
                    shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
                    raise DataError(
                        f"label column {column!r} of split '{split}' holds {unknown[0]!r} at example {index}, "
                        f"which is not in --label_names: {shown}"
                    )
    else:
        source = "train" if "train" in cells else None
        names = sorted(
            {
                name
                for split, split_cells in cells.items()
                if source in (None, split)
                for cell in split_cells
                for name in cell
            }
        )
        index_of = {name: i for i, name in enumerate(names)}

    ids = {}
    for split, split_cells in cells.items():
        dropped, affected = set(), 0
        split_ids = []
        for cell in split_cells:
            unknown = {name for name in cell if name not in index_of}
            if unknown:
                dropped |= unknown
                affected += 1
            split_ids.append(sorted({index_of[name] for name in cell if name in index_of}))
        if affected:
            logger.warning(
                "split '%s': dropped %d label name(s) not seen in the train split (%s) from %d example(s)",
                split,
                len(dropped),
                ", ".join(sorted(dropped)),
                affected,
            )
        ids[split] = split_ids
    return ids, names


def _class_label_names(raw: datasets.DatasetDict, column: str) -> list[str] | None:
    """Names of a ``ClassLabel`` or ``List(ClassLabel)`` feature of ``column``, if it has one."""
    for ds in raw.values():
        feature = ds.features[column]
        inner = feature[0] if isinstance(feature, list) else getattr(feature, "feature", feature)
        if isinstance(inner, datasets.ClassLabel):
            return list(inner.names)
    return None


def _multi_hot(ids: Sequence[int], num_labels: int) -> list[float]:
    target = [0.0] * num_labels
    for label_id in ids:
        target[label_id] = 1.0
    return target

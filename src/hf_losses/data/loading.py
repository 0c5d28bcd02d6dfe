"""Load raw datasets from the Hub, from a local copy of a Hub dataset, or from local files.

Every path ends in :func:`load_raw_datasets`, which returns a :class:`datasets.DatasetDict` whose split
names are normalised (``valid``/``dev`` become ``validation``) and none of whose splits is empty.
Problems with the user's arguments or files raise :class:`~hf_losses.data.errors.DataError`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import datasets

from .errors import DataError

logger = logging.getLogger(__name__)

# extension -> (datasets builder, extra builder kwargs); the builder name is the "format family"
_FORMATS: dict[str, tuple[str, dict]] = {
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("tsv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
}
_BUILDER = {"json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}
_SPLIT_ALIASES = {"validation": "validation", "valid": "validation", "val": "validation", "dev": "validation"}


def load_raw_datasets(
    *,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    dataset_revision: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> datasets.DatasetDict:
    """Load a dataset by Hub id, local Hub-like directory, or local json/jsonl/csv/tsv/parquet files.

    Args:
        dataset_name: a Hub id (``wmt/wmt14``) or a local directory laid out like a parquet Hub dataset
            (``<dir>/<config>/train-*.parquet``, ``<dir>/<config>/<split>/*.parquet`` or
            ``<dir>/data/train-*.parquet``).
        dataset_config_name: the Hub config, or the config subfolder of a local directory.
        dataset_revision: the Hub revision (e.g. ``refs/convert/parquet``); ignored for local paths.
        train_file, validation_file, test_file: local data files, all of the same format family.
        cache_dir: where ``datasets`` keeps its cache.
        token: Hub token, for private or gated datasets.

    Returns:
        A ``DatasetDict`` with splits named ``train``/``validation``/``test`` where present (other split
        names are kept as they are).

    Raises:
        DataError: on missing/unsupported/unparsable files, unknown configs, unreachable datasets or
            empty splits.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {split: path for split, path in files.items() if path is not None}
    if dataset_name is not None and files:
        given = ", ".join(f"--{split}_file" for split in files)
        raise DataError(f"give either --dataset_name or {given}, not both")
    if dataset_name is None and not files:
        raise DataError(
            "no data given: pass --dataset_name or at least one of --train_file/--validation_file/--test_file"
        )

    if dataset_name is None:
        raw = _load_files(files, cache_dir=cache_dir)
    elif os.path.isdir(dataset_name):
        raw = _load_local_dir(dataset_name, dataset_config_name, cache_dir=cache_dir)
    elif dataset_name.startswith((".", "/", "~")) or os.path.exists(dataset_name):
        raise DataError(
            f"--dataset_name {dataset_name} is not a directory (give a Hub id or a local dataset directory)"
        )
    else:
        raw = _load_hub(dataset_name, dataset_config_name, dataset_revision, cache_dir=cache_dir, token=token)
    raw = _normalise_split_names(raw)
    for split, ds in raw.items():
        if ds.num_rows == 0:
            raise DataError(
                f"split '{split}' is empty (0 examples); give a file/dataset with at least one example"
            )
    return raw


# --------------------------------------------------------------------------------------------- Hub


def _load_hub(name, config, revision, *, cache_dir, token) -> datasets.DatasetDict:
    what = f"--dataset_name {name!r}" + (f" (config {config!r})" if config else "")
    what += f" at revision {revision!r}" if revision else ""
    try:
        loaded = datasets.load_dataset(name, config, revision=revision, cache_dir=cache_dir, token=token)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DataError(f"could not load {what}: {_first_line(err)}") from err
    except ValueError as err:  # unknown or missing config name
        if "config" not in str(err).lower():
            raise
        raise DataError(f"could not load {what}: {_first_line(err)}") from err
    return _as_dict(loaded)


# ---------------------------------------------------------------------------------- local Hub copy


def _load_local_dir(path: str, config: str | None, *, cache_dir) -> datasets.DatasetDict:
    """Load a directory laid out like a Hub dataset; config subfolders are selected with ``data_dir``."""
    configs = _config_subfolders(Path(path))
    declares_configs = _readme_declares_configs(Path(path))
    if config is not None and config in configs:
        kwargs = {"data_dir": config}
    elif config is not None and declares_configs:
        kwargs = {"name": config}
    elif config is not None and configs:
        raise DataError(
            f"--dataset_config_name {config!r} is not a subfolder of {path}; configs present: {', '.join(configs)}"
        )
    elif config is not None:  # a flat copy of one config: nothing to choose between
        logger.warning("%s has no config subfolders; ignoring --dataset_config_name %r", path, config)
        kwargs = {}
    elif len(configs) > 1 and not declares_configs:
        raise DataError(
            f"--dataset_name {path} holds several configs ({', '.join(configs)}); choose one with --dataset_config_name"
        )
    else:
        kwargs = {}
    try:
        loaded = datasets.load_dataset(path, cache_dir=cache_dir, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"could not load --dataset_name {path}: {_first_line(err)}") from err
    return _as_dict(loaded)


def _config_subfolders(root: Path) -> list[str]:
    """Top-level subfolders (other than ``data``) that contain data files: the configs of a Hub copy."""
    found = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith(".") or child.name == "data":
            continue
        if any(f.suffix in _FORMATS for f in child.rglob("*") if f.is_file()):
            found.append(child.name)
    return found


def _readme_declares_configs(root: Path) -> bool:
    readme = root / "README.md"
    return readme.is_file() and "\nconfigs:" in readme.read_text(encoding="utf-8", errors="replace")


# ------------------------------------------------------------------------------------- local files


def _load_files(files: Mapping[str, str], *, cache_dir) -> datasets.DatasetDict:
    families = {}
    for split, path in files.items():
        if not os.path.isfile(path):
            raise DataError(f"--{split}_file {path} does not exist")
        ext = _extension(path)
        if ext not in _FORMATS:
            allowed = ", ".join(_FORMATS)
            raise DataError(
                f"--{split}_file {path} has unsupported extension {ext or '(none)'!r}; allowed: {allowed}"
            )
        families[split] = _FORMATS[ext][0]
    if len(set(families.values())) > 1:
        listed = ", ".join(f"--{split}_file is {fam}" for split, fam in families.items())
        raise DataError(
            f"all data files must have the same format (json/jsonl, csv, tsv or parquet); got {listed}"
        )
    family = next(iter(families.values()))
    builder_kwargs = dict(_FORMATS[_extension(next(iter(files.values())))][1])
    try:
        loaded = datasets.load_dataset(
            _BUILDER[family], data_files=dict(files), cache_dir=cache_dir, **builder_kwargs
        )
    except Exception as err:  # datasets wraps parser errors and fails on empty files; find out which
        for split, path in files.items():
            if _is_empty(path, family):
                raise DataError(f"split '{split}' is empty (0 examples in --{split}_file {path})") from err
            problem = _diagnose(path, family)
            if problem:
                raise DataError(f"--{split}_file {path} could not be parsed as {family}: {problem}") from err
        names = ", ".join(files.values())
        raise DataError(f"could not load {names} as {family}: {_first_line(_root_cause(err))}") from err
    return _as_dict(loaded)


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _is_empty(path: str, family: str) -> bool:
    """Whether ``path`` holds no rows (called only after loading failed, so it may be slow)."""
    try:
        if family == "parquet":
            import pyarrow.parquet as pq

            return pq.read_metadata(path).num_rows == 0
        if family == "json":
            text = Path(path).read_text(encoding="utf-8", errors="replace").strip()
            return text in ("", "[]")
        import pandas as pd

        return len(pd.read_csv(path, sep="\t" if family == "tsv" else ",", nrows=1)) == 0
    except Exception as err:
        return type(err).__name__ == "EmptyDataError"  # pandas: no header at all


def _diagnose(path: str, family: str) -> str | None:
    """Return a one-line description of why ``path`` does not parse, or None if it looks fine."""
    if family == "json":
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, list) and all(isinstance(row, dict) for row in whole):
            return None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                return f"line {number}: {err.msg}"
            if not isinstance(row, dict):
                return f"line {number}: expected a JSON object, got {type(row).__name__}"
        return None
    if family in ("csv", "tsv"):
        import pandas as pd

        try:
            pd.read_csv(path, sep="\t" if family == "tsv" else ",")
        except Exception as err:
            return _first_line(err)
        return None
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
    except Exception as err:
        return _first_line(err)
    return None


# --------------------------------------------------------------------------------------- utilities


def _as_dict(loaded) -> datasets.DatasetDict:
    if isinstance(loaded, datasets.DatasetDict):
        return loaded
    return datasets.DatasetDict({"train": loaded})


def _normalise_split_names(raw: datasets.DatasetDict) -> datasets.DatasetDict:
    renamed: dict[str, datasets.Dataset] = {}
    for split, ds in raw.items():
        new = _SPLIT_ALIASES.get(str(split).lower(), str(split))
        if new in renamed:
            raise DataError(f"splits {', '.join(raw)} give two '{new}' splits; keep only one of them")
        renamed[new] = ds
    return datasets.DatasetDict(renamed)


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

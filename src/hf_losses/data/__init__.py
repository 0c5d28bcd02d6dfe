"""Data layer: Hub/local dataset loading and preprocessing for the trainers (no model or corpus of its own)."""

from .classification import prepare_multilabel, read_class_names, tokenize_multilabel
from .errors import DataError
from .loading import load_raw_datasets
from .translation import check_language_pair, select_translation_columns, tokenize_translation

__all__ = [
    "DataError",
    "check_language_pair",
    "load_raw_datasets",
    "prepare_multilabel",
    "read_class_names",
    "select_translation_columns",
    "tokenize_multilabel",
    "tokenize_translation",
]

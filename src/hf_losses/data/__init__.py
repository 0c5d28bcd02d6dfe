"""Data layer: Hub/local dataset loading and preprocessing for the trainers (no model or corpus of its own)."""

from .classification import prepare_multilabel, read_class_names, tokenize_multilabel
from .errors import DataError
from .loading import load_raw_datasets
from .translation import (
    DEFAULT_PROMPT_TEMPLATE,
    check_language_pair,
    check_prompt_template,
    language_name,
    select_translation_columns,
    tokenize_causal_translation,
    tokenize_translation,
)

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "DataError",
    "check_prompt_template",
    "language_name",
    "tokenize_causal_translation",
    "check_language_pair",
    "load_raw_datasets",
    "prepare_multilabel",
    "read_class_names",
    "select_translation_columns",
    "tokenize_multilabel",
    "tokenize_translation",
]

"""Data layer: Hub/local dataset loading, preprocessing, small tokenizers and the embedded demo corpora."""

from .classification import prepare_multilabel, read_class_names, tokenize_multilabel
from .errors import DataError
from .loading import load_raw_datasets
from .synthetic_multilabel import synthetic_multilabel_corpus
from .synthetic_translation import synthetic_translation_corpus
from .tokenizers import train_tokenizer
from .translation import select_translation_columns, tokenize_translation

__all__ = [
    "DataError",
    "load_raw_datasets",
    "prepare_multilabel",
    "read_class_names",
    "select_translation_columns",
    "synthetic_multilabel_corpus",
    "synthetic_translation_corpus",
    "tokenize_multilabel",
    "tokenize_translation",
    "train_tokenizer",
]

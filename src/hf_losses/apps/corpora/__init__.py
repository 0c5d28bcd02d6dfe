"""The embedded demo corpora: the default data of ``translate`` and ``classify`` (no download, seeded)."""

from .multilabel import synthetic_multilabel_corpus
from .translation import synthetic_translation_corpus

__all__ = ["synthetic_multilabel_corpus", "synthetic_translation_corpus"]

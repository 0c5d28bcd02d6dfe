"""The embedded demo corpora: deterministic, disjoint, the promised shapes; and the small tokenizers."""

from __future__ import annotations

import collections
import time

import pytest
from transformers import AutoTokenizer

from hf_losses.apps.corpora import synthetic_multilabel_corpus, synthetic_translation_corpus
from hf_losses.apps.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def translation():
    return synthetic_translation_corpus(num_train=600, num_validation=100, num_test=100, seed=3)


@pytest.fixture(scope="module")
def multilabel():
    return synthetic_multilabel_corpus(num_train=2000, num_validation=100, num_test=100, seed=1)


def _pairs(ds):
    return [(row["de"], row["en"]) for row in ds["translation"]]


def test_translation_shape_and_determinism(translation):
    assert {s: d.num_rows for s, d in translation.items()} == {"train": 600, "validation": 100, "test": 100}
    assert translation["train"].features["translation"].languages == ["de", "en"]
    again = synthetic_translation_corpus(num_train=600, num_validation=100, num_test=100, seed=3)
    for split in translation:
        assert _pairs(translation[split]) == _pairs(again[split])
    other = synthetic_translation_corpus(num_train=600, num_validation=100, num_test=100, seed=4)
    assert _pairs(other["train"]) != _pairs(translation["train"])


def test_translation_splits_disjoint_and_lengths(translation):
    sources = {split: [de for de, _ in _pairs(ds)] for split, ds in translation.items()}
    every = [de for split_sources in sources.values() for de in split_sources]
    assert len(every) == len(set(every))
    for de, en in _pairs(translation["train"]):
        assert 4 <= len(de.split()) <= 20 and 4 <= len(en.split()) <= 20
        assert de[0].isupper() and en[0].isupper() and de[-1] in ".?" and en[-1] == de[-1]


def test_translation_word_order_changes(translation):
    pairs = _pairs(translation["train"])
    # verb-final subordinate clause: "..., weil X ... gekauft hat." -> "... because X has bought ..."
    verb_final = [(de, en) for de, en in pairs if ", weil " in de and de.endswith((" hat.", " haben."))]
    assert any(" has " in en.split(" because ")[1] and not en.endswith(" has.") for _, en in verb_final)
    # verb-second after a fronted adverb: "Gestern hat der Mann ..." -> "Yesterday the man ..."
    fronted = [(de, en) for de, en in pairs if de.startswith("Gestern ")]
    assert fronted and all(en.startswith("Yesterday ") for _, en in fronted)
    assert any(de.split()[1] in ("hat", "haben", "ist", "sind") for de, _ in fronted)
    # negation with do-support and separable verbs: the German has "nicht"/a particle at the end
    assert any(de.endswith(" nicht.") and (" does not " in en or " do not " in en) for de, en in pairs)
    assert any(de.endswith(" an.") and " call" in en for de, en in pairs)
    # questions get do-support
    assert any(de.endswith("?") and en.split()[0] in ("Do", "Does") for de, en in pairs)


def test_translation_morphology_present(translation):
    words = collections.Counter(w.strip(".,?") for de, _ in _pairs(translation["train"]) for w in de.split())
    for form in ["der", "die", "das", "den", "dem", "ein", "eine", "einen", "ich", "du", "wir", "ihr"]:
        assert words[form] > 0, form
    assert any(words[w] for w in ("kleine", "kleinen", "kleiner", "kleines"))
    assert len(words) < 1000  # a small vocabulary a tiny model can learn


def test_multilabel_shape_and_determinism(multilabel):
    assert multilabel["train"].features["labels"].feature.dtype == "string"
    again = synthetic_multilabel_corpus(num_train=2000, num_validation=100, num_test=100, seed=1)
    assert multilabel["train"][:] == again["train"][:]
    assert multilabel["test"][:] == again["test"][:]
    other = synthetic_multilabel_corpus(num_train=2000, num_validation=100, num_test=100, seed=2)
    assert other["train"]["text"][:] != multilabel["train"]["text"][:]


def test_multilabel_label_counts_lengths_and_long_tail(multilabel):
    train = multilabel["train"]
    counts = collections.Counter()
    for row in train:
        assert 1 <= len(row["labels"]) <= 4 and len(set(row["labels"])) == len(row["labels"])
        assert 20 <= len(row["text"].split()) <= 80
        counts.update(row["labels"])
    assert len(counts) == 20
    fractions = sorted(c / train.num_rows for c in counts.values())
    assert fractions[0] < 0.02 and fractions[-1] > 0.3
    assert len({len(r) for r in train["labels"]}) == 4


def test_multilabel_num_labels_and_keywords():
    small = synthetic_multilabel_corpus(num_train=50, num_validation=5, num_test=5, num_labels=5)
    assert len({label for labels in small["train"]["labels"] for label in labels}) <= 5
    with pytest.raises(ValueError, match="num_labels"):
        synthetic_multilabel_corpus(num_labels=1000)


@pytest.mark.parametrize("kind", ["seq2seq", "classification"])
def test_tokenizer_train_save_reload(tmp_path, translation, kind):
    texts = [t for de, en in _pairs(translation["train"]) for t in (de, en)]
    start = time.perf_counter()
    tok = train_tokenizer(texts, vocab_size=400, kind=kind, model_max_length=64)
    assert time.perf_counter() - start < 5
    assert tok.model_max_length == 64 and len(tok) <= 400
    tok.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    sample = "Der kleine Hund hat gestern den Apfel gegessen."
    assert reloaded(sample)["input_ids"] == tok(sample)["input_ids"]
    assert reloaded.pad_token_id == tok.pad_token_id == 0
    ids = tok(sample)["input_ids"]
    if kind == "seq2seq":
        assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
        assert tok.eos_token_id == 1 and ids[-1] == 1
        assert tok(text_target="The dog ate.")["input_ids"][-1] == 1
        assert tok.decode(ids, skip_special_tokens=True) == sample
    else:
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert tok.mask_token == "[MASK]" and tok.unk_token == "[UNK]"
        pair = tok("a dog", "the cat")
        assert pair["token_type_ids"][-1] == 1 and pair["token_type_ids"][0] == 0
        assert tok.decode(ids, skip_special_tokens=True) == sample.lower()
    assert train_tokenizer(texts, vocab_size=400, kind=kind).get_vocab() == tok.get_vocab()

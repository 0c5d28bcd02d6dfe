"""Train small tokenizers offline, for models built from a config (the demos and the tests).

Named ``tokenizers.py`` inside ``hf_losses.data``; the Hugging Face ``tokenizers`` package is imported
absolutely, so the two never clash.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SEQ2SEQ_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2: pad is also the decoder start token
CLASSIFICATION_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    kind: Literal["seq2seq", "classification"],
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a small tokenizer on ``texts`` and wrap it as a ``transformers`` fast tokenizer.

    * ``kind="seq2seq"``: cased byte-pair encoding with Metaspace pre-tokenisation (SentencePiece-like,
      as in Marian/T5); special tokens ``<pad>`` (id 0), ``</s>`` (id 1, eos), ``<unk>`` (id 2); every
      encoded sequence ends with ``</s>``.
    * ``kind="classification"``: the same, lower-cased, with ``[PAD]`` (id 0), ``[UNK]``, ``[CLS]``,
      ``[SEP]``, ``[MASK]`` and the BERT template ``[CLS] A [SEP] (B [SEP])`` with token type ids.

    Training is offline and deterministic for a given input. The result can be saved with
    ``save_pretrained`` and reloaded with ``AutoTokenizer.from_pretrained``.
    """
    if kind == "seq2seq":
        return _train_seq2seq(texts, vocab_size, model_max_length)
    if kind == "classification":
        return _train_classification(texts, vocab_size, model_max_length)
    raise ValueError(f"kind must be 'seq2seq' or 'classification', got {kind!r}")


def _train_seq2seq(texts: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    pad, eos, unk = SEQ2SEQ_SPECIAL_TOKENS
    tok = _train_bpe(texts, vocab_size, SEQ2SEQ_SPECIAL_TOKENS, unk, lowercase=False)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, tok.token_to_id(eos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token=unk, model_max_length=model_max_length
    )


def _train_classification(
    texts: Iterable[str], vocab_size: int, model_max_length: int
) -> PreTrainedTokenizerFast:
    pad, unk, cls, sep, mask = CLASSIFICATION_SPECIAL_TOKENS
    tok = _train_bpe(texts, vocab_size, CLASSIFICATION_SPECIAL_TOKENS, unk, lowercase=True)
    cls_id, sep_id = tok.token_to_id(cls), tok.token_to_id(sep)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        unk_token=unk,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _train_bpe(
    texts: Iterable[str], vocab_size: int, special_tokens: list[str], unk: str, *, lowercase: bool
) -> Tokenizer:
    """Byte-pair encoding over Metaspace-split words (SentencePiece-like: decoding restores the spaces).

    BPE without a continuing-subword prefix is deterministic in ``tokenizers`` (its alphabet is sorted
    and merge ties are broken by token id); the WordPiece trainer is not, so it is not used here.
    """
    tok = Tokenizer(models.BPE(unk_token=unk))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok

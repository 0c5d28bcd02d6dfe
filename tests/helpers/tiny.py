"""Tiny models, tokenizers and datasets shared by the trainer tests and the 2-process helper script."""

from __future__ import annotations

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    MarianConfig,
    MarianMTModel,
    PreTrainedTokenizerFast,
)

VOCAB = 40
NUM_LABELS = 6


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over w0..w{VOCAB-4} with <pad>=0, </s>=1, <unk>=2."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(VOCAB - 3)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_marian_config(vocab_size: int = VOCAB) -> MarianConfig:
    """A 1+1-layer Marian with d_model 16 and no dropout (<pad>=0 starts decoding, </s>=1)."""
    return MarianConfig(
        vocab_size=vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        forced_eos_token_id=1,
    )


def tiny_marian(seed: int = 0) -> MarianMTModel:
    torch.manual_seed(seed)
    return MarianMTModel(tiny_marian_config())


def seq2seq_dataset(n: int = 8, seed: int = 0) -> datasets.Dataset:
    """n examples of different source and target lengths (so token counts differ per example)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        src_len, tgt_len = 3 + i % 5, 2 + (3 * i) % 7
        rows.append(
            {
                "input_ids": torch.randint(3, VOCAB, (src_len,), generator=g).tolist() + [1],
                "labels": torch.randint(3, VOCAB, (tgt_len,), generator=g).tolist() + [1],
            }
        )
    return datasets.Dataset.from_list(rows)


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=NUM_LABELS,
        problem_type="multi_label_classification",
        pad_token_id=0,
    )
    return BertForSequenceClassification(config)


def multilabel_dataset(n: int = 8, seed: int = 0) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 3 + i % 6
        labels = (torch.rand(NUM_LABELS, generator=g) < 0.3).float().tolist()
        rows.append({"input_ids": torch.randint(3, VOCAB, (length,), generator=g).tolist(), "labels": labels})
    return datasets.Dataset.from_list(rows)


def one_step_args(output_dir: str, **overrides) -> dict:
    """TrainingArguments for exactly one plain SGD step (no schedule, clipping or decay), CPU, no saving."""
    return dict(
        output_dir=output_dir,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_drop_last=False,
        **overrides,
    )

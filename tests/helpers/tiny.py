"""Tiny models, tokenizers and datasets shared by the trainer tests and the 2-process helper script."""

from __future__ import annotations

import contextlib
import gc

import datasets
import torch
import transformers
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


@contextlib.contextmanager
def quick_tiny_training():
    """Make many short Trainer runs of tiny models fast, also on a busy machine.

    One intra-op thread (tiny tensors gain nothing from more, and lose much to them when other processes hold
    the cores), and every object alive now (the imported modules) frozen out of garbage collection, since
    each ``Trainer.train`` runs ``gc.collect`` (accelerate's ``free_memory``) and would walk all of them.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(threads)


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
        max_position_embeddings=128,  # translate.py's default --max_source_length
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


# -- architecture matrix: every model d_model 16, one layer per stack, no dropout, <pad>=0 and </s>=1 ------
_BART_LIKE = dict(
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
)
_T5_LIKE = dict(
    d_model=16,
    d_kv=8,
    d_ff=32,
    num_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
)
_SPECIAL_TOKENS = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2, decoder_start_token_id=0)

# name -> (model class name, config class name, config keyword arguments besides the vocabulary)
SEQ2SEQ_ARCHITECTURES: dict[str, tuple[str, str, dict]] = {
    "marian": ("MarianMTModel", "MarianConfig", dict(_BART_LIKE, max_position_embeddings=64)),
    "t5": ("T5ForConditionalGeneration", "T5Config", _T5_LIKE),
    "mt5": ("MT5ForConditionalGeneration", "MT5Config", _T5_LIKE),
    "umt5": ("UMT5ForConditionalGeneration", "UMT5Config", _T5_LIKE),
    "bart": ("BartForConditionalGeneration", "BartConfig", dict(_BART_LIKE, max_position_embeddings=64)),
    "mbart": ("MBartForConditionalGeneration", "MBartConfig", dict(_BART_LIKE, max_position_embeddings=64)),
    "m2m100": (
        "M2M100ForConditionalGeneration",
        "M2M100Config",
        dict(_BART_LIKE, max_position_embeddings=64, encoder_layerdrop=0.0, decoder_layerdrop=0.0),
    ),
    "nllb_moe": (
        "NllbMoeForConditionalGeneration",
        "NllbMoeConfig",
        dict(
            _BART_LIKE,
            max_position_embeddings=64,
            num_experts=2,
            expert_capacity=64,
            encoder_sparse_step=1,
            decoder_sparse_step=1,
            router_dtype="float32",
        ),
    ),
    "pegasus": (
        "PegasusForConditionalGeneration",
        "PegasusConfig",
        dict(_BART_LIKE, max_position_embeddings=64),
    ),
    "blenderbot": (
        "BlenderbotForConditionalGeneration",
        "BlenderbotConfig",
        dict(_BART_LIKE, max_position_embeddings=64),
    ),
    "led": (
        "LEDForConditionalGeneration",
        "LEDConfig",
        dict(
            _BART_LIKE,
            max_encoder_position_embeddings=64,
            max_decoder_position_embeddings=64,
            attention_window=4,
        ),
    ),
    "fsmt": (
        "FSMTForConditionalGeneration",
        "FSMTConfig",
        dict(_BART_LIKE, max_position_embeddings=64, langs=["de", "en"], tie_word_embeddings=False),
    ),
}


def tiny_seq2seq(name: str, seed: int = 0):
    """A tiny, randomly initialised seq2seq model of architecture ``name`` (a key of SEQ2SEQ_ARCHITECTURES)."""
    model_class, config_class, kwargs = SEQ2SEQ_ARCHITECTURES[name]
    vocab = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB) if name == "fsmt" else dict(vocab_size=VOCAB)
    config = getattr(transformers, config_class)(**vocab, **_SPECIAL_TOKENS, **kwargs)
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config)


# name -> (config class name, config keyword arguments besides vocabulary, labels and special tokens)
ENCODER_ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "bert": (
        "BertConfig",
        dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
    ),
    "distilbert": (
        "DistilBertConfig",
        dict(
            dim=16,
            n_layers=1,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=64,
            dropout=0.0,
            attention_dropout=0.0,
            seq_classif_dropout=0.0,
        ),
    ),
    "roberta": (
        "RobertaConfig",
        dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
    ),
    "modernbert": (
        "ModernBertConfig",
        dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            attention_dropout=0.0,
            mlp_dropout=0.0,
            embedding_dropout=0.0,
            classifier_dropout=0.0,
            bos_token_id=2,
            eos_token_id=1,
            cls_token_id=2,
            sep_token_id=1,
        ),
    ),
    "deberta_v2": (
        "DebertaV2Config",
        dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pooler_dropout=0.0,
        ),
    ),
}


def tiny_encoder_classifier(name: str, seed: int = 0):
    """A tiny multi-label ``AutoModelForSequenceClassification`` of architecture ``name``, NUM_LABELS outputs."""
    config_class, kwargs = ENCODER_ARCHITECTURES[name]
    config = getattr(transformers, config_class)(
        vocab_size=VOCAB,
        num_labels=NUM_LABELS,
        problem_type="multi_label_classification",
        pad_token_id=0,
        **kwargs,
    )
    torch.manual_seed(seed)
    return transformers.AutoModelForSequenceClassification.from_config(config)


def tiny_llama(seed: int = 0):
    """A 1-layer Llama causal LM with hidden size 16 (its ``loss_type`` is transformers' "ForCausalLM")."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def tiny_gpt2(seed: int = 0):
    """A 1-layer GPT-2 causal LM with d_model 16 and no dropout (its ``loss_type`` is None in the pinned transformers)."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config)


def causal_lm_dataset(n: int = 8, seed: int = 0) -> datasets.Dataset:
    """n token sequences of different lengths (labels are made by the collator)."""
    g = torch.Generator().manual_seed(seed)
    rows = [
        {"input_ids": torch.randint(3, VOCAB, (3 + (2 * i) % 7,), generator=g).tolist()} for i in range(n)
    ]
    return datasets.Dataset.from_list(rows)


# -- decoder-only matrix: hidden 16, one layer, 2 heads, no dropout, <pad>=0, </s>=1, <s>=2 ---------------
_DECODER = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=64,
)
_HEAD_DIM = dict(_DECODER, head_dim=8)

# name -> (model class name, config class name, config keyword arguments besides vocabulary and special tokens)
CAUSAL_ARCHITECTURES: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", _DECODER),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", _DECODER),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(_HEAD_DIM, tie_word_embeddings=True)),
    "mistral": ("MistralForCausalLM", "MistralConfig", _HEAD_DIM),
    # Gemma 2 soft-caps its logits by default (refused by --fused_lm_head); here without it, as Gemma 3 is
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(_HEAD_DIM, final_logit_softcapping=None)),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", _HEAD_DIM),
    "phi3": (
        "Phi3ForCausalLM",
        "Phi3Config",
        dict(_DECODER, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0),
    ),
    "gpt2": (
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(n_embd=16, n_layer=1, n_head=2, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    ),
    "gpt_neox": (
        "GPTNeoXForCausalLM",
        "GPTNeoXConfig",
        dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        ),
    ),
}


def tiny_causal_lm(name: str, seed: int = 0, **overrides):
    """A tiny, randomly initialised decoder-only LM of architecture ``name`` (a key of CAUSAL_ARCHITECTURES)."""
    model_class, config_class, kwargs = CAUSAL_ARCHITECTURES[name]
    special = dict(vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    config = getattr(transformers, config_class)(**{**special, **kwargs, **overrides})
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config)


def prompt_completion_dataset(n: int = 8, seed: int = 0) -> datasets.Dataset:
    """n prompt + completion token sequences of different lengths, labels -100 on the prompt (not padded).

    Rows without a prompt have a label on their first token, which no position predicts.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        prompt = torch.randint(3, VOCAB, (i % 4,), generator=g).tolist()  # some rows without a prompt
        completion = torch.randint(3, VOCAB, (1 + (3 * i) % 5,), generator=g).tolist() + [1]
        rows.append({"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion})
    return datasets.Dataset.from_list(rows)

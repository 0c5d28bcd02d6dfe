"""Tokenizers and models of both scripts: a Hub/local checkpoint, or built from a preset to train from scratch.

Translation presets (``--model_config``) are ``MarianConfig`` fields plus the vocabulary size of the tokenizer
trained for them (the paper's transformers and a CPU demo); a path to a ``config.json`` of any seq2seq
or decoder-only (causal-LM) architecture works too. Classification from scratch builds ``SMALL_BERT`` unless ``--model_config`` names a
config. ``model_args`` is the scripts' ``ModelArguments`` (``hf_losses.apps.runs.ModelSourceArguments`` plus
``model_config`` and ``vocab_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_MASKED_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    MarianConfig,
    PreTrainedModel,
)

from .tokenizers import train_tokenizer

# The from-scratch classifier: small enough to learn the demo corpus in about two minutes on a 2-core CPU.
SMALL_BERT = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)

_FAIRSEQ_TRANSFORMER = dict(
    activation_function="relu",
    scale_embedding=True,
    max_position_embeddings=1024,
    init_std=0.02,
)

SEQ2SEQ_PRESETS: dict[str, dict] = {
    # Small enough to learn the embedded synthetic corpus in about two minutes on a 2-core CPU.
    "demo": dict(
        vocab_size=1000,
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=128,
        activation_function="relu",
        scale_embedding=True,
    ),
    # Multi30k on a 2-core CPU (scripts/recipes/compare-multi30k-*.yaml): 3+3 layers, d_model 128, FFN 512,
    # 4 heads, shared embeddings over a joint 6k vocabulary, dropout 0.2.
    "transformer-multi30k": dict(
        vocab_size=6000,
        d_model=128,
        encoder_layers=3,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=512,
        decoder_ffn_dim=512,
        dropout=0.2,
        attention_dropout=0.0,
        activation_dropout=0.0,
        **{**_FAIRSEQ_TRANSFORMER, "max_position_embeddings": 256},
    ),
    # Multi30k trained to convergence (scripts/recipes/compare-multi30k-*-converged.yaml): 3+3 layers,
    # d_model 256, FFN 1024, 4 heads, dropout 0.3, shared and tied embeddings over a joint 8k vocabulary.
    "transformer-multi30k-base": dict(
        vocab_size=8000,
        d_model=256,
        encoder_layers=3,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        dropout=0.3,
        attention_dropout=0.0,
        activation_dropout=0.0,
        **{**_FAIRSEQ_TRANSFORMER, "max_position_embeddings": 256},
    ),
    # The paper's IWSLT14 De->En model (Zhao et al. 2022): 6+6 layers, d_model 512, FFN 1024, 4 heads, dropout 0.4, unshared
    # encoder/decoder embeddings (joint BPE vocabulary of about 10k).
    "transformer-iwslt14-de-en": dict(
        vocab_size=10000,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        dropout=0.4,
        attention_dropout=0.0,
        activation_dropout=0.0,
        share_encoder_decoder_embeddings=False,
        **_FAIRSEQ_TRANSFORMER,
    ),
    # The paper's IWSLT17 Fr->En model (Zhao et al. 2022): 2+2 layers, all embeddings shared, dropout 0.3, sentencepiece 16k.
    "transformer-iwslt17-fr-en": dict(
        vocab_size=16000,
        d_model=512,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        dropout=0.3,
        attention_dropout=0.0,
        activation_dropout=0.0,
        **_FAIRSEQ_TRANSFORMER,
    ),
}


def preset_vocab_size(model_config: str) -> int | None:
    """The tokenizer vocabulary a preset is meant for (None for a config file)."""
    preset = SEQ2SEQ_PRESETS.get(model_config)
    return preset["vocab_size"] if preset else None


def is_decoder_only(config) -> bool:
    """A causal LM without an encoder (Llama, Qwen, Gemma, GPT-2, ...): it translates a prompt. Encoders that
    transformers can also run as decoders (BERT, RoBERTa: masked LMs first) do not count."""
    return (
        not getattr(config, "is_encoder_decoder", False)
        and type(config) in MODEL_FOR_CAUSAL_LM_MAPPING
        and type(config) not in MODEL_FOR_MASKED_LM_MAPPING
    )


def check_translation_config(config, flag: str) -> None:
    """A one-line ValueError naming ``flag`` for a model that is neither seq2seq nor a causal LM (e.g. BERT)."""
    if not getattr(config, "is_encoder_decoder", False) and not is_decoder_only(config):
        raise ValueError(
            f"{flag}: a {config.model_type} model neither translates (encoder-decoder) nor generates text "
            "(decoder-only causal LM); pick a seq2seq model (Marian, T5, mBART, M2M100/NLLB) or a causal LM "
            "(Llama, Qwen, Gemma, Mistral, Phi-3, GPT-2, ...)"
        )


def build_translation_model(model_config: str, tokenizer) -> PreTrainedModel:
    """A randomly initialised translation model from a preset name or a config.json path, sized to `tokenizer`:
    seq2seq (presets, and any encoder-decoder config) or decoder-only (a causal-LM config).

    Generation settings (``forced_eos_token_id``) go into ``generation_config``, and into the model config
    only where its class declares them (Marian, BART): transformers refuses to save a model whose config
    holds generation settings it does not own (T5, M2M100, LED).
    """
    special = dict(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    if model_config in SEQ2SEQ_PRESETS:
        fields = {**SEQ2SEQ_PRESETS[model_config], "vocab_size": len(tokenizer), **special}
        config = MarianConfig(**fields, decoder_vocab_size=len(tokenizer))
    elif Path(model_config).exists():
        config = AutoConfig.from_pretrained(model_config)
        check_translation_config(config, f"--model_config {model_config}")
        if is_decoder_only(config):
            sizes = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, **special)
            config.update({k: v for k, v in sizes.items() if k != "decoder_start_token_id"})
            model = AutoModelForCausalLM.from_config(config)
            model.generation_config.update(
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
            )
            return model
        config.update({"vocab_size": len(tokenizer), **special})
        if getattr(config, "decoder_vocab_size", None) is not None:  # Marian: the loss reshapes logits by it
            config.decoder_vocab_size = len(tokenizer)
    else:
        raise ValueError(
            f"--model_config must be one of {', '.join(SEQ2SEQ_PRESETS)} or a path to a config.json; got {model_config!r}"
        )
    if hasattr(config, "forced_eos_token_id"):
        config.forced_eos_token_id = tokenizer.eos_token_id
    model = AutoModelForSeq2SeqLM.from_config(config)
    model.generation_config.forced_eos_token_id = tokenizer.eos_token_id
    return model


# Sinusoidal position tables these models extend for longer inputs: max_position_embeddings is no limit.
_GROWING_POSITIONS = ("m2m_100", "nllb_moe", "fsmt")


def position_limits(config) -> dict[str, int]:
    """How many positions the ``encoder`` and ``decoder`` of a model can embed (longer inputs fail with an
    IndexError); a side is absent where any length works (T5's relative positions, M2M100's growing table).
    A decoder-only model has only the ``decoder`` (prompt and target together)."""
    if config.model_type in _GROWING_POSITIONS:
        return {}
    shared = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if is_decoder_only(config):
        return {"decoder": shared} if shared else {}
    limits = {
        "encoder": getattr(config, "max_encoder_position_embeddings", None) or shared,
        "decoder": getattr(config, "max_decoder_position_embeddings", None) or shared,
    }
    return {side: limit for side, limit in limits.items() if limit}


def embedded_positions(model: PreTrainedModel) -> int | None:
    """How many tokens an encoder's learned position table can embed (None: no such table, e.g. rotary or
    relative positions). RoBERTa-style models number positions after their padding index, which costs
    padding_idx + 1 rows (514 rows: 512 tokens)."""
    embeddings = getattr(model.base_model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        return None
    padding_idx = getattr(embeddings, "padding_idx", None)
    return table.num_embeddings - (padding_idx + 1 if padding_idx is not None else 0)


def load_tokenizer(model_args, texts: Sequence[str], resume: str | None, train: Callable):
    """The checkpoint's tokenizer (or --tokenizer_name); from scratch: a resumed checkpoint's, else
    --tokenizer_name, else ``train(texts)`` on the training texts."""
    hub = model_args.hub_kwargs()
    if model_args.model_name_or_path:
        return AutoTokenizer.from_pretrained(
            model_args.tokenizer_name or model_args.model_name_or_path, **hub
        )
    if resume is not None:
        return AutoTokenizer.from_pretrained(resume)
    if model_args.tokenizer_name:
        return AutoTokenizer.from_pretrained(model_args.tokenizer_name, **hub)
    if not texts:
        raise ValueError(
            "training a model from scratch needs a train split; pass --model_name_or_path to only evaluate"
        )
    return train(texts)


def load_translation_model(model_args, texts: Sequence[str], resume: str | None):
    """(tokenizer, model): a seq2seq or decoder-only checkpoint, or a model built from --model_config sized to
    its tokenizer. A tokenizer without a pad token pads with its eos token (labels are padded with -100)."""

    def train(texts):
        vocab_size = model_args.vocab_size or preset_vocab_size(model_args.model_config) or 8000
        return train_tokenizer(texts, vocab_size=vocab_size, kind="seq2seq")

    tokenizer = load_tokenizer(model_args, texts, resume, train)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if not model_args.model_name_or_path:
        return tokenizer, build_translation_model(model_args.model_config, tokenizer)
    hub = model_args.hub_kwargs()
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub)
    check_translation_config(config, f"--model_name_or_path {model_args.model_name_or_path}")
    auto = AutoModelForCausalLM if is_decoder_only(config) else AutoModelForSeq2SeqLM
    return tokenizer, auto.from_pretrained(model_args.model_name_or_path, config=config, **hub)


def load_classifier(
    model_args, label_names: list[str], texts: Sequence[str], max_length: int, resume: str | None
):
    """(tokenizer, model) for multi-label classification over `label_names`: a checkpoint with a fresh head,
    or a new model (--model_config, else ``SMALL_BERT``)."""
    hub = model_args.hub_kwargs()
    labels = dict(
        num_labels=len(label_names),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )

    def train(texts):
        return train_tokenizer(
            texts, vocab_size=model_args.vocab_size, kind="classification", model_max_length=max_length
        )

    tokenizer = load_tokenizer(model_args, texts, resume, train)
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(
            model_args.model_config or model_args.model_name_or_path, **labels, **hub
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True, **hub
        )
        return tokenizer, model
    sizes = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **labels)
    if model_args.model_config:
        config = AutoConfig.from_pretrained(model_args.model_config, **hub)
        config.update(sizes)
    else:
        config = BertConfig(**SMALL_BERT, max_position_embeddings=max(512, max_length), **sizes)
    model = AutoModelForSequenceClassification.from_config(
        config, trust_remote_code=model_args.trust_remote_code
    )
    return tokenizer, model


@torch.no_grad()
def set_classifier_bias_to_prior(model: PreTrainedModel, targets) -> torch.Tensor:
    """Start a fresh multi-label head at the label frequencies: bias_j = log(q_j / (1 - q_j)).

    q_j = (positives of label j + 1) / (examples + 2), so that sigmoid(bias) is the (smoothed) share of training
    examples with label j: the head need not spend its first steps learning how rare each label is. The head is
    the model's last ``nn.Linear`` with one output per label. Returns the bias.
    """
    counts = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if counts.ndim != 2 or counts.shape[1] != model.config.num_labels:
        raise ValueError(f"targets must be [examples, {model.config.num_labels}] 0/1 labels")
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == counts.shape[1]]
    if not heads or heads[-1].bias is None:
        raise ValueError(f"{type(model).__name__} has no output layer with a bias per label")
    prior = (counts.sum(0) + 1) / (counts.shape[0] + 2)
    heads[-1].bias.copy_(torch.log(prior / (1 - prior)).to(heads[-1].bias.dtype))
    return heads[-1].bias

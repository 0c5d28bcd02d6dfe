"""Seq2seq architectures to train from scratch (``--model_config``): the paper's transformers and a CPU demo.

Each preset is a set of ``MarianConfig`` fields plus the vocabulary size of the tokenizer trained for it.
A path to a ``config.json`` of any seq2seq architecture works too.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForSeq2SeqLM, MarianConfig, PreTrainedModel

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
    # SPEC section 3, IWSLT14 De->En: 6+6 layers, d_model 512, FFN 1024, 4 heads, dropout 0.4, unshared
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
    # SPEC section 3, IWSLT17 Fr->En: 2+2 layers, all embeddings shared, dropout 0.3, sentencepiece 16k.
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


def build_seq2seq_model(model_config: str, tokenizer) -> PreTrainedModel:
    """A randomly initialised seq2seq model from a preset name or a config.json path, sized to `tokenizer`."""
    special = dict(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    if model_config in SEQ2SEQ_PRESETS:
        fields = {**SEQ2SEQ_PRESETS[model_config], "vocab_size": len(tokenizer), **special}
        config = MarianConfig(**fields, decoder_vocab_size=len(tokenizer))
    elif Path(model_config).exists():
        config = AutoConfig.from_pretrained(model_config)
        config.update({"vocab_size": len(tokenizer), **special})
        if getattr(config, "decoder_vocab_size", None) is not None:  # Marian: the loss reshapes logits by it
            config.decoder_vocab_size = len(tokenizer)
    else:
        raise ValueError(
            f"--model_config must be one of {', '.join(SEQ2SEQ_PRESETS)} or a path to a config.json; got {model_config!r}"
        )
    return AutoModelForSeq2SeqLM.from_config(config)

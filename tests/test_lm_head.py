"""run_without_lm_head: hidden @ W.T + b reproduces each architecture's logits and gradients (tiny models)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    BertConfig,
    BertModel,
    MarianConfig,
    MarianModel,
)

from hf_losses import encouraging_loss, linear_encouraging_loss
from hf_losses.trainers.lm_head import (
    SUPPORTED_MODEL_TYPES,
    lm_head_parameters,
    lm_head_skipped,
    run_without_lm_head,
)

try:
    from tests.reference import assert_close
except ModuleNotFoundError:  # tests/ is not a package
    from reference import assert_close

VOCAB = 40
BART_LIKE = dict(
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
)
T5_LIKE = dict(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, dropout_rate=0.0)
NO_SPECIAL_TOKENS = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2, decoder_start_token_id=2)

CONFIGS = {
    "bart": BART_LIKE,
    "bigbird_pegasus": {**BART_LIKE, "attention_type": "original_full"},
    "blenderbot": BART_LIKE,
    "blenderbot-small": BART_LIKE,
    "fsmt": {
        **{k: v for k, v in BART_LIKE.items() if k != "activation_dropout"},
        "langs": ["de", "en"],
        "src_vocab_size": VOCAB,
        "tgt_vocab_size": VOCAB,
        "tie_word_embeddings": False,
    },
    "led": {
        **{k: v for k, v in BART_LIKE.items() if k != "max_position_embeddings"},
        "attention_window": 4,
        "max_encoder_position_embeddings": 64,
        "max_decoder_position_embeddings": 64,
    },
    "longt5": T5_LIKE,
    "m2m_100": BART_LIKE,
    "marian": BART_LIKE,
    "mbart": BART_LIKE,
    "mt5": T5_LIKE,
    "nllb-moe": {**BART_LIKE, "num_experts": 2, "expert_capacity": 8, "router_dtype": "float32"},
    "pegasus": BART_LIKE,
    "pegasus_x": {**BART_LIKE, "num_global_tokens": 2, "block_size": 4},
    "plbart": BART_LIKE,
    "switch_transformers": {
        **T5_LIKE,
        "num_experts": 2,
        "expert_capacity": 8,
        "num_sparse_encoder_layers": 1,
        "router_jitter_noise": 0.0,
    },
    "t5": T5_LIKE,
    "umt5": T5_LIKE,
}


def tiny_model(model_type: str, **overrides):
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, **NO_SPECIAL_TOKENS, **CONFIGS[model_type])
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForSeq2SeqLM.from_config(config)
    if hasattr(model, "final_logits_bias"):  # zero at initialisation: make it count
        model.final_logits_bias.normal_()
    return model.train()


def tiny_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(2, 8, dtype=torch.long)
    attention_mask[1, 6:] = 0
    return dict(
        input_ids=torch.randint(3, VOCAB, (2, 8), generator=g) * attention_mask,
        attention_mask=attention_mask,
        decoder_input_ids=torch.randint(3, VOCAB, (2, 5), generator=g),
    )


def _grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_every_supported_type_is_tested():
    assert set(CONFIGS) == set(SUPPORTED_MODEL_TYPES)


# the architectures run by default; the other supported ones only with -m slow (about 2 s each)
EXTRA_TYPES = {"bigbird_pegasus", "blenderbot-small", "longt5", "pegasus_x", "plbart", "switch_transformers"}


@pytest.mark.parametrize(
    "model_type",
    [pytest.param(t, marks=pytest.mark.slow) if t in EXTRA_TYPES else t for t in sorted(CONFIGS)],
)
def test_logits_and_gradients_match_the_model(model_type):
    model, inputs = tiny_model(model_type), tiny_inputs()
    cotangent = torch.randn(2, 5, VOCAB, generator=torch.Generator().manual_seed(1))

    logits = model(**inputs).logits
    expected = _grads(model, (logits * cotangent).sum())

    hidden, weight, bias = run_without_lm_head(model, **inputs)
    assert hidden.shape == (2, 5, 16) and weight.shape == (VOCAB, 16)
    assert (bias is not None) == hasattr(model, "final_logits_bias")
    fused_logits = hidden @ weight.T + (0 if bias is None else bias)
    assert_close(fused_logits, logits, rtol=1e-5, atol=1e-6, name="logits")
    got = _grads(model, (fused_logits * cotangent).sum())
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert_close(got[name], grad, rtol=1e-5, atol_scale=1e-6, name=name)
    # the model is left as it was: its own forward gives the logits again
    assert_close(model(**inputs).logits, logits, rtol=0, atol=0, name="logits after")


@pytest.mark.parametrize("model_type", ["t5", "umt5", "switch_transformers"])
def test_t5_rescaling_only_with_tied_embeddings(model_type):
    """Tied: the hidden states arrive scaled by d_model**-0.5; untied: unscaled (each model's own rule)."""
    inputs = tiny_inputs()
    tied = tiny_model(model_type)
    untied = tiny_model(model_type, tie_word_embeddings=False, scale_decoder_outputs=False)
    untied.load_state_dict(tied.state_dict())
    untied.lm_head.weight.data.copy_(tied.shared.weight)
    scaled = run_without_lm_head(tied, **inputs).hidden_states
    unscaled = run_without_lm_head(untied, **inputs).hidden_states
    assert_close(scaled, unscaled * 16**-0.5, rtol=1e-5, atol=1e-7, name="rescaled hidden states")


def test_head_parameters_are_the_models_own():
    model = tiny_model("marian")
    weight, bias = lm_head_parameters(model)
    assert weight is model.lm_head.weight
    assert torch.equal(bias, model.final_logits_bias[0])
    fsmt = tiny_model("fsmt")
    assert lm_head_parameters(fsmt)[0] is fsmt.model.decoder.output_projection.weight


def test_wrapped_model_runs_through_the_wrapper():
    """DataParallel (on CPU it just calls the module) stands for DDP/DeepSpeed: the call goes through it."""
    model = tiny_model("marian")
    wrapper = torch.nn.DataParallel(model)
    calls = []
    wrapper.register_forward_pre_hook(lambda module, args: calls.append(module))
    hidden, weight, _ = run_without_lm_head(wrapper, **tiny_inputs())
    assert calls == [wrapper] and weight is model.lm_head.weight and hidden.shape == (2, 5, 16)


def test_unknown_architecture_is_a_one_line_error_naming_the_flag():
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(ValueError, match="--fused_lm_head supports decoder-only LMs") as info:
        run_without_lm_head(bert, input_ids=torch.zeros(1, 3, dtype=torch.long))
    assert "\n" not in str(info.value) and "marian" in str(info.value) and "'bert'" in str(info.value)
    headless = MarianModel(MarianConfig(vocab_size=VOCAB, **NO_SPECIAL_TOKENS, **BART_LIKE))
    with pytest.raises(ValueError, match="--fused_lm_head"):
        lm_head_parameters(headless)


def test_labels_are_refused():
    with pytest.raises(ValueError, match="labels"):
        run_without_lm_head(tiny_model("marian"), labels=torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("model_type", ["marian", "t5"])
def test_fused_loss_equals_the_loss_of_the_logits(model_type):
    """What --fused_lm_head computes: EL of the head's projection, with the same gradients for every weight."""
    model, inputs = tiny_model(model_type), tiny_inputs()
    labels = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    labels[1, 3:] = -100
    settings = dict(log_end=0.5, label_smoothing=0.1, reduction="sum")
    expected = encouraging_loss(model(**inputs).logits, labels, **settings)
    expected_grads = _grads(model, expected)
    hidden, weight, bias = run_without_lm_head(model, **inputs)
    loss = linear_encouraging_loss(hidden, weight, labels, bias=bias, **settings)
    assert_close(loss, expected, rtol=1e-5, atol=1e-6, name="loss")
    got = _grads(model, loss)
    assert got.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        assert_close(got[name], grad, rtol=1e-5, atol_scale=1e-5, name=name)


def test_model_is_restored_after_an_error():
    model = tiny_model("marian")
    bias = model.final_logits_bias
    with pytest.raises(RuntimeError, match="boom"), lm_head_skipped(model):
        raise RuntimeError("boom")
    assert "forward" not in model.lm_head.__dict__ and model.final_logits_bias is bias

"""A language model's last hidden states and its output projection, for a loss that applies the projection itself.

``run_without_lm_head(model, **inputs)`` runs the model's own forward with the output projection replaced by
the identity (and any ``final_logits_bias`` by 0), so the hidden states come back exactly as they would
enter the projection, including the ``d_model ** -0.5`` rescaling that T5-family models apply when their
embeddings are tied. With them come the projection's weight and bias, so that
``logits = hidden_states @ weight.T + bias`` reproduces the model's logits without ever forming them.

Seq2seq LMs are listed by model type below; a decoder-only LM's projection is its ``get_output_embeddings()``,
unless the model changes the logits after it (Gemma 2's soft-capping, Cohere's ``logit_scale``, ...), which
the loss would not reproduce: those are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from .outputs import logits_of

# model_type -> (attribute path of the output projection, name of the logits bias buffer or None)
_HEADS: dict[str, tuple[str, str | None]] = {
    "bart": ("lm_head", "final_logits_bias"),
    "bigbird_pegasus": ("lm_head", "final_logits_bias"),
    "blenderbot": ("lm_head", "final_logits_bias"),
    "blenderbot-small": ("lm_head", "final_logits_bias"),
    "fsmt": ("model.decoder.output_projection", None),
    "led": ("lm_head", "final_logits_bias"),
    "longt5": ("lm_head", None),
    "m2m_100": ("lm_head", None),
    "marian": ("lm_head", "final_logits_bias"),
    "mbart": ("lm_head", "final_logits_bias"),
    "mt5": ("lm_head", None),
    "nllb-moe": ("lm_head", None),
    "pegasus": ("lm_head", "final_logits_bias"),
    "pegasus_x": ("lm_head", None),
    "plbart": ("lm_head", "final_logits_bias"),
    "switch_transformers": ("lm_head", None),
    "t5": ("lm_head", None),
    "umt5": ("lm_head", None),
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_HEADS))


class LMHeadInputs(NamedTuple):
    """What the output projection would receive and apply: ``logits = hidden_states @ weight.T + bias``."""

    hidden_states: torch.Tensor  # [batch, target length, d_model]
    weight: torch.Tensor  # [V, d_model]
    bias: torch.Tensor | None  # [V], or None


# config fields of decoder-only LMs that transform the logits after the projection, and their neutral value
_LOGIT_TRANSFORMS = {
    "final_logit_softcapping": None,
    "logit_scale": 1.0,
    "logits_scaling": 1.0,
    "lm_head_multiplier": 1.0,
    "output_multiplier": 1.0,
}


def _head_of(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The output projection of an unwrapped model and the name of its logits bias buffer (or None)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    path, bias_name = _HEADS.get(model_type, ("", None))
    if path:
        head = model.get_submodule(path) if hasattr(model, path.split(".")[0]) else None
    elif config is not None and not config.is_encoder_decoder and hasattr(model, "get_output_embeddings"):
        head = model.get_output_embeddings()
        _check_plain_logits(model)
    else:
        head = None
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"--fused_lm_head supports decoder-only LMs whose output embeddings are an nn.Linear, and seq2seq LMs "
            f"of the model types {', '.join(SUPPORTED_MODEL_TYPES)}; got {type(model).__name__} of type "
            f"{model_type!r}"
        )
    if bias_name is not None and not hasattr(model, bias_name):
        bias_name = None
    return head, bias_name


def _check_plain_logits(model: nn.Module) -> None:
    """Refuse a decoder-only LM whose logits are not its projection's output (the loss would differ)."""
    config = model.config.get_text_config()
    for name, neutral in _LOGIT_TRANSFORMS.items():
        value = getattr(config, name, None)
        if value is not None and value != neutral:
            raise ValueError(
                f"--fused_lm_head does not reproduce the {name}={value} that {type(model).__name__} applies to "
                "its logits after the output projection: drop --fused_lm_head for this model"
            )


def lm_head_parameters(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The projection's weight ``[V, d]`` and its bias ``[V]`` (the head's own plus ``final_logits_bias``)."""
    model = extract_model_from_parallel(model)
    head, bias_name = _head_of(model)
    bias = getattr(head, "bias", None)
    if bias_name is not None:
        logits_bias = getattr(model, bias_name).reshape(-1)
        bias = logits_bias if bias is None else bias + logits_bias
    return head.weight, bias


class _PassThrough(torch.autograd.Function):
    """The hidden states, unchanged, in a graph node that also takes the head's parameters (no gradient here).

    A DDP wrapper looking for unused parameters when the forward ends (transformers' default for its models)
    would otherwise find the head unused, mark it ready, and fail when the loss, applied after the forward,
    sends it a gradient. Reachable from the output, the head waits for that gradient as usual.
    """

    @staticmethod
    def forward(ctx, hidden_states, *parameters):
        ctx.num_parameters = len(parameters)
        return hidden_states.view_as(hidden_states)

    @staticmethod
    def backward(ctx, grad):
        return grad, *([None] * ctx.num_parameters)


def _pass_through(head: nn.Module):
    parameters = [p for p in head.parameters(recurse=False) if p.requires_grad]
    return lambda hidden_states: _PassThrough.apply(hidden_states, *parameters)


@contextmanager
def lm_head_skipped(model: nn.Module) -> Iterator[None]:
    """Within the block the model's forward returns, in place of its logits, the projection's input."""
    model = extract_model_from_parallel(model)
    head, bias_name = _head_of(model)
    previous_forward = head.__dict__.get("forward")  # e.g. an accelerate hook's wrapper
    head.forward = _pass_through(head)
    if bias_name is not None:
        logits_bias = getattr(model, bias_name)
        setattr(model, bias_name, logits_bias.new_zeros(()))
    try:
        yield
    finally:
        if previous_forward is None:
            del head.forward
        else:
            head.forward = previous_forward
        if bias_name is not None:
            setattr(model, bias_name, logits_bias)


def run_without_lm_head(model: nn.Module, **inputs) -> LMHeadInputs:
    """Run ``model(**inputs)`` without its output projection: the decoder's last hidden states and the head.

    `model` may be wrapped (DDP, DeepSpeed, ``torch.compile``): the call goes through the wrapper, the head is
    found on the model inside. `inputs` are the usual forward arguments (``input_ids``, ``attention_mask``,
    ``decoder_input_ids``, ...) and must not contain ``labels`` (the model would compute its own loss).
    """
    if "labels" in inputs:
        raise ValueError("run_without_lm_head takes no labels: pass decoder_input_ids built from them")
    with lm_head_skipped(model):
        outputs = model(**inputs)
    hidden_states = logits_of(outputs)
    weight, bias = lm_head_parameters(model)
    return LMHeadInputs(hidden_states, weight, bias)

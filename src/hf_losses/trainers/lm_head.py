"""A seq2seq LM's decoder output and its output projection, for a loss that applies the projection itself.

``run_without_lm_head(model, **inputs)`` runs the model's own forward with the output projection replaced by
the identity (and any ``final_logits_bias`` by 0), so the hidden states come back exactly as they would
enter the projection, including the ``d_model ** -0.5`` rescaling that T5-family models apply when their
embeddings are tied. With them come the projection's weight and bias, so that
``logits = hidden_states @ weight.T + bias`` reproduces the model's logits without ever forming them.
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


def _head_of(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The output projection of an unwrapped model and the name of its logits bias buffer (or None)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    path, bias_name = _HEADS.get(model_type, ("", None))
    head = model.get_submodule(path) if path and hasattr(model, path.split(".")[0]) else None
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"--fused_lm_head supports seq2seq LMs (with their output projection) of the model types "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}; got {type(model).__name__} of type {model_type!r}"
        )
    if bias_name is not None and not hasattr(model, bias_name):
        bias_name = None
    return head, bias_name


def lm_head_parameters(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The projection's weight ``[V, d]`` and its bias ``[V]`` (the head's own plus ``final_logits_bias``)."""
    model = extract_model_from_parallel(model)
    head, bias_name = _head_of(model)
    bias = getattr(head, "bias", None)
    if bias_name is not None:
        logits_bias = getattr(model, bias_name).reshape(-1)
        bias = logits_bias if bias is None else bias + logits_bias
    return head.weight, bias


def _identity(hidden_states: torch.Tensor) -> torch.Tensor:
    return hidden_states


@contextmanager
def lm_head_skipped(model: nn.Module) -> Iterator[None]:
    """Within the block the model's forward returns, in place of its logits, the projection's input."""
    model = extract_model_from_parallel(model)
    head, bias_name = _head_of(model)
    previous_forward = head.__dict__.get("forward")  # e.g. an accelerate hook's wrapper
    head.forward = _identity
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

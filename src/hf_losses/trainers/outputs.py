"""What the trainers read from a model's outputs."""

from __future__ import annotations

import torch


def logits_of(outputs) -> torch.Tensor:
    """``outputs["logits"]`` of a ``ModelOutput`` or dict, else the first item of a tuple of outputs."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs[0]

"""What the three losses share on the API side: argument checks, the reduction, and the Module base that
stores, checks and prints the settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    """Raise ValueError naming `name` unless `value` lies in the interval described by the bounds."""
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or value != value:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ValueError naming `name` unless `value >= 0`."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless `reduction` is one of mean/sum/none."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")


def check_class_target(target: torch.Tensor, expected_shape: tuple[int, ...], what: str) -> torch.Tensor:
    """Class-index targets of any integer dtype, as int64; ValueError naming `target` otherwise.

    `what` describes the expected shape in the message, e.g. "logits shape without the class dimension".
    """
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(
            f"target must be an integer tensor of class indices (any of int64, int32, int16, int8, uint8), "
            f"got {target.dtype}"
        )
    if tuple(target.shape) != tuple(expected_shape):
        raise ValueError(f"target shape {tuple(target.shape)} must equal the {what} {tuple(expected_shape)}")
    return target.long()


def reduce(loss: torch.Tensor, reduction: str, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """Apply a reduction; "mean" divides by `count` (default: number of elements), 0 when it is 0."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if count is None:
        count = loss.numel()
    if isinstance(count, int):
        return total / count if count else total * 0.0
    return total / count.clamp(min=1).to(total.dtype)


class LossModule(nn.Module):
    """Base of the loss Modules: the settings (``SETTINGS``, the functional form's keyword arguments) are public
    attributes, checked by ``check_settings`` at construction and passed to the functional form by ``settings()``;
    ``extra_repr`` prints them."""

    SETTINGS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        for name, value in self.check_settings(settings).items():
            setattr(self, name, value)

    def check_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        """Raise ValueError naming a bad setting; returns the settings as stored."""
        return settings

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of the functional form."""
        return {name: getattr(self, name) for name in self.SETTINGS}

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.settings().items())

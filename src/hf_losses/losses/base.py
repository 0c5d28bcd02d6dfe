"""What the three losses share on the API side: argument checks, the reduction, and the Module base that
stores, checks and prints the settings."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
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


def keyword_defaults(functional: Callable) -> dict[str, Any]:
    """The keyword-only arguments of a functional loss and their defaults, in order (``return_stats`` aside)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(functional).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and name != "return_stats"
    }


class LossModule(nn.Module):
    """Base of the loss Modules. The settings are the keyword arguments of the functional form, with its
    defaults (``class MyLoss(LossModule, functional=my_loss)``); they are public attributes, checked by
    ``check_settings`` at construction (a subclass's Args document them), passed to the functional form by
    ``settings()`` and printed by ``extra_repr``."""

    setting_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, functional: Callable | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if functional is not None:
            cls.setting_defaults = keyword_defaults(functional)

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        defaults = self.setting_defaults
        unknown = sorted(set(settings) - set(defaults))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected settings {unknown}; settings: {list(defaults)}"
            )
        for name, value in self.check_settings({**defaults, **settings}).items():
            setattr(self, name, value)

    def check_settings(self, settings: Mapping[str, Any]) -> Mapping[str, Any]:
        """Raise ValueError naming a bad setting; returns the settings as stored."""
        return settings

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of the functional form."""
        return {name: getattr(self, name) for name in self.setting_defaults}

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.settings().items())

"""What both trainer configs share: loss presets resolved on use, and no Hub token in pickled copies.

A config names a loss (``loss="cel"``, ``loss="apl"``) and may set some of its knobs. What each name means is
written once, in the config's ``PRESETS`` table: values a preset pins (``fixed``: ``ce`` has no bonus) and
values it only suggests (``defaults``: ``cel`` starts at ``log_end=0.5``). Knobs are ``None`` until the user
sets them, and the preset is applied every time the loss is built, so ``dataclasses.replace(config,
loss="bce")`` or a YAML file that changes ``loss`` never keeps the previous preset's values. A knob set to a
value its preset pins otherwise (``loss="el", log_end=0.3``) is an error. Range checks live in the losses:
the config checks its settings by building the loss once.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class LossPreset:
    """One value of a config's ``loss`` field."""

    label: str  # how a model card names the loss
    baseline: bool  # a standard loss the method is compared against (ce, bce, ...)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


class LossConfigMixin:
    """Mixin for ``TrainingArguments`` subclasses with a ``loss`` field and optional knob fields.

    Subclasses set ``PRESETS`` (name -> :class:`LossPreset`), ``KNOBS`` (the knob field names) and implement
    ``build_loss`` (the loss ``nn.Module`` built from ``loss_kwargs()``).
    """

    PRESETS: ClassVar[dict[str, LossPreset]] = {}
    KNOBS: ClassVar[tuple[str, ...]] = ()
    FIELD_OF_LOSS_ARGUMENT: ClassVar[dict[str, str]] = {}  # loss argument -> config field, where they differ
    loss: str

    def check_loss(self) -> None:
        """Raise ValueError unless the loss name, its knobs and their ranges are valid (call in __post_init__)."""
        if self.loss not in self.PRESETS:
            raise ValueError(f"--loss must be one of {', '.join(self.PRESETS)}; got {self.loss!r}")
        try:
            self.build_loss()
        except ValueError as err:
            raise ValueError(f"--loss {self.loss}: {self._as_flags(str(err))}") from None

    def _as_flags(self, message: str) -> str:
        """A loss error in the config's terms: ``label_smoothing must ...`` -> ``--label_smoothing_factor must ...``."""
        arguments = {*self.KNOBS, *self.FIELD_OF_LOSS_ARGUMENT}
        pattern = (
            r"(?<![-\w])(" + "|".join(map(re.escape, sorted(arguments, key=len, reverse=True))) + r")(?!\w)"
        )
        return re.sub(pattern, lambda m: "--" + self.FIELD_OF_LOSS_ARGUMENT.get(m[1], m[1]), message)

    @property
    def preset(self) -> LossPreset:
        return self.PRESETS[self.loss]

    def resolved_knobs(self) -> dict[str, Any]:
        """The knob values the loss uses: the preset's, then every knob the user set."""
        preset = self.preset
        values = {**preset.defaults, **preset.fixed}
        for knob in self.KNOBS:
            value = getattr(self, knob)
            if value is None:
                continue
            if knob in preset.fixed and value != preset.fixed[knob]:
                raise ValueError(
                    f"--{knob} does not apply to --loss {self.loss}, which uses {knob}={preset.fixed[knob]}; "
                    f"drop --{knob} or pick another --loss ({', '.join(self.PRESETS)})"
                )
            values[knob] = value
        return values

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the loss Module (without ``reduction``)."""
        return self.resolved_knobs()

    def loss_settings(self) -> dict[str, Any]:
        """The loss name and the resolved settings, as recorded in model cards and compared on resume."""
        return {"loss": self.loss, **self.loss_kwargs()}

    def build_loss(self, reduction: str = "sum") -> nn.Module:
        raise NotImplementedError

    # -- secrets -----------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        """Pickled copies (``training_args.bin`` in every checkpoint, which may be pushed) carry no token."""
        state = dict(self.__dict__)
        for key in state:
            if key.endswith("_token"):
                state[key] = None
        return state

    def __deepcopy__(self, memo: dict) -> LossConfigMixin:
        """An in-memory copy keeps the token (only copies written to disk drop it)."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone

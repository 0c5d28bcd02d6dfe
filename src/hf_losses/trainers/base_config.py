"""What both trainer configs share: loss presets resolved on use, and no Hub token in pickled copies.

A config names a loss (``loss="cel"``, ``loss="apl"``) and may set some of its knobs. What each name means is
written once, in the config's ``PRESETS`` table: values a preset pins (``fixed``: ``ce`` has no bonus) and
values it only suggests (``defaults``: ``cel`` starts at ``log_end=0.5``). Knobs are ``None`` until the user
sets them, and the preset is applied every time the loss is built, so ``dataclasses.replace(config,
loss="bce")`` or a YAML file that changes ``loss`` never keeps the previous preset's values.

A knob set to a value the loss pins otherwise (``el`` pins ``log_end=1``) depends on where it was set:

* set at the same level as the loss (one constructor call, one command line, one recipe file:
  ``--loss el --log_end 0.5``), it is an error;
* inherited from a lower level that a higher one changes the loss of (a recipe with ``loss: cel`` and
  ``log_end: 0.5`` run with ``--loss el``; ``dataclasses.replace(config, loss="el")`` of a config built with
  ``log_end=0.5``), it is dropped with a warning naming it.

Range checks live in the losses: the config checks its settings by building the loss once. Training budget
and batch sizes are checked too (``check_training_budget``), so a bad flag fails before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
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

    def check_training_budget(self) -> None:
        """ValueError, naming the flag, for a negative learning rate, an empty batch or nothing to train."""
        if self.learning_rate < 0:
            raise ValueError(f"--learning_rate must be >= 0; got {self.learning_rate}")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if self.max_steps < -1 or self.max_steps == 0:
            raise ValueError(
                f"--max_steps must be a positive number of steps, or -1 to train --num_train_epochs; "
                f"got {self.max_steps}"
            )
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(
                f"--num_train_epochs must be > 0 when --max_steps is not set; got {self.num_train_epochs}"
            )

    def drop_inherited_knobs(self, inherited: dict[str, Any] | None) -> None:
        """Unset, with a warning, the knobs carried over from a config of another loss that this loss pins.

        ``inherited`` is the loss and knob values of the config this one was copied from (``replace``), or
        None for a config built directly. Call in __post_init__ before ``check_loss``; then call
        :meth:`record_knobs`.
        """
        if not inherited or inherited.get("loss") == self.loss:
            return
        carried = {k: v for k, v in inherited.items() if k == "loss" or getattr(self, k) == v}
        for knob in pinned_knobs(type(self), self.loss, carried):
            setattr(self, knob, None)

    def record_knobs(self) -> dict[str, Any]:
        """The loss and the knobs set on this config (what ``dataclasses.replace`` passes on)."""
        return {
            "loss": self.loss,
            **{k: getattr(self, k) for k in self.KNOBS if getattr(self, k) is not None},
        }

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

    # Three views of the loss, from the inside out: resolved_knobs() (the knob values: preset, then what the
    # user set), loss_kwargs() (the loss Module's keyword arguments: the knobs plus what the config holds under
    # other names, e.g. label_smoothing_factor) and loss_settings() (the loss name and what the run records in
    # model cards and compares on resume; pickled checkpoints call it, so the name stays).
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


def label_names_refusal(label_names: list[str] | None, hint: str) -> str | None:
    """Why TrainingArguments' ``label_names`` (the input keys that hold the labels) cannot be used, or None when
    it is unset or ``["labels"]``: the trainers read the labels from 'labels' only. `hint`: what to do instead."""
    if label_names in (None, ["labels"]):
        return None
    return (
        "is TrainingArguments' list of input keys that hold the labels, and the trainers read them from "
        f"'labels' only: leave it unset ({hint})"
    )


def pinned_knobs(config_class: type[LossConfigMixin], loss: str, settings: dict[str, Any]) -> list[str]:
    """The knobs in `settings`, set for another loss, that `loss` pins to other values; each with a warning.

    The rule of the module docstring for a knob inherited from a lower level: it is dropped, loudly.
    """
    preset = config_class.PRESETS.get(loss)
    if preset is None or settings.get("loss") == loss:
        return []
    dropped = [
        knob
        for knob in config_class.KNOBS
        if settings.get(knob) is not None and knob in preset.fixed and settings[knob] != preset.fixed[knob]
    ]
    for knob in dropped:
        warnings.warn(
            f"--{knob} {settings[knob]} was set for --loss {settings.get('loss', 'default')} and does not apply "
            f"to --loss {loss}, which uses {knob}={preset.fixed[knob]}: dropped",
            UserWarning,
            stacklevel=3,
        )
    return dropped

"""Encouraging Loss (EL) and Conservative Encouraging Loss (CEL), Zhao et al., AAAI 2022.

Token loss: ``l = -log p_y + rho * b(p_y)`` with the bonus ``b(p) = log(1 - p)`` for ``p <= LE`` and its
tangent at ``LE`` beyond (or ``-p^a``, or ``cos(pi p) - 1``), shifted to start at ``bonus_start``; label
smoothing mixes in ``(eps / V) * sum_j -log p_j`` and bonus smoothing ``(e / V) * rho * sum_j b(p_j)``.
The maths, the closed-form gradient and the differences from the authors' code: see docs/losses.md.

The functional form and the Modules; the fused kernel (exact in float32, gradient written in the forward
pass) and its autograd Function are in losses/ops/encouraging.py.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .base import (
    LossModule,
    check_class_target,
    check_non_negative,
    check_range,
    check_reduction,
    reduce,
)
from .ops.encouraging import FusedEncouragingLoss, row_settings
from .ops.utils import check_values


class EncouragingLossOutput(NamedTuple):
    """The reduced loss plus detached sums for logging: plain NLL and target bonus b(p_y), and the token count."""

    loss: torch.Tensor
    nll: torch.Tensor
    bonus: torch.Tensor
    num_tokens: torch.Tensor


BONUS_SHAPES = ("log", "power", "cosine")


def _check_settings(
    log_end,
    label_smoothing,
    bonus_weight,
    reduction,
    bonus="log",
    bonus_power=1.0,
    bonus_start=0.0,
    bonus_smoothing=None,
) -> None:
    check_range("log_end", log_end, 0.0, 1.0, low_open=True, high_open=False)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, low_open=False, high_open=True)
    check_non_negative("bonus_weight", bonus_weight)
    check_reduction(reduction)
    if bonus not in BONUS_SHAPES:
        raise ValueError(f"bonus must be one of {', '.join(map(repr, BONUS_SHAPES))}, got {bonus!r}")
    if not bonus_power > 0:
        raise ValueError(f"bonus_power must be > 0, got {bonus_power!r}")
    check_range("bonus_start", bonus_start, 0.0, 1.0, low_open=False, high_open=True)
    if bonus_smoothing is not None:
        check_range("bonus_smoothing", bonus_smoothing, 0.0, 1.0, low_open=False, high_open=False)
    if bonus != "log" and log_end != 1.0:
        raise ValueError(f"log_end must be 1 unless bonus='log' (got log_end={log_end!r}, bonus={bonus!r})")
    if bonus != "power" and bonus_power != 1.0:
        raise ValueError(
            f"bonus_power must be 1 unless bonus='power' (got bonus_power={bonus_power!r}, bonus={bonus!r})"
        )


def _check_arguments(logits, target, reduction, **bonus_settings) -> torch.Tensor:
    """Validate everything; returns the target as int64."""
    _check_settings(reduction=reduction, **bonus_settings)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have shape [..., V] with V >= 2 classes, got {tuple(logits.shape)}")
    return check_class_target(target, logits.shape[:-1], "logits shape without the class dimension")


def encouraging_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    log_end: float = 1.0,
    label_smoothing: float = 0.0,
    bonus_weight: float = 1.0,
    bonus: str = "log",
    bonus_power: float = 1.0,
    bonus_start: float = 0.0,
    bonus_smoothing: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_stats: bool = False,
) -> torch.Tensor | EncouragingLossOutput:
    """Encouraging loss ``-log p_y + rho * b(p_y)`` (label-smoothed over all classes), fused and exact.

    See :class:`EncouragingLoss` for the maths and shapes.

    Args:
        logits: ``[..., V]`` unnormalised scores, any float dtype (math runs in float32 or float64).
        target: ``[...]`` class indices in ``[0, V)`` or ``ignore_index``, any integer dtype.
        log_end: LE in (0, 1]; 1 is the full bonus (EL), below 1 the conservative bonus (CEL); "log" only.
        label_smoothing: eps in [0, 1), applied to the NLL (and to the bonus unless ``bonus_smoothing``).
        bonus_weight: rho >= 0; 0 gives exactly ``F.cross_entropy``.
        bonus: the shape b(p): "log" (``log(1 - p)``), "power" (``-p ** bonus_power``) or "cosine"
            (``cos(pi p) - 1``).
        bonus_power: a > 0, the exponent of the "power" shape (1: the loss is NLL - rho p_y).
        bonus_start: s in [0, 1): no bonus below p = s, ``b(p) - b(s)`` above it.
        bonus_smoothing: e in [0, 1], the smoothing of the bonus, ``(1 - e) b(p_y) + (e / V) sum_k b(p_k)``;
            None: the label smoothing.
        ignore_index: target value that contributes nothing.
        reduction: "mean" (over non-ignored tokens; 0 when there are none), "sum" or "none".
        return_stats: return an :class:`EncouragingLossOutput` ``(loss, nll, bonus, num_tokens)`` instead of
            the loss alone: ``nll`` and ``bonus`` are the detached sums of ``-log p_y`` and ``b_s(p_y)`` (no
            smoothing, no rho) over the non-ignored tokens, ``num_tokens`` their count (a tensor).

    Returns:
        The reduced loss (float32 for bf16/fp16 logits), or the named tuple when ``return_stats=True``.
    """
    bonus_settings = dict(
        log_end=log_end,
        label_smoothing=label_smoothing,
        bonus_weight=bonus_weight,
        bonus=bonus,
        bonus_power=bonus_power,
        bonus_start=bonus_start,
        bonus_smoothing=bonus_smoothing,
    )
    target = _check_arguments(logits, target, reduction, **bonus_settings)
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_target = target.reshape(-1)
    valid = flat_target != ignore_index
    check_values(
        "target",
        valid & ((flat_target < 0) | (flat_target >= vocab)),
        f"class indices in [0, {vocab}) or ignore_index={ignore_index}",
    )
    settings = row_settings(**bonus_settings)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, nll, bonus = FusedEncouragingLoss.apply(flat_logits, flat_target, valid, settings, need_grad)
    num_tokens = valid.sum()
    loss = reduce(loss.view(target.shape), reduction, num_tokens)
    if return_stats:
        return EncouragingLossOutput(loss, nll.sum(), bonus.sum(), num_tokens)
    return loss


class EncouragingSettings(LossModule, functional=encouraging_loss):
    """The settings of the encouraging losses (the keyword arguments of :func:`encouraging_loss`) as public
    attributes, checked here and at every call (a schedule may change ``bonus_weight`` between calls)."""

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        _check_settings(**{k: v for k, v in settings.items() if k != "ignore_index"})
        return settings


class EncouragingLoss(EncouragingSettings):
    r"""Encouraging loss (EL) and conservative encouraging loss (CEL), Zhao et al., AAAI 2022.

    For a token with logits :math:`z \in \mathbb{R}^V`, :math:`p = \mathrm{softmax}(z)` and target
    :math:`y`, the bonus rewards confidence: :math:`b(p) = \log(1 - p)` for :math:`p \le LE` and its tangent
    :math:`\log(1 - LE) - (p - LE) / (1 - LE)` above. With label smoothing :math:`\varepsilon`:

    .. math::
        \ell = (1 - \varepsilon)\,[-\log p_y + \rho\, b(p_y)]
                + \frac{\varepsilon}{V} \sum_j [-\log p_j + \rho\, b(p_j)]

    ``log_end=1`` is EL, ``log_end < 1`` CEL (0.5 is the authors' choice for translation), ``bonus_weight=0``
    is exactly ``nn.CrossEntropyLoss(label_smoothing=...)``. The loss is negative for confident tokens: log
    the plain NLL beside it (``return_stats=True``). Formulas, gradients and numerics: docs/losses.md.

    Args:
        log_end: LE in (0, 1]; where the bonus turns into its tangent ("log" shape only).
        label_smoothing: :math:`\varepsilon` in [0, 1), applied to the NLL (and to the bonus unless
            ``bonus_smoothing`` is set).
        bonus_weight: :math:`\rho \ge 0`, the weight of the bonus.
        bonus, bonus_power, bonus_start, bonus_smoothing: the shape of the bonus (``"log"``, ``"power"``:
            :math:`-p^a`, ``"cosine"``: :math:`\cos(\pi p) - 1`), its exponent, the probability below
            which it is 0 and its own smoothing; see :func:`encouraging_loss`.
        ignore_index: target value that contributes nothing to the loss or the gradient.
        reduction: ``"mean"`` over non-ignored tokens (0 when there are none), ``"sum"`` or ``"none"``.

    The settings are public attributes, checked here and at every call.

    Shape:
        - logits: :math:`(*, V)`, any floating dtype (arithmetic in float32 for bf16/fp16, float64 for
          float64; the gradient comes back in the logits' dtype).
        - target: :math:`(*)`, class indices in :math:`[0, V)` or ``ignore_index``, any integer dtype.
        - output: scalar, or :math:`(*)` with ``reduction="none"`` (0 at ignored positions); float32 for
          bf16/fp16 logits.

    Example::

        >>> import torch
        >>> from hf_losses import EncouragingLoss
        >>> criterion = EncouragingLoss(log_end=0.5, label_smoothing=0.1)
        >>> logits = torch.randn(4, 7, 100, requires_grad=True)
        >>> target = torch.randint(0, 100, (4, 7))
        >>> target[:, -2:] = -100  # padding
        >>> criterion(logits, target).backward()
        >>> out = criterion(logits, target, return_stats=True)
        >>> out.num_tokens
        tensor(20)
        >>> ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=0.1)
        >>> bool(torch.isclose(EncouragingLoss(bonus_weight=0.0, label_smoothing=0.1)(logits, target), ce))
        True
    """

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, *, return_stats: bool = False
    ) -> torch.Tensor | EncouragingLossOutput:
        """The loss, or with ``return_stats=True`` an :class:`EncouragingLossOutput`; see :func:`encouraging_loss`."""
        return encouraging_loss(logits, target, **self.settings(), return_stats=return_stats)

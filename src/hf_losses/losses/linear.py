"""Encouraging loss of a linear projection, ``EL(h W^T + b, y)``, without materialising the logits: the
functional form and the Module. The chunked kernel and its autograd Function: losses/ops/linear.py.
"""

from __future__ import annotations

import torch

from .base import reduce
from .encouraging import EncouragingLossOutput, EncouragingSettings, _check_settings
from .ops.encouraging import row_settings
from .ops.linear import FusedLinearEncouragingLoss
from .ops.utils import check_values


def _check_linear_arguments(input, weight, target, bias) -> None:
    for name, tensor in (("input", input), ("weight", weight), ("bias", bias)):
        if tensor is not None and not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if weight.dim() != 2 or weight.shape[0] < 2:
        raise ValueError(f"weight must have shape [V, d] with V >= 2 classes, got {tuple(weight.shape)}")
    if input.dim() < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input must have shape [..., d] with d = weight.shape[1] = {weight.shape[1]}, "
            f"got {tuple(input.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape [V] = ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and (tensor.dtype != input.dtype or tensor.device != input.device):
            raise ValueError(
                f"{name} must have the dtype and device of input ({input.dtype}, {input.device}), "
                f"got ({tensor.dtype}, {tensor.device})"
            )
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must be an integer tensor of class indices, got {target.dtype}")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal input shape without the feature dimension "
            f"{tuple(input.shape[:-1])}"
        )


def linear_encouraging_loss(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
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
    """``encouraging_loss(input @ weight.T + bias, target, ...)`` without forming the ``[..., V]`` logits.

    Args:
        input: ``[..., d]`` hidden states (float32, float64, bfloat16 or float16).
        weight: ``[V, d]`` output projection, same dtype and device as ``input``.
        target: ``[...]`` integer class indices in ``[0, V)`` or ``ignore_index``.
        bias: optional ``[V]`` bias of the projection.
        log_end, label_smoothing, bonus_weight, bonus, bonus_power, bonus_start, bonus_smoothing, ignore_index,
            reduction: as in :func:`encouraging_loss`.
        return_stats: also return the detached sums of ``-log p_y`` and ``b(p_y)`` and the token count, as an
            :class:`EncouragingLossOutput`.

    Ignored tokens are dropped before the projection (on CUDA that costs one host sync for their count).
    The loss is float32 for bf16/fp16 inputs; gradients come back in each parameter's dtype.
    """
    bonus_settings = (
        log_end,
        label_smoothing,
        bonus_weight,
        bonus,
        bonus_power,
        bonus_start,
        bonus_smoothing,
    )
    _check_settings(*bonus_settings[:3], reduction, *bonus_settings[3:])
    if torch.is_autocast_enabled(input.device.type):  # project in the autocast dtype, as nn.Linear would
        low = torch.get_autocast_dtype(input.device.type)
        input, weight, bias = (None if t is None else t.to(low) for t in (input, weight, bias))
    _check_linear_arguments(input, weight, target, bias)
    vocab = weight.shape[0]
    flat_input = input.reshape(-1, input.shape[-1])
    flat_target = target.reshape(-1).long()
    valid = flat_target != ignore_index
    check_values(
        "target",
        valid & ((flat_target < 0) | (flat_target >= vocab)),
        f"class indices in [0, {vocab}) or ignore_index={ignore_index}",
    )
    rows = valid.nonzero().squeeze(1)
    settings = row_settings(*bonus_settings)
    grad_on = torch.is_grad_enabled()
    needs = tuple(grad_on and t is not None and t.requires_grad for t in (input, weight, bias))
    summed = reduction != "none"
    with torch.autocast(input.device.type, enabled=False):
        loss, nll, bonus = FusedLinearEncouragingLoss.apply(
            flat_input, weight, bias, rows, flat_target.index_select(0, rows), settings, needs, summed
        )
    num_tokens = valid.sum()
    if summed:
        loss = reduce(loss, reduction, num_tokens)
    else:
        loss = loss.new_zeros(flat_target.shape).index_copy(0, rows, loss).view(target.shape)
    if return_stats:
        return EncouragingLossOutput(loss, nll.sum(), bonus.sum(), num_tokens)
    return loss


class LinearEncouragingLoss(EncouragingSettings):
    r"""Encouraging loss of a linear projection, fused so the ``[N, V]`` logits never exist.

    For hidden states :math:`h_t`, logits :math:`z_t = W h_t + b`, :math:`p_t = \mathrm{softmax}(z_t)` and
    target :math:`y_t`:

    .. math::
        \ell_t = (1 - \varepsilon)\,[-\log p_{t,y_t} + \rho\, b(p_{t,y_t})]
                 + \frac{\varepsilon}{V} \sum_j [-\log p_{t,j} + \rho\, b(p_{t,j})],

    with :math:`b(p) = \log(1 - p)` for :math:`p \le LE` and its tangent at :math:`LE` beyond (or another
    shape). Identical to :class:`EncouragingLoss` applied to ``nn.functional.linear(input, weight, bias)``.

    Args:
        log_end: LE in (0, 1]; 1 is EL, below 1 the conservative bonus (CEL).
        label_smoothing: :math:`\varepsilon` in [0, 1), applied to the NLL and the bonus alike.
        bonus_weight: :math:`\rho \ge 0`; 0 gives cross-entropy.
        bonus, bonus_power, bonus_start, bonus_smoothing: as in :class:`EncouragingLoss`.
        ignore_index: target value that contributes nothing (dropped before the projection).
        reduction: ``"mean"`` over non-ignored tokens, ``"sum"`` or ``"none"``.

    Shape:
        - input: :math:`(*, d)`; weight: :math:`(V, d)`; bias: :math:`(V)` or None.
        - target: :math:`(*)` class indices.
        - output: scalar, or :math:`(*)` with ``reduction="none"``.

    Example::

        >>> head = torch.nn.Linear(64, 1000)
        >>> criterion = LinearEncouragingLoss(log_end=0.5, label_smoothing=0.1)
        >>> hidden = torch.randn(4, 30, 64, requires_grad=True)
        >>> target = torch.randint(0, 1000, (4, 30))
        >>> out = criterion(hidden, head.weight, target, bias=head.bias, return_stats=True)
        >>> out.loss.backward()
        >>> out.num_tokens, head.weight.grad.shape, head.bias.grad.shape
        (tensor(120), torch.Size([1000, 64]), torch.Size([1000]))
    """

    def forward(
        self,
        input: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        return_stats: bool = False,
    ) -> torch.Tensor | EncouragingLossOutput:
        """The loss, or an :class:`EncouragingLossOutput`; see :func:`linear_encouraging_loss`."""
        return linear_encouraging_loss(
            input,
            weight,
            target,
            bias=bias,
            **self.settings(),
            return_stats=return_stats,
        )

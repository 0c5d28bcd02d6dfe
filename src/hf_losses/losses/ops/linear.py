"""The chunked kernel of the fused head, ``EL(h W^T + b, y)``, and its autograd Function (the API is
losses/linear.py).

For a head with a large vocabulary the ``[tokens, V]`` logits and their gradient dominate the memory of a
training step. Here the non-ignored tokens are taken in chunks; for each chunk the logits ``z = h W^T + b``
are formed, the EL kernel returns the per-token loss and ``g = dl/dz``, and the three gradients are
accumulated at once: ``dL/dh = g W``, ``dL/dW = sum g^T h``, ``dL/db = sum g``. Only one chunk of logits
exists at a time; backward merely scales the saved gradients (``reduction="none"`` recomputes the chunks
instead, weighting each token's ``g`` by its incoming gradient).
"""

from __future__ import annotations

import torch

from .encouraging import forward_chunk
from .utils import chunk_rows, compute_dtype, no_double_backward, take_saved_gradient

# Tokens per chunk: enough logits that the three matrix products stay efficient (each chunk reads and
# writes all of dL/dW once), few enough that the chunk's logits and their gradient stay small.
CPU_LOGIT_ELEMENTS = 1 << 24  # 64 MiB of float32 logits per chunk
CUDA_LOGIT_ELEMENTS = 1 << 26  # 256 MiB
MIN_CHUNK_TOKENS = 128
KERNEL_SCRATCH_BUFFERS = 3  # the EL kernel's float32 work buffers (one without smoothing, three with)


def chunk_tokens(num_tokens: int, vocab: int, device: torch.device) -> int:
    """How many tokens one chunk of the fused head projects at a time."""
    budget = CUDA_LOGIT_ELEMENTS if device.type == "cuda" else CPU_LOGIT_ELEMENTS
    return max(1, min(num_tokens, max(MIN_CHUNK_TOKENS, budget // vocab)))


def _chunked_pass(input, weight, bias, rows, target, settings, needs, row_weights=None):
    """Per-token (loss, nll, bonus) of the tokens `rows` of `input`, and the requested gradients.

    The gradients are those of ``sum_t w_t loss_t`` with ``w = row_weights`` (1 when None), returned in the
    dtypes of input, weight and bias; dL/dW and dL/db are accumulated in the compute dtype.
    """
    n, (vocab, dim) = rows.numel(), weight.shape
    device, dtype = input.device, compute_dtype(input.dtype)
    need_input, need_weight, need_bias = needs
    stats = [torch.empty(n, dtype=dtype, device=device) for _ in range(3)]
    grad_input = torch.zeros_like(input) if need_input else None
    grad_weight = torch.zeros(vocab, dim, dtype=dtype, device=device) if need_weight else None
    grad_bias = torch.zeros(vocab, dtype=dtype, device=device) if need_bias else None
    chunk = chunk_tokens(n, vocab, device)
    sub = chunk_rows(chunk, vocab, device)
    logits = torch.empty(chunk, vocab, dtype=input.dtype, device=device)
    grad = torch.empty(chunk, vocab, dtype=dtype, device=device) if any(needs) else None
    scratch = [torch.empty(sub, vocab, dtype=dtype, device=device) for _ in range(KERNEL_SCRATCH_BUFFERS)]
    valid = torch.ones(sub, dtype=torch.bool, device=device)
    for start in range(0, n, chunk):
        index = rows[start : start + chunk]
        size = index.numel()
        h = input.index_select(0, index)
        z = logits[:size]
        if bias is None:
            torch.mm(h, weight.t(), out=z)
        else:
            torch.addmm(bias, h, weight.t(), out=z)
        for first in range(0, size, sub):
            part = slice(first, min(first + sub, size))
            width = part.stop - first
            values = forward_chunk(
                z[part],
                target[start + first : start + part.stop],
                valid[:width],
                settings,
                scratch,
                None if grad is None else grad[part],
            )
            for out, value in zip(stats, values, strict=True):
                out[start + first : start + part.stop] = value
        if grad is None:
            continue
        g = grad[:size]
        if row_weights is not None:
            g.mul_(row_weights[start : start + size].unsqueeze(1))
        if need_bias:
            grad_bias.add_(g.sum(0))
        if need_weight:
            grad_weight.addmm_(g.t(), h.to(dtype))
        if need_input:
            g_low = g if g.dtype == input.dtype else z.copy_(g)  # the logits are spent: reuse their buffer
            grad_input.index_copy_(0, index, g_low @ weight)
    grads = (
        grad_input,
        None if grad_weight is None else grad_weight.to(weight.dtype),
        None if grad_bias is None else grad_bias.to(bias.dtype),
    )
    return stats, grads


class FusedLinearEncouragingLoss(torch.autograd.Function):
    """EL of ``input[rows] @ weight.T + bias``: the summed loss (gradients from the forward pass), or the
    per-token loss (gradients recomputed chunk by chunk in backward), plus detached per-token NLL and bonus.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, rows, target, settings, needs, summed):
        ctx.summed = summed
        if summed:
            (loss, nll, bonus), ctx.saved_gradient = _chunked_pass(
                input, weight, bias, rows, target, settings, needs
            )
            loss = loss.sum()
        else:
            (loss, nll, bonus), _ = _chunked_pass(
                input, weight, bias, rows, target, settings, (False, False, False)
            )
            ctx.save_for_backward(input, weight, bias, rows, target)
            ctx.settings = settings
        ctx.mark_non_differentiable(nll, bonus)
        return loss, nll, bonus

    @staticmethod
    @no_double_backward
    def backward(ctx, grad_loss, _grad_nll, _grad_bonus):
        needs = tuple(ctx.needs_input_grad[:3])
        if ctx.summed:
            grads = take_saved_gradient(ctx)
            for grad in grads:
                if grad is not None:
                    grad.mul_(grad_loss.to(grad.dtype))
        else:
            input, weight, bias, rows, target = ctx.saved_tensors
            _, grads = _chunked_pass(input, weight, bias, rows, target, ctx.settings, needs, grad_loss)
        return *grads, None, None, None, None, None

"""The real examples of an evaluation batch under several processes.

To even out the last evaluation batch, accelerate repeats examples on some processes; ``gather_for_metrics``
drops the repeats from the predictions. ``real_examples`` drops them from the loss sums in exactly the same
way, so evaluation means do not depend on the number of processes.
"""

from __future__ import annotations

import torch


def real_rows(accelerator, num_rows: int, device: torch.device) -> torch.Tensor | None:
    """Mask of this process's batch rows that ``gather_for_metrics`` keeps; None on a single process."""
    if accelerator.num_processes == 1:
        return None
    rank = accelerator.process_index
    rows = torch.stack([torch.full((num_rows,), rank), torch.arange(num_rows)], dim=1).to(device)
    rows = accelerator.pad_across_processes(rows, dim=0, pad_index=-1)
    kept = accelerator.gather_for_metrics(rows)
    keep = torch.zeros(num_rows, dtype=torch.bool, device=device)
    keep[kept[kept[:, 0] == rank, 1]] = True
    return keep


def real_examples(accelerator, outputs, labels: torch.Tensor):
    """The outputs (their tensors) and labels of the batch rows that are real examples (collective)."""
    keep = real_rows(accelerator, labels.shape[0], labels.device)
    if keep is None or bool(keep.all()):
        return outputs, labels
    return {name: value[keep] for name, value in outputs.items() if torch.is_tensor(value)}, labels[keep]

"""Checkpoint averaging: the final model is the element-wise mean of the last N saved checkpoints.

    theta_final = (1/N) * sum_{i=1..N} theta_i     over the last N complete ``checkpoint-*`` folders

This is what fairseq's ``average_checkpoints.py`` does and what the encouraging-loss paper's numbers use
(last 10). Floating-point tensors are averaged in float64 and cast back to their dtype; integer and bool
buffers (step counters, position ids) are taken from the newest checkpoint. Tied weights are stored once in a
checkpoint and stay tied: the mean is copied into the model's own tensors, so every alias sees it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoints import complete_checkpoints

_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class CheckpointAveragingArguments:
    """The ``--average_checkpoints`` field shared by both trainer configs (a dataclass mixin)."""

    average_checkpoints: int = field(
        default=0,
        metadata={
            "help": "At the end of training, make the final model the element-wise mean of the weights of the "
            "last N saved checkpoints (0: off). Needs save_total_limit >= N and at least N saves."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_averaging(self)


def possible_saves(args, max_steps: int) -> int | None:
    """How many checkpoints a run of ``max_steps`` optimiser steps saves (None when unknown in advance)."""
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    if strategy == "no":
        return 0
    if strategy == "steps" and max_steps > 0:
        every = math.ceil(args.save_steps * max_steps) if args.save_steps < 1 else int(args.save_steps)
        return math.ceil(max_steps / max(every, 1))  # saves at every multiple, and at the last step
    if strategy == "epoch" and args.max_steps <= 0:
        return math.ceil(args.num_train_epochs)
    return None


def check_averaging(args, max_steps: int | None = None) -> None:
    """ValueError unless N checkpoints can exist when training ends (``max_steps``: known once training starts)."""
    n = args.average_checkpoints
    if n < 0:
        raise ValueError(f"--average_checkpoints must be >= 0 (0: off); got {n}")
    if n == 0:
        return
    if args.load_best_model_at_end:
        raise ValueError(
            "--average_checkpoints and --load_best_model_at_end both choose the final model: use one of them"
        )
    if args.save_total_limit is not None and args.save_total_limit < n:
        raise ValueError(
            f"--average_checkpoints {n} needs the last {n} checkpoints kept: set --save_total_limit >= {n} "
            f"(it is {args.save_total_limit})"
        )
    if (
        args.metric_for_best_model is not None
        and args.save_total_limit is not None
        and args.save_total_limit <= n
    ):
        raise ValueError(
            f"--average_checkpoints {n} with --metric_for_best_model: the Trainer also keeps the best checkpoint, "
            f"which could then be among the last {n}; set --save_total_limit >= {n + 1} "
            f"(it is {args.save_total_limit})"
        )
    saves = possible_saves(args, args.max_steps if max_steps is None else max_steps)
    if saves is not None and saves < n:
        raise ValueError(
            f"--average_checkpoints {n} needs {n} saved checkpoints, but --save_strategy "
            f"{getattr(args.save_strategy, 'value', args.save_strategy)} with --save_steps {args.save_steps} "
            f"saves {saves} in this run: save more often or average fewer"
        )


def load_checkpoint_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The model weights a Trainer saved in ``folder`` (one file or shards; safetensors or torch)."""
    folder = Path(folder)
    for name in _WEIGHTS:
        if (folder / name).is_file():
            return _load_file(folder / name)
    for name in _INDEXES:
        if (folder / name).is_file():
            index = json.loads((folder / name).read_text(encoding="utf-8"))
            weights = {}
            for shard in sorted(set(index["weight_map"].values())):
                weights.update(_load_file(folder / shard))
            return weights
    raise FileNotFoundError(f"{folder} holds no model weights ({', '.join(_WEIGHTS + _INDEXES)})")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def mean_weights(folders: list[str | Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' weights (float64 sums; other dtypes from the newest)."""
    sums: dict[str, torch.Tensor] = {}
    newest: dict[str, torch.Tensor] = {}
    for folder in folders:
        weights = load_checkpoint_weights(folder)
        if sums and weights.keys() != newest.keys():
            raise ValueError(f"{folder} holds other tensors than {folders[0]}: cannot average them")
        for name, tensor in weights.items():
            newest[name] = tensor
            if tensor.is_floating_point():
                sums[name] = sums.get(name, 0) + tensor.double()
    return {
        name: (sums[name] / len(folders)).to(tensor.dtype) if name in sums else tensor
        for name, tensor in newest.items()
    }


@torch.no_grad()
def load_mean_into(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` into ``model``'s tensors in place.

    A model tensor missing from ``weights`` must be a tied alias of one that is there, or one the model never
    saves (``_keys_to_ignore_on_save``, e.g. Marian's fixed sinusoidal positions): it keeps its value.
    """
    state = model.state_dict(keep_vars=True)
    written: set[int] = set()
    for name, tensor in state.items():
        if name in weights:
            tensor.data.copy_(weights[name].to(tensor.device))
            written.add(tensor.data_ptr())
    unsaved = getattr(model, "_keys_to_ignore_on_save", None) or ()  # rebuilt by the model (fixed positions)
    missing = [
        n
        for n, t in state.items()
        if n not in weights and t.data_ptr() not in written and not any(re.search(k, n) for k in unsaved)
    ]
    if missing:
        raise ValueError(f"the checkpoints lack {', '.join(missing[:5])}: they are not of this model")
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise ValueError(f"the checkpoints hold tensors this model lacks: {', '.join(unknown[:5])}")


def checkpoint_step(folder: str | Path) -> int:
    """The step of a ``checkpoint-N`` folder."""
    return int(Path(folder).name.removeprefix("checkpoint-"))


def last_checkpoints(output_dir: str | Path, n: int) -> list[str]:
    """The newest ``n`` complete checkpoints of output_dir, oldest first; ValueError when there are fewer."""
    found = complete_checkpoints(output_dir)
    if len(found) < n:
        raise ValueError(
            f"--average_checkpoints {n}: only {len(found)} complete checkpoint(s) in {output_dir}"
        )
    return found[-n:]

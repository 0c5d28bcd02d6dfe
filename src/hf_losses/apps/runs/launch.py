"""Launch checks: refuse an environment that announces several processes which are not joined in one group."""

from __future__ import annotations

import os

from .errors import UsageError

_LAUNCH_HINT = (
    "launch with `accelerate launch --multi_gpu --num_processes N ...` (add --use_cpu without GPUs) "
    "or unset WORLD_SIZE"
)


def check_launch_environment() -> None:
    """Refuse WORLD_SIZE > 1 without the rendezvous variables a launcher sets (torchrun/accelerate/deepspeed).

    It runs before the TrainingArguments are built, because building them joins the process group: without
    MASTER_ADDR that fails with a message about multinode launches, and without the other processes it waits.
    """
    try:
        announced = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment is not an integer"
        ) from None
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if announced > 1 and missing:
        raise UsageError(
            f"WORLD_SIZE={announced} in the environment but this process was not started by a distributed "
            f"launcher ({', '.join(missing)} unset), so it is not part of a {announced}-process group; "
            f"{_LAUNCH_HINT}"
        )


def check_launch(training_args) -> None:
    """After the TrainingArguments exist: the process group they joined has the announced size."""
    check_launch_environment()
    announced = int(os.environ.get("WORLD_SIZE", "1"))
    if announced > 1 and training_args.world_size != announced:
        raise UsageError(
            f"WORLD_SIZE={announced} in the environment but this process is not part of a {announced}-process "
            f"group (it sees world_size={training_args.world_size}); {_LAUNCH_HINT}"
        )

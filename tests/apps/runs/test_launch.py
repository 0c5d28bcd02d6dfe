"""hf_losses.apps.runs.launch: several announced processes must be joined in one group (2-process runs:
tests/test_distributed.py)."""

from __future__ import annotations

import pytest

from hf_losses.apps.runs import UsageError
from hf_losses.apps.runs.launch import check_launch, check_launch_environment


@pytest.fixture
def env(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_process_and_a_launched_group_pass(env):
    check_launch_environment()
    for name, value in dict(WORLD_SIZE="2", RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500").items():
        env.setenv(name, value)
    check_launch_environment()


@pytest.mark.parametrize(
    "variables, fragments",
    [
        (dict(WORLD_SIZE="two"), ["WORLD_SIZE='two'", "not an integer"]),
        (
            dict(WORLD_SIZE="2", RANK="0"),
            ["WORLD_SIZE=2", "MASTER_ADDR, MASTER_PORT unset", "accelerate launch"],
        ),
    ],
)
def test_an_announced_group_without_a_launcher_is_refused(env, variables, fragments):
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(UsageError) as error:
        check_launch_environment()
    assert all(fragment in str(error.value) for fragment in fragments)


def test_a_group_of_another_size_is_refused(env):
    for name, value in dict(WORLD_SIZE="4", RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500").items():
        env.setenv(name, value)

    class Args:
        world_size = 2

    with pytest.raises(UsageError, match="4-process group .*world_size=2"):
        check_launch(Args())

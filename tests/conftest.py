import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    """Deterministic torch RNG for every test."""
    torch.manual_seed(0)
    yield

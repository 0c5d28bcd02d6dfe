import pytest
import torch

from tests.helpers.fake_hub import FakeHub


@pytest.fixture(autouse=True)
def _seed_torch():
    """Deterministic torch RNG for every test."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    """The Hub, faked for the whole push path (see tests/helpers/fake_hub.py)."""
    return FakeHub().install(monkeypatch)

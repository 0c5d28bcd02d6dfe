"""Every transformers method our trainers override still exists upstream, with parameters ours accept.

The trainers override a few private Trainer methods (``_save``, ``_finalize_training``, ...). If a
transformers release renamed or dropped one, our override would silently never run; this test names it.
"""

from __future__ import annotations

import inspect

import pytest
import transformers

from hf_losses import EncouragingCausalLMTrainer, EncouragingSeq2SeqTrainer, MultiLabelTrainer

# our own private helpers (not overrides): the only underscore methods a transformers base may lack
OWN_HELPERS = {"_stat_sums", "_record", "_reduce_sum", "_pop_means", "_check_fused_lm_head"}


def defined_by_us(trainer: type) -> dict[str, object]:
    """The functions the hf_losses classes in ``trainer``'s MRO define, by name (the most derived one)."""
    found: dict[str, object] = {}
    for cls in trainer.__mro__:
        if not cls.__module__.startswith("hf_losses"):
            continue
        for name, value in vars(cls).items():
            if inspect.isfunction(value) and not (name.startswith("__") and name.endswith("__")):
                found.setdefault(name, value)
    return found


def upstream_base(trainer: type) -> type:
    return next(cls for cls in trainer.__mro__ if cls.__module__.startswith(("transformers", "trl")))


@pytest.mark.parametrize(
    "trainer",
    [EncouragingSeq2SeqTrainer, MultiLabelTrainer, EncouragingCausalLMTrainer],
    ids=lambda t: t.__name__,
)
def test_private_overrides_still_exist_upstream_with_compatible_parameters(trainer):
    base = upstream_base(trainer)
    ours = defined_by_us(trainer)
    private = {name for name in ours if name.startswith("_")} - OWN_HELPERS
    assert private, "the trainers override private methods: this test should see some"
    missing = sorted(name for name in private if not hasattr(base, name))
    assert not missing, f"{base.__name__} (transformers {transformers.__version__}) no longer has {missing}"
    for name, function in ours.items():
        if not hasattr(base, name) or not callable(getattr(base, name)):
            continue
        theirs = inspect.signature(getattr(base, name)).parameters
        mine = inspect.signature(function).parameters
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in mine.values()):
            continue  # forwards whatever it is given
        required = [
            n
            for n, p in theirs.items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        assert set(required) <= set(mine), f"{trainer.__name__}.{name} lacks {set(required) - set(mine)}"

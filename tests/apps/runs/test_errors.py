"""hf_losses.apps.runs.errors: a user error is one line on stderr and exit status 2; HF_LOSSES_DEBUG=1 shows it all."""

from __future__ import annotations

import sys

import pytest

from hf_losses.apps.runs import NoMetricsError, UsageError, one_line_errors
from hf_losses.data import DataError


@pytest.mark.parametrize("error", [UsageError, DataError, NoMetricsError, FileNotFoundError])
def test_user_errors_are_one_line_and_exit_2(monkeypatch, capsys, error):
    monkeypatch.delenv("HF_LOSSES_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["/path/to/classify.py"])
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        raise error("--loss must be one of bce, apl;\n   got 'xl'")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "classify.py: error: --loss must be one of bce, apl; got 'xl'\n"


def test_debug_shows_the_exception(monkeypatch):
    monkeypatch.setenv("HF_LOSSES_DEBUG", "1")
    with pytest.raises(UsageError, match="bad"), one_line_errors():
        raise UsageError("bad")


def test_a_bug_is_not_hidden(monkeypatch):
    monkeypatch.delenv("HF_LOSSES_DEBUG", raising=False)
    with pytest.raises(KeyError), one_line_errors():
        raise KeyError("a bug, with its traceback")

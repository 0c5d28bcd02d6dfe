"""The scripts' error contract: a user error is one line on stderr and exit status 2.

Set ``HF_LOSSES_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hf_losses.data import DataError
from hf_losses.trainers.common import NonFiniteLossError

DEBUG_ENV = "HF_LOSSES_DEBUG"
USAGE_EXIT_STATUS = 2


class UsageError(ValueError):
    """A bad command line, recipe or environment, reported as one line."""


class NoMetricsError(ValueError):
    """An evaluation produced neither a loss nor any score: its result would be empty, not a success."""


ONE_LINE_ERRORS = (UsageError, DataError, ValueError, FileNotFoundError, NonFiniteLossError)


def report_error(err: BaseException, prog: str | None = None) -> int:
    """Print `err` as ``<prog>: error: <message>`` (one line) on stderr and return the exit status 2; with
    HF_LOSSES_DEBUG=1 raise it instead. `prog` defaults to the running script's name."""
    if os.environ.get(DEBUG_ENV):
        raise err
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"{prog or Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    return USAGE_EXIT_STATUS


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn user errors raised inside into ``<script>: error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except ONE_LINE_ERRORS as err:
        sys.exit(report_error(err))

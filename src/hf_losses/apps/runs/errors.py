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


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn user errors raised inside into ``<script>: error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except ONE_LINE_ERRORS as err:
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
        sys.exit(USAGE_EXIT_STATUS)

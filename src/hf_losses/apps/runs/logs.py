"""Logging as in transformers' examples: info on the main process, warnings elsewhere."""

from __future__ import annotations

import logging
import os
import sys

import datasets
import transformers

from .errors import DEBUG_ENV

logger = logging.getLogger("hf_losses")

# datasets' file builders log an error right before raising it; load_raw_datasets reports the same problem
# as one DataError line, so the logged copy only doubles the message (it is kept with HF_LOSSES_DEBUG=1).
_FILE_BUILDERS = ("json", "csv", "parquet")


class _DropBuilderErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def setup_logging(training_args) -> None:
    """Levels from --log_level/--log_level_replica; our own progress messages show on the main process."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    passive = training_args.log_level == "passive" and training_args.should_log
    logger.setLevel(min(level, logging.INFO) if passive else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    if not os.environ.get(DEBUG_ENV):
        for builder in _FILE_BUILDERS:
            builder_logger = logging.getLogger(f"datasets.packaged_modules.{builder}.{builder}")
            if not any(isinstance(f, _DropBuilderErrors) for f in builder_logger.filters):
                builder_logger.addFilter(_DropBuilderErrors())

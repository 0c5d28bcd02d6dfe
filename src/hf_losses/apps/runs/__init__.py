"""The scripts' shared run: arguments and recipes, the error contract, launch/resume/Hub checks, the skeleton."""

from .arguments import DataSourceArguments, ModelSourceArguments, RecipeParser, RunArguments, check_positive
from .errors import NoMetricsError, UsageError, one_line_errors
from .outputs import replaced_atomically, split_file, write_json, write_lines
from .skeleton import TaskRun, predict

__all__ = [
    "DataSourceArguments",
    "ModelSourceArguments",
    "NoMetricsError",
    "RecipeParser",
    "RunArguments",
    "TaskRun",
    "UsageError",
    "check_positive",
    "one_line_errors",
    "predict",
    "replaced_atomically",
    "split_file",
    "write_json",
    "write_lines",
]

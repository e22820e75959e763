"""Permanent failures: input data or settings a workload cannot use, told apart from crashes.

A workload raises `InvalidInput` (or a subclass, such as the readers' `DataFileError`) when running it
again cannot help: a file that is not data, a setting the data cannot satisfy. The entry point then
exits with `INVALID_INPUT_EXIT_CODE` and writes the reason `InvalidInput` into its termination
document, and both drivers fail the resource at once instead of spending `spec.retries` on it. Every
other exception is a crash, which is retried.
"""

from __future__ import annotations

import traceback

from posttrain.api.workload import INVALID_INPUT_EXIT_CODE, INVALID_INPUT_REASON
from pydantic import ValidationError

from posttrain_trainer.common.report import write_failure


class InvalidInput(RuntimeError):
    """The input data or the settings are unusable; the message says what is wrong and where."""


def is_permanent(error: BaseException) -> bool:
    """True when retrying cannot help: invalid input data or an invalid workload config."""
    return isinstance(error, InvalidInput | ValidationError)


def report_failure(error: BaseException) -> int:
    """Print the traceback, write the termination document, and return the exit code for `error`."""
    traceback.print_exc()
    permanent = is_permanent(error)
    write_failure(error, INVALID_INPUT_REASON if permanent else None)
    return INVALID_INPUT_EXIT_CODE if permanent else 1

"""Permanent failures: input data or settings a workload cannot use, told apart from crashes.

A workload raises `InvalidInput` (or a subclass, such as the readers' `DataFileError`) when running it
again cannot help: a file that is not data, a setting the data cannot satisfy. The entry point then
exits with `INVALID_INPUT_EXIT_CODE` and writes the reason `InvalidInput` into its termination
document, and both drivers fail the resource at once instead of spending `spec.retries` on it. Every
other exception is a crash, which is retried.
"""

from __future__ import annotations

import json
import traceback

from posttrain.api.workload import INVALID_INPUT_EXIT_CODE, INVALID_INPUT_REASON, FailureDocument
from pydantic import ValidationError

from posttrain_trainer.common.report import write_termination_message

MESSAGE_LIMIT = 3000
"""Characters of the error message kept in the termination document."""


class InvalidInput(RuntimeError):
    """The input data or the settings are unusable; the message says what is wrong and where."""


def is_permanent(error: BaseException) -> bool:
    """True when retrying cannot help: invalid input data or an invalid workload config."""
    return isinstance(error, InvalidInput | ValidationError)


def report_failure(error: BaseException) -> int:
    """Print the traceback, write the termination document, and return the exit code for `error`."""
    traceback.print_exc()
    permanent = is_permanent(error)
    text = str(error) if isinstance(error, InvalidInput) else f"{type(error).__name__}: {error}"
    document = FailureDocument(error=text[:MESSAGE_LIMIT], reason=INVALID_INPUT_REASON if permanent else None)
    write_termination_message(json.dumps(document.wire(), sort_keys=True))
    return INVALID_INPUT_EXIT_CODE if permanent else 1

"""The data workload's own failure: a problem with the data or the settings, stated for the user."""

from __future__ import annotations

from posttrain_trainer.common.failures import InvalidInput


class DataError(InvalidInput):
    """The run cannot go on with this data and these settings; the message says why and what to do.

    A permanent failure: the workload exits with the invalid-input code and is not retried.
    """

"""The data workload's own failure: a problem with the data or the settings, stated for the user."""

from __future__ import annotations


class DataError(RuntimeError):
    """The run cannot go on with this data and these settings; the message says why and what to do."""

"""Failures that no retry can fix: the input or the configuration is wrong, and the message says how."""

from __future__ import annotations


class InvalidInput(ValueError):
    """The run cannot succeed with this spec or data; the message names the field or file at fault and
    what to change."""

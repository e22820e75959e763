"""Timestamps as the Kubernetes API writes them: RFC 3339 in UTC, whole seconds (`2026-01-02T03:04:05Z`)."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def timestamp(now: datetime | float | None = None) -> str:
    """`now` (a datetime, Unix seconds, or the current time) as `YYYY-MM-DDTHH:MM:SSZ`.

    A naive datetime is taken as UTC (as the plan's clock gives it), an aware one converted to UTC.
    """
    if now is None:
        now = datetime.now(UTC)
    elif not isinstance(now, datetime):
        now = datetime.fromtimestamp(now, UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).strftime(FORMAT)


def parse(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (UTC when it names no offset).

    Raises:
        ValueError: when the value is not a timestamp.
    """
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def seconds(value: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp; None for None, an empty or an unreadable value."""
    if not value:
        return None
    try:
        return parse(value).timestamp()
    except ValueError:
        return None

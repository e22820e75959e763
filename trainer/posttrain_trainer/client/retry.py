"""When to retry a request to a teacher and how long to wait first: pure functions.

Retried: 429 (rate limited), 408, every 5xx, timeouts, transport errors (connection reset, refused)
and malformed replies (a body that is not the OpenAI JSON). Not retried: the other 4xx, which a
second identical request would only repeat. The delay is exponential with full jitter (so many
clients that failed together do not come back together), and never shorter than the server's
`Retry-After`.
"""

from __future__ import annotations

import email.utils
import random
import time

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
"""4xx statuses worth retrying; every 5xx is retried as well."""


def is_retryable_status(status: int) -> bool:
    """True for a status that a later identical request may not get."""
    return status >= 500 or status in RETRYABLE_STATUS


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date), or None.

    Args:
        value: the header's value.
        now: the current Unix time, for HTTP dates (defaults to the clock).

    Returns:
        The non-negative delay, or None if the header is absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    max_retry_after: float = 600.0,
) -> float:
    """Delay before retry number `attempt` (0 for the first retry).

    Full jitter: uniform in [0, min(cap, base * 2**attempt)]; a server's `Retry-After` is a lower
    bound (up to `max_retry_after`, so a broken header cannot stall a run for hours).

    Args:
        attempt: how many retries came before this one.
        base: the first ceiling, in seconds.
        cap: the largest ceiling.
        retry_after: the server's requested delay, if any.
        rng: the random source (tests pass a seeded one).
        max_retry_after: upper bound applied to `retry_after`.

    Returns:
        Seconds to sleep.
    """
    ceiling = min(cap, base * (2.0 ** min(attempt, 62)))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return delay

"""The async OpenAI-compatible client shared by the evol and align workloads, and the run journal.

- `Teachers(endpoints, concurrency, timeout, max_retries, sampling)`:
  `await teachers.chat(participant, messages, **sampling) -> Reply(text, usage, ...)`, raising
  `RequestFailed` when a request cannot succeed; `teachers.stats` / `teachers.metrics()` count
  requests, retries, failures and tokens per participant.
- `Journal(path, key_field)`: an append-only JSONL checkpoint of finished records (`done(key)`,
  `append(record)`, `records()`), so a killed run resumes without losing or repeating a record.
"""

from posttrain_trainer.client.journal import Journal
from posttrain_trainer.client.retry import backoff_delay, is_retryable_status, parse_retry_after
from posttrain_trainer.client.teachers import (
    SAMPLING_KEYS,
    ParticipantStats,
    Reply,
    RequestFailed,
    Slots,
    Teachers,
    Usage,
    parse_completion,
)

__all__ = [
    "SAMPLING_KEYS",
    "Journal",
    "ParticipantStats",
    "Reply",
    "RequestFailed",
    "Slots",
    "Teachers",
    "Usage",
    "backoff_delay",
    "is_retryable_status",
    "parse_completion",
    "parse_retry_after",
]

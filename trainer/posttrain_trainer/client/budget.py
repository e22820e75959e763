"""What a run may still spend: tokens per participant, requests, GPU-hours and wall time (`spec.budget`).

`evol.caller.Caller` asks `exhausted(participant)` before sending a request to a model and `charge`s
the reply's tokens after it. A request over the budget is not sent: the caller treats it as not
answered, so the workload finishes with what it has, and its result says which limit was reached
(`Result.budget_exhausted`). Replies replayed from the run's journal or the model-call cache cost
nothing; the spending of earlier attempts of the same run is charged again from the journal when a
restarted attempt opens it, so a retry cannot spend the budget twice. Requests already in flight when
the limit is reached still finish: the overshoot is at most one request per slot of concurrency.

Inputs: the spec's `Budget` (or None), the run's start time and its GPUs. Outputs: the first limit
reached, and usage metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from posttrain.api import metrics
from posttrain.api.common import Budget
from posttrain.support.times import seconds

ANY_PARTICIPANT = "*"
"""The key of `budget.tokens` that limits every participant not named."""


class BudgetTracker:
    """Spending of one run against its budget.

    Args:
        budget: the limits (None: no limit; usage is still measured).
        started_at: the run's start (RFC 3339); None: now.
        gpus: GPUs the run holds.
        clock: the current Unix time (tests pass their own).
    """

    def __init__(
        self,
        budget: Budget | None,
        started_at: str | None = None,
        gpus: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budget = budget or Budget()
        self.clock = clock
        started = seconds(started_at)
        self.started = clock() if started is None else started
        self.gpus = gpus
        self.tokens: dict[str, int] = {}
        self.requests = 0
        self.reached: str | None = None
        """The first limit found reached (the message of `Result.budget_exhausted`)."""

    @property
    def limited(self) -> bool:
        """True when any limit is set."""
        budget = self.budget
        limits = (budget.requests, budget.gpu_hours, budget.wall_seconds)
        return bool(budget.tokens) or any(limit is not None for limit in limits)

    def charge(self, participant: str, tokens: int) -> None:
        """Count one request answered by a model and its tokens (prompt and completion)."""
        self.requests += 1
        self.tokens[participant] = self.tokens.get(participant, 0) + tokens

    def wall_seconds(self) -> float:
        """Seconds since the run started."""
        return max(self.clock() - self.started, 0.0)

    def gpu_hours(self) -> float:
        """GPU-hours held so far."""
        return self.gpus * self.wall_seconds() / 3600.0

    def exhausted(self, participant: str) -> str | None:
        """Which limit forbids another request to `participant`, or None; remembers the first one."""
        found = self._limit(participant)
        if found is not None and self.reached is None:
            self.reached = found
        return found

    def _limit(self, participant: str) -> str | None:
        budget = self.budget
        if budget.requests is not None and self.requests >= budget.requests:
            return f"requests: {self.requests} of {budget.requests}"
        limit = budget.tokens.get(participant, budget.tokens.get(ANY_PARTICIPANT))
        used = self.tokens.get(participant, 0)
        if limit is not None and used >= limit:
            return f"tokens of {participant}: {used} of {limit}"
        if budget.wall_seconds is not None and self.wall_seconds() >= budget.wall_seconds:
            return f"wall time: {self.wall_seconds():.0f} of {budget.wall_seconds} seconds"
        if budget.gpu_hours is not None and self.gpus and self.gpu_hours() >= budget.gpu_hours:
            return f"GPU-hours: {self.gpu_hours():.3f} of {budget.gpu_hours:g}"
        return None

    def metrics(self) -> dict[str, float]:
        """`usage.wallSeconds`, `usage.gpuHours` and `budget.exhausted` for the result document."""
        return {
            metrics.USAGE_WALL_SECONDS: round(self.wall_seconds(), 3),
            metrics.USAGE_GPU_HOURS: round(self.gpu_hours(), 6),
            metrics.BUDGET_EXHAUSTED: 1.0 if self.reached else 0.0,
        }

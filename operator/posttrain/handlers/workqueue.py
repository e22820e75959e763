"""A work queue like controller-runtime's, with priorities.

Each key is at most once in the queue, never processed by two workers at once, and re-queued after a
delay or, on errors, with exponential backoff.

kopf runs one handler per object event; reconciling from a queue instead lets events of children,
inputs and timers collapse into one reconcile, with a bounded number of workers.

Keys carry a priority (0 first): the operator queues resources that are blocked on their inputs at a
lower priority than those that can start or finish work, so a burst of a thousand new pipelines starts
the thousand first stages before it writes `Waiting` on the four thousand that follow them. Within a
priority, keys are taken in the order they were queued.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class WorkQueue:
    """Deduplicating queue of keys processed by `workers` tasks."""

    def __init__(
        self,
        handler: Callable[[Hashable], Awaitable[float | None]],
        workers: int = 4,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        """A queue whose `workers` tasks call `handler(key)`; it returns when to look again, or None."""
        self.handler = handler
        self.workers = workers
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._heap: list[tuple[int, int, Hashable]] = []
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self._queued: dict[Hashable, int] = {}
        """Queued keys and their priority (the heap may hold stale entries of a raised priority)."""
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        """Whether the workers run."""
        return bool(self._tasks)

    def start(self) -> None:
        """Start the workers in the running loop."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name=f"posttrain-worker-{i}") for i in range(self.workers)
            ]

    async def stop(self) -> None:
        """Cancel the workers and pending timers."""
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def add(self, key: Hashable, priority: int = 0) -> None:
        """Queue the key now (once, however often it is added; at the most urgent priority asked)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty[key] = min(priority, self._dirty.get(key, priority))
            return
        queued = self._queued.get(key)
        if queued is not None and queued <= priority:
            return
        self._queued[key] = priority
        heapq.heappush(self._heap, (priority, next(self._order), key))
        self._ready.set()

    async def _take(self) -> Hashable:
        """The most urgent queued key (waits while there is none)."""
        while True:
            while self._heap:
                priority, _, key = heapq.heappop(self._heap)
                if self._queued.get(key) == priority:  # else superseded by a more urgent entry
                    del self._queued[key]
                    return key
            self._ready.clear()
            await self._ready.wait()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue the key after `delay` seconds, unless it is queued sooner."""
        existing = self._timers.get(key)
        loop = asyncio.get_running_loop()
        if existing is not None and existing.when() <= loop.time() + delay:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Hashable) -> None:
        """Drop timers and failure counts of a deleted key."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    def __len__(self) -> int:
        """Keys queued or being processed."""
        return len(self._queued) + len(self._processing)

    async def _work(self) -> None:
        while True:
            key = await self._take()
            self._processing.add(key)
            try:
                requeue = await self.handler(key)
                self._failures.pop(key, None)
                if requeue is not None:
                    self.add_after(key, requeue)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self.base_backoff * 2 ** (failures - 1), self.max_backoff)
                log.exception("reconcile of %s failed (%d in a row); retrying in %.1fs", key, failures, delay)
                self.add_after(key, delay)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self.add(key, self._dirty.pop(key))

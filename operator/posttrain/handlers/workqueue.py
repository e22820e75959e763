"""A work queue like controller-runtime's: each key at most once in the queue, never processed by two
workers at once, re-queued after a delay or, on errors, with exponential backoff.

kopf runs one handler per object event; reconciling from a queue instead lets events of children,
inputs and timers collapse into one reconcile, with a bounded number of workers.
"""

from __future__ import annotations

import asyncio
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
        self.handler = handler
        self.workers = workers
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
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

    def add(self, key: Hashable) -> None:
        """Queue the key now (once, however often it is added)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

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
        return len(self._queued) + len(self._processing)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
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
                    self._dirty.discard(key)
                    self.add(key)

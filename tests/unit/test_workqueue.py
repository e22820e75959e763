"""The operator's work queue: deduplication, one worker per key, priorities, delays, error backoff."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable

from posttrain.handlers.workqueue import WorkQueue


class Recorder:
    def __init__(self, fail: set[Hashable] | None = None, hold: float = 0.0) -> None:
        self.seen: list[Hashable] = []
        self.running: set[Hashable] = set()
        self.overlaps = 0
        self.fail = fail or set()
        self.hold = hold

    async def __call__(self, key: Hashable) -> float | None:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        self.seen.append(key)
        await asyncio.sleep(self.hold)
        self.running.discard(key)
        if key in self.fail:
            raise RuntimeError(f"{key} failed")
        return None


async def drain(queue: WorkQueue, seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)
    await queue.stop()


def test_keys_are_deduplicated_and_taken_by_priority_then_in_order() -> None:
    async def scenario() -> list[Hashable]:
        recorder = Recorder()
        queue = WorkQueue(recorder, workers=1)
        for key, priority in [("a", 1), ("b", 0), ("a", 1), ("c", 1), ("d", 0), ("b", 0)]:
            queue.add(key, priority)
        assert len(queue) == 4
        queue.start()
        await drain(queue)
        return recorder.seen

    assert asyncio.run(scenario()) == ["b", "d", "a", "c"]


def test_a_key_queued_again_more_urgently_moves_up_once() -> None:
    async def scenario() -> list[Hashable]:
        recorder = Recorder()
        queue = WorkQueue(recorder, workers=1)
        queue.add("slow", 1)
        queue.add("other", 1)
        queue.add("slow", 0)  # e.g. its input just succeeded
        queue.add("slow", 1)  # a later low-priority add does not demote it
        queue.start()
        await drain(queue)
        return recorder.seen

    assert asyncio.run(scenario()) == ["slow", "other"]


def test_a_key_is_never_reconciled_by_two_workers_and_a_change_meanwhile_is_not_lost() -> None:
    async def scenario() -> Recorder:
        recorder = Recorder(hold=0.05)
        queue = WorkQueue(recorder, workers=4)
        queue.start()
        queue.add("k")
        await asyncio.sleep(0.01)  # "k" is being reconciled
        queue.add("k")
        queue.add("k")
        await drain(queue, 0.3)
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.overlaps == 0
    assert recorder.seen == ["k", "k"]  # once more after the running pass, not twice


def test_failures_are_retried_with_growing_delays_and_requeue_after_waits() -> None:
    async def scenario() -> tuple[list[Hashable], list[float]]:
        recorder = Recorder(fail={"bad"})
        queue = WorkQueue(recorder, workers=2, base_backoff=0.05, max_backoff=0.1)
        queue.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        times: list[float] = []
        original = recorder.__call__

        async def timed(key: Hashable) -> float | None:
            if key == "bad":
                times.append(loop.time() - started)
            return await original(key)

        queue.handler = timed
        queue.add("bad")
        queue.add_after("later", 0.1)
        queue.add_after("later", 0.5)  # a later timer does not postpone an earlier one
        for _ in range(500):  # until three attempts of "bad" (at most 5 s on a loaded machine)
            if len(times) >= 3 and "later" in recorder.seen:
                break
            await asyncio.sleep(0.01)
        await queue.stop()
        return recorder.seen, times

    seen, times = asyncio.run(scenario())
    assert seen.count("later") == 1
    assert len(times) >= 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 0.05 then 0.1 (capped)


def test_forget_drops_the_timer_of_a_deleted_key() -> None:
    async def scenario() -> list[Hashable]:
        recorder = Recorder()
        queue = WorkQueue(recorder, workers=1)
        queue.start()
        queue.add_after("gone", 0.05)
        queue.forget("gone")
        await drain(queue, 0.15)
        return recorder.seen

    assert asyncio.run(scenario()) == []

"""The OpenAI-compatible client: retries, backoff, Retry-After, timeouts, accounting, the journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.workload import Endpoint
from posttrain_trainer.client import (
    Journal,
    RequestFailed,
    Teachers,
    backoff_delay,
    is_retryable_status,
    parse_completion,
    parse_retry_after,
)
from posttrain_trainer.client.teachers import Slots, _Retryable

from tests.support.fake_openai import FakeOpenAI
from tests.support.fault_proxy import FaultProxy

MESSAGES = [{"role": "user", "content": "Q"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    """One fast fake OpenAI server for the module; replies echo nothing, usage is 8/4 tokens."""
    with FakeOpenAI(text="ok") as server:
        yield server


@contextlib.contextmanager
def teachers_via(upstream: FakeOpenAI, **proxy: Any) -> Iterator[tuple[FaultProxy, dict[str, Endpoint]]]:
    with FaultProxy(upstream.base_url, **proxy) as fault_proxy:
        endpoints = {
            "a": Endpoint(base_url=fault_proxy.base_url, model="model-a"),
            "b": Endpoint(base_url=fault_proxy.base_url + "/", model="model-b"),
        }
        yield fault_proxy, endpoints


def make(endpoints: dict[str, Endpoint], **kwargs: Any) -> Teachers:
    kwargs.setdefault("backoff_base", 0.001)
    kwargs.setdefault("backoff_max", 0.002)
    return Teachers(endpoints, seed=0, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_success_sends_model_and_sampling_and_counts_tokens(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream) as (proxy, endpoints):

        async def go() -> Any:
            async with make(endpoints, sampling={"b": {"temperature": 0.0, "max_tokens": 9}}) as teachers:
                reply = await teachers.chat("b", MESSAGES, max_tokens=4)
                return reply, teachers.metrics()

        reply, metrics = run(go())
        request = proxy.seen[-1]
    assert reply.text == "ok" and reply.usage.prompt_tokens == 8 and reply.attempts == 1
    assert reply.finish_reason == "stop" and reply.participant == "b"
    assert request.path == "/v1/chat/completions"
    assert json.loads(request.body) == {
        "model": "model-b",
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_tokens": 4,
    }
    assert metrics["tokens.prompt.b"] == 8 and metrics["tokens.completion.b"] == 4
    assert (
        metrics["requests.sent"] == 1 and metrics["requests.sent.a"] == 0 and metrics["requests.retried"] == 0
    )


@pytest.mark.parametrize("fault", ["500", "503", "429", "timeout", "reset", "malformed", "lost"])
def test_retryable_failures_are_retried(upstream: FakeOpenAI, fault: str) -> None:
    with teachers_via(upstream, script=[fault, fault], hang_seconds=5.0) as (proxy, endpoints):

        async def go() -> Any:
            async with make(endpoints, timeout=0.5) as teachers:
                return await teachers.chat("a", MESSAGES), teachers.stats["a"]

        reply, stats = run(go())
        assert proxy.counters()["requests"] == 3 and proxy.counters()["faults"] == {fault: 2}
    assert reply.text == "ok" and reply.attempts == 3
    assert stats.retries == 2 and stats.requests == 1 and stats.failures == 0
    assert sum(stats.errors.values()) == 2


def test_client_errors_fail_at_once(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream, script=["400"]) as (proxy, endpoints):

        async def go() -> None:
            async with make(endpoints) as teachers:
                with pytest.raises(RequestFailed) as info:
                    await teachers.chat("a", MESSAGES)
                assert info.value.reason == "status-400" and info.value.attempts == 1
                assert teachers.stats["a"].failures == 1 and teachers.stats["a"].errors == {"status-400": 1}

        run(go())
        assert proxy.counters()["requests"] == 1


def test_retries_are_bounded(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream, script=["503"] * 5) as (proxy, endpoints):

        async def go() -> None:
            async with make(endpoints, max_retries=3) as teachers:
                with pytest.raises(RequestFailed) as info:
                    await teachers.chat("a", MESSAGES)
                assert info.value.attempts == 4 and info.value.reason == "status-503"
                assert (
                    teachers.metrics()["requests.failed"] == 1 and teachers.metrics()["requests.retried"] == 3
                )

        run(go())
        assert proxy.counters()["requests"] == 4


def test_retry_after_is_honoured(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream, script=["429"], retry_after=0.3) as (_, endpoints):

        async def go() -> float:
            loop = asyncio.get_running_loop()
            async with make(endpoints) as teachers:
                start = loop.time()
                await teachers.chat("a", MESSAGES)
                return loop.time() - start

        # The backoff alone is at most 2 ms here; only the header explains a longer wait.
        assert run(go()) >= 0.29


def test_whole_request_timeout_is_enforced(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream, script=["timeout"], hang_seconds=5.0) as (_, endpoints):

        async def go() -> Any:
            loop = asyncio.get_running_loop()
            async with make(endpoints, timeout=0.3) as teachers:
                start = loop.time()
                reply = await teachers.chat("a", MESSAGES)
                return reply, teachers.stats["a"], loop.time() - start

        reply, stats, elapsed = run(go())
    assert reply.text == "ok" and stats.errors == {"timeout": 1}
    assert elapsed < 4.0  # gave up on the hanging attempt long before the proxy let go


def test_concurrency_is_bounded(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream, delay=0.02) as (proxy, endpoints):

        async def go() -> None:
            async with make(endpoints, concurrency=5) as teachers:
                await asyncio.gather(*(teachers.chat("a", MESSAGES) for _ in range(40)))
                assert teachers.stats["a"].requests == 40

        run(go())
        assert proxy.counters()["peak_in_flight"] == 5


def test_api_key_comes_from_the_environment(upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    with teachers_via(upstream) as (proxy, endpoints):
        keyed = {"x": Endpoint(base_url=endpoints["a"].base_url, model="m", api_key_env="X_KEY")}
        monkeypatch.delenv("X_KEY", raising=False)
        with pytest.raises(ValueError, match="X_KEY"):
            Teachers(keyed)
        monkeypatch.setenv("X_KEY", "secret-1")

        async def go() -> None:
            async with Teachers(keyed) as teachers:
                await teachers.chat("x", MESSAGES)

        run(go())
        assert proxy.seen[-1].headers["authorization"] == "Bearer secret-1"


def test_unknown_participant_and_sampling_field(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream) as (_, endpoints):

        async def go() -> None:
            async with make(endpoints) as teachers:
                with pytest.raises(KeyError, match="nobody"):
                    await teachers.chat("nobody", [])
                with pytest.raises(TypeError, match="logprobs"):
                    await teachers.chat("a", [], logprobs=True)

        run(go())


def test_slots_hand_over_in_order_and_survive_cancellation() -> None:
    async def go() -> list[int]:
        slots = Slots(1)
        order: list[int] = []
        await slots.acquire()

        async def worker(number: int) -> None:
            async with slots:
                order.append(number)
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(worker(n)) for n in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()  # a cancelled waiter must not swallow the slot
        slots.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(slots.acquire(), 1.0)  # the slot came back
        return order

    assert run(go()) == [0, 2, 3]


def test_parse_completion_tolerates_missing_usage_and_null_content() -> None:
    reply = parse_completion("a", json.dumps({"choices": [{"message": {"content": None}}]}).encode())
    assert reply.text == "" and reply.usage.prompt_tokens == 0 and reply.finish_reason is None
    for body in (
        b"",
        b"[]",
        b'{"choices": [{"message": "x"}]}',
        b'{"choices": [{"message": {"content": 3}}]}',
    ):
        with pytest.raises(_Retryable):
            parse_completion("a", body)


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(10.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 10.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
    assert backoff_delay(0, 0.5, 10.0, retry_after=4.0, rng=rng) >= 4.0
    assert backoff_delay(0, 0.5, 10.0, retry_after=1e9, rng=rng, max_retry_after=60.0) <= 60.0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_retryable_statuses() -> None:
    assert all(is_retryable_status(s) for s in (429, 408, 500, 502, 503, 504))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 422))


def test_journal_appends_once_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "run" / "journal.jsonl"
    with Journal(path) as journal:
        assert journal.append({"key": "a", "value": 1})
        assert not journal.append({"key": "a", "value": 2})
        assert journal.append({"key": "b", "value": 3})
    with Journal(path) as journal:
        assert journal.done("a") and "b" in journal and not journal.done("c")
        assert journal.get("a") == {"key": "a", "value": 1}
        assert not journal.append({"key": "b", "value": 9})
        assert journal.append({"key": "c", "value": 4})
        assert journal.keys() == ["a", "b", "c"]
    assert len(path.read_text().splitlines()) == 3
    with pytest.raises(KeyError):
        Journal(path).append({"value": 1})


def test_journal_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}\n{"key": "c", "v"')
    with Journal(path) as journal:
        assert journal.keys() == ["a", "b"] and journal.dropped == 1
        assert journal.append({"key": "c", "v": 3})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["a", "b", "c"]


def test_journal_skips_garbage_lines_and_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"key": "a", "v": 1}\nnot json\n[1]\n{"key": "a", "v": 2}\n\n')
    journal = Journal(path, durable=True)
    assert len(journal) == 1 and journal.get("a") == {"key": "a", "v": 1} and journal.dropped == 2
    journal.close()


def test_journal_custom_key_field(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.jsonl", key_field="id") as journal:
        assert journal.append({"id": "x"}) and journal.done("x")
        assert [r["id"] for r in journal.records()] == ["x"]


def test_a_cancelled_request_gives_its_slot_back(upstream: FakeOpenAI) -> None:
    with teachers_via(upstream, script=["timeout"], hang_seconds=5.0) as (_, endpoints):

        async def go() -> str:
            async with make(endpoints, concurrency=1, timeout=30) as teachers:
                hanging = asyncio.create_task(teachers.chat("a", MESSAGES))
                await asyncio.sleep(0.2)
                hanging.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hanging
                reply = await asyncio.wait_for(teachers.chat("a", MESSAGES), 3.0)
                return reply.text

        assert run(go()) == "ok"

"""The OpenAI-compatible client: retries, backoff, Retry-After, timeouts, accounting, the journal."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
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
from posttrain_trainer.client.teachers import _Retryable


def completion(text: str = "hello", prompt: int = 3, completion_tokens: int = 2) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens},
    }


ENDPOINTS = {
    "a": Endpoint(base_url="http://a.test/v1", model="model-a"),
    "b": Endpoint(base_url="http://b.test/v1/", model="model-b"),
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def scripted(responses: list[Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    """A transport answering with the next scripted item: a Response, or an exception to raise."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handler)


def make(transport: httpx.AsyncBaseTransport, **kwargs: Any) -> Teachers:
    kwargs.setdefault("backoff_base", 0.001)
    kwargs.setdefault("backoff_max", 0.002)
    return Teachers(ENDPOINTS, transport=transport, seed=0, **kwargs)


def test_success_sends_model_and_sampling_and_counts_tokens() -> None:
    seen: list[httpx.Request] = []
    transport = scripted([httpx.Response(200, json=completion("hi", 7, 5))], seen)

    async def go() -> Any:
        async with make(transport, sampling={"b": {"temperature": 0.0, "max_tokens": 9}}) as teachers:
            reply = await teachers.chat("b", [{"role": "user", "content": "Q"}], max_tokens=4)
            return reply, teachers.metrics()

    reply, metrics = run(go())
    assert reply.text == "hi" and reply.usage.prompt_tokens == 7 and reply.attempts == 1
    assert str(seen[0].url) == "http://b.test/v1/chat/completions"
    body = json.loads(seen[0].content)
    assert body == {
        "model": "model-b",
        "messages": [{"role": "user", "content": "Q"}],
        "temperature": 0.0,
        "max_tokens": 4,
    }
    assert metrics["tokens.b.prompt"] == 7 and metrics["tokens.b.completion"] == 5
    assert metrics["requests"] == 1 and metrics["requests.a"] == 0 and metrics["retries"] == 0


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, text="boom"),
        httpx.Response(503),
        httpx.Response(429, headers={"retry-after": "0"}),
        httpx.Response(200, text="{not json"),
        httpx.Response(200, json={"choices": []}),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("closed"),
    ],
)
def test_retryable_failures_are_retried(failure: Any) -> None:
    seen: list[httpx.Request] = []
    transport = scripted([failure, failure, httpx.Response(200, json=completion("ok"))], seen)

    async def go() -> Any:
        async with make(transport) as teachers:
            return await teachers.chat("a", [{"role": "user", "content": "Q"}]), teachers.stats["a"]

    reply, stats = run(go())
    assert reply.text == "ok" and reply.attempts == 3
    assert len(seen) == 3 and stats.retries == 2 and stats.requests == 1 and stats.failures == 0


def test_client_errors_fail_at_once() -> None:
    seen: list[httpx.Request] = []
    transport = scripted([httpx.Response(400, text="bad request")], seen)

    async def go() -> None:
        async with make(transport) as teachers:
            with pytest.raises(RequestFailed) as info:
                await teachers.chat("a", [{"role": "user", "content": "Q"}])
            assert info.value.reason == "status-400" and info.value.attempts == 1
            assert teachers.stats["a"].failures == 1 and teachers.stats["a"].errors == {"status-400": 1}

    run(go())
    assert len(seen) == 1


def test_retries_are_bounded() -> None:
    seen: list[httpx.Request] = []
    transport = scripted([httpx.Response(502)] * 4, seen)

    async def go() -> None:
        async with make(transport, max_retries=3) as teachers:
            with pytest.raises(RequestFailed) as info:
                await teachers.chat("a", [{"role": "user", "content": "Q"}])
            assert info.value.attempts == 4 and info.value.reason == "status-502"
            assert teachers.metrics()["failures"] == 1 and teachers.metrics()["retries"] == 3

    run(go())
    assert len(seen) == 4


def test_retry_after_is_honoured() -> None:
    seen: list[httpx.Request] = []
    transport = scripted(
        [httpx.Response(429, headers={"retry-after": "0.3"}), httpx.Response(200, json=completion())], seen
    )

    async def go() -> float:
        loop = asyncio.get_running_loop()
        async with make(transport) as teachers:
            start = loop.time()
            await teachers.chat("a", [{"role": "user", "content": "Q"}])
            return loop.time() - start

    # The backoff alone is at most 2 ms here; only the header explains a longer wait.
    assert run(go()) >= 0.29


def test_whole_request_timeout_is_enforced() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(5)
        return httpx.Response(200, json=completion("late but fine"))

    async def go() -> Any:
        async with make(httpx.MockTransport(handler), timeout=0.2) as teachers:
            return await teachers.chat("a", [{"role": "user", "content": "Q"}]), teachers.stats["a"]

    reply, stats = run(go())
    assert reply.text == "late but fine" and stats.errors == {"timeout": 1} and calls == 2


def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=completion())

    async def go() -> None:
        async with make(httpx.MockTransport(handler), concurrency=5) as teachers:
            await asyncio.gather(*(teachers.chat("a", [{"role": "user", "content": "Q"}]) for _ in range(40)))
            assert teachers.stats["a"].requests == 40

    run(go())
    assert peak == 5


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    endpoints = {"x": Endpoint(base_url="http://x.test/v1", model="m", api_key_env="X_KEY")}
    with pytest.raises(ValueError, match="X_KEY"):
        Teachers(endpoints)
    monkeypatch.setenv("X_KEY", "secret-1")

    async def go() -> None:
        transport = scripted([httpx.Response(200, json=completion())], seen)
        async with Teachers(endpoints, transport=transport) as teachers:
            await teachers.chat("x", [{"role": "user", "content": "Q"}])

    run(go())
    assert seen[0].headers["authorization"] == "Bearer secret-1"


def test_unknown_participant_and_sampling_field() -> None:
    async def go() -> None:
        async with make(scripted([], [])) as teachers:
            with pytest.raises(KeyError, match="nobody"):
                await teachers.chat("nobody", [])
            with pytest.raises(TypeError, match="logprobs"):
                await teachers.chat("a", [], logprobs=True)

    run(go())


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

"""The async OpenAI-compatible client every workload uses to talk to teachers, students and judges.

One `Teachers` object holds the endpoints of a run (vLLM Services in a cluster, external APIs, or a
local server) and sends chat completions to them over HTTP/1.1 keep-alive connections. The transport
is aiohttp: at hundreds of requests in flight it sustains several thousand requests per second on
one core, where httpx's pool managed a few hundred (docs/bench/client.md has the figures).

- bounded concurrency: at most `concurrency` requests in flight across all participants;
- retries with exponential backoff and full jitter on 429, 408, 5xx, timeouts, transport errors and
  malformed replies, honouring `Retry-After`; other 4xx fail at once (see `retry.py`);
- a per-request timeout covering the whole exchange (connect, send, wait, read);
- the API key read from the environment variable the endpoint names (never from a spec or file);
- accounting per participant: requests, retries, failures, prompt and completion tokens.

Inputs: `{name: Endpoint(base_url, model, api_key_env)}` (from `WorkloadConfig.endpoints`) and per
participant default sampling. Outputs: `Reply(text, usage, ...)` per call; `metrics()` for the result
document.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from posttrain.api import metrics
from posttrain.api.workload import Endpoint

from posttrain_trainer.client.retry import backoff_delay, is_retryable_status, parse_retry_after

log = logging.getLogger(__name__)

Message = Mapping[str, str]

SAMPLING_KEYS = frozenset({"temperature", "top_p", "max_tokens", "seed", "stop"})
"""Request fields `chat` passes on; some servers (transformers serve) reject any field they do not
know, so nothing else is sent."""


class RequestFailed(RuntimeError):
    """A request that did not succeed: a non-retryable error, or retries exhausted.

    Attributes:
        participant: who was asked.
        reason: a short machine-friendly reason (`status-400`, `timeout`, `malformed`, `transport`).
        attempts: how many times it was sent.
    """

    def __init__(self, participant: str, reason: str, attempts: int, detail: str = "") -> None:
        super().__init__(
            f"{participant}: {reason} after {attempts} attempt(s){': ' + detail if detail else ''}"
        )
        self.participant = participant
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True)
class Usage:
    """Tokens of one reply, as the server reported them (0 when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Reply:
    """One chat completion.

    Attributes:
        text: the assistant message's content ('' if the server sent none).
        usage: token counts.
        participant: who answered.
        finish_reason: `stop`, `length`, ... as reported.
        attempts: how many times the request was sent (1 without retries).
    """

    text: str
    usage: Usage
    participant: str
    finish_reason: str | None = None
    attempts: int = 1


@dataclass
class ParticipantStats:
    """Counters of one participant."""

    requests: int = 0
    """Requests that succeeded."""
    retries: int = 0
    """Requests sent again after a retryable error."""
    failures: int = 0
    """Requests given up (non-retryable error or retries exhausted)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Errors seen (retried or not) by reason."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.detail = detail


class _Fatal(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Slots:
    """A FIFO limit on requests in flight, O(1) per acquire and release.

    `asyncio.Semaphore` scans its waiters on every release, which costs more than the request itself
    when thousands of tasks queue for a few hundred slots; here a freed slot is handed straight to
    the oldest waiter.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a slot."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Handed a slot in the moment of being cancelled: pass it on. A cancelled waiter left in
            # the queue is skipped by `release`.
            if waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back (to the oldest waiter, if any)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _Target:
    url: str
    model: str
    headers: dict[str, str]
    sampling: dict[str, Any]


class Teachers:
    """Async chat completions against named OpenAI-compatible endpoints.

    Use as an async context manager (or call `aclose`)::

        async with Teachers(config.endpoints, concurrency=256) as teachers:
            reply = await teachers.chat("teacher-a", [{"role": "user", "content": "Hi"}])

    Args:
        endpoints: participant name -> endpoint.
        concurrency: requests in flight at most, over all participants.
        timeout: seconds one request may take in total (connect to last byte).
        max_retries: retries of one request after the first attempt.
        sampling: participant name -> default sampling fields (`temperature`, `top_p`,
            `max_tokens`, `seed`, `stop`); a call's own fields win.
        backoff_base: first backoff ceiling in seconds (doubles per retry).
        backoff_max: largest backoff ceiling in seconds.
        seed: seed of the jitter (None: from the system).

    Raises:
        ValueError: an endpoint names an API key variable that is not set.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        concurrency: int = 64,
        timeout: float = 120.0,
        max_retries: int = 6,
        sampling: Mapping[str, Mapping[str, Any]] | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = random.Random(seed)
        self._targets: dict[str, _Target] = {}
        for name, endpoint in endpoints.items():
            headers: dict[str, str] = {}
            if endpoint.api_key_env:
                key = os.environ.get(endpoint.api_key_env)
                if not key:
                    raise ValueError(
                        f"participant {name!r}: environment variable {endpoint.api_key_env} is not set"
                    )
                headers["authorization"] = f"Bearer {key}"
            defaults = {k: v for k, v in (sampling or {}).get(name, {}).items() if k in SAMPLING_KEYS}
            self._targets[name] = _Target(
                url=endpoint.base_url.rstrip("/") + "/chat/completions",
                model=endpoint.model,
                headers=headers,
                sampling=defaults,
            )
        self.stats: dict[str, ParticipantStats] = {name: ParticipantStats() for name in self._targets}
        self._slots = Slots(concurrency)
        # Made on first use: an aiohttp session belongs to the event loop that is running then.
        self._session: aiohttp.ClientSession | None = None

    @property
    def names(self) -> list[str]:
        """Participant names in the order given."""
        return list(self._targets)

    def model_of(self, participant: str) -> str:
        """The model name requests to this participant carry."""
        return self._target(participant).model

    def _target(self, participant: str) -> _Target:
        try:
            return self._targets[participant]
        except KeyError:
            raise KeyError(
                f"unknown participant {participant!r}; known: {', '.join(self._targets)}"
            ) from None

    async def chat(self, participant: str, messages: Sequence[Message], **sampling: Any) -> Reply:
        """Send a chat completion and return the reply, retrying what is worth retrying.

        Args:
            participant: the endpoint's name.
            messages: OpenAI chat messages (`role`, `content`).
            **sampling: `temperature`, `top_p`, `max_tokens`, `seed`, `stop` for this request.

        Returns:
            The reply.

        Raises:
            RequestFailed: a non-retryable error, or every attempt failed.
            KeyError: unknown participant; TypeError: an unsupported sampling field.
        """
        target = self._target(participant)
        if sampling and not SAMPLING_KEYS.issuperset(sampling):
            unknown = sorted(set(sampling) - SAMPLING_KEYS)
            raise TypeError(f"unsupported sampling fields: {', '.join(unknown)}")
        body = {"model": target.model, "messages": list(messages), **target.sampling, **sampling}
        payload = json.dumps(body, ensure_ascii=False).encode()
        stats = self.stats[participant]
        attempt = 0
        while True:
            await self._slots.acquire()
            try:
                reply = await self._attempt(participant, target, payload)
            except _Retryable as error:
                self._slots.release()
                stats.errors[error.reason] = stats.errors.get(error.reason, 0) + 1
                if attempt >= self.max_retries:
                    stats.failures += 1
                    raise RequestFailed(participant, error.reason, attempt + 1, error.detail) from None
                delay = backoff_delay(
                    attempt, self.backoff_base, self.backoff_max, error.retry_after, self._rng
                )
                attempt += 1
                stats.retries += 1
                log.debug("%s: %s; retry %d in %.2fs", participant, error.reason, attempt, delay)
                await asyncio.sleep(delay)
                continue
            except _Fatal as error:
                self._slots.release()
                stats.errors[error.reason] = stats.errors.get(error.reason, 0) + 1
                stats.failures += 1
                raise RequestFailed(participant, error.reason, attempt + 1, error.detail) from None
            except BaseException:
                self._slots.release()  # cancelled, or a bug: the slot must not leak
                raise
            self._slots.release()
            stats.requests += 1
            stats.prompt_tokens += reply.usage.prompt_tokens
            stats.completion_tokens += reply.usage.completion_tokens
            if attempt:
                reply = Reply(reply.text, reply.usage, reply.participant, reply.finish_reason, attempt + 1)
            return reply

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The semaphore keeps requests in flight at `concurrency`, so the pool never makes a
            # request wait and the total timeout measures the exchange alone.
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def _attempt(self, participant: str, target: _Target, payload: bytes) -> Reply:
        """One exchange; raises _Retryable or _Fatal."""
        try:
            # A ready payload object: aiohttp would otherwise look the type up in its registry.
            data = aiohttp.BytesPayload(payload, content_type="application/json")
            async with self._http().post(target.url, data=data, headers=target.headers) as response:
                status = response.status
                content = await response.read()
                retry_after = response.headers.get("retry-after") if status != 200 else None
        except TimeoutError:
            raise _Retryable("timeout") from None
        except aiohttp.ClientError as error:
            raise _Retryable("transport", detail=type(error).__name__) from None
        if status != 200:
            detail = content[:200].decode("utf-8", "replace")
            if is_retryable_status(status):
                raise _Retryable(f"status-{status}", parse_retry_after(retry_after), detail)
            raise _Fatal(f"status-{status}", detail)
        return parse_completion(participant, content)

    def metrics(self) -> dict[str, float]:
        """Counters for a result document: requests and tokens, in total and per participant.

        `requests.sent`, `requests.retried`, `requests.failed` in total and per participant
        (`requests.sent.<participant>`, ...), and the tokens per participant (`tokens.prompt.<participant>`,
        `tokens.completion.<participant>`).
        """
        counters = (
            (metrics.REQUESTS_SENT, metrics.REQUESTS_SENT_BY, "requests"),
            (metrics.REQUESTS_RETRIED, metrics.REQUESTS_RETRIED_BY, "retries"),
            (metrics.REQUESTS_FAILED, metrics.REQUESTS_FAILED_BY, "failures"),
        )
        out: dict[str, float] = {total: 0.0 for total, _, _ in counters}
        for name, stats in self.stats.items():
            for total, by_participant, counter in counters:
                value = float(getattr(stats, counter))
                out[total] += value
                out[by_participant.of(name)] = value
            out[metrics.TOKENS_PROMPT_BY.of(name)] = float(stats.prompt_tokens)
            out[metrics.TOKENS_COMPLETION_BY.of(name)] = float(stats.completion_tokens)
        return out

    async def aclose(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Teachers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def parse_completion(participant: str, content: bytes) -> Reply:
    """A Reply from an OpenAI chat completion body; raises _Retryable("malformed") if it is not one.

    A body that is not JSON, has no `choices[0].message`, or whose content is neither a string nor
    null is malformed: servers under load (or proxies) send such things, and a retry usually helps.
    """
    try:
        data = json.loads(content)
        choice = data["choices"][0]
        text = choice["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable("malformed", detail=content[:200].decode("utf-8", "replace")) from None
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _Retryable("malformed", detail="content is not a string")
    usage = data.get("usage") if isinstance(data, dict) else None
    prompt_tokens = completion_tokens = 0
    if isinstance(usage, dict):
        prompt_tokens = _count(usage.get("prompt_tokens"))
        completion_tokens = _count(usage.get("completion_tokens"))
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return Reply(
        text=text,
        usage=Usage(prompt_tokens, completion_tokens),
        participant=participant,
        finish_reason=finish if isinstance(finish, str) else None,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0

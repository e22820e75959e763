"""The one place the evol and align workloads ask a model: journaled, cached, budgeted chat completions.

Every reply is appended to the run's journal under a key made of a readable purpose
(`evolve/<seed>/r2`, `judge-equal/<id>`, ...) and a hash of the request (participant, messages,
sampling). Asked again — in the same run or after a restart — the reply comes from the journal and
nothing is sent. Because every decision is a pure function of the replies, a resumed run reaches
exactly the records the uninterrupted run would have, and writes each once. A request that still
fails after the client's retries is not journaled: it is counted, and asked again by the next run.

Below the journal lies the namespace's model-call cache (`client.CallCache`), keyed by the model's
identity and the request rather than by the run: a reply another run paid for is replayed from it
(and journaled here, so this run resumes from its own journal as before), and every reply a model
gives is stored in it. The purpose is the sample index of a non-deterministic request.

Before a request goes to a model, the run's budget (`client.BudgetTracker`) is asked; a request over
it is not sent and counts as unanswered (`over_budget`), so the workload ends with partial outputs.

Inputs: a client with `async chat(participant, messages, **sampling) -> Reply` (`client.Teachers`,
or a fake in tests), a `client.Journal`, and optionally the cache with each participant's model
identity and default sampling, and a budget. Outputs: reply texts; counters and metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from posttrain.api import metrics
from posttrain.api.workload import Endpoint, WorkloadConfig

from posttrain_trainer.client import Journal, Reply, RequestFailed, Slots
from posttrain_trainer.client.budget import BudgetTracker
from posttrain_trainer.client.cache import CachedReply, CallCache, cache_key
from posttrain_trainer.common.chat import Message

SOURCE_MODEL = "model"
SOURCE_CACHE = "cache"
"""Where a journaled reply came from (`source`): only replies from a model are charged to the budget."""


class ChatClient(Protocol):
    """What the caller needs from a client."""

    async def chat(self, participant: str, messages: Sequence[Message], **sampling: Any) -> Reply:
        """Send one chat request to a participant and return its reply.

        Raises:
            RequestFailed: when the request fails for good (after the client's retries).
        """


@dataclass(frozen=True)
class CalledModel:
    """What the cache needs to know of a participant: the model's identity and default sampling."""

    identity: str
    sampling: Mapping[str, Any] = field(default_factory=dict)


def called_models(
    endpoints: Mapping[str, Endpoint], sampling: Mapping[str, Mapping[str, Any]]
) -> dict[str, CalledModel]:
    """Each participant's model identity (`Endpoint.identity`, or `endpoint:<model>`) and sampling."""
    return {
        name: CalledModel(endpoint.identity or f"endpoint:{endpoint.model}", dict(sampling.get(name, {})))
        for name, endpoint in endpoints.items()
    }


class Caller:
    """Journaled, cached and budgeted requests.

    Args:
        client: sends the requests.
        journal: finished replies of this run by key.
        cache: the namespace's model-call cache, or None.
        models: participant -> identity and default sampling (needed for the cache).
        budget: the run's budget, or None.
        concurrency: requests in flight at most while a budget limits them (the client's own limit).

    Attributes:
        sent: replies received from a model in this run.
        replayed: replies taken from the journal.
        cached: replies taken from the model-call cache.
        failed: requests given up after retries.
        over_budget: requests not sent because the budget was spent.
        by_purpose: replies (sent or replayed) per purpose kind (`evolve`, `answer`, ...).
    """

    def __init__(
        self,
        client: ChatClient,
        journal: Journal,
        cache: CallCache | None = None,
        models: Mapping[str, CalledModel] | None = None,
        budget: BudgetTracker | None = None,
        concurrency: int = 64,
    ) -> None:
        self.client = client
        self.journal = journal
        self.cache = cache
        self.models = dict(models or {})
        self.budget = budget
        self.sent = 0
        self.replayed = 0
        self.cached = 0
        self.failed = 0
        self.over_budget = 0
        self.by_purpose: Counter[str] = Counter()
        self._gate = Slots(concurrency) if budget is not None and budget.limited else None
        if budget is not None:
            # What earlier attempts of this run paid for counts against the same budget.
            for record in journal.records():
                if record.get("source", SOURCE_MODEL) == SOURCE_MODEL:
                    budget.charge(str(record.get("participant")), int(record.get("tokens") or 0))

    @staticmethod
    def key(purpose: str, participant: str, messages: Sequence[Message], sampling: dict[str, Any]) -> str:
        """The journal key: the purpose, then a hash of what is asked of whom."""
        content = json.dumps([participant, list(messages), sampling], sort_keys=True, ensure_ascii=False)
        return f"{purpose}#{hashlib.sha256(content.encode()).hexdigest()[:16]}"

    async def ask(
        self, purpose: str, participant: str, messages: Sequence[Message], **sampling: Any
    ) -> str | None:
        """The reply text, from the journal, the cache or the model; None when it could not be had.

        Args:
            purpose: what the reply is for; unique per request within a run.
            participant: who is asked.
            messages: the chat messages.
            **sampling: request-specific sampling fields.

        Returns:
            The text, or None when the request failed after retries or the budget forbade it.
        """
        key = self.key(purpose, participant, messages, sampling)
        kind = purpose.split("/", 1)[0]
        record = self.journal.get(key)
        if record is not None:
            self.replayed += 1
            self.by_purpose[kind] += 1
            return str(record["text"])
        model = self.models.get(participant)
        shared = None
        if self.cache is not None and model is not None:
            shared = cache_key(model.identity, messages, {**model.sampling, **sampling}, purpose)
            found = await asyncio.to_thread(self.cache.get, shared)
            if found is not None:
                self.cached += 1
                self.by_purpose[kind] += 1
                self.journal.append(
                    {"key": key, "participant": participant, "text": found.text, "source": SOURCE_CACHE}
                )
                return found.text
        if self._gate is None:
            reply = await self._send(participant, messages, sampling)
        else:
            # The budget is checked by a request holding one of the slots, right before it is sent: at
            # most `concurrency` requests are in flight when a limit is crossed.
            async with self._gate:
                reply = await self._send(participant, messages, sampling)
        if reply is None:
            return None
        self.sent += 1
        self.by_purpose[kind] += 1
        tokens = reply.usage.prompt_tokens + reply.usage.completion_tokens
        if self.budget is not None:
            self.budget.charge(participant, tokens)
        if self.cache is not None and model is not None and shared is not None:
            answer = CachedReply(
                reply.text, reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.finish_reason
            )
            await asyncio.to_thread(self.cache.put, shared, model.identity, answer)
        self.journal.append(
            {
                "key": key,
                "participant": participant,
                "text": reply.text,
                "source": SOURCE_MODEL,
                "tokens": tokens,
            }
        )
        return reply.text

    async def _send(
        self, participant: str, messages: Sequence[Message], sampling: dict[str, Any]
    ) -> Reply | None:
        if self.budget is not None and self.budget.exhausted(participant) is not None:
            self.over_budget += 1
            return None
        try:
            return await self.client.chat(participant, messages, **sampling)
        except RequestFailed:
            self.failed += 1
            return None

    def finish(self) -> dict[str, float]:
        """End of the run: evict beyond the cache's size limit; the cache, budget and usage metrics."""
        out: dict[str, float] = {metrics.REQUESTS_OVER_BUDGET: float(self.over_budget)}
        if self.cache is not None:
            self.cache.evict()
            stats = self.cache.stats
            out.update(
                {
                    metrics.CACHE_HITS: float(stats.hits),
                    metrics.CACHE_MISSES: float(stats.misses),
                    metrics.CACHE_CORRUPT: float(stats.corrupt),
                    metrics.CACHE_EVICTED: float(stats.evicted),
                }
            )
        if self.budget is not None:
            out.update(self.budget.metrics())
        return out

    @property
    def budget_exhausted(self) -> str | None:
        """The limit that stopped requests in this run, if one did."""
        return self.budget.reached if self.budget is not None else None


def run_caller(
    client: ChatClient,
    journal: Journal,
    config: WorkloadConfig,
    sampling: Mapping[str, Mapping[str, Any]],
    concurrency: int,
) -> Caller:
    """The caller of a workload run: its journal, the cache and budget its config names.

    Args:
        client: sends the requests.
        journal: the run's journal.
        config: the workload config (`model_cache`, `started_at`, `gpus`, `spec.budget`, endpoints).
        sampling: participant -> default sampling fields (as given to the client).
        concurrency: the client's limit of requests in flight.
    """
    cache = None
    if config.model_cache is not None:
        cache = CallCache(config.model_cache.uri, config.model_cache.max_bytes)
    budget = BudgetTracker(config.typed_spec().budget, config.started_at, config.gpus)
    return Caller(client, journal, cache, called_models(config.endpoints, sampling), budget, concurrency)

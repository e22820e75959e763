"""The one place the evol workload asks a model: journaled chat completions.

Every reply is appended to the run's journal under a key made of a readable purpose
(`evolve/<seed>/r2`, `judge-equal/<id>`, ...) and a hash of the request (participant, messages,
sampling). Asked again — in the same run or after a restart — the reply comes from the journal and
nothing is sent. Because every decision is a pure function of the replies, a resumed run reaches
exactly the records the uninterrupted run would have, and writes each once. A request that still
fails after the client's retries is not journaled: it is counted, and asked again by the next run.

Inputs: a client with `async chat(participant, messages, **sampling) -> Reply` (`client.Teachers`,
or a fake in tests) and a `client.Journal`. Outputs: reply texts; counters.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from posttrain_trainer.client import Journal, Reply, RequestFailed
from posttrain_trainer.common.chat import Message


class ChatClient(Protocol):
    """What the caller needs from a client."""

    async def chat(self, participant: str, messages: Sequence[Message], **sampling: Any) -> Reply:
        """Send one chat request to a participant and return its reply.

        Raises:
            RequestFailed: when the request fails for good (after the client's retries).
        """


class Caller:
    """Journaled requests.

    Args:
        client: sends the requests.
        journal: finished replies by key.

    Attributes:
        sent: replies received from a model in this run.
        replayed: replies taken from the journal.
        failed: requests given up after retries.
        by_purpose: replies (sent or replayed) per purpose kind (`evolve`, `answer`, ...).
    """

    def __init__(self, client: ChatClient, journal: Journal) -> None:
        self.client = client
        self.journal = journal
        self.sent = 0
        self.replayed = 0
        self.failed = 0
        self.by_purpose: Counter[str] = Counter()

    @staticmethod
    def key(purpose: str, participant: str, messages: Sequence[Message], sampling: dict[str, Any]) -> str:
        """The journal key: the purpose, then a hash of what is asked of whom."""
        content = json.dumps([participant, list(messages), sampling], sort_keys=True, ensure_ascii=False)
        return f"{purpose}#{hashlib.sha256(content.encode()).hexdigest()[:16]}"

    async def ask(
        self, purpose: str, participant: str, messages: Sequence[Message], **sampling: Any
    ) -> str | None:
        """The reply text, from the journal or the model; None when the request failed.

        Args:
            purpose: what the reply is for; unique per request within a run.
            participant: who is asked.
            messages: the chat messages.
            **sampling: request-specific sampling fields.
        """
        key = self.key(purpose, participant, messages, sampling)
        kind = purpose.split("/", 1)[0]
        record = self.journal.get(key)
        if record is not None:
            self.replayed += 1
            self.by_purpose[kind] += 1
            return str(record["text"])
        try:
            reply = await self.client.chat(participant, messages, **sampling)
        except RequestFailed:
            self.failed += 1
            return None
        self.sent += 1
        self.by_purpose[kind] += 1
        self.journal.append({"key": key, "participant": participant, "text": reply.text})
        return reply.text

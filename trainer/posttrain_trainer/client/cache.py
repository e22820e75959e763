"""A content-addressed cache of model calls in the artifact store, shared by every run of a namespace.

The run's journal (`journal.py`) makes a restarted run replay its own replies; this cache extends the
same replay to every other run that asks the same model the same thing: a second identical run, an
EvolJob given one more round, a resource whose downstream step changed, or the cluster after a run on
a laptop pointed at the same store. `evol.caller.Caller` asks the journal first, then this cache, and
only then the model; what the model answers goes to both.

- Key: SHA-256 of the model's identity (`weights:<digest>` of a served model, `endpoint:<model>` of an
  external one), the messages, the effective sampling fields and, for a non-deterministic request
  (temperature above 0, or unset, without a seed), the sample: the caller's purpose, which names the
  row, round and step, so a re-run maps each request to the same sample and two requests of one run
  never share one.
- Entry: one JSON object per key at `<uri>/entries/<2 hex>/<key>.json` holding the key, the model,
  the reply and a digest of the three; written whole (a local file is renamed into place, an object
  store's put is atomic), so a reader sees the old entry or the new one.
- A corrupted entry (not JSON, another key, a digest that does not match) is counted, removed and
  treated as a miss: the call is made again and the entry rewritten.
- Size limit: `evict()` (the caller runs it at the end of a run) removes the least recently used
  entries until the total is under `max_bytes`. A hit refreshes a local entry's modification time;
  object stores keep the write time, so there the oldest written go first.

Inputs: the cache URI (`file://`, `pvc://`, `s3://`) and an optional size limit. Outputs: cached
replies; `stats` (hits, misses, corrupt, evicted, written).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from posttrain_trainer.common.storage import filesystem, is_remote, local_path

log = logging.getLogger(__name__)

ENTRIES = "entries"
"""Folder of the entries below the cache URI."""


@dataclass(frozen=True)
class CachedReply:
    """A reply as the cache keeps it."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON form of the reply inside an entry."""
        return {
            "text": self.text,
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "finishReason": self.finish_reason,
        }

    @classmethod
    def from_wire(cls, value: Any) -> CachedReply:
        """The reply of an entry; raises ValueError when it is not one."""
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise ValueError("not a reply")
        finish = value.get("finishReason")
        return cls(
            text=value["text"],
            prompt_tokens=_count(value.get("promptTokens")),
            completion_tokens=_count(value.get("completionTokens")),
            finish_reason=finish if isinstance(finish, str) else None,
        )


@dataclass
class CacheStats:
    """Counters of one run's use of the cache."""

    hits: int = 0
    """Replies found."""
    misses: int = 0
    """Keys not found (the call goes to the model)."""
    corrupt: int = 0
    """Entries found broken, removed and counted as misses."""
    written: int = 0
    """Entries written."""
    evicted: int = 0
    """Entries removed by `evict`."""


def is_deterministic(sampling: Mapping[str, Any]) -> bool:
    """True when a request always gets the same reply: greedy (temperature 0) or seeded."""
    temperature = sampling.get("temperature")
    return sampling.get("seed") is not None or (temperature is not None and float(temperature) == 0.0)


def cache_key(
    identity: str, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any], sample: str
) -> str:
    """The key of a call: a hash of the model, the request and (if non-deterministic) the sample.

    Args:
        identity: the model's identity (`Endpoint.identity`).
        messages: the chat messages.
        sampling: the effective sampling fields (the participant's defaults and the request's own).
        sample: which sample of a non-deterministic request this is (ignored for a deterministic one).
    """
    document = {
        "model": identity,
        "messages": [dict(m) for m in messages],
        "sampling": dict(sampling),
        "sample": None if is_deterministic(sampling) else sample,
    }
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_digest(key: str, model: str, reply: Any) -> str:
    """`sha256:` of an entry's content (what `get` checks)."""
    text = json.dumps({"key": key, "model": model, "reply": reply}, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class CallCache:
    """Replies of model calls by key, in a folder of the artifact store.

    Args:
        uri: the cache's folder (`file://`, `pvc://` or `s3://`).
        max_bytes: size limit applied by `evict`; None: unlimited.
    """

    def __init__(self, uri: str, max_bytes: int | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        # Callers look entries up from worker threads (`asyncio.to_thread`): counting is serialised.
        self._lock = threading.Lock()
        self.remote = is_remote(uri)
        if self.remote:
            self._fs = filesystem(uri)
            self._root = self.uri
        else:
            import fsspec

            self._fs = fsspec.filesystem("file")
            self._root = str(local_path(uri))

    def path(self, key: str) -> str:
        """Where the entry of a key is stored."""
        return f"{self._root}/{ENTRIES}/{key[:2]}/{key}.json"

    def get(self, key: str) -> CachedReply | None:
        """The reply stored under a key, or None (absent or corrupted, counted in `stats`)."""
        path = self.path(key)
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            self._count("misses")
            return None
        try:
            entry = json.loads(data)
            if (
                not isinstance(entry, dict)
                or entry.get("key") != key
                or not isinstance(entry.get("model"), str)
            ):
                raise ValueError("not an entry of this key")
            if entry.get("digest") != entry_digest(key, entry["model"], entry.get("reply")):
                raise ValueError("digest mismatch")
            reply = CachedReply.from_wire(entry["reply"])
        except (ValueError, TypeError) as error:
            log.warning("model-call cache: entry %s is corrupted (%s); fetching it again", key, error)
            self._count("corrupt", "misses")
            self._remove(path)
            return None
        self._count("hits")
        if not self.remote:
            # Least recently used goes first: a hit counts as a use.
            self._touch(path)
        return reply

    def put(self, key: str, model: str, reply: CachedReply) -> None:
        """Store a reply under its key (replacing what is there)."""
        wire = reply.wire()
        entry = {"key": key, "model": model, "reply": wire, "digest": entry_digest(key, model, wire)}
        data = json.dumps(entry, sort_keys=True, ensure_ascii=False).encode()
        path = self.path(key)
        if self.remote:
            self._fs.pipe_file(path, data)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            staging = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(staging, "wb") as stream:
                stream.write(data)
            os.replace(staging, path)
        self._count("written")

    def entries(self) -> list[tuple[str, int, float]]:
        """(path, size, last use as Unix time) of every entry."""
        folder = f"{self._root}/{ENTRIES}"
        try:
            found = self._fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
        return [
            (path, int(info.get("size") or 0), _time_of(info))
            for path, info in found.items()
            if path.endswith(".json")
        ]

    def size(self) -> int:
        """Bytes of every entry together."""
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> int:
        """Remove the least recently used entries until the cache fits `max_bytes`; how many went."""
        if self.max_bytes is None:
            return 0
        entries = sorted(self.entries(), key=lambda entry: entry[2])
        total = sum(size for _, size, _ in entries)
        removed = 0
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            self._remove(path)
            total -= size
            removed += 1
        with self._lock:
            self.stats.evicted += removed
        return removed

    def _count(self, *counters: str) -> None:
        with self._lock:
            for counter in counters:
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(path)

    def _touch(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(path)


def _time_of(info: Mapping[str, Any]) -> float:
    """The modification time of a listing entry (local: `mtime`; S3: `LastModified`)."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0

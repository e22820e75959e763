"""A checkpoint of finished records: an append-only JSONL file keyed by a stable key.

A workload that makes thousands of requests appends each finished record as soon as it completes. A
run killed at any moment (SIGKILL included) and started again with the same output folder reads the
journal back, skips what is done and carries on, so no record is lost or made twice:

- each record is written with one `write` system call of a whole line, so a kill leaves at most one
  torn line, at the end; opening the journal drops it (truncating the file to the last full line);
- a key already in the journal is never written again (`append` returns False);
- lines are flushed to the operating system at once, which survives the process being killed;
  `durable=True` also fsyncs each line, which survives the machine going down, at a cost.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Journal:
    """Finished records of a run, keyed by `record[key_field]`.

    Args:
        path: the JSONL file (created with its folder if missing).
        key_field: the record field holding the stable key.
        durable: fsync after every record.

    Attributes:
        dropped: lines dropped on opening (a torn last line, or unreadable lines).
    """

    def __init__(self, path: str | Path, key_field: str = "key", durable: bool = False) -> None:
        self.path = Path(path)
        self.key_field = key_field
        self.durable = durable
        self.dropped = 0
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        position = 0
        while position < len(data):
            newline = data.find(b"\n", position)
            if newline < 0:
                # A torn last line: the process died in the middle of writing it.
                self.dropped += 1
                break
            line = data[position:newline]
            position = newline + 1
            record = _parse(line)
            if record is None or not isinstance(record.get(self.key_field), str):
                if line.strip():
                    self.dropped += 1
                good_end = position
                continue
            # The first copy of a key wins; later ones cannot come from this class.
            self._records.setdefault(record[self.key_field], record)
            good_end = position
        if good_end < len(data):
            with self.path.open("r+b") as stream:
                stream.truncate(good_end)

    def done(self, key: str) -> bool:
        """True if a record with this key is in the journal."""
        return key in self._records

    __contains__ = done

    def get(self, key: str) -> dict[str, Any] | None:
        """The record with this key, or None."""
        return self._records.get(key)

    def append(self, record: dict[str, Any]) -> bool:
        """Write a finished record unless its key is already there.

        Args:
            record: a JSON-serialisable object with a string at `key_field`.

        Returns:
            True if it was written, False if the key was already in the journal.

        Raises:
            KeyError: the record has no string key.
        """
        key = record.get(self.key_field)
        if not isinstance(key, str):
            raise KeyError(f"record has no string {self.key_field!r}")
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
        with self._lock:
            if key in self._records:
                return False
            _write_all(self._fd, line)
            if self.durable:
                os.fsync(self._fd)
            self._records[key] = record
        return True

    def records(self) -> Iterator[dict[str, Any]]:
        """The records in the order they were first written."""
        return iter(list(self._records.values()))

    def keys(self) -> list[str]:
        """The keys in the order they were first written."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def close(self) -> None:
        """Close the file; the journal cannot be appended to afterwards."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]

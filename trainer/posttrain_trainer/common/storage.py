"""Artifact storage: `file://`, `pvc://CLAIM/path` (a mounted claim) and `s3://bucket/path` (fsspec).

Datasets are read by `common.readers` (JSONL, JSON arrays, Parquet, Arrow, text; files, folders, globs).
Every written artifact gets a `sha256:` digest so downstream resources can be content-addressed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from posttrain.api.uri import S3, ArtifactUri

PVC_ROOT_ENV = "POSTTRAIN_PVC_ROOT"
"""Where `pvc://CLAIM/...` claims are mounted (`/mnt/pvc/CLAIM` in pods)."""


def is_remote(uri: str) -> bool:
    """True for object-store URIs that need fsspec."""
    return ArtifactUri.parse(uri).scheme == S3


def local_path(uri: str) -> Path:
    """The filesystem path of a `file://` or `pvc://` URI (or a plain path).

    `file://relative/path` is relative to the working directory; `file:///abs` is absolute.
    """
    path = ArtifactUri.parse(uri).local_path(os.environ.get(PVC_ROOT_ENV, "/mnt/pvc"))
    if path is None:
        raise ValueError(f"not a local URI: {uri}")
    return path


def join(uri: str, *parts: str) -> str:
    """`uri/part/...`."""
    return str(ArtifactUri.parse(uri).join(*parts))


def filesystem(uri: str) -> Any:
    """The fsspec filesystem of a remote URI (`AWS_ENDPOINT_URL` honoured for S3-compatible stores)."""
    import fsspec

    options: dict[str, Any] = {}
    if os.environ.get("AWS_ENDPOINT_URL"):
        options["client_kwargs"] = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    return fsspec.filesystem(ArtifactUri.parse(uri).scheme, **options)


def read_lines(uri: str, file_format: str = "auto") -> Iterator[tuple[int, str | dict[str, Any]]]:
    """(line or row number, row) of a dataset in any form `common.readers` reads.

    A line that is not a JSON object comes as its raw text, so a caller can count malformed lines instead of
    failing.

    Raises:
        readers.DataFileError: a file is missing or is not data at all.
    """
    from posttrain_trainer.common.readers import iter_rows  # the readers build on this module

    for _, number, row in iter_rows(uri, file_format):
        yield number, row


def read_rows(uri: str, file_format: str = "auto") -> Iterator[dict[str, Any]]:
    """The rows of a dataset; raises on a line that is not a JSON object (`read_lines` tolerates them).

    Raises:
        readers.DataFileError: naming the file and the line.
    """
    from posttrain_trainer.common.readers import DataFileError, iter_rows

    for file, number, row in iter_rows(uri, file_format):
        if not isinstance(row, dict):
            raise DataFileError(f"{file}: line {number}: not a JSON object: {row[:200]!r}")
        yield row


class JsonlWriter:
    """Append rows to a local JSONL file, hashing what is written.

    Used as a context manager; `rows` and `digest` are final after it closes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = self.path.open("w", encoding="utf-8")
        self._hash = hashlib.sha256()
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        """Append one row as a line of sorted-key JSON."""
        line = json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
        self._stream.write(line)
        self._hash.update(line.encode())
        self.rows += 1

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the bytes written so far."""
        return "sha256:" + self._hash.hexdigest()

    def close(self) -> None:
        """Close the file; `rows` and `digest` are final from here on."""
        self._stream.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> tuple[int, str]:
    """Write rows to a local JSONL file; returns (rows, digest)."""
    with JsonlWriter(path) as writer:
        for row in rows:
            writer.write(row)
    return writer.rows, writer.digest


def digest_path(path: str | Path) -> str:
    """`sha256:` of a file, or of a folder's files (names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


class Workspace:
    """The output folder of one workload run.

    Writes go to a local folder: the output URI itself for `file://`/`pvc://`, or a staging folder
    that `publish()` uploads for `s3://`.
    """

    def __init__(self, output_uri: str, staging: str | Path | None = None) -> None:
        self.uri = output_uri.rstrip("/")
        if is_remote(output_uri):
            self.root = Path(staging or os.environ.get("POSTTRAIN_STAGING", "/tmp/posttrain-staging"))
        else:
            self.root = local_path(output_uri)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        """A local path inside the output folder."""
        return self.root.joinpath(*parts)

    def uri_of(self, *parts: str) -> str:
        """The URI a local path of the output folder will have."""
        return join(self.uri, *parts)

    def publish(self) -> None:
        """Upload the staging folder to the object store (no-op for local outputs)."""
        if is_remote(self.uri):
            filesystem(self.uri).put(str(self.root) + "/", self.uri + "/", recursive=True)

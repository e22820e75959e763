"""Read datasets in the forms they are published in, block by block, for every workload.

A dataset URI (`file://`, `pvc://CLAIM/path`, `s3://bucket/path`, or a plain path) names a file, a
folder of files (shards such as `data/train-00000-of-00004.parquet`), a folder written by
`datasets.save_to_disk`, or a glob pattern (`s3://bucket/data/*.jsonl.gz`). Each file is one of

- `jsonl`: one JSON object per line (`.jsonl`, `.ndjson`, or content starting with `{`);
- `json`: one JSON array of objects (ShareGPT dumps, `alpaca_data.json`; content starting with `[`);
- `parquet`, `arrow` (Arrow IPC, what `save_to_disk` writes);
- `text`: one prompt per line (benchmark prompt lists, `.txt`), read as rows `{"instruction": line}`;

optionally compressed with gzip or zstd (`.gz`, `.zst`, or recognised by the content). The format is
detected from the extension and the first bytes; `fileFormat` in a data reference overrides it.

Files are read as `Block`s of at most `BLOCK_BYTES` (or `BATCH_ROWS` rows), so memory grows with the
block, not the file; JSONL blocks are cut at line ends and parsed by Arrow's JSON reader, and a block
Arrow cannot parse as one row per line is parsed line by line so each bad line gets its own reason. A
file that is not data at all (no line of its first block is a JSON object, an array that does not
parse, a binary file) raises one `DataFileError` naming the file, the line or row, and what was
expected, instead of rejecting every line.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from posttrain_trainer.common.failures import InvalidInput
from posttrain_trainer.common.storage import filesystem, is_remote, local_path

FileFormat = Literal["jsonl", "json", "parquet", "arrow", "text"]
FILE_FORMATS: tuple[str, ...] = ("auto", "jsonl", "json", "parquet", "arrow", "text")
TEXT_FIELD = "instruction"
"""The column a plain-text prompt list is read into (an Alpaca-style instruction)."""
BLOCK_BYTES = 32 << 20
"""Bytes of JSONL, JSON or text parsed at a time."""
BATCH_ROWS = 65_536
"""Rows of a Parquet or Arrow file read at a time."""
ARROW_BLOCK = 4 << 20
"""Arrow's JSON parsing block (threads parse blocks side by side)."""
RAW_LIMIT = 20_000
"""Characters of a malformed line kept in an error or reject."""

_EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
}
_COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_METADATA = {"result.json", "progress.json", "state.json", "dataset_info.json", "dataset_dict.json"}
"""Files in dataset folders that describe the data rather than hold it."""


class DataFileError(InvalidInput):
    """A data file cannot be read as data: the message names it, the line or row, and what was expected."""


class MissingDataError(DataFileError, FileNotFoundError):
    """A dataset URI names nothing (no file, folder or match)."""


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset and how to read it."""

    path: str
    """Local path, or the `s3://` URI."""
    format: FileFormat
    """How its (decompressed) content is read."""
    compression: str | None = None
    """`gzip`, `zstd` or None."""


@dataclass
class Block:
    """Rows of a part of one file.

    Rows Arrow parsed are in `table` with their numbers in `numbers`; rows parsed one by one (a
    block Arrow could not take whole) are in `rows`; lines that are not JSON objects in `bad`.
    """

    file: str
    table: pa.Table | None = None
    numbers: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Line (JSONL, text), element (JSON array) or row (Parquet, Arrow) number of each table row, from 1."""
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(number, object) of rows parsed one by one."""
    bad: list[tuple[int, str, str]] = field(default_factory=list)
    """(number, reason, raw text) of lines that are not JSON objects."""

    def __len__(self) -> int:
        return (self.table.num_rows if self.table is not None else 0) + len(self.rows) + len(self.bad)

    def python_rows(self) -> list[tuple[int, dict[str, Any]]]:
        """Every row as (number, dict), in file order: the table's (nulls dropped) and the others."""
        out = list(self.rows)
        if self.table is not None and self.table.num_rows:
            values = self.table.to_pylist()
            out += [
                (n, {k: v for k, v in row.items() if v is not None})
                for n, row in zip(self.numbers.tolist(), values, strict=True)
            ]
            out.sort(key=lambda item: item[0])
        return out


# ---------------------------------------------------------------------------------------------------
# Finding the files


def data_files(uri: str, file_format: str = "auto") -> list[DataFile]:
    """The files of a dataset URI (a file, a folder, a `save_to_disk` folder or a glob), sorted.

    Raises:
        DataFileError: nothing matches, the folder has no data files, or a file's format is unknown.
    """
    if file_format not in FILE_FORMATS:
        raise DataFileError(f"{uri}: unknown fileFormat {file_format!r} (one of {', '.join(FILE_FORMATS)})")
    paths = _expand(uri)
    return [describe(path, file_format) for path in paths]


def _is_pattern(uri: str) -> bool:
    return any(c in uri for c in "*?[")


def _expand(uri: str) -> list[str]:
    remote = is_remote(uri)
    if _is_pattern(uri):
        if remote:
            fs = filesystem(uri)
            found = sorted(f"s3://{p}" for p in fs.glob(uri) if not fs.isdir(p))
        else:
            pattern = str(local_path(uri))
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not found:
            raise MissingDataError(f"{uri}: the pattern matches no file")
        return list(found)
    if remote:
        fs = filesystem(uri)
        if not fs.exists(uri):
            raise MissingDataError(f"{uri}: no such file or folder")
        if fs.isdir(uri):
            names = [f"s3://{p}" for p in fs.find(uri)]
            return _folder(uri, names, lambda name: json.loads(fs.cat_file(name)))
        return [uri]
    path = local_path(uri)
    if path.is_dir():
        names = [str(p) for p in path.rglob("*") if p.is_file()]
        return _folder(uri, names, lambda name: json.loads(Path(name).read_text()))
    if not path.exists():
        raise MissingDataError(f"{uri}: no such file or folder")
    return [str(path)]


def _folder(uri: str, names: list[str], read_json: Any) -> list[str]:
    """The data files of a folder, sorted.

    Those `save_to_disk` listed in `state.json`, else the files with a data extension (top level first;
    subfolders when the top level has none).
    """
    root = uri.rstrip("/")
    prefix = str(local_path(root)) if not is_remote(root) else root
    relative = {name: name[len(prefix) :].lstrip("/") for name in names}
    top = {rel: name for name, rel in relative.items() if "/" not in rel}
    if "dataset_dict.json" in top:
        splits = read_json(top["dataset_dict.json"]).get("splits", [])
        raise DataFileError(
            f"{uri}: a `save_to_disk` DatasetDict with splits {', '.join(map(str, splits))}; "
            f"point the URI at one split (e.g. {root}/{splits[0] if splits else 'train'})"
        )
    if "state.json" in top:
        listed = [entry["filename"] for entry in read_json(top["state.json"]).get("_data_files", [])]
        missing = [name for name in listed if name not in top]
        if missing:
            raise DataFileError(f"{uri}: state.json lists {missing[0]}, which is not in the folder")
        return [top[name] for name in listed]

    def kind(rel: str) -> FileFormat | None:
        parts = rel.split("/")
        if any(p.startswith((".", "_")) for p in parts) or parts[-1] in _METADATA:
            return None
        return _split_name(parts[-1])[0]

    # Top level first, then subfolders (a repository's `data/`); text files (notes, READMEs) only
    # when the folder holds nothing else: a folder of prompt lists.
    chosen: list[str] = []
    for candidates in (top, {rel: name for name, rel in relative.items()}):
        kinds = {rel: kind(rel) for rel in candidates}
        chosen = sorted(candidates[rel] for rel, k in kinds.items() if k not in (None, "text"))
        chosen = chosen or sorted(candidates[rel] for rel, k in kinds.items() if k == "text")
        if chosen:
            break
    if not chosen:
        raise DataFileError(
            f"{uri}: the folder has no data files (expected {', '.join(sorted(_EXTENSIONS))} files, "
            "optionally .gz or .zst, or a `save_to_disk` folder)"
        )
    return chosen


def _split_name(name: str) -> tuple[FileFormat | None, str | None]:
    """(format, compression) from a file name's extensions."""
    stem, ext = os.path.splitext(name.lower())
    compression = _COMPRESSIONS.get(ext)
    if compression is not None:
        stem, ext = os.path.splitext(stem)
    return _EXTENSIONS.get(ext), compression


def describe(path: str, file_format: str = "auto") -> DataFile:
    """How to read one file: its format from `file_format`, else the extension and the first bytes."""
    by_name, compression = _split_name(path.rsplit("/", 1)[-1])
    head = _head(path, None)
    if compression is None:
        compression = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)
        if compression is not None:
            head = _head(path, compression)
    if file_format != "auto":
        return DataFile(path, file_format, compression)  # type: ignore[arg-type]
    if head.startswith(b"PAR1"):
        return DataFile(path, "parquet", compression)
    if head.startswith((b"ARROW1", b"\xff\xff\xff\xff")) or by_name == "arrow":
        return DataFile(path, "arrow", compression)
    first = head.lstrip()[:1]
    if first == b"[":
        return DataFile(path, "json", compression)
    if first == b"{":
        return DataFile(path, "jsonl", compression)
    if by_name in ("jsonl", "json", "parquet"):
        # Named as JSON but not JSON: read as JSONL so the error names the first line that is not.
        return DataFile(path, "jsonl" if by_name != "parquet" else "parquet", compression)
    return DataFile(path, "text", compression)


def _head(path: str, compression: str | None, size: int = 4096) -> bytes:
    try:
        with open_binary(path, compression) as stream:
            data: bytes = stream.read(size)
            return data
    except OSError as error:
        raise DataFileError(f"{path}: cannot be read: {error}") from error
    except Exception as error:  # a corrupt compressed stream: zlib.error, zstd.ZstdError
        raise DataFileError(f"{path}: not a valid {compression} file: {error}") from error


def open_binary(path: str, compression: str | None = None) -> IO[bytes]:
    """The file's (decompressed) bytes as a stream."""
    stream: Any = filesystem(path).open(path, "rb") if is_remote(path) else open(path, "rb")  # noqa: SIM115
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, closefd=True)
    return stream  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------
# Reading blocks


def blocks(file: DataFile) -> Iterator[Block]:
    """The rows of one file, block by block.

    Raises:
        DataFileError: the file is not data of its format (one error for the whole file).
    """
    readers = {
        "jsonl": _jsonl_blocks,
        "json": _json_array_blocks,
        "parquet": _parquet_blocks,
        "arrow": _arrow_blocks,
        "text": _text_blocks,
    }
    try:
        yield from readers[file.format](file)
    except DataFileError:
        raise
    except (OSError, EOFError, pa.ArrowException) as error:
        raise DataFileError(f"{file.path}: cannot be read as {file.format}: {error}") from error
    except Exception as error:
        if (
            type(error).__module__.startswith(("zlib", "zstd", "gzip"))
            or "zstd" in type(error).__name__.lower()
        ):
            raise DataFileError(f"{file.path}: not a valid {file.compression} file: {error}") from error
        raise


def _chunks(file: DataFile) -> Iterator[tuple[int, bytes]]:
    """(number of the chunk's first line, chunk) of whole lines, about `BLOCK_BYTES` each."""
    line = 1
    rest = b""
    with open_binary(file.path, file.compression) as stream:
        while True:
            data = stream.read(BLOCK_BYTES)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            chunk, rest = data[: cut + 1], data[cut + 1 :]
            yield line, chunk
            line += chunk.count(b"\n")
    if rest:
        yield line, rest


def _clip(text: str) -> str:
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "..."


def _jsonl_blocks(file: DataFile) -> Iterator[Block]:
    first_block = True
    for line, chunk in _chunks(file):
        table = parse_jsonl(chunk)
        if table is not None:
            block = Block(file.path, table, np.arange(line, line + table.num_rows, dtype=np.int64))
        else:
            block = _lines_block(file.path, chunk, line)
        if (
            first_block
            and not len(block.rows)
            and (block.table is None or not block.table.num_rows)
            and block.bad
        ):
            number, reason, raw = block.bad[0]
            raise DataFileError(
                f"{file.path}: line {number}: {reason}; expected JSON Lines (one JSON object per line)"
                + (
                    ""
                    if file.path.lower().endswith((".txt", ".txt.gz", ".txt.zst"))
                    else "; for a JSON array or a plain-text prompt list set `fileFormat: json` or `text`"
                )
                + f": {raw[:200]!r}"
            )
        first_block = False
        yield block


def parse_jsonl(data: bytes) -> pa.Table | None:
    """The table of JSONL bytes when Arrow parses them with exactly one row per line, else None."""
    end = len(data)
    while end and data[end - 1] in b" \t\r\n":
        end -= 1
    if not end:
        return pa.table({})
    lines = data.count(b"\n", 0, end) + 1
    body = pa.py_buffer(data).slice(0, end)
    for block in (ARROW_BLOCK, end + 1):
        try:
            table = pa_json.read_json(
                pa.BufferReader(body), read_options=pa_json.ReadOptions(block_size=block)
            )
        except pa.ArrowException as error:
            # A row longer than a block needs one block for the whole chunk; anything else is data.
            if "straddl" in str(error) and block == ARROW_BLOCK:
                continue
            return None
        # Blank lines (or two objects on a line) break the row = line numbering: take the slow path.
        return table if table.num_rows == lines else None
    return None


def _lines_block(path: str, data: bytes, first: int) -> Block:
    """Line by line: for chunks Arrow cannot parse as a whole (each bad line gets its reason)."""
    block = Block(path)
    for number, raw in enumerate(data.split(b"\n"), first):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            block.bad.append((number, "not valid UTF-8", _clip(raw.decode("utf-8", "replace"))))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            block.bad.append((number, f"invalid JSON: {error.msg} (column {error.colno})", _clip(text)))
            continue
        if not isinstance(value, dict):
            block.bad.append((number, "not a JSON object", _clip(text)))
            continue
        block.rows.append((number, value))
    return block


def _json_array_blocks(file: DataFile) -> Iterator[Block]:
    """The elements of a JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    with open_binary(file.path, file.compression) as stream:
        reader = _TextWindow(stream, file.path)
        reader.skip_space()
        if reader.peek() != "[":
            raise DataFileError(f"{file.path}: line {reader.line}: expected a JSON array (`[`)")
        reader.advance(1)
        number = 0
        pending: list[tuple[int, dict[str, Any]]] = []
        while True:
            reader.skip_space()
            if reader.peek() == "]":
                break
            if number:
                if reader.peek() != ",":
                    raise DataFileError(
                        f"{file.path}: line {reader.line}: expected `,` or `]` after element {number}"
                    )
                reader.advance(1)
                reader.skip_space()
            number += 1
            line = reader.line
            value = reader.decode(decoder, number)
            if not isinstance(value, dict):
                raise DataFileError(
                    f"{file.path}: element {number} (line {line}): a JSON {type(value).__name__}; "
                    "expected an array of objects"
                )
            pending.append((number, value))
            if len(pending) >= BATCH_ROWS:
                yield _objects_block(file.path, pending)
                pending = []
        if pending:
            yield _objects_block(file.path, pending)


class _TextWindow:
    """A window of decoded text over a byte stream, refilled as elements are consumed."""

    def __init__(self, stream: IO[bytes], path: str) -> None:
        self.stream = stream
        self.path = path
        self.text = ""
        self.position = 0
        self.line = 1
        self.ended = False
        self._tail = b""

    def _fill(self) -> bool:
        if self.ended:
            return False
        data = self.stream.read(BLOCK_BYTES)
        if not data:
            self.ended = True
            if self._tail:
                raise DataFileError(f"{self.path}: line {self.line}: not valid UTF-8")
            return False
        data = self._tail + data
        try:
            decoded = data.decode("utf-8")
            self._tail = b""
        except UnicodeDecodeError as error:
            if error.start < len(data) - 4:
                raise DataFileError(f"{self.path}: line {self.line}: not valid UTF-8") from error
            decoded, self._tail = data[: error.start].decode("utf-8"), data[error.start :]
        self.text = self.text[self.position :] + decoded
        self.position = 0
        return True

    def peek(self) -> str:
        while self.position >= len(self.text):
            if not self._fill():
                raise DataFileError(f"{self.path}: line {self.line}: the JSON array is not closed (`]`)")
        return self.text[self.position]

    def advance(self, count: int) -> None:
        self.line += self.text.count("\n", self.position, self.position + count)
        self.position += count

    def skip_space(self) -> None:
        while True:
            stripped = len(self.text) - len(self.text[self.position :].lstrip())
            self.advance(max(stripped - self.position, 0))
            if self.position < len(self.text) or not self._fill():
                return

    def decode(self, decoder: json.JSONDecoder, number: int) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.position)
            except json.JSONDecodeError as error:
                # Maybe the element goes on past the window: read more and try again.
                if not self.ended and self._fill():
                    continue
                line = self.line + self.text.count("\n", self.position, error.pos)
                raise DataFileError(
                    f"{self.path}: element {number} (line {self.line}): invalid JSON at line {line} "
                    f"column {error.colno}: {error.msg}; expected a JSON array of objects"
                ) from error
            self.advance(end - self.position)
            return value


def _objects_block(path: str, rows: list[tuple[int, dict[str, Any]]]) -> Block:
    """A block of parsed objects: as a table when Arrow can type the columns, else as rows."""
    numbers = np.array([n for n, _ in rows], dtype=np.int64)
    try:
        array = pa.array([row for _, row in rows])
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return Block(path, rows=rows)
    if not pa.types.is_struct(array.type):
        return Block(path, rows=rows)
    return Block(path, pa.Table.from_struct_array(array), numbers)


def _parquet_blocks(file: DataFile) -> Iterator[Block]:
    import pyarrow.parquet as pq

    with open_binary(file.path, file.compression) as stream:
        parquet = pq.ParquetFile(stream)
        start = 1
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            yield Block(file.path, table, np.arange(start, start + table.num_rows, dtype=np.int64))
            start += table.num_rows


def _arrow_blocks(file: DataFile) -> Iterator[Block]:
    import pyarrow.ipc as ipc

    with open_binary(file.path, file.compression) as stream:
        head = stream.read(6)
    with open_binary(file.path, file.compression) as stream:
        reader: Any = ipc.open_file(stream) if head == b"ARROW1" else ipc.open_stream(stream)
        batches = (
            (reader.get_batch(i) for i in range(reader.num_record_batches))
            if head == b"ARROW1"
            else iter(reader)
        )
        start = 1
        for batch in batches:
            table = pa.Table.from_batches([batch])
            yield Block(file.path, table, np.arange(start, start + table.num_rows, dtype=np.int64))
            start += table.num_rows


def _text_blocks(file: DataFile) -> Iterator[Block]:
    for line, chunk in _chunks(file):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            bad_line = line + chunk.count(b"\n", 0, error.start)
            raise DataFileError(
                f"{file.path}: line {bad_line}: not valid UTF-8; expected a plain-text prompt list"
            ) from error
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        stripped = [value.rstrip("\r") for value in lines]
        keep = [i for i, value in enumerate(stripped) if value.strip()]
        table = pa.table({TEXT_FIELD: pa.array([stripped[i] for i in keep], pa.string())})
        yield Block(file.path, table, np.array(keep, dtype=np.int64) + line)


# ---------------------------------------------------------------------------------------------------
# Rows, for loaders that work on Python objects


def iter_rows(uri: str, file_format: str = "auto") -> Iterator[tuple[str, int, dict[str, Any] | str]]:
    """(file, line or row number, row) of every row of a dataset, in order.

    A line that is not a JSON object comes as its raw text (so a caller can count it as malformed).

    Raises:
        DataFileError: a file is missing or not data at all.
    """
    for file in data_files(uri, file_format):
        for block in blocks(file):
            items: list[tuple[int, dict[str, Any] | str]] = list(block.python_rows())
            if block.bad:
                items += [(number, raw) for number, _, raw in block.bad]
                items.sort(key=lambda item: item[0])
            for number, row in items:
                yield file.path, number, row

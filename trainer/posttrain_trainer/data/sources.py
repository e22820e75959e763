"""Read the sources of a DataSlice into one columnar corpus of chat rows; set malformed rows aside.

Inputs: JSONL or Parquet files or folders (`file://`, `pvc://CLAIM/path`, `s3://`) with rows in
ShareGPT, Alpaca, OpenAI-messages or posttrain chat format (`common/chat.py` documents the schema).
Outputs: a `Corpus` — the messages flattened into columns (role codes, an Arrow column of contents,
per-row offsets), each row's id, source and line, and its `meta` kept aside as read until the rows
are written — and the rejects: `{source, file, line, reason, raw}` for each malformed row.

A file is parsed with Arrow's JSON reader and validated column by column. The rows the columns do
not accept, and whole files Arrow cannot parse (a field that changes type, invalid JSON, blank
lines), go row by row through `chat.normalize`, the one definition of a valid row, which accepts
them or gives the reason. The columnar path accepts only rows `normalize` accepts unchanged, so the
corpus does not depend on which path a file took. Null values inside `meta` are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain_trainer.common.chat import SHAREGPT_ROLES, RowError, normalize
from posttrain_trainer.common.readers import RAW_LIMIT, Block, blocks, data_files
from posttrain_trainer.data.errors import DataError
from posttrain_trainer.data.text import large_strings

ROLES = ("system", "user", "assistant")
SYSTEM, USER, ASSISTANT = 0, 1, 2
ROLE_CODES = {name: code for code, name in enumerate(ROLES)}
CHAT_FORMATS = ("auto", "chat", "openai", "sharegpt", "alpaca")

# A message counts as non-empty when it has a letter, digit, punctuation or symbol: never whitespace
# in Python's sense either, so the columnar check never accepts what `str.strip()` would empty.
VISIBLE = r"[\p{L}\p{N}\p{P}\p{S}]"
_UNKNOWN, _OPENAI, _SHAREGPT, _ALPACA = 0, 1, 2, 3


class MetaStore:
    """The `meta` objects of the rows as read (Arrow struct columns or lists of dicts).

    They are looked up by (chunk, index) only for the rows that are written.
    """

    def __init__(self) -> None:
        self._chunks: list[pa.Array | list[dict[str, Any]]] = []

    def add(self, chunk: pa.Array | list[dict[str, Any]]) -> int:
        """Keep a chunk; returns its number."""
        self._chunks.append(chunk)
        return len(self._chunks) - 1

    def get(self, chunks: np.ndarray, indices: np.ndarray) -> list[dict[str, Any]]:
        """The meta dicts of the given (chunk, index) references; chunk -1 means no meta."""
        out: list[dict[str, Any]] = [{} for _ in range(len(chunks))]
        for chunk_id in np.unique(chunks):
            if chunk_id < 0:
                continue
            where = np.flatnonzero(chunks == chunk_id)
            chunk = self._chunks[int(chunk_id)]
            if isinstance(chunk, list):
                values = [chunk[int(i)] for i in indices[where]]
            else:
                values = chunk.take(pa.array(indices[where])).to_pylist()
            for position, value in zip(where.tolist(), values, strict=True):
                out[position] = _without_nulls(value) if isinstance(value, dict) else {}
        return out

    def numeric(self, chunks: np.ndarray, indices: np.ndarray, name: str) -> np.ndarray:
        """The numeric meta field `name` of each referenced row (NaN where absent or not a number)."""
        out = np.full(len(chunks), np.nan)
        for chunk_id in np.unique(chunks):
            if chunk_id < 0:
                continue
            where = np.flatnonzero(chunks == chunk_id)
            chunk = self._chunks[int(chunk_id)]
            if isinstance(chunk, list):
                values = [chunk[int(i)].get(name) for i in indices[where]]
                out[where] = [
                    float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan
                    for v in values
                ]
                continue
            kind = chunk.type
            if not pa.types.is_struct(kind) or kind.get_field_index(name) < 0:
                continue
            column = pc.struct_field(chunk, [kind.get_field_index(name)])
            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                taken = column.take(pa.array(indices[where])).cast(pa.float64())
                out[where] = taken.fill_null(np.nan).to_numpy(zero_copy_only=False)
        return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@dataclass
class Corpus:
    """Chat rows as columns. Row i's messages are `offsets[i]:offsets[i + 1]` of `roles`/`contents`."""

    sources: list[str]
    """URI of each source (rows refer to them by index)."""
    source: np.ndarray
    """Source index of each row."""
    line: np.ndarray
    """Line (JSONL) or row (Parquet) number of each row in its file, from 1."""
    ids: pa.LargeStringArray
    """The row's own id, or null: derived from the content when written."""
    offsets: np.ndarray
    roles: np.ndarray
    """Role code of each message: 0 system, 1 user, 2 assistant."""
    contents: pa.LargeStringArray
    meta_chunk: np.ndarray
    meta_index: np.ndarray
    meta: MetaStore = field(default_factory=MetaStore)

    def __len__(self) -> int:
        return len(self.line)

    def message_rows(self) -> np.ndarray:
        """The row of each message."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    def first(self, role: int) -> np.ndarray:
        """Index of each row's first message with the role, -1 where there is none."""
        positions = np.flatnonzero(self.roles == role)
        rows = self.message_rows()[positions]
        found, where = np.unique(rows, return_index=True)
        out = np.full(len(self), -1, dtype=np.int64)
        out[found] = positions[where]
        return out

    def take(self, rows: np.ndarray) -> Corpus:
        """The given rows, in that order (a row may repeat)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.diff(self.offsets)[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        messages = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths) + np.arange(
            offsets[-1], dtype=np.int64
        )
        return Corpus(
            sources=self.sources,
            source=self.source[rows],
            line=self.line[rows],
            ids=self.ids.take(pa.array(rows)),
            offsets=offsets,
            roles=self.roles[messages],
            contents=self.contents.take(pa.array(messages)),
            meta_chunk=self.meta_chunk[rows],
            meta_index=self.meta_index[rows],
            meta=self.meta,
        )

    @staticmethod
    def concat(parts: list[Corpus], sources: list[str], meta: MetaStore) -> Corpus:
        """The rows of all parts, in order."""
        if not parts:
            return Corpus.empty(sources, meta)
        lengths = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Corpus(
            sources=sources,
            source=np.concatenate([p.source for p in parts]),
            line=np.concatenate([p.line for p in parts]),
            ids=large_strings(pa.chunked_array([p.ids for p in parts], type=pa.large_string())),
            offsets=offsets,
            roles=np.concatenate([p.roles for p in parts]),
            contents=large_strings(pa.chunked_array([p.contents for p in parts], type=pa.large_string())),
            meta_chunk=np.concatenate([p.meta_chunk for p in parts]),
            meta_index=np.concatenate([p.meta_index for p in parts]),
            meta=meta,
        )

    @staticmethod
    def empty(sources: list[str], meta: MetaStore) -> Corpus:
        """A corpus without rows."""
        return Corpus(
            sources=sources,
            source=np.empty(0, np.int32),
            line=np.empty(0, np.int64),
            ids=pa.array([], pa.large_string()),
            offsets=np.zeros(1, np.int64),
            roles=np.empty(0, np.int8),
            contents=pa.array([], pa.large_string()),
            meta_chunk=np.empty(0, np.int32),
            meta_index=np.empty(0, np.int64),
            meta=meta,
        )


@dataclass
class _Accepted:
    """Rows of one file accepted so far: their row numbers in the file and their messages."""

    rows: np.ndarray
    lengths: np.ndarray
    roles: np.ndarray
    contents: pa.Array
    ids: pa.Array
    meta_chunk: np.ndarray
    meta_index: np.ndarray


def parts(
    sources: Sequence[tuple[str, str] | tuple[str, str, str]],
    meta: MetaStore | None = None,
    on_file: Callable[[str, int], None] | None = None,
) -> Iterator[tuple[Corpus, list[dict[str, Any]]]]:
    """Read every (uri, row format[, file format]) source a block at a time, in order.

    Yields each block's accepted rows (`sources` set to the sources' URIs) and its rejects. The
    rows' `meta` goes to `meta`, or to a store of the block's own when None, so that a reader
    who drops the block drops its meta too.

    Raises:
        DataError: a source is not chat data (its format is preference, ranking or steps).
        readers.DataFileError: a source is missing or one of its files is not data at all.
    """
    uris = [source[0] for source in sources]
    for index, source in enumerate(sources):
        uri, fmt = source[0], source[1]
        file_format = source[2] if len(source) > 2 else "auto"
        if fmt not in CHAT_FORMATS:
            raise DataError(
                f"source {uri} has format {fmt!r}: a DataSlice reads chat data ({', '.join(CHAT_FORMATS)})"
            )
        for file in data_files(uri, file_format):
            # A prompt list is instructions, whatever row format the source names.
            row_format = "alpaca" if file.format == "text" else fmt
            count = 0
            for block in blocks(file):
                part, bad = read_block(block, row_format, MetaStore() if meta is None else meta)
                part.sources = uris
                part.source = np.full(len(part), index, dtype=np.int32)
                for reject in bad:
                    reject["source"] = uri
                    reject["file"] = file.path
                count += len(part) + len(bad)
                yield part, bad
            if on_file is not None:
                on_file(file.path, count)


def load(
    sources: Sequence[tuple[str, str] | tuple[str, str, str]],
    on_file: Callable[[str, int], None] | None = None,
) -> tuple[Corpus, list[dict[str, Any]]]:
    """Read every (uri, row format[, file format]) source whole; returns the corpus and the rejects.

    Raises:
        DataError: a source is not chat data (its format is preference, ranking or steps).
        readers.DataFileError: a source is missing or one of its files is not data at all.
    """
    meta = MetaStore()
    read: list[Corpus] = []
    rejects: list[dict[str, Any]] = []
    for part, bad in parts(sources, meta, on_file):
        read.append(part)
        rejects.extend(bad)
    corpus = Corpus.concat(read, [source[0] for source in sources], meta)
    del read
    # Arrow's allocator keeps the parsed blocks' memory for reuse, but nothing else would reuse it:
    # hand it back so the analysis has it (at 1M rows, 0.7 GB of the peak).
    pa.default_memory_pool().release_unused()
    return corpus, rejects


def read_block(block: Block, fmt: str, meta: MetaStore) -> tuple[Corpus, list[dict[str, Any]]]:
    """The accepted rows and the rejects of one block of a file (`source` is left at 0)."""
    rejects = [_reject(number, reason, raw) for number, reason, raw in block.bad]
    parts: list[Corpus] = []
    if block.table is not None and block.table.num_rows:
        part, bad = _from_table(block.table, fmt, meta)
        part.line = block.numbers[part.line - 1]
        for reject in bad:
            reject["line"] = int(block.numbers[reject["line"] - 1])
        parts.append(part)
        rejects += bad
    if block.rows:
        rows: list[tuple[int, dict[str, Any]]] = []
        for number, obj in block.rows:
            try:
                rows.append((number, normalize(obj, fmt)))
            except RowError as error:
                rejects.append(_reject(number, str(error), obj))
        parts.append(_python_part(rows, meta))
    if len(parts) == 1:
        return parts[0], rejects
    return _merge_parts(parts, meta), rejects


def _merge_parts(parts: list[Corpus], meta: MetaStore) -> Corpus:
    merged = Corpus.concat(parts, [], meta)
    order = np.argsort(merged.line, kind="stable")
    return merged if np.all(order == np.arange(len(order))) else merged.take(order)


def _reject(line: int, reason: str, raw: Any) -> dict[str, Any]:
    if isinstance(raw, str) and len(raw) > RAW_LIMIT:
        raw = raw[:RAW_LIMIT] + "..."
    return {"line": line, "reason": reason, "raw": raw}


def _python_part(rows: list[tuple[int, dict[str, Any]]], meta: MetaStore) -> Corpus:
    """A corpus part from normalised chat rows (line number, row)."""
    lengths = np.array([len(row["messages"]) for _, row in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    roles = np.array([ROLE_CODES[m["role"]] for _, row in rows for m in row["messages"]], dtype=np.int8)
    contents = pa.array([m["content"] for _, row in rows for m in row["messages"]], pa.large_string())
    metas = [row["meta"] for _, row in rows]
    chunk = meta.add(metas) if any(metas) else -1
    return Corpus(
        sources=[],
        source=np.zeros(len(rows), np.int32),
        line=np.array([number for number, _ in rows], dtype=np.int64),
        ids=pa.array([row["id"] for _, row in rows], pa.large_string()),
        offsets=offsets,
        roles=roles,
        contents=contents,
        meta_chunk=np.full(len(rows), chunk, dtype=np.int32),
        meta_index=np.arange(len(rows), dtype=np.int64),
        meta=meta,
    )


def _column(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _present(column: pa.Array | None, n: int) -> np.ndarray:
    """Where the column has a value (a null and a missing key read the same)."""
    if column is None:
        return np.zeros(n, dtype=bool)
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _codes(strings: pa.Array, mapping: dict[str, int]) -> np.ndarray:
    """Map each string through `mapping` (distinct values only); -1 for null or unmapped."""
    encoded = pc.dictionary_encode(strings)
    table = np.array([mapping.get(v, -1) for v in encoded.dictionary.to_pylist()] + [-1], dtype=np.int8)
    indices = np.asarray(encoded.indices.fill_null(len(table) - 1).to_numpy(zero_copy_only=False))
    codes: np.ndarray = table[indices]
    return codes


def _visible(strings: pa.Array) -> np.ndarray:
    matched = pc.match_substring_regex(strings, VISIBLE).fill_null(False)
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)


def _messages(
    column: pa.Array | None,
    rows: np.ndarray,
    role_field: str,
    content_field: str,
    mapping: dict[str, int],
    lower: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Validate list-of-struct messages (OpenAI, or ShareGPT with `lower` role names) of the rows.

    Returns (accepted mask over `rows`, lengths, role codes, contents) of the accepted rows.
    """
    none = (np.zeros(len(rows), bool), np.empty(0, np.int64), np.empty(0, np.int8), pa.array([], pa.string()))
    if column is None or not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return none
    item = column.type.value_type
    if not pa.types.is_struct(item):
        return none
    role_index, content_index = item.get_field_index(role_field), item.get_field_index(content_field)
    if role_index < 0 or content_index < 0:
        return none
    if not (_is_text(item.field(role_index).type) and _is_text(item.field(content_index).type)):
        return none
    taken = column if len(rows) == len(column) else column.take(pa.array(rows))
    lengths = pc.list_value_length(taken).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(taken)
    present = _present(flat, len(flat))
    role_text = pc.struct_field(flat, [role_index])
    if lower:
        role_text = pc.utf8_lower(role_text)
    roles = _codes(role_text, mapping)
    contents = pc.struct_field(flat, [content_index])
    good = present & (roles >= 0) & _present(contents, len(contents))
    owner = np.repeat(np.arange(len(rows)), lengths)
    bad = np.bincount(owner[~good], minlength=len(rows)) > 0
    user = good & (roles == USER)
    # The regex runs on the user messages only (the answers are most of the bytes).
    user[user] = _visible(contents.filter(pa.array(user)))
    accepted = (lengths > 0) & ~bad & (np.bincount(owner[user], minlength=len(rows)) > 0)
    keep = accepted[owner]
    kept = contents if keep.all() else contents.filter(pa.array(keep))
    return accepted, lengths[accepted], roles[keep], kept


def _alpaca(table: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Validate Alpaca rows: a user message `instruction` (+ blank line + `input`), the `output`."""
    n = len(rows)
    instruction = _column(table, "instruction")
    if instruction is None or not _is_text(instruction.type):
        return np.zeros(n, bool), np.empty(0, np.int64), np.empty(0, np.int8), pa.array([], pa.string())
    prompt = large_strings(instruction.take(pa.array(rows)))
    accepted = _present(prompt, n)
    parts = {}
    for name in ("input", "output"):
        column = _column(table, name)
        if column is None:
            parts[name] = pa.nulls(n, pa.large_string())
            continue
        taken = column.take(pa.array(rows))
        if not _is_text(column.type):
            # Python decides for rows with a non-text value (`normalize` rejects or ignores it).
            accepted &= ~_present(taken, n)
            taken = pa.nulls(n, pa.large_string())
        parts[name] = large_strings(taken)
    extra = parts["input"].fill_null("")
    has_input = np.asarray(pc.greater(pc.utf8_length(extra), 0).to_numpy(zero_copy_only=False), dtype=bool)
    joined = pc.binary_join_element_wise(prompt, extra, pa.scalar("\n\n", pa.large_string()))
    prompt = pc.if_else(pa.array(has_input), joined, prompt)
    answer = parts["output"].fill_null("")
    has_output = np.asarray(pc.greater(pc.utf8_length(answer), 0).to_numpy(zero_copy_only=False), dtype=bool)
    accepted &= _visible(prompt)
    lengths = 1 + has_output[accepted].astype(np.int64)
    # Interleave: the prompt of row r, then its answer when it has one.
    both = pa.concat_arrays(
        [large_strings(prompt.filter(pa.array(accepted))), large_strings(answer.filter(pa.array(accepted)))]
    )
    count = int(accepted.sum())
    order = np.empty(int(lengths.sum()), dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    order[starts] = np.arange(count)
    with_answer = np.flatnonzero(lengths == 2)
    order[starts[with_answer] + 1] = count + with_answer
    roles = np.full(len(order), USER, dtype=np.int8)
    roles[starts[with_answer] + 1] = ASSISTANT
    return accepted, lengths, roles, both.take(pa.array(order))


def _from_table(table: pa.Table, fmt: str, meta: MetaStore) -> tuple[Corpus, list[dict[str, Any]]]:
    """Accept what the columns can, hand the rest to `chat.normalize` row by row."""
    n = table.num_rows
    messages = _column(table, "messages")
    conversations = _column(table, "conversations")
    if fmt == "auto":
        kind = np.full(n, _UNKNOWN, dtype=np.int8)
        alpaca_rows = _present(_column(table, "instruction"), n)
        kind[alpaca_rows] = _ALPACA
        kind[_present(conversations, n)] = _SHAREGPT
        kind[_present(messages, n)] = _OPENAI
    else:
        fixed = {"chat": _OPENAI, "openai": _OPENAI, "sharegpt": _SHAREGPT, "alpaca": _ALPACA}[fmt]
        kind = np.full(n, fixed, dtype=np.int8)

    meta_column = _column(table, "meta")
    if meta_column is not None and pa.types.is_struct(meta_column.type):
        meta_chunk = np.where(_present(meta_column, n), meta.add(meta_column), -1).astype(np.int32)
    else:
        meta_chunk = np.full(n, -1, dtype=np.int32)
    accepted: list[_Accepted] = []
    for code in (_OPENAI, _SHAREGPT, _ALPACA):
        rows = np.flatnonzero(kind == code)
        if not len(rows):
            continue
        if code == _OPENAI:
            ok, lengths, roles, contents = _messages(messages, rows, "role", "content", ROLE_CODES, False)
        elif code == _SHAREGPT:
            mapping = {name: ROLE_CODES[role] for name, role in SHAREGPT_ROLES.items()}
            ok, lengths, roles, contents = _messages(conversations, rows, "from", "value", mapping, True)
        else:
            ok, lengths, roles, contents = _alpaca(table, rows)
        kept = rows[ok]
        accepted.append(
            _Accepted(
                kept, lengths, roles, large_strings(contents), _ids(table, kept), meta_chunk[kept], kept
            )
        )

    done = np.zeros(n, dtype=bool)
    for part in accepted:
        done[part.rows] = True
    rest = np.flatnonzero(~done)
    rejects: list[dict[str, Any]] = []
    slow: list[tuple[int, dict[str, Any]]] = []
    if len(rest):
        for index, row in zip(rest.tolist(), table.take(pa.array(rest)).to_pylist(), strict=True):
            row = {k: v for k, v in row.items() if v is not None}
            try:
                slow.append((index, normalize(row, fmt)))
            except RowError as error:
                rejects.append(_reject(index + 1, str(error), row))
    if slow:
        python = _python_part(slow, meta)
        accepted.append(
            _Accepted(
                np.array([i for i, _ in slow], dtype=np.int64),
                np.diff(python.offsets),
                python.roles,
                python.contents,
                python.ids,
                python.meta_chunk,
                python.meta_index,
            )
        )
    return _merge(accepted, meta), rejects


def _ids(table: pa.Table, rows: np.ndarray) -> pa.Array:
    """The ids of accepted table rows: non-empty strings, null otherwise (derived when written)."""
    ids = _column(table, "id")
    if ids is None or not _is_text(ids.type):
        return pa.nulls(len(rows), pa.large_string())
    taken = large_strings(ids.take(pa.array(rows)))
    empty = pc.equal(pc.utf8_length(taken), 0).fill_null(True)
    return pc.if_else(empty, pa.scalar(None, pa.large_string()), taken)


def _merge(parts: list[_Accepted], meta: MetaStore) -> Corpus:
    """One corpus part of the accepted rows, in file order."""
    if not parts:
        return Corpus.empty([], meta)
    lengths = np.concatenate([p.lengths for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    merged = Corpus(
        sources=[],
        source=np.zeros(len(lengths), np.int32),
        line=np.concatenate([p.rows for p in parts]) + 1,
        ids=large_strings(pa.chunked_array([p.ids for p in parts], type=pa.large_string())),
        offsets=offsets,
        roles=np.concatenate([p.roles for p in parts]).astype(np.int8),
        contents=large_strings(pa.chunked_array([p.contents for p in parts], type=pa.large_string())),
        meta_chunk=np.concatenate([p.meta_chunk for p in parts]).astype(np.int32),
        meta_index=np.concatenate([p.meta_index for p in parts]).astype(np.int64),
        meta=meta,
    )
    order = np.argsort(merged.line, kind="stable")
    if len(parts) == 1 or np.all(order == np.arange(len(order))):
        return merged
    return merged.take(order)

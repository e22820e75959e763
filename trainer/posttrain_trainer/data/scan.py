"""The first pass of the DataSlice workload: every row analysed a block at a time, no text kept.

Holding the corpus (every message's text, in Arrow columns) made memory grow with the corpus: about
3.8x its JSONL size. Instead each block of rows the readers yield (`sources.parts`, up to 32 MiB of
JSONL) is analysed and reduced to what the later steps need of each row, and its text is dropped:

- its attributes (`attributes.analyse`, per row, so block by block gives the same values);
- a 128-bit key of its dedup text (exact dedup over all rows needs only the keys);
- its MinHash band keys, the signatures going to a scratch file (`dedup.SignatureStore`);
- whether a user message shares an n-gram with a benchmark prompt (the index is built first);
- its instruction, only when embeddings need it (neighbour decontamination, the diverse eval set).

About 230 bytes a row stay in memory with the default settings (attributes ~80, exact key 16, band
keys 112), plus one block's working set; the rows to write are read again in a second pass.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from posttrain.api.data import DataConfig

from posttrain_trainer.data.attributes import Attributes, analyse
from posttrain_trainer.data.decontaminate import BenchmarkIndex, contaminated
from posttrain_trainer.data.dedup import MinHasher, SignatureStore
from posttrain_trainer.data.sources import USER, Corpus, MetaStore, parts
from posttrain_trainer.data.text import Hashes, large_strings, ngrams, sequence_keys, words

Source = tuple[str, str] | tuple[str, str, str]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Scan:
    """What the first pass keeps of every row (in source and line order)."""

    sources: list[Source]
    """(uri, row format[, file format]) of each source, for the second pass."""
    attributes: Attributes
    rejects: list[dict[str, Any]]
    exact_keys: np.ndarray
    """The 128-bit key (2 uint64) of each row's normalised dedup text; no columns when exact dedup is off."""
    near: SignatureStore | None
    """The rows' MinHash signatures when near dedup is on."""
    contaminated: np.ndarray
    """True where a user message shares an n-gram with a benchmark prompt."""
    instructions: Corpus | None
    """Each row's first user message alone, when `needs_instructions`."""

    def __len__(self) -> int:
        return len(self.contaminated)


def needs_instructions(settings: DataConfig) -> bool:
    """Whether the later steps embed instructions (neighbour decontamination or a diverse eval set)."""
    contamination = settings.decontamination
    neighbours = bool(contamination.neighbours and any(b.uri for b in contamination.benchmarks))
    return neighbours or settings.eval_sets.diverse > 0


@dataclass
class _Facts:
    """What the first pass keeps of one block."""

    attributes: Attributes
    rejects: list[dict[str, Any]]
    keys: np.ndarray | None
    signatures: tuple[np.ndarray, np.ndarray] | None
    contaminated: np.ndarray
    instructions: pa.Array | None


@dataclass
class _Reducer:
    """Reduces a block to its `_Facts` (safe to run on several blocks at once)."""

    settings: DataConfig
    hasher: MinHasher | None
    benchmarks: BenchmarkIndex | None
    keep_instructions: bool
    tokenizer_path: Path | None
    classifier_path: Path | None

    def __call__(self, block: tuple[Corpus, list[dict[str, Any]]]) -> _Facts:
        part, rejects = block
        dedup = self.settings.dedup
        attributes, instruction_words = analyse(
            part,
            self.settings.categories,
            self.settings.buckets,
            tokenizer_path=self.tokenizer_path,
            classifier_path=self.classifier_path,
        )
        tokens = instruction_words if dedup.by == "instruction" else conversation_words(part)
        return _Facts(
            attributes=attributes,
            rejects=rejects,
            keys=sequence_keys(tokens) if dedup.exact else None,
            signatures=None
            if self.hasher is None
            else self.hasher.signatures(ngrams(tokens, dedup.shingle_size)),
            contaminated=_contaminated(part, self.benchmarks),
            instructions=part.contents.take(pa.array(part.first(USER))) if self.keep_instructions else None,
        )


WORKERS = 2
"""Blocks analysed at once (numpy and Arrow release the GIL); with a tokenizer or classifier model, one."""


def scan(
    sources: Sequence[Source],
    settings: DataConfig,
    scratch: Path,
    benchmarks: BenchmarkIndex | None = None,
    tokenizer_path: Path | None = None,
    classifier_path: Path | None = None,
) -> Scan:
    """Read and analyse every row of the sources, a block at a time (see the module docstring).

    `scratch` is a local folder for the MinHash signatures (4 bytes per permutation per row).

    Raises:
        DataError: a source is not chat data.
        readers.DataFileError: a source is missing or one of its files is not data at all.
    """
    dedup = settings.dedup
    near = SignatureStore(scratch, dedup.threshold, dedup.num_perm, settings.seed) if dedup.near else None
    keep_instructions = needs_instructions(settings)
    reduce = _Reducer(
        settings,
        None if near is None else near.hasher,
        benchmarks,
        keep_instructions,
        tokenizer_path,
        classifier_path,
    )
    analysed: list[Attributes] = []
    keys: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    instructions: list[pa.Array] = []
    rejects: list[dict[str, Any]] = []
    # Models are not shared between threads: with one, a block at a time.
    workers = 1 if tokenizer_path or classifier_path else WORKERS
    for facts in ordered_map(reduce, prefetched(parts(sources)), workers):
        rejects.extend(facts.rejects)
        analysed.append(facts.attributes)
        if facts.keys is not None:
            keys.append(facts.keys)
        if near is not None and facts.signatures is not None:
            near.append(*facts.signatures)
        flags.append(facts.contaminated)
        if facts.instructions is not None:
            instructions.append(facts.instructions)
    return Scan(
        sources=list(sources),
        attributes=Attributes.concat(analysed, settings.buckets),
        rejects=rejects,
        exact_keys=np.concatenate(keys) if keys else np.empty((0, 2 if dedup.exact else 0), np.uint64),
        near=near,
        contaminated=np.concatenate(flags) if flags else np.zeros(0, bool),
        instructions=_instruction_corpus(instructions) if keep_instructions else None,
    )


def ordered_map(function: Callable[[T], R], items: Iterator[T], workers: int) -> Iterator[R]:
    """`function` of each item, in order, computed by `workers` threads (at most `workers` items in flight)."""
    if workers <= 1:
        for item in items:
            yield function(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """The items, the next one produced in a thread while the caller works on the current one.

    Reading a block (file I/O, Arrow's JSON parser, the column checks) and analysing the one before
    then share the cores; at most two blocks are in memory. An error of the producer is raised here.
    """
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put((False, None))
        except BaseException as error:  # handed to the consumer, who raises it
            handoff.put((False, error))

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            more, value = handoff.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        while producer.is_alive():
            try:
                handoff.get_nowait()
            except queue.Empty:
                producer.join(0.1)


def conversation_words(corpus: Corpus) -> Hashes:
    """The words of every message of each row, in order."""
    per_message = words(corpus.contents)
    return Hashes(per_message.values, per_message.offsets[corpus.offsets])


def _contaminated(part: Corpus, index: BenchmarkIndex | None) -> np.ndarray:
    """True for each row of the block whose user messages overlap a benchmark prompt."""
    if index is None:
        return np.zeros(len(part), dtype=bool)
    users = np.flatnonzero(part.roles == USER)
    return contaminated(index, part.contents.take(pa.array(users)), part.message_rows()[users], len(part))


def _instruction_corpus(instructions: list[pa.Array]) -> Corpus:
    """A corpus whose row i is row i's first user message alone (what the embeddings read)."""
    contents = large_strings(pa.chunked_array(instructions, type=pa.large_string()))
    count = len(contents)
    return Corpus(
        sources=[],
        source=np.zeros(count, np.int32),
        line=np.zeros(count, np.int64),
        ids=pa.nulls(count, pa.large_string()),
        offsets=np.arange(count + 1, dtype=np.int64),
        roles=np.full(count, USER, dtype=np.int8),
        contents=contents,
        meta_chunk=np.full(count, -1, dtype=np.int32),
        meta_index=np.zeros(count, np.int64),
        meta=MetaStore(),
    )

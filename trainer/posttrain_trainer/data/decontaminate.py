"""Benchmark decontamination by word n-gram overlap.

Inputs: benchmark prompt sets (any form `common.readers` reads, plain-text prompt lists included) and the user messages of the rows. A benchmark row
gives its prompt texts from `prompt`, `instruction` (+ `input`), `question` or `turns` (MT-Bench:
strings or messages), or from chat rows (the user messages). Output: a flag per row, True when a user
message shares a word n-gram (`ngram` words, normalised: lower case, ASCII punctuation ignored) with
any benchmark prompt; a prompt shorter than `ngram` words matches when all its words occur in a row
as a contiguous run.

All n-grams are hashed (`text.ngrams`), the benchmark's into a sorted array, and each row's are looked
up with one binary search over the whole column.

References: the GPT-3 and Llama 2 contamination analyses (13-gram overlap); Luo et al. 2024, "Arena
Learning" (benchmark items removed from training data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from posttrain_trainer.common.chat import RowError, normalize
from posttrain_trainer.common.storage import read_rows
from posttrain_trainer.data.text import Hashes, ngrams, words

PROMPT_FIELDS = ("prompt", "question", "query", "problem")


def prompt_texts(row: Any) -> list[str]:
    """The prompt texts of one benchmark row (empty when it has none)."""
    if not isinstance(row, dict):
        return []
    for name in PROMPT_FIELDS:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return [value]
        if isinstance(value, list):
            # A preference-style prompt: a list of messages.
            return [m["content"] for m in value if _is_user_message(m)]
    turns = row.get("turns")
    if isinstance(turns, list):
        out = []
        for turn in turns:
            if isinstance(turn, str):
                out.append(turn)
            elif isinstance(turn, dict) and isinstance(turn.get("content"), str):
                out.append(turn["content"])
        return [t for t in out if t.strip()]
    try:
        chat = normalize(row)
    except RowError:
        return []
    return [m["content"] for m in chat["messages"] if m["role"] == "user" and m["content"].strip()]


def _is_user_message(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and message.get("role", "user") == "user"
        and isinstance(message.get("content"), str)
        and bool(message["content"].strip())
    )


def read_prompts(sources: Sequence[str | tuple[str, str]]) -> list[str]:
    """Every prompt text of the benchmark sets, each a URI or (URI, file format).

    Raises:
        readers.DataFileError: a set is missing, not data, or has a line that is not a JSON object.
    """
    prompts: list[str] = []
    for source in sources:
        uri, file_format = (source, "auto") if isinstance(source, str) else source
        for row in read_rows(uri, file_format):
            prompts.extend(prompt_texts(row))
    return prompts


@dataclass
class BenchmarkIndex:
    """Sorted n-gram hashes of the benchmark prompts; whole-prompt hashes of shorter prompts by length."""

    ngram: int
    grams: np.ndarray
    short: dict[int, np.ndarray] = field(default_factory=dict)
    prompts: int = 0

    @classmethod
    def build(cls, prompts: list[str], ngram: int) -> BenchmarkIndex:
        """Index the prompts for n-gram lookups."""
        tokens = words(pa.array(prompts, pa.large_string()))
        grams = np.unique(ngrams(tokens, ngram, whole_if_shorter=False).values)
        counts = tokens.counts()
        short: dict[int, np.ndarray] = {}
        for length in np.unique(counts[(counts > 0) & (counts < ngram)]).tolist():
            texts = np.flatnonzero(counts == length)
            # A whole k-word prompt hashes like a k-gram of a longer text (text.ngrams).
            short[length] = np.unique(ngrams(tokens.select(texts), ngram).values)
        return cls(ngram=ngram, grams=grams, short=short, prompts=len(prompts))

    def matches(self, tokens: Hashes) -> np.ndarray:
        """True for each text sharing an n-gram (or a whole short prompt) with the benchmarks."""
        hit = np.zeros(len(tokens), dtype=bool)
        lookups = [(self.ngram, self.grams), *self.short.items()]
        for length, table in lookups:
            if not len(table):
                continue
            grams = ngrams(tokens, length, whole_if_shorter=False)
            position = np.minimum(np.searchsorted(table, grams.values), len(table) - 1)
            found = table[position] == grams.values
            hit[grams.owners()[found]] = True
        return hit


def contaminated(
    index: BenchmarkIndex, user_messages: pa.Array, message_rows: np.ndarray, rows: int
) -> np.ndarray:
    """True for each row one of whose user messages (`message_rows` gives each one's row) matches."""
    flagged = np.zeros(rows, dtype=bool)
    if index.prompts == 0 or not len(user_messages):
        return flagged
    hit = index.matches(words(user_messages))
    flagged[message_rows[hit]] = True
    return flagged

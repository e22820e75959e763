"""Benchmark decontamination by word n-gram overlap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from posttrain_trainer.data.decontaminate import BenchmarkIndex, contaminated, prompt_texts, read_prompts

LONG = "A train leaves the station at noon travelling at sixty miles per hour towards the coast"
SHORT = "Why is the sky blue?"


@pytest.mark.parametrize(
    ("row", "texts"),
    [
        ({"prompt": "p"}, ["p"]),
        ({"question": "q", "answer": "a"}, ["q"]),
        ({"instruction": "i", "input": "x"}, ["i\n\nx"]),
        ({"turns": ["t1", "t2"], "question_id": 81}, ["t1", "t2"]),
        ({"turns": [{"content": "c1"}, {"content": " "}]}, ["c1"]),
        ({"prompt": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}, ["u"]),
        ({"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]}, ["h"]),
        ({"answer": "only"}, []),
        ("not a row", []),
    ],
)
def test_prompt_texts_of_benchmark_formats(row: Any, texts: list[str]) -> None:
    assert prompt_texts(row) == texts


def flagged(prompts: list[str], messages: list[str], ngram: int = 8) -> list[bool]:
    index = BenchmarkIndex.build(prompts, ngram)
    hits = contaminated(index, pa.array(messages), np.arange(len(messages)), len(messages))
    flags: list[bool] = hits.tolist()
    return flags


def test_planted_benchmark_prompts_are_found() -> None:
    messages = [
        f"Please solve this: {LONG.upper()}. Show your work.",  # planted inside a longer message
        "why is the sky blue",  # a short prompt, whole
        "Tell me: why is the sky blue, and why are sunsets red?",
        "A train leaves the station at noon",  # shorter than the n-gram: no overlap
        "Why is the sea blue?",
        "Write a poem about trains.",
    ]
    assert flagged([LONG, SHORT], messages) == [True, True, True, False, False, False]


def test_an_ngram_shared_anywhere_is_enough() -> None:
    tail = " ".join(LONG.split()[-8:])
    assert flagged([LONG], [f"Unrelated start. {tail} and more"]) == [True]
    assert flagged([LONG], [f"Unrelated start. {' '.join(LONG.split()[-7:])}"]) == [False]


def test_rows_are_flagged_through_any_user_message() -> None:
    index = BenchmarkIndex.build([SHORT], 8)
    messages = pa.array(["hello there", "Why is the sky blue?", "another"])
    rows = np.array([0, 0, 1])
    assert contaminated(index, messages, rows, 3).tolist() == [True, False, False]


def test_no_benchmarks_flag_nothing() -> None:
    assert flagged([], ["anything at all"]) == [False]


def test_read_prompts_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"prompt": "a"}, {"turns": ["b", "c"]}]) + "\n")
    assert read_prompts([f"file://{path}"]) == ["a", "b", "c"]

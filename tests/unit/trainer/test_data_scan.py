"""The first pass of the DataSlice workload: block by block, the same answers as the whole corpus."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from posttrain.api.data import DataConfig
from posttrain_trainer.data.dedup import SignatureStore, near_duplicates
from posttrain_trainer.data.scan import needs_instructions, ordered_map, prefetched, scan
from posttrain_trainer.data.text import ngrams, words


def test_signatures_added_by_block_find_the_same_near_duplicates(tmp_path: Path) -> None:
    rng = random.Random(2)
    vocabulary = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(25)) for _ in range(150)]
    for _ in range(50):  # a near copy of an earlier text: one word changed
        changed = texts[rng.randrange(len(texts))].split()
        changed[rng.randrange(25)] = "other"
        texts.append(" ".join(changed))
    texts += ["", "short"]  # no shingle / fewer words than a shingle
    shingles = ngrams(words(pa.array(texts)), 5)
    store = SignatureStore(tmp_path, 0.7, 64, seed=3)
    for start in range(0, len(texts), 40):
        store.add(ngrams(words(pa.array(texts[start : start + 40])), 5))
    subset = np.flatnonzero(np.arange(len(texts)) % 7 != 0)
    expected, _ = near_duplicates(shingles.select(subset), 0.7, 64, seed=3)
    assert expected.sum() > 10
    assert store.near_duplicates(subset).tolist() == expected.tolist()


def test_prefetched_keeps_the_order_and_raises_the_producers_error() -> None:
    assert list(prefetched(iter(range(50)))) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("unreadable block")

    seen = []
    with pytest.raises(ValueError, match="unreadable block"):
        for item in prefetched(failing()):
            seen.append(item)
    assert seen == [1]


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced = []

    def endless() -> Iterator[int]:
        number = 0
        while True:
            produced.append(number)
            yield number
            number += 1

    before = threading.active_count()
    for item in prefetched(endless()):
        if item == 3:
            break
    assert threading.active_count() == before
    assert len(produced) <= 6  # the current item, one handed over, one being put


def test_instructions_are_kept_only_for_embeddings() -> None:
    assert not needs_instructions(DataConfig())
    assert needs_instructions(DataConfig.model_validate({"evalSets": {"diverse": 5}}))
    bench = {"benchmarks": [{"uri": "file:///bench.jsonl"}]}
    assert not needs_instructions(DataConfig.model_validate({"decontamination": bench}))
    assert needs_instructions(DataConfig.model_validate({"decontamination": {**bench, "neighbours": 3}}))


def test_ordered_map_keeps_the_order_and_raises_the_first_error() -> None:
    def slow_for_even(number: int) -> int:
        if number % 2 == 0:
            time.sleep(0.01)
        return number * 10

    assert list(ordered_map(slow_for_even, iter(range(20)), 2)) == [n * 10 for n in range(20)]
    assert list(ordered_map(slow_for_even, iter(range(5)), 1)) == [0, 10, 20, 30, 40]

    def failing(number: int) -> int:
        if number == 3:
            raise ValueError("block 3")
        return number

    seen = []
    with pytest.raises(ValueError, match="block 3"):
        for value in ordered_map(failing, iter(range(10)), 2):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_a_tokenizer_is_loaded_once_for_all_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers
    from posttrain_trainer.common.tiny import make_tokenizer

    folder = tmp_path / "tokenizer"
    make_tokenizer().save_pretrained(folder)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i} about a topic"},
                {"role": "assistant", "content": "Yes."},
            ]
        }
        for i in range(60)
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    loads = []
    load = transformers.AutoTokenizer.from_pretrained

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(args[0])
        return load(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counted)
    monkeypatch.setattr("posttrain_trainer.common.readers.BLOCK_BYTES", 500)
    scanned = scan(
        [(f"file://{tmp_path / 'rows.jsonl'}", "auto")], DataConfig(), tmp_path, tokenizer_path=folder
    )
    assert len(scanned) == 60
    assert len(loads) == 1

"""The dataset readers: each form data is published in, detection, overrides and clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from posttrain_trainer.common import readers
from posttrain_trainer.common.readers import DataFileError, data_files, iter_rows
from posttrain_trainer.common.storage import read_rows
from posttrain_trainer.data.decontaminate import read_prompts
from posttrain_trainer.data.sources import load
from posttrain_trainer.train.common import load_chats


def sharegpt(i: int) -> dict[str, Any]:
    return {
        "id": f"row-{i}",
        "conversations": [
            {"from": "human", "value": f"Question number {i}?"},
            {"from": "gpt", "value": f"Answer number {i}."},
        ],
    }


def alpaca(i: int) -> dict[str, Any]:
    return {"instruction": f"Explain topic {i}.", "input": "", "output": f"Topic {i} explained."}


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def instructions(uri: str, file_format: str = "auto") -> list[str]:
    corpus, rejects = load([(uri, "auto", file_format)])
    assert rejects == []
    first = corpus.offsets[:-1].tolist()
    return [corpus.contents[m].as_py() for m in first]


def test_a_json_array_is_read_element_by_element(tmp_path: Path) -> None:
    # The form ShareGPT dumps and alpaca_data.json are distributed in: indented, one array.
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([sharegpt(i) for i in range(5)], indent=2))
    corpus, rejects = load([(f"file://{path}", "auto")])
    assert rejects == []
    assert corpus.ids.to_pylist() == [f"row-{i}" for i in range(5)]
    assert corpus.line.tolist() == [1, 2, 3, 4, 5]  # element numbers

    alpaca_path = tmp_path / "alpaca_data.json"
    alpaca_path.write_text(json.dumps([alpaca(i) for i in range(3)], indent=4))
    assert instructions(f"file://{alpaca_path}") == [f"Explain topic {i}." for i in range(3)]


def test_a_json_array_larger_than_the_read_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "BLOCK_BYTES", 64)
    monkeypatch.setattr(readers, "BATCH_ROWS", 7)
    path = tmp_path / "rows.json"
    rows = [sharegpt(i) for i in range(20)]
    rows[3]["conversations"][0]["value"] = "Long é question " * 30  # spans windows, multi-byte text
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    corpus, rejects = load([(f"file://{path}", "auto")])
    assert rejects == []
    assert corpus.ids.to_pylist() == [f"row-{i}" for i in range(20)]
    assert corpus.contents[corpus.offsets[3]].as_py() == rows[3]["conversations"][0]["value"]


def test_mixed_rows_of_a_json_array_are_each_normalised(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    rows: list[Any] = [sharegpt(0), alpaca(1), {"conversations": "not a list"}, {"messages": 3}]
    path.write_text(json.dumps(rows))
    corpus, rejects = load([(f"file://{path}", "auto")])
    assert len(corpus) == 2
    assert [r["line"] for r in rejects] == [3, 4]


def test_a_plain_text_prompt_list(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("What is 2+2?\n\nName a prime number.\r\nWrite a haiku about rain.\n")
    assert instructions(f"file://{path}") == [
        "What is 2+2?",
        "Name a prime number.",
        "Write a haiku about rain.",
    ]
    corpus, _ = load([(f"file://{path}", "auto")])
    assert corpus.line.tolist() == [1, 3, 4]  # blank lines keep the numbering
    assert read_prompts([f"file://{path}"]) == [
        "What is 2+2?",
        "Name a prime number.",
        "Write a haiku about rain.",
    ]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl(tmp_path: Path, suffix: str) -> None:
    data = jsonl_bytes([alpaca(i) for i in range(4)])
    packed = gzip.compress(data) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(data)
    (tmp_path / f"rows{suffix}").write_bytes(packed)
    assert instructions(f"file://{tmp_path / f'rows{suffix}'}") == [f"Explain topic {i}." for i in range(4)]
    # Recognised by its content too, without the extension.
    (tmp_path / "rows.bin").write_bytes(packed)
    assert data_files(f"file://{tmp_path / 'rows.bin'}")[0].compression == suffix.rsplit(".", 1)[1].replace(
        "zst", "zstd"
    ).replace("gz", "gzip")
    assert len(instructions(f"file://{tmp_path / 'rows.bin'}")) == 4


def test_jsonl_blocks_keep_line_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "BLOCK_BYTES", 100)
    rows = [alpaca(i) for i in range(30)]
    text = jsonl_bytes(rows).decode().split("\n")
    text[17] = "{broken"
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(text))
    corpus, rejects = load([(f"file://{path}", "auto")])
    assert [r["line"] for r in rejects] == [18]
    assert corpus.line.tolist() == [n for n in range(1, 31) if n != 18]


def test_a_parquet_shard_folder(tmp_path: Path) -> None:
    # The layout of a dataset repository: data/train-0000N-of-00002.parquet beside a README.
    (tmp_path / "data").mkdir()
    (tmp_path / "README.md").write_text("# a dataset card")
    rows = [alpaca(i) for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "data" / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:3]), tmp_path / "data" / "train-00000-of-00002.parquet")
    assert instructions(f"file://{tmp_path}") == [f"Explain topic {i}." for i in range(6)]


def test_a_save_to_disk_folder(tmp_path: Path) -> None:
    import datasets

    dataset = datasets.Dataset.from_list([sharegpt(i) for i in range(5)])
    dataset.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    files = data_files(f"file://{tmp_path / 'saved'}")
    assert [f.format for f in files] == ["arrow", "arrow"]
    corpus, rejects = load([(f"file://{tmp_path / 'saved'}", "auto")])
    assert rejects == []
    assert corpus.ids.to_pylist() == [f"row-{i}" for i in range(5)]

    datasets.DatasetDict({"train": dataset, "test": dataset}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DataFileError, match=r"splits train, test.*dict/train"):
        data_files(f"file://{tmp_path / 'dict'}")


def test_a_glob_pattern(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"part-{index}.jsonl").write_bytes(jsonl_bytes([alpaca(index)]))
    (tmp_path / "other.jsonl").write_bytes(jsonl_bytes([alpaca(9)]))
    assert instructions(f"file://{tmp_path}/part-*.jsonl") == [f"Explain topic {i}." for i in range(3)]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        data_files(f"file://{tmp_path}/nothing-*.jsonl")


def test_file_format_overrides_detection(tmp_path: Path) -> None:
    # A prompt list whose first prompt starts like a JSON array would be detected as JSON.
    path = tmp_path / "prompts.dat"
    path.write_text("[INST] Explain recursion.\nSummarise this text.\n")
    with pytest.raises(DataFileError, match=r"prompts.dat"):
        load([(f"file://{path}", "auto")])
    assert instructions(f"file://{path}", "text") == ["[INST] Explain recursion.", "Summarise this text."]


def test_an_unreadable_file_is_one_error_naming_it(tmp_path: Path) -> None:
    # A prompt list saved as .jsonl: not thousands of rejected lines but one error with a hint.
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(f"Prompt number {i}\n" for i in range(1000)))
    with pytest.raises(DataFileError) as caught:
        load([(f"file://{path}", "auto")])
    message = str(caught.value)
    assert str(path) in message and "line 1" in message and "fileFormat" in message

    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "a"},\n {"instruction": "b"\n ')
    with pytest.raises(DataFileError, match=r"broken.json: element 2 \(line 2\)"):
        load([(f"file://{broken}", "auto")])

    scalars = tmp_path / "scalars.json"
    scalars.write_text('["just", "strings"]')
    with pytest.raises(DataFileError, match=r"element 1.*expected an array of objects"):
        load([(f"file://{scalars}", "auto")])

    binary = tmp_path / "model.parquet"
    binary.write_bytes(b"PAR1 this is no parquet file")
    with pytest.raises(DataFileError, match=r"model.parquet"):
        load([(f"file://{binary}", "auto")])

    corrupt = tmp_path / "rows.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataFileError, match=r"rows.jsonl.gz"):
        load([(f"file://{corrupt}", "auto")])


def test_other_loaders_read_the_same_forms(tmp_path: Path) -> None:
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([sharegpt(i) for i in range(3)]))
    loaded = load_chats(f"file://{path}")
    assert [row["id"] for row in loaded.rows] == ["row-0", "row-1", "row-2"]
    assert loaded.rejected == 0
    assert [number for _, number, _ in iter_rows(f"file://{path}")] == [1, 2, 3]

    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"prompt": "a"}\n[1]\n')
    with pytest.raises(DataFileError, match=r"rows.jsonl: line 2: not a JSON object"):
        list(read_rows(f"file://{lines}"))

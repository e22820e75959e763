"""Reading DataSlice sources: every format and storage path, malformed rows, both parsing paths."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain_trainer.common.chat import normalize
from posttrain_trainer.data.errors import DataError
from posttrain_trainer.data.sources import ROLES, Corpus, load

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "quickstart-cluster" / "data" / "seed.jsonl"


def chat_rows(corpus: Corpus) -> list[dict[str, Any]]:
    """The corpus as chat rows (ids derived like `normalize` does), for comparisons."""
    contents = corpus.contents.to_pylist()
    offsets = corpus.offsets.tolist()
    metas = corpus.meta.get(corpus.meta_chunk, corpus.meta_index)
    out = []
    for i, identifier in enumerate(corpus.ids.to_pylist()):
        messages = [
            {"role": ROLES[int(corpus.roles[m])], "content": contents[m]}
            for m in range(offsets[i], offsets[i + 1])
        ]
        row = normalize({"messages": messages})
        out.append(
            {
                "id": identifier or row["id"],
                "messages": messages,
                "meta": metas[i],
                "line": int(corpus.line[i]),
            }
        )
    return out


def sample_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows in ShareGPT, Alpaca, OpenAI and chat format, round robin."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        question, reply = f"Question {i}: what is {rng.randint(0, 99)} plus {i}?", f"Answer {i}."
        kind = i % 4
        if kind == 0:
            rows.append(
                {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]}
            )
        elif kind == 1:
            rows.append({"instruction": question, "input": "numbers" if i % 3 else "", "output": reply})
        elif kind == 2:
            rows.append(
                {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}
            )
        else:
            rows.append(
                {
                    "id": f"row-{i}",
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": question},
                    ],
                    "meta": {"difficulty": 3, "lineage": ["seed"]},
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[Any], blank_line: bool = False) -> str:
    lines = [json.dumps(r) if not isinstance(r, str) else r for r in rows]
    if blank_line:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return f"file://{path}"


def expected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for line, row in enumerate(rows, 1):
        chat = normalize(row)
        out.append({**chat, "line": line})
    return out


def test_each_format_reads_to_the_chat_schema(tmp_path: Path) -> None:
    rows = sample_rows(40)
    corpus, rejects = load([(write_jsonl(tmp_path / "mixed.jsonl", rows), "auto")])
    assert rejects == []
    assert chat_rows(corpus) == expected(rows)
    assert corpus.sources == [f"file://{tmp_path / 'mixed.jsonl'}"]


@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca", "openai"])
def test_a_declared_format_reads_its_rows_and_rejects_the_others(tmp_path: Path, fmt: str) -> None:
    rows = sample_rows(8)
    corpus, rejects = load([(write_jsonl(tmp_path / "rows.jsonl", rows), fmt)])
    kind = {"sharegpt": 0, "alpaca": 1, "openai": 2}[fmt]
    accepted = [r for i, r in enumerate(rows) if i % 4 == kind or (fmt == "openai" and i % 4 == 3)]
    assert [r["messages"] for r in chat_rows(corpus)] == [normalize(r)["messages"] for r in accepted]
    assert len(rejects) == len(rows) - len(accepted)


def test_parquet_and_folders(tmp_path: Path) -> None:
    rows = [r for r in sample_rows(12) if "messages" in r and "id" not in r]
    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:2]), folder / "a.parquet")
    write_jsonl(folder / "b.jsonl", rows[2:])
    (folder / "notes.txt").write_text("ignored")
    corpus, rejects = load([(f"file://{folder}", "auto")])
    assert rejects == []
    assert [r["messages"] for r in chat_rows(corpus)] == [r["messages"] for r in rows]
    assert corpus.line.tolist() == [1, 2, 1]


def test_pvc_uris_read_from_the_mounted_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTTRAIN_PVC_ROOT", str(tmp_path))
    (tmp_path / "claim" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "claim" / "data" / "rows.jsonl", sample_rows(4))
    corpus, _ = load([("pvc://claim/data/rows.jsonl", "auto")])
    assert len(corpus) == 4


def test_the_quickstart_seed_sets_its_two_malformed_rows_aside() -> None:
    corpus, rejects = load([(f"file://{SEED}", "auto")])
    total = sum(1 for line in SEED.read_text().splitlines() if line.strip())
    assert len(corpus) + len(rejects) == total
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (total - 1, "`conversations` is not a non-empty list"),
        (total, "unknown row format (keys: unexpected)"),
    ]
    assert all(r["source"] == f"file://{SEED}" for r in rejects)


def test_malformed_lines_are_counted_with_line_and_reason(tmp_path: Path) -> None:
    rows: list[Any] = sample_rows(6)
    rows[1] = "{not json"
    rows[3] = {"messages": [{"role": "user", "content": 5}]}
    rows[4] = [1, 2]
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) if not isinstance(r, str) else r for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe not utf-8\n")
    corpus, rejects = load([(f"file://{path}", "auto")])
    assert len(corpus) == 3
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert reasons[2].startswith("invalid JSON")
    assert reasons[4] == "messages[0].content is not a string"
    assert reasons[5] == "not a JSON object"
    assert reasons[7] == "not valid UTF-8"
    assert corpus.line.tolist() == [1, 3, 6]


def test_rows_the_columns_refuse_go_through_normalize(tmp_path: Path) -> None:
    # Parses as one table (no type conflicts) but holds rows the columnar checks turn down.
    rows = [
        {"messages": [{"role": "user", "content": "fine"}]},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "assistant", "content": "no question"}]},
        {"messages": [{"role": "user", "content": "\u200b"}]},
        {"other": 1},
        {"messages": [], "other": 2},
    ]
    corpus, rejects = load([(write_jsonl(tmp_path / "rows.jsonl", rows), "auto")])
    assert [r["messages"][0]["content"] for r in chat_rows(corpus)] == ["fine", "\u200b"]
    assert {r["line"]: r["reason"] for r in rejects} == {
        2: "messages[0] has no valid role",
        3: "no non-empty user message",
        5: "unknown row format (keys: other)",
        6: "`messages` is not a non-empty list",
    }


def test_non_chat_formats_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="preference"):
        load([(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}]), "preference")])


def test_a_missing_source_names_itself(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        load([(f"file://{tmp_path}/missing.jsonl", "auto")])


# Characters where whitespace rules differ: Python's str.strip() empties "\x1c" and "\u3000" but not
# "\u200b"; the columnar check must never accept what `normalize` refuses.
tricky = st.text(
    alphabet=st.sampled_from(["a", " ", "\n", "\x1c", "\u200b", "\u3000", "é", ".", "中"]), max_size=6
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "User"]), "content": tricky}
    ),
    max_size=3,
)
rows = st.one_of(
    st.fixed_dictionaries({"messages": messages}),
    st.fixed_dictionaries(
        {
            "conversations": st.lists(
                st.fixed_dictionaries(
                    {"from": st.sampled_from(["human", "GPT", "bard", "robot"]), "value": tricky}
                ),
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries(
        {"instruction": tricky},
        optional={"input": tricky, "output": tricky, "id": st.text(max_size=3), "meta": st.just({"k": 1})},
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, min_size=1, max_size=12))
def test_columnar_and_row_by_row_reading_agree(
    tmp_path_factory: pytest.TempPathFactory, batch: list[dict[str, Any]]
) -> None:
    folder = tmp_path_factory.mktemp("agree")
    fast, fast_rejects = load([(write_jsonl(folder / "fast.jsonl", batch), "auto")])
    # A blank line makes Arrow's row numbers differ from the lines: that file is read row by row.
    slow, slow_rejects = load([(write_jsonl(folder / "slow.jsonl", batch, blank_line=True), "auto")])
    shift = [line + (line > 1) for line in [r["line"] for r in chat_rows(fast)]]
    assert [r["line"] for r in chat_rows(slow)] == shift
    strip = [{k: v for k, v in r.items() if k != "line"} for r in chat_rows(fast)]
    assert strip == [{k: v for k, v in r.items() if k != "line"} for r in chat_rows(slow)]
    assert [r["reason"] for r in fast_rejects] == [r["reason"] for r in slow_rejects]
    accepted = []
    for row in batch:
        try:
            accepted.append(normalize(row))
        except ValueError:
            continue
    assert strip == accepted

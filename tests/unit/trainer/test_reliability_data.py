"""Reliability: a DataSlice source with 10,000 malformed rows mixed among good ones.

Every malformed row is counted and set aside in `rejects.jsonl` with its line and a reason; the run
completes and every good row reaches the dataset unchanged.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from posttrain.api.workload import WorkloadConfig
from posttrain_trainer.data import run

GOOD, BAD = 3_000, 10_000
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
]


def _good(index: int, rng: random.Random) -> dict[str, Any]:
    # The index makes each instruction unique, so no good row is a duplicate of another.
    words = " ".join(rng.choice(WORDS) for _ in range(12))
    return {"instruction": f"Task {index}: explain {words}", "output": f"Answer {index}: {words}"}


# Kinds of malformed line; each returns the raw line text (bytes for the encoding fault).
MALFORMED = [
    lambda i: b"{not json at all " + str(i).encode(),
    lambda i: b'{"instruction": "cut off',
    lambda i: json.dumps({"bad": i}).encode(),
    lambda i: json.dumps([i, "a list, not an object"]).encode(),
    lambda i: json.dumps({"instruction": i}).encode(),
    lambda i: json.dumps({"messages": "not a list"}).encode(),
    lambda i: json.dumps({"messages": [{"role": "alien", "content": "x"}]}).encode(),
    lambda i: json.dumps({"conversations": [{"from": "human"}]}).encode(),
    lambda i: b'{"instruction": "\xff\xfe latin bytes ' + str(i).encode() + b'"}',
    lambda i: b"42",
]


def test_ten_thousand_malformed_rows_are_set_aside_and_good_rows_kept(tmp_path: Path) -> None:
    rng = random.Random(7)
    lines: list[bytes] = []
    good_rows = [_good(i, rng) for i in range(GOOD)]
    kinds = [i % len(MALFORMED) for i in range(BAD)]
    items: list[tuple[str, Any]] = [("good", row) for row in good_rows] + [("bad", k) for k in kinds]
    rng.shuffle(items)
    bad_lines: set[int] = set()
    for number, (what, value) in enumerate(items, start=1):
        if what == "good":
            lines.append(json.dumps(value).encode())
        else:
            lines.append(MALFORMED[value](number))
            bad_lines.add(number)
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    spec = {
        "sources": [{"uri": f"file://{source}"}],
        "data": {"maxRejectFraction": 0.9, "dedup": {"near": False}},
    }
    config = {
        "workload": "data",
        "kind": "DataSlice",
        "name": "bad-data",
        "runId": "reliability",
        "outputUri": f"file://{tmp_path / 'out'}",
        "spec": spec,
    }
    result = run(WorkloadConfig.model_validate(config)).wire()

    metrics = result["metrics"]
    assert metrics["rows.in"] == GOOD + BAD
    assert metrics["rows.rejected"] == BAD
    assert result["outputs"]["rejects"]["rows"] == BAD
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rejects} == bad_lines
    assert all(isinstance(r["reason"], str) and r["reason"] for r in rejects)
    reasons = Counter(r["reason"].split(":")[0][:40] for r in rejects)
    print(f"\n{BAD} malformed rows set aside; reasons: {dict(reasons.most_common())}")
    # The good rows are all there, unchanged.
    dataset = [json.loads(line) for line in (tmp_path / "out" / "dataset.jsonl").read_text().splitlines()]
    assert metrics["rows.out"] == GOOD == len(dataset)
    kept = Counter((r["messages"][0]["content"], r["messages"][-1]["content"]) for r in dataset)
    assert kept == Counter((row["instruction"], row["output"]) for row in good_rows)

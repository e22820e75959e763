"""Fixed arena evaluation sets and embedding-neighbour decontamination.

The sets are diverse by k-means and hard by difficulty; the DataSlice builds them once, holds them out of
training, and rebuilds them the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from posttrain.api.workload import WorkloadConfig
from posttrain_trainer.data import run
from posttrain_trainer.data.evalsets import (
    diverse_selection,
    hardest,
    hashed_vectors,
    inverse_document_frequency,
    neighbour_contaminated,
)

TOPICS = {
    "math": "solve the equation {n} x plus {m} equals twenty and show each algebra step",
    "cooking": "give me a recipe for a {n} layer chocolate cake with {m} eggs and baking times",
    "travel": "plan a {n} day trip to the mountains with {m} hikes and a train schedule",
    "code": "write a python function that sorts {n} integers with merge sort in {m} lines",
}


def topic_rows() -> list[dict[str, Any]]:
    rows = []
    for topic, template in TOPICS.items():
        for i in range(10):
            text = template.format(n=i + 2, m=i + 3) + f" variant {topic}{i}"
            rows.append(
                {
                    "id": f"{topic}-{i}",
                    "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}],
                    "meta": {"topic": topic, "difficulty": float(1 + i % 10)},
                }
            )
    return rows


def test_the_diverse_set_covers_every_cluster() -> None:
    texts = [row["messages"][0]["content"] for row in topic_rows()]
    vectors = hashed_vectors(texts)
    picked = diverse_selection(vectors, 8, 2, seed=0)
    topics = [topic_rows()[i]["meta"]["topic"] for i in picked]
    assert len(picked) == 8 and sorted(set(topics)) == sorted(TOPICS)
    assert all(topics.count(t) == 2 for t in TOPICS)
    assert np.array_equal(picked, diverse_selection(vectors, 8, 2, seed=0))


def test_the_hard_set_is_the_highest_difficulty() -> None:
    difficulty = np.array([3.0, 9.0, 5.0, 9.0, 1.0, 7.0])
    assert hardest(difficulty, 3, np.array([3])).tolist() == [1, 2, 5]


def test_embedding_neighbours_catch_a_paraphrase_that_shares_no_long_ngram() -> None:
    instructions = [
        "Tell me the capital city of France, please.",
        "Write a poem about autumn leaves.",
        "Please tell me France's capital city.",
    ]
    benchmark = ["What is the capital city of France?"]
    idf = inverse_document_frequency([*benchmark, *instructions])
    flagged = neighbour_contaminated(
        iter([hashed_vectors(instructions[:2], idf), hashed_vectors(instructions[2:], idf)]),
        hashed_vectors(benchmark, idf),
        neighbours=2,
        min_similarity=0.15,
    )
    assert flagged.tolist() == [True, False, True]
    off = neighbour_contaminated(
        iter([hashed_vectors(instructions, idf)]), hashed_vectors(benchmark, idf), 0, 0.3
    )
    assert not off.any()


def run_slice(tmp_path: Path, name: str, data: dict[str, Any]) -> tuple[Any, Path]:
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in topic_rows()))
    output = tmp_path / name
    document = {
        "workload": "data",
        "kind": "DataSlice",
        "name": "slice",
        "runId": "test",
        "outputUri": f"file://{output}",
        "spec": {"sources": [{"uri": f"file://{source}"}], "data": data},
    }
    return run(WorkloadConfig.model_validate(document)), output


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_dataslice_builds_fixed_eval_sets_held_out_of_training(tmp_path: Path) -> None:
    data = {"evalSets": {"diverse": 8, "perCluster": 2, "hard": 4}, "dedup": {"near": False}, "seed": 3}
    result, out = run_slice(tmp_path, "a", data)
    assert {"eval-diverse", "eval-hard"} <= set(result.outputs)
    diverse, hard, training = (
        ids(out / "eval-diverse.jsonl"),
        ids(out / "eval-hard.jsonl"),
        ids(out / "dataset.jsonl"),
    )
    assert len(diverse) == 8 and {i.split("-")[0] for i in diverse} == set(TOPICS)
    assert len(hard) == 4 and not set(hard) & set(diverse)
    hard_rows = [json.loads(line) for line in (out / "eval-hard.jsonl").read_text().splitlines()]
    assert all(row["meta"]["difficulty"] == 10.0 for row in hard_rows)
    assert not (set(diverse) | set(hard)) & set(training) and len(training) == 40 - 12
    assert result.metrics["rows.eval.diverse"] == 8 and result.metrics["rows.eval.hard"] == 4
    _, out_b = run_slice(tmp_path, "b", data)
    assert ids(out_b / "eval-diverse.jsonl") == diverse and ids(out_b / "eval-hard.jsonl") == hard


def test_a_dataslice_removes_embedding_neighbours_of_benchmark_prompts(tmp_path: Path) -> None:
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text(json.dumps({"prompt": "plan a 4 day trip to the mountains with hikes"}) + "\n")
    data = {
        "decontamination": {
            "benchmarks": [{"uri": f"file://{benchmark}"}],
            "neighbours": 5,
            "minSimilarity": 0.3,
        },
        "dedup": {"near": False},
    }
    result, out = run_slice(tmp_path, "c", data)
    assert result.metrics["rows.contaminated.neighbours"] == 5
    kept = ids(out / "dataset.jsonl")
    assert len(kept) == 35 and sum(i.startswith("travel") for i in kept) == 5

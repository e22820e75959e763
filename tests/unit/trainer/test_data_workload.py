"""The data workload end to end: `posttrain-trainer data --config FILE` and `run(config)`."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import posttrain_trainer.data as data_module
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from posttrain.api.workload import INVALID_INPUT_EXIT_CODE, INVALID_INPUT_REASON, WorkloadConfig
from posttrain_trainer.data import DataError, run
from posttrain_trainer.data.scan import scan

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "examples" / "quickstart-cluster" / "data"
PNG = b"\x89PNG\r\n\x1a\n"


def config(output: Path, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "workload": "data",
        "kind": "DataSlice",
        "name": "test-data",
        "runId": "test",
        "outputUri": f"file://{output}",
        "spec": spec,
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_cli_runs_the_quickstart_seed(tmp_path: Path) -> None:
    output = tmp_path / "out"
    spec = {
        "sources": [{"uri": f"file://{QUICKSTART / 'seed.jsonl'}"}],
        "data": {
            "categories": [
                {"name": "math", "keywords": ["plus", "times", "solve", "sum", "speed", "minutes"]},
                {"name": "coding", "keywords": ["python", "sql", "function", "javascript", "git", "bash"]},
            ],
            "decontamination": {
                "benchmarks": [{"uri": f"file://{QUICKSTART / 'benchmark.jsonl'}"}],
                "ngram": 8,
            },
            "sampling": {
                "targets": [
                    {"attribute": "category", "weights": {"math": 0.5, "coding": 0.25, "general": 0.25}}
                ]
            },
            "slicing": {"count": 2, "strategy": "difficulty"},
            "seed": 1,
        },
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config(output, spec)))
    termination = tmp_path / "termination-log"
    environment = {**os.environ, "POSTTRAIN_TERMINATION_LOG": str(termination)}
    completed = subprocess.run(
        [sys.executable, "-m", "posttrain_trainer.cli", "data", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((output / "result.json").read_text())
    assert json.loads(termination.read_text()) == result
    metrics = result["metrics"]
    assert metrics["rows.in"] == 46
    assert metrics["rows.rejected"] == 2
    assert metrics["rows.contaminated"] == 2  # "Why is the sky blue?" and the haiku prompt
    assert metrics["rows.duplicates.exact"] == 2  # two instructions appear twice
    assert metrics["target.category.math"] == 0.5
    assert metrics["share.category.math"] == pytest.approx(0.5, abs=0.03)
    assert set(result["outputs"]) == {"dataset", "slice-1", "slice-2", "rejects", "report"}

    dataset = read_jsonl(output / "dataset.jsonl")
    assert len(dataset) == metrics["rows.out"] == result["outputs"]["dataset"]["rows"]
    assert result["outputs"]["dataset"]["uri"] == f"file://{output}/dataset.jsonl"
    assert result["outputs"]["dataset"]["digest"].startswith("sha256:")
    for row in dataset:
        assert set(row) == {"id", "messages", "meta"}
        assert {"category", "difficulty", "language", "turns", "tokens", "chars", "source", "line"} <= set(
            row["meta"]
        )
    slices = [read_jsonl(output / f"slice-{i}.jsonl") for i in (1, 2)]
    assert sorted(r["id"] for s in slices for r in s) == sorted(r["id"] for r in dataset)
    assert max(r["meta"]["difficulty"] for r in slices[0]) <= min(r["meta"]["difficulty"] for r in slices[1])

    rejects = read_jsonl(output / "rejects.jsonl")
    assert [r["line"] for r in rejects] == [45, 46]
    assert all(r["reason"] for r in rejects)
    report = output / "report"
    assert json.loads((report / "before.json").read_text())["rows"] == 44
    after = json.loads((report / "after.json").read_text())
    assert after["rows"] == len(dataset)
    assert after["sampling"]["targets"]["category"]["math"] == 0.5
    for name in ("category", "language", "turns", "length", "difficulty", "quality", "pipeline"):
        assert (report / f"{name}.png").read_bytes().startswith(PNG)
    assert json.loads((output / "progress.json").read_text())["unit"] == "steps"


def generated(folder: Path, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows with planted bad instructions and the benchmark file; returns the spec and what was planted.

    Planted are short, duplicate, near-duplicate and contaminated instructions, in several formats.
    """
    rng = random.Random(seed)
    vocabulary = [f"term{i}" for i in range(400)]
    rows: list[dict[str, Any]] = []
    planted = {"short": 0, "exact": 0, "near": 0, "contaminated": 0}

    def ask(text: str, topic: str) -> None:
        kind = len(rows) % 3
        reply = f"An answer about {topic}."
        if kind == 0:
            rows.append({"instruction": text, "output": reply})
        elif kind == 1:
            rows.append(
                {"conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": reply}]}
            )
        else:
            rows.append(
                {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]}
            )

    for i in range(120):
        topic = "python code" if i % 3 == 0 else "the sum of numbers" if i % 3 == 1 else "a story"
        body = " ".join(rng.choice(vocabulary) for _ in range(30))
        ask(f"Question {i} about {topic}: {body}", topic)
    for i in range(0, 20, 2):
        ask(
            rows[i]["instruction"].upper() + "!" if "instruction" in rows[i] else _text(rows[i]).upper(),
            "copy",
        )
        planted["exact"] += 1
    for i in range(1, 20, 2):
        words = _text(rows[i]).split()
        words[-1] = "changed"  # 1 of ~31 five-word shingles differs: Jaccard about 0.94
        ask(" ".join(words), "near copy")
        planted["near"] += 1
    benchmark = "a very specific benchmark question about the boiling point of water on a mountain top"
    for i in range(5):
        ask(f"Please answer this one ({i}): {benchmark}", "benchmark")
        planted["contaminated"] += 1
    for _ in range(4):
        ask("Hi", "short")
        planted["short"] += 1
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "bench.jsonl").write_text(json.dumps({"question": benchmark}) + "\n")
    return rows, planted


def _text(row: dict[str, Any]) -> str:
    if "instruction" in row:
        return str(row["instruction"])
    if "conversations" in row:
        return str(row["conversations"][0]["value"])
    return str(row["messages"][0]["content"])


def generated_spec(folder: Path, **data: Any) -> dict[str, Any]:
    return {
        "sources": [{"uri": f"file://{folder / 'rows.jsonl'}"}],
        "data": {
            "categories": [{"name": "coding", "keywords": ["python"]}, {"name": "math", "keywords": ["sum"]}],
            "minInstructionTokens": 3,
            "dedup": {"threshold": 0.7},
            "decontamination": {"benchmarks": [{"uri": f"file://{folder / 'bench.jsonl'}"}], "ngram": 10},
            **data,
        },
    }


def run_spec(output: Path, spec: dict[str, Any]) -> dict[str, Any]:
    result = run(WorkloadConfig.model_validate(config(output, spec)))
    return result.wire()


def test_cleaning_removes_what_was_planted(tmp_path: Path) -> None:
    rows, planted = generated(tmp_path)
    result = run_spec(tmp_path / "out", generated_spec(tmp_path))
    metrics = result["metrics"]
    assert metrics["rows.in"] == len(rows)
    assert metrics["rows.short"] == planted["short"]
    assert metrics["rows.duplicates.exact"] == planted["exact"]
    assert metrics["rows.duplicates.near"] == planted["near"]
    assert metrics["rows.contaminated"] == planted["contaminated"]
    assert metrics["rows.out"] == 120
    dataset = read_jsonl(tmp_path / "out" / "dataset.jsonl")
    assert [r["meta"]["line"] for r in dataset] == list(range(1, 121))
    # K=1: the one slice is the dataset.
    assert (tmp_path / "out" / "slice-1.jsonl").read_bytes() == (
        tmp_path / "out" / "dataset.jsonl"
    ).read_bytes()
    assert result["outputs"]["slice-1"]["digest"] == result["outputs"]["dataset"]["digest"]


def test_the_same_seed_gives_the_same_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated(tmp_path)
    data = {
        "sampling": {
            "targets": [{"attribute": "category", "weights": {"coding": 2, "math": 1, "general": 1}}],
            "total": 60,
        },
        "slicing": {"count": 3, "strategy": "random"},
        "seed": 4,
    }
    first = run_spec(tmp_path / "a", generated_spec(tmp_path, **data))
    # Rows are written a chunk at a time; the chunk size must not show in the outputs.
    monkeypatch.setattr("posttrain_trainer.data.WRITE_CHUNK", 7)
    again = run_spec(tmp_path / "b", generated_spec(tmp_path, **data))
    other = run_spec(tmp_path / "c", generated_spec(tmp_path, **{**data, "seed": 5}))
    digests = {name: output["digest"] for name, output in first["outputs"].items()}
    assert digests == {name: output["digest"] for name, output in again["outputs"].items()}
    assert digests["dataset"] != other["outputs"]["dataset"]["digest"]
    assert first["metrics"]["rows.out"] == 60
    assert first["metrics"]["share.category.coding"] == pytest.approx(0.5)
    slices = [read_jsonl(tmp_path / "a" / f"slice-{i}.jsonl") for i in (1, 2, 3)]
    assert [len(s) for s in slices] == [20, 20, 20]
    ids = [r["id"] for s in slices for r in s]
    assert len(set(ids)) == 60


def test_too_many_malformed_rows_fail_and_say_so(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"instruction": "fine"}\n{"bad": 1}\n{"bad": 2}\nnot json\n')
    spec = {"sources": [{"uri": f"file://{tmp_path / 'rows.jsonl'}"}], "data": {"maxRejectFraction": 0.5}}
    with pytest.raises(
        DataError, match=r"3 of 4 input rows \(75.0%\) are malformed, more than maxRejectFraction 0.5"
    ):
        run_spec(tmp_path / "out", spec)
    assert len(read_jsonl(tmp_path / "out" / "rejects.jsonl")) == 3
    # Under the threshold the same rows are set aside and the run goes on.
    result = run_spec(tmp_path / "ok", {**spec, "data": {"maxRejectFraction": 0.8}})
    assert result["metrics"]["rows.rejected"] == 3
    assert result["outputs"]["rejects"]["rows"] == 3


def run_cli(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """Run the data workload's entry point on `rows.jsonl`; (exit code, termination document)."""
    config_file = tmp_path / "config.yaml"
    spec = {"sources": [{"uri": f"file://{tmp_path / 'rows.jsonl'}"}]}
    config_file.write_text(yaml.safe_dump(config(tmp_path / "out", spec)))
    termination = tmp_path / "termination-log"
    completed = subprocess.run(
        [sys.executable, "-m", "posttrain_trainer.cli", "data", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "POSTTRAIN_TERMINATION_LOG": str(termination)},
        timeout=300,
        check=False,
    )
    document: dict[str, Any] = json.loads(termination.read_text())
    return completed.returncode, document


def test_invalid_input_exits_with_its_own_code_and_reason(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"bad": 1}\n')
    returncode, document = run_cli(tmp_path)
    # Too many malformed rows is the data's fault: a distinct exit code and reason, so it is not retried.
    assert returncode == INVALID_INPUT_EXIT_CODE
    assert "maxRejectFraction" in document["error"]
    assert document["reason"] == INVALID_INPUT_REASON


def test_a_crash_exits_1_without_the_invalid_input_reason(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n")
    (tmp_path / "out").write_text("a file where the output folder should be")
    returncode, document = run_cli(tmp_path)
    assert returncode == 1
    assert document["error"].startswith("FileExistsError")
    assert "reason" not in document


def test_conversation_dedup_repeats_tokenizer_and_attribute_slices(tmp_path: Path) -> None:
    from posttrain_trainer.common.tiny import make_tokenizer

    make_tokenizer().save_pretrained(tmp_path / "tokenizer")
    rows = []
    for i in range(12):
        topic = ["python code", "the sum of two numbers", "a short poem"][i % 3]
        rows.append({"instruction": f"Write about {topic}, part {i}.", "output": f"Answer {i}."})
    # Same instruction, another answer: a duplicate by instruction, not by conversation.
    rows.append({"instruction": rows[0]["instruction"], "output": "A different answer."})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    spec: dict[str, Any] = {
        "sources": [{"uri": f"file://{tmp_path / 'rows.parquet'}", "format": "alpaca"}],
        "data": {
            "categories": [{"name": "coding", "keywords": ["python"]}, {"name": "math", "keywords": ["sum"]}],
            "tokenizer": {"uri": f"file://{tmp_path / 'tokenizer'}"},
            "dedup": {"by": "conversation", "near": False},
            "sampling": {
                "targets": [{"attribute": "category", "weights": {"coding": 1, "math": 1, "general": 2}}],
                "total": 26,
                "replacement": True,
            },
            "slicing": {"count": 3, "strategy": "attribute", "attribute": "category"},
        },
    }
    result = run_spec(tmp_path / "out", spec)
    assert result["metrics"]["rows.duplicates.exact"] == 0
    dataset = read_jsonl(tmp_path / "out" / "dataset.jsonl")
    assert len(dataset) == 26
    assert len({r["id"] for r in dataset}) == 26
    assert any(r["id"].endswith("-r1") for r in dataset)
    assert result["metrics"]["share.category.general"] == pytest.approx(0.5)
    slices = [read_jsonl(tmp_path / "out" / f"slice-{i}.jsonl") for i in (1, 2, 3)]
    assert [{r["meta"]["category"] for r in s} for s in slices] == [{"coding"}, {"math"}, {"general"}]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    row = dataset[0]
    expected = sum(
        len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in row["messages"]
    )
    assert row["meta"]["tokens"] == expected

    by_instruction = run_spec(
        tmp_path / "again", {**spec, "data": {**spec["data"], "dedup": {"near": False}}}
    )
    assert by_instruction["metrics"]["rows.duplicates.exact"] == 1


def test_the_block_size_does_not_show_in_the_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few rows give the same outputs as one block.

    Rows are analysed a block at a time and read again to be written; exact, near and contaminated
    rows span blocks.
    """
    _, planted = generated(tmp_path)
    data = {"evalSets": {"diverse": 4, "hard": 3}, "slicing": {"count": 2, "strategy": "difficulty"}}
    whole = run_spec(tmp_path / "whole", generated_spec(tmp_path, **data))
    monkeypatch.setattr("posttrain_trainer.common.readers.BLOCK_BYTES", 600)
    blocks = run_spec(tmp_path / "blocks", generated_spec(tmp_path, **data))
    assert blocks["metrics"] == whole["metrics"]
    assert whole["metrics"]["rows.duplicates.near"] == planted["near"]
    for name, output in whole["outputs"].items():
        assert blocks["outputs"][name]["digest"] == output["digest"], name
    for name in ("before.json", "after.json"):
        assert (tmp_path / "blocks" / "report" / name).read_bytes() == (
            tmp_path / "whole" / "report" / name
        ).read_bytes()


def test_sources_that_change_between_the_passes_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated(tmp_path)
    scan_first = scan  # what the package calls, before the patch below replaces it there

    def scan_then_append(*args: Any, **kwargs: Any) -> Any:
        scanned = scan_first(*args, **kwargs)
        with (tmp_path / "rows.jsonl").open("a") as stream:
            stream.write(json.dumps({"instruction": "One more row written meanwhile", "output": "x"}) + "\n")
        return scanned

    monkeypatch.setattr(data_module, "scan", scan_then_append)
    with pytest.raises(DataError, match="changed while they were read"):
        run_spec(tmp_path / "out", generated_spec(tmp_path))


def test_skill_gap_weights_replace_the_targets_of_their_attribute(tmp_path: Path) -> None:
    """A Curriculum's later stage re-samples its slice to the previous AlignRound's skill-gaps document."""
    rows = []
    for i in range(30):
        topic = ["python code", "the sum of two numbers", "a short poem"][i % 3]
        rows.append({"instruction": f"Write about {topic}, part {i}.", "output": f"Answer {i}."})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gaps = {
        "attribute": "category",
        "weights": {"coding": 0.75, "math": 0.25, "general": 0.0},
        "categories": [],
    }
    (tmp_path / "skill-gaps.json").write_text(json.dumps(gaps))
    spec = {
        "sources": [{"uri": f"file://{tmp_path / 'rows.jsonl'}", "format": "alpaca"}],
        "data": {
            "categories": [{"name": "coding", "keywords": ["python"]}, {"name": "math", "keywords": ["sum"]}],
            "dedup": {"exact": False, "near": False},
            "sampling": {
                "targets": [{"attribute": "category", "weights": {"general": 1}}],
                "targetsFrom": {"uri": f"file://{tmp_path / 'skill-gaps.json'}"},
                "total": 20,
                "replacement": True,
            },
        },
    }
    result = run_spec(tmp_path / "out", spec)
    assert result["metrics"]["share.category.coding"] == pytest.approx(0.75)
    assert result["metrics"]["share.category.math"] == pytest.approx(0.25)
    assert (
        "share.category.general" not in result["metrics"] or result["metrics"]["share.category.general"] == 0
    )
    (tmp_path / "skill-gaps.json").write_text(json.dumps({"weights": {}}))
    with pytest.raises(DataError, match="not a skill-gaps document"):
        run(WorkloadConfig.model_validate(config(tmp_path / "bad", spec)))

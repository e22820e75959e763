"""The evol workload end to end over HTTP against a scripted OpenAI-format server.

Outputs, metrics, faults injected by the proxy, and a run killed with SIGKILL that resumes without losing or
repeating a record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.workload import WorkloadConfig
from posttrain_trainer.client import Journal
from posttrain_trainer.common.storage import digest_path
from posttrain_trainer.evol import run

from tests.support.evol_teacher import http_responder
from tests.support.fake_openai import FakeOpenAI
from tests.support.fault_proxy import FaultProxy

SEEDS = [
    {"instruction": "Write a poem about the sea."},
    {"instruction": "Explain recursion to a child."},
    {"conversations": [{"from": "human", "value": "REFUSE this"}, {"from": "gpt", "value": "ok"}]},
    {"id": "q4", "messages": [{"role": "user", "content": "SILENT question"}], "meta": {"category": "math"}},
    {"instruction": "Name three prime numbers.", "output": "2, 3 and 5."},
    {"instruction": "Describe how a bicycle works."},
    {"instruction": "TWIN request"},
    {"instruction": "Plan a trip to Lisbon."},
]


@pytest.fixture(scope="module")
def teacher_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=http_responder) as server:
        yield server


def write_seeds(path: Path, extra_lines: tuple[str, ...] = ()) -> str:
    lines = [json.dumps(row) for row in SEEDS] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return f"file://{path}"


def make_config(output: Path, dataset: str, base_url: str, **evol: Any) -> WorkloadConfig:
    spec = {
        "dataset": {"uri": dataset},
        "teachers": [
            {"name": "teacher", "endpoint": {"baseUrl": "http://ignored/v1", "model": "m"}},
            {"name": "judge", "endpoint": {"baseUrl": "http://ignored/v1", "model": "j"}},
        ],
        "evol": {
            "rounds": 2,
            "answer": {"passes": 1},
            "rankings": {"enabled": True, "variants": 3},
            "difficulty": True,
            "concurrency": 8,
            "maxRetries": 12,
            "requestTimeoutSeconds": 5,
            **evol,
        },
    }
    endpoints = {
        "teacher": {"baseUrl": base_url, "model": "m"},
        "judge": {"baseUrl": base_url, "model": "j"},
    }
    return WorkloadConfig.model_validate(
        {
            "workload": "evol",
            "kind": "EvolJob",
            "name": "evol-test",
            "runId": "r1",
            "outputUri": f"file://{output}",
            "spec": spec,
            "endpoints": endpoints,
        }
    )


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outputs_and_metrics(
    tmp_path: Path, teacher_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTTRAIN_TERMINATION_LOG", str(tmp_path / "termination-log"))
    dataset = write_seeds(tmp_path / "seeds.jsonl", ("not json", '{"neither": "format"}'))
    with FaultProxy(
        teacher_server.base_url, rate=0.15, faults=("500", "429", "malformed", "reset"), seed=3
    ) as proxy:
        auto = {"enabled": True, "steps": 1, "batchSize": 2, "candidates": 2, "devSetSize": 2}
        config = make_config(tmp_path / "out", dataset, proxy.base_url, auto=auto)
        result = run(config)
        faults = proxy.counters()["faults"]
    out = tmp_path / "out"
    metrics = result.metrics
    assert set(result.outputs) == {"dataset", "evolved", "eliminated", "rankings", "method"}
    for name, described in result.outputs.items():
        file = out / Path(described.uri).name
        assert described.digest == digest_path(file)
        if name != "method":
            assert described.rows == len(rows(file))

    assert metrics["seeds"] == 8 and metrics["rows.rejected"] == 2 and metrics["attempts"] == 16
    assert metrics["kept"] + metrics["eliminated"] == 16 and metrics["failed"] == 0
    assert metrics["eliminated.refusal"] == 2 and metrics["eliminated.stopwordsOnly"] == 2
    assert metrics["eliminated.noInformationGain"] == 2
    assert metrics["rows.out"] == 8 + metrics["kept"] and metrics["rows.rankings"] == 8
    assert metrics["tokens.prompt.teacher"] > 0 and metrics["tokens.completion.judge"] > 0
    assert metrics["requests.sent"] == metrics["requests.sent.teacher"] + metrics["requests.sent.judge"]
    assert metrics["requests.retried"] >= sum(faults.values()) > 0 and metrics["requests.failed"] == 0
    assert metrics["auto.failureRate.final"] <= metrics["auto.failureRate.initial"]
    assert 1 <= metrics["difficulty.seeds"] <= 10 and "difficulty.final" in metrics

    dataset_rows = rows(out / "dataset.jsonl")
    assert len({r["id"] for r in dataset_rows}) == len(dataset_rows)
    assert all(
        {"seed", "round", "operation", "teacher", "parent"} <= set(r["meta"]["lineage"]) for r in dataset_rows
    )
    assert {r["meta"]["lineage"]["operation"] for r in dataset_rows if r["meta"]["lineage"]["round"]} == {
        "auto"
    }
    primes = next(r for r in dataset_rows if r["messages"][0]["content"] == "Name three prime numbers.")
    assert primes["messages"][-1]["content"] == "2, 3 and 5."  # the seed's own answer is kept
    eliminated = rows(out / "eliminated.jsonl")
    assert len(eliminated) == metrics["eliminated"] and all(r["rule"] for r in eliminated)
    assert len(rows(out / "evolved.jsonl")) == 16
    ranking = rows(out / "rankings.jsonl")[0]
    # Siblings of the seed: one downward, the others by the chosen method (the fake gives one text).
    assert len(ranking["instructions"]) == 2 and ranking["meta"]["ranker"] == "judge"
    method = json.loads((out / "method.json").read_text())
    assert method["method"] and len(method["trajectory"]) == 1
    assert json.loads((out / "result.json").read_text())["metrics"]["kept"] == metrics["kept"]
    assert (tmp_path / "termination-log").exists()


def test_a_killed_run_resumes_without_losing_or_repeating_a_record(
    tmp_path: Path, teacher_server: FakeOpenAI
) -> None:
    dataset = write_seeds(tmp_path / "seeds.jsonl")
    # An uninterrupted run without faults is the reference.
    reference = tmp_path / "reference"
    run(make_config(reference, dataset, teacher_server.base_url))

    output = tmp_path / "killed"
    with FaultProxy(
        teacher_server.base_url, rate=0.2, faults=("500", "429", "malformed", "lost"), delay=0.03
    ) as proxy:
        config = make_config(output, dataset, proxy.base_url, concurrency=4)
        config_file = tmp_path / "config.json"
        config_file.write_text(json.dumps(config.wire()))
        env = {**os.environ, "POSTTRAIN_TERMINATION_LOG": str(tmp_path / "termination-log")}
        command = [sys.executable, "-m", "posttrain_trainer.cli", "evol", "--config", str(config_file)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal_file = output / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if journal_file.exists() and journal_file.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        assert not (output / "result.json").exists()
        with Journal(journal_file) as journal:
            done_before = len(journal)
        assert done_before >= 40

        resumed = run(config)
        assert proxy.counters()["faults"]

    metrics = resumed.metrics
    with Journal(journal_file) as journal:
        done_after = len(journal)
    lines = journal_file.read_text().splitlines()
    assert len(lines) == done_after  # nothing written twice (a torn line was dropped on opening)
    # Every reply finished before the kill was reused, none was asked for again, and only the rest
    # was sent.
    assert metrics["requests.replayed"] == done_before
    assert metrics["requests.sent"] == done_after - done_before
    # The outputs are exactly those of the uninterrupted run: nothing lost, nothing duplicated.
    for name in ("dataset.jsonl", "evolved.jsonl", "eliminated.jsonl", "rankings.jsonl"):
        assert (output / name).read_bytes() == (reference / name).read_bytes(), name
    ids = [r["id"] for r in rows(output / "dataset.jsonl")]
    assert len(ids) == len(set(ids))

    # A third start has nothing left to ask.
    again = run(make_config(output, dataset, "http://127.0.0.1:9/v1"))
    assert again.metrics["requests.sent"] == 0 and again.metrics["requests.replayed"] == done_after

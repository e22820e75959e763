"""The align workload against real `transformers serve` servers of two different tiny models.

The teacher (and judge) and the student are tiny random Llamas, served on 127.0.0.1 at temperature 0.
Their replies are garbage, so this checks what must hold whatever the models say: the round
completes, every output has its documented schema, unreadable verdicts are counted and left out, and
a round killed in the middle resumes from its journal without losing or repeating a battle.
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
from posttrain_trainer.align import run
from posttrain_trainer.serving import Server, serve

from tests.support.fixtures import served_teacher

__all__ = ["served_teacher"]  # the fixture, imported so pytest finds it

pytestmark = pytest.mark.slow

INSTRUCTIONS = [
    ("sum", "math", "What is the sum of 3 and 4?"),
    ("reverse", "coding", "Write a Python function that reverses a string."),
    ("poem", "writing", "Write a short poem about the sea."),
]


@pytest.fixture(scope="module")
def servers(served_teacher: Server, tiny_student: Path) -> Iterator[dict[str, Server]]:
    """The shared tiny teacher (also the judge) and a second, different tiny model as the student."""
    with serve(tiny_student, engine="transformers", device="cpu", startup_timeout=600) as student:
        yield {"teacher": served_teacher, "student": student}


def config_document(servers: dict[str, Server], data: Path, output: Path) -> dict[str, Any]:
    def participant(name: str, server: Server, max_tokens: int) -> dict[str, Any]:
        return {
            "name": name,
            "endpoint": {"baseUrl": server.base_url, "model": server.model},
            "sampling": {"temperature": 0.0, "maxTokens": max_tokens},
        }

    spec = {
        "datasets": [{"uri": f"file://{data}"}],
        # Tiny random models repeat one token; different lengths keep the answers apart, so the
        # battles go to the judge.
        "student": participant("student", servers["student"], 8),
        "teachers": [participant("teacher", servers["teacher"], 12)],
        "judges": [participant("judge", servers["teacher"], 8)],
        "align": {
            "coTeaching": {"sftMargin": 0, "preferenceMargin": 0, "turns": 2},
            "selfTeaching": {"enabled": True, "candidates": 2},
            "stepLabels": {"enabled": True},
            "arena": {"bootstrap": 10},
            "concurrency": 4,
            "requestTimeoutSeconds": 120,
            "maxRetries": 2,
        },
    }
    endpoints = {
        "student": servers["student"].endpoint().wire(),
        "teacher": servers["teacher"].endpoint().wire(),
        "judge": servers["teacher"].endpoint().wire(),
    }
    return {
        "workload": "align",
        "kind": "AlignRound",
        "name": "align",
        "runId": "e2e",
        "outputUri": f"file://{output}",
        "spec": spec,
        "endpoints": endpoints,
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("align-data") / "instructions.jsonl"
    rows = [
        {"id": key, "messages": [{"role": "user", "content": text}], "meta": {"category": category}}
        for key, category, text in INSTRUCTIONS
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def finished_round(
    servers: dict[str, Server], dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    output = tmp_path_factory.mktemp("align-round")
    run(WorkloadConfig.model_validate(config_document(servers, dataset, output)))
    return output


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_round_with_real_servers_completes_with_documented_outputs(finished_round: Path) -> None:
    out = finished_round
    result = json.loads((out / "result.json").read_text())
    assert set(result["outputs"]) == {"sft", "preferences", "battles", "elo", "skill-gaps", "step-labels"}
    metrics = result["metrics"]

    battles = read_jsonl(out / "battles.jsonl")
    # Three instructions, one held out for the arena: 2 x 2 turns co-teaching; 1 arena battle.
    assert [b["stage"] for b in battles].count("co-teaching") == 4
    assert [b["stage"] for b in battles].count("arena") == 1
    assert metrics["battles"] == 5 and len({b["id"] for b in battles}) == 5
    for battle in battles:
        assert set(battle["participants"]) in ({"student", "teacher"},)
        status = battle["resolution"]["status"]
        if status == "identical":  # the two tiny models can say the same thing: a tie, not judged
            assert battle["judgements"] == [] and battle["resolution"]["winner"] == "tie"
            continue
        assert [j["order"] for j in battle["judgements"]] == ["forward", "backward"]
        assert all(j["judge"] == "judge" and isinstance(j["explanation"], str) for j in battle["judgements"])
        assert status in {"consistent", "inconsistent", "unparsed"}
    assert any(b["judgements"] for b in battles)
    unreadable = sum(not j["parsed"] for b in battles for j in b["judgements"])
    assert metrics["verdicts.unparsed"] == unreadable
    kept = [b for b in battles if b["resolution"]["kept"]]
    assert metrics["battles.kept"] == len(kept)
    identical = [b for b in battles if b["resolution"]["status"] == "identical"]
    assert metrics["battles.identicalAnswers"] == len(identical)
    # Turn 2 continues the teacher's conversation with the simulator's follow-up.
    second = [b for b in battles if b["turn"] == 2]
    assert second and all([m["role"] for m in b["prompt"]] == ["user", "assistant", "user"] for b in second)

    for row in read_jsonl(out / "sft.jsonl"):
        assert set(row) == {"id", "messages", "meta"} and row["messages"][-1]["role"] == "assistant"
    for row in read_jsonl(out / "preferences.jsonl"):
        assert set(row) == {"id", "prompt", "chosen", "rejected", "meta"} and row["chosen"] != row["rejected"]
    for row in read_jsonl(out / "step-labels.jsonl"):
        assert set(row) == {"id", "prompt", "steps", "labels"} and len(row["steps"]) == len(row["labels"])

    elo = json.loads((out / "elo.json").read_text())
    assert {r["name"] for r in elo["ratings"]} == {"student", "teacher"}
    assert metrics["elo.teacher"] == 1100.0 and "elo.student" in metrics
    gaps = json.loads((out / "skill-gaps.json").read_text())
    assert gaps["attribute"] == "category" and abs(sum(gaps["weights"].values()) - 1) < 1e-3
    assert metrics["requests.failed"] == 0 and metrics["requests.sent"] > 0


def test_a_killed_round_resumes_without_losing_or_repeating_battles(
    servers: dict[str, Server], dataset: Path, finished_round: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_document(servers, dataset, output)))
    command = [sys.executable, "-m", "posttrain_trainer.cli", "align", "--config", str(config)]
    env = os.environ | {"POSTTRAIN_TERMINATION_LOG": str(tmp_path / "termination")}

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = output / "journal.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert not (output / "result.json").exists(), "the round finished before it was killed"
    journaled = journal.read_bytes().count(b"\n")

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((output / "result.json").read_text())["metrics"]
    reference = json.loads((finished_round / "result.json").read_text())["metrics"]
    assert metrics["requests.replayed"] >= journaled
    assert metrics["requests.replayed"] + metrics["requests.sent"] == reference["requests.sent"]
    battles = read_jsonl(output / "battles.jsonl")
    ids = [b["id"] for b in battles]
    assert len(ids) == len(set(ids)) == reference["battles"]
    # Greedy decoding: the resumed round is the uninterrupted one, battle for battle.
    expected = read_jsonl(finished_round / "battles.jsonl")
    assert [(b["id"], b["answers"], b["resolution"]) for b in battles] == [
        (b["id"], b["answers"], b["resolution"]) for b in expected
    ]

"""The client and the evol workload against a real OpenAI-compatible server.

The server is `transformers serve` of the tiny teacher on 127.0.0.1, with the fault proxy in front of it.

The tiny model replies with nonsense; what is checked here is the plumbing: every request gets a
reply through injected 500s, 429s, timeouts and malformed bodies, the replies equal those of the
server asked directly (greedy decoding), and a run killed with SIGKILL resumes from its journal to
exactly the outputs of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from posttrain.api.workload import Endpoint, WorkloadConfig
from posttrain_trainer.client import Journal, Teachers
from posttrain_trainer.evol import run
from posttrain_trainer.serving import Server

from tests.support.fault_proxy import FaultProxy
from tests.support.fixtures import served_teacher

__all__ = ["served_teacher"]  # the fixture, imported so pytest finds it

PROMPTS = [f"Rewrite the instruction to make it harder: task {i}." for i in range(8)]


async def ask_all(endpoint: Endpoint, **options: Any) -> tuple[list[str], dict[str, float]]:
    async with Teachers({"t": endpoint}, **options) as teachers:
        replies = await asyncio.gather(
            *(
                teachers.chat("t", [{"role": "user", "content": p}], temperature=0.0, max_tokens=12)
                for p in PROMPTS
            )
        )
        return [reply.text for reply in replies], teachers.metrics()


def test_client_gets_every_reply_through_faults(served_teacher: Server) -> None:
    direct, _ = asyncio.run(ask_all(served_teacher.endpoint(), concurrency=4, timeout=30))
    script = ["500", "429", "timeout", "malformed", "503", "lost", "reset"]
    with FaultProxy(
        served_teacher.base_url, script=script, rate=0.2, hang_seconds=30, retry_after=0.1, seed=1
    ) as proxy:
        endpoint = Endpoint(base_url=proxy.base_url, model=served_teacher.model)
        through, metrics = asyncio.run(
            ask_all(endpoint, concurrency=2, timeout=6, max_retries=10, backoff_base=0.05, backoff_max=0.5)
        )
        faults = proxy.counters()["faults"]
    assert through == direct
    assert set(script) <= set(faults)
    assert metrics["requests.sent"] == len(PROMPTS) and metrics["requests.failed"] == 0
    assert metrics["requests.retried"] == sum(faults.values())
    assert metrics["tokens.completion.t"] > 0 and metrics["tokens.prompt.t"] > 0


def evol_config(output: Path, dataset: Path, base_url: str, model: str) -> WorkloadConfig:
    return WorkloadConfig.model_validate(
        {
            "workload": "evol",
            "kind": "EvolJob",
            "name": "evol-e2e",
            "runId": "e2e",
            "outputUri": f"file://{output}",
            "spec": {
                "dataset": {"uri": f"file://{dataset}"},
                "teachers": [
                    {
                        "name": "tiny",
                        "endpoint": {"baseUrl": "http://ignored/v1", "model": model},
                        "sampling": {"temperature": 0.0, "maxTokens": 16},
                    }
                ],
                "evol": {
                    "rounds": 2,
                    "answer": {"passes": 0},
                    "rankings": {"enabled": True, "variants": 2},
                    "concurrency": 2,
                    "maxRetries": 10,
                    "requestTimeoutSeconds": 20,
                },
            },
            "endpoints": {"tiny": {"baseUrl": base_url, "model": model}},
        }
    )


def test_evol_run_killed_and_resumed_against_the_server(served_teacher: Server, tmp_path: Path) -> None:
    dataset = tmp_path / "seeds.jsonl"
    seeds = ["Write a haiku about rain.", "Sum the numbers 2 and 5.", "Explain why the sky is blue."]
    dataset.write_text("".join(json.dumps({"instruction": s}) + "\n" for s in seeds))
    reference = tmp_path / "reference"
    expected = run(evol_config(reference, dataset, served_teacher.base_url, served_teacher.model))
    assert expected.metrics["seeds"] == 3 and expected.metrics["attempts"] == 6

    output = tmp_path / "killed"
    with FaultProxy(
        served_teacher.base_url, rate=0.25, faults=("500", "429", "malformed", "lost"), seed=2
    ) as proxy:
        config = evol_config(output, dataset, proxy.base_url, served_teacher.model)
        config_file = tmp_path / "config.json"
        config_file.write_text(json.dumps(config.wire()))
        env = {**os.environ, "POSTTRAIN_TERMINATION_LOG": str(tmp_path / "termination-log")}
        process = subprocess.Popen(
            [sys.executable, "-m", "posttrain_trainer.cli", "evol", "--config", str(config_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        journal_file = output / "journal.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if journal_file.exists() and journal_file.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        with Journal(journal_file) as journal:
            done_before = len(journal)

        proxy.script.extend(["500", "429"])  # the resumed run meets faults too
        resumed = run(config)
        assert sum(proxy.counters()["faults"].values()) > 0

    with Journal(journal_file) as journal:
        done_after = len(journal)
    assert len(journal_file.read_text().splitlines()) == done_after
    assert resumed.metrics["requests.replayed"] == done_before
    assert resumed.metrics["requests.sent"] == done_after - done_before
    assert resumed.metrics["requests.retried"] >= 2 and resumed.metrics["requests.failed"] == 0
    for name in ("dataset.jsonl", "evolved.jsonl", "eliminated.jsonl", "rankings.jsonl"):
        assert (output / name).read_bytes() == (reference / name).read_bytes(), name
    for key in ("kept", "eliminated", "attempts", "rows.out"):
        assert resumed.metrics[key] == expected.metrics[key]

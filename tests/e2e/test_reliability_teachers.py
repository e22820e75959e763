"""Reliability: an AlignRound through a fault proxy in front of real `transformers serve` servers.

A fifth of all requests (to the student, the teacher and the judge) fail: 500, 429, a hang past the
request timeout, or a truncated JSON body. The round completes, every battle is there exactly once and
equal to the fault-free round (greedy decoding), and the client retried exactly the failed requests,
within its bound. The EvolJob under the same faults, killed and resumed, is tested in
tests/e2e/test_evol_server.py (`test_evol_run_killed_and_resumed_against_the_server`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from posttrain.api.workload import WorkloadConfig
from posttrain_trainer.align import run
from posttrain_trainer.serving import Server

from tests.e2e.test_align_server import config_document, dataset, finished_round, read_jsonl, servers
from tests.support.fault_proxy import FaultProxy
from tests.support.fixtures import served_teacher

__all__ = ["dataset", "finished_round", "served_teacher", "servers"]  # fixtures, imported for pytest

pytestmark = pytest.mark.slow

FAULTS = ("500", "429", "timeout", "malformed")
MAX_RETRIES = 8


def test_a_round_through_20_percent_teacher_faults_loses_and_repeats_nothing(
    servers: dict[str, Server], dataset: Path, finished_round: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    document = config_document(servers, dataset, output)
    settings = document["spec"]["align"]
    settings["maxRetries"] = MAX_RETRIES
    settings["requestTimeoutSeconds"] = 10
    with (
        FaultProxy(servers["student"].base_url, rate=0.2, faults=FAULTS, hang_seconds=12, seed=5) as student,
        # Each kind of fault at least once (scripted first), then a random fifth of the requests.
        FaultProxy(
            servers["teacher"].base_url, rate=0.2, faults=FAULTS, script=FAULTS, hang_seconds=12, seed=6
        ) as teacher,
    ):
        proxies = {"student": student, "teacher": teacher, "judge": teacher}
        for name, proxy in proxies.items():
            document["endpoints"][name]["baseUrl"] = proxy.base_url
        result = run(WorkloadConfig.model_validate(document))
        counted = [student.counters(), teacher.counters()]

    faults = sum(sum(c["faults"].values()) for c in counted)
    requests = sum(c["requests"] for c in counted)
    metrics = result.metrics
    reference = json.loads((finished_round / "result.json").read_text())["metrics"]
    print(
        f"\n{requests} requests through the proxies, {faults} faults ({faults / requests:.0%}), "
        f"{metrics['requests.retried']:.0f} retries, {metrics['requests.failed']} failed"
    )
    assert faults / requests > 0.1
    assert {kind for c in counted for kind in c["faults"]} == set(FAULTS)
    # Every fault was retried once, and no request needed more than its bound.
    assert metrics["requests.failed"] == 0
    assert metrics["requests.retried"] == faults
    assert metrics["requests.sent"] == reference["requests.sent"]
    assert requests == metrics["requests.sent"] + faults
    # Nothing lost, nothing written twice: the battles are the fault-free round's.
    battles = read_jsonl(output / "battles.jsonl")
    ids = [b["id"] for b in battles]
    assert len(ids) == len(set(ids)) == reference["battles"]
    expected = read_jsonl(finished_round / "battles.jsonl")
    assert [(b["id"], b["answers"], b["resolution"]) for b in battles] == [
        (b["id"], b["answers"], b["resolution"]) for b in expected
    ]
    for name in ("sft.jsonl", "preferences.jsonl"):
        assert (output / name).read_bytes() == (finished_round / name).read_bytes(), name

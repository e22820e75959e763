"""A Curriculum on the real control plane: its chain, its gates, an operator restart, garbage collection."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from posttrain.api.workload import WorkloadConfig
from posttrain.testenv import wait_until

from tests.cluster.test_operator import (
    GROUP,
    PLURALS,
    ROOT,
    VERSION,
    _jobs,
    _objects,
    _phases,
    cluster_ns,
    running_operator,
)
from tests.cluster.workload_player import Outcome, WorkloadPlayer, success

__all__ = ["cluster_ns"]  # the fixture, used by name

EXAMPLE = ROOT / "examples" / "progressive" / "curriculum.yaml"
RENDERED = ROOT / "examples" / "progressive-rendered" / "chain.yaml"
PASSING = {"elo.student": 1040.0, "eloLow.student": 1012.0, "eloHigh.student": 1068.0, "elo.previous": 1000.0}
FAILING = {"elo.student": 1010.0, "eloLow.student": 985.0, "eloHigh.student": 1036.0, "elo.previous": 1000.0}


def gates(verdicts: dict[int, dict[str, float]]) -> Any:
    """A player decision: every workload succeeds; gate k reports `verdicts[k]` (default: passing)."""

    def decide(config: WorkloadConfig, attempt: int) -> Outcome:
        outcome = success(config)
        if config.kind == "AlignRound" and config.name.endswith("-gate"):
            stage = int(config.name.rsplit("-s", 1)[1].split("-")[0])
            document = json.loads(outcome.message)
            metrics = verdicts.get(stage, PASSING)
            document["metrics"] = {**metrics, "studentWinRate": 0.6 if metrics is PASSING else 0.48}
            return Outcome(0, json.dumps(document))
        return outcome

    return decide


def small(name: str, stages: int = 3) -> dict[str, Any]:
    """A small curriculum without RLEIF or skill gaps (five children per stage and the DataSlice)."""
    teacher = {"name": "teacher", "endpoint": {"baseUrl": "https://llm.example.com/v1", "model": "t"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Curriculum",
        "metadata": {"name": name},
        "spec": {
            "stages": stages,
            "student": {
                "name": "student",
                "served": {"model": {"uri": "pvc://posttrain/models/base"}, "gpus": 1},
            },
            "data": {
                "sources": [{"uri": "pvc://posttrain/data/chat.jsonl"}],
                "data": {"evalSets": {"diverse": 20}},
            },
            "evol": {"teachers": [teacher]},
            "align": {"teachers": [teacher], "judges": [{**teacher, "name": "judge"}]},
        },
    }


def _curriculum(custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    found: Any = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "curricula", name)
    return dict(found)


def _status(custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    return dict(_curriculum(custom, ns, name).get("status") or {})


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def _apply_body(kubectl: Any, ns: str, body: dict[str, Any]) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body))


def test_the_progressive_curriculum_runs_to_succeeded_as_its_rendered_chain(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    configs: dict[str, WorkloadConfig] = {}
    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns, gates({})) as player:
        player.checks.append(lambda pod, config: configs.__setitem__(config.name, config))
        kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
        wait_until(
            lambda: _status(custom, ns, "wizard").get("phase") == "Succeeded",
            timeout=300,
            interval=1,
            message=f"the curriculum Succeeded: {_status(custom, ns, 'wizard')}, {_phases(custom, ns)}",
        )
        table = kubectl("get", "curricula", "-n", ns).stdout
        listed = kubectl(
            "get", "posttrain", "-n", ns, "-l", "posttrain.dev/curriculum=wizard", "-o", "name"
        ).stdout
    assert not player.errors, player.errors
    objects = _objects(custom, ns)
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(RENDERED.read_text()) if d}
    # The operator made exactly the rendered chain: same objects, same specs and labels, owned by the curriculum.
    assert set(objects) == set(rendered)
    uid = _curriculum(custom, ns, "wizard")["metadata"]["uid"]
    for key, body in objects.items():
        assert body["spec"] == rendered[key]["spec"], key
        assert body["metadata"]["labels"] == rendered[key]["metadata"]["labels"], key
        (owner,) = body["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Curriculum",
            "wizard",
            uid,
            True,
        )
        assert body["status"]["phase"] == "Succeeded", key
    per_stage = Counter(
        (body["metadata"]["labels"].get("posttrain.dev/stage"), key[0]) for key, body in objects.items()
    )
    for stage in ("1", "2", "3"):
        assert per_stage[(stage, "EvolJob")] == 1
        assert per_stage[(stage, "AlignRound")] == 2  # the round and its gate
        assert per_stage[(stage, "TrainStage")] == 3  # sft, dpo, rleif
    assert len(listed.split()) == len(objects)
    # On-policy: each stage's AlignRound battles the model the stage before it trained.
    assert (
        configs["wizard-s1-align"].typed_spec().student.served.model.uri == "pvc://posttrain/models/base-7b"
    )
    for number in (2, 3):
        previous = objects[("TrainStage", f"wizard-s{number - 1}-rleif")]["status"]["outputs"]["model"]["uri"]
        student = configs[f"wizard-s{number}-align"].typed_spec().student.served.model.uri
        assert student == previous
        gate = configs[f"wizard-s{number}-gate"].typed_spec()
        assert gate.teachers[0].name == "previous" and gate.teachers[0].served.model.uri == previous
    # One workload per child: nothing was started twice.
    jobs = Counter(j.metadata.labels["posttrain.dev/name"] for j in _jobs(kube, ns))
    assert set(jobs.values()) == {1} and len(jobs) == len(objects), jobs
    # The status tells the story.
    status = _status(custom, ns, "wizard")
    assert status["stageSummary"] == "3/3"
    assert [s["phase"] for s in status["stages"]] == ["Promoted"] * 3
    assert status["stages"][1]["student"] == "TrainStage/wizard-s1-rleif"
    assert status["stages"][2]["eloLow"] == 1012.0 and status["stages"][2]["winRate"] == 0.6
    assert status["metrics"]["elo"] == 1120.0
    assert (
        status["currentModel"]
        == objects[("TrainStage", "wizard-s3-rleif")]["status"]["outputs"]["model"]["uri"]
    )
    assert _condition(status, "Ready")["status"] == "True"
    assert _condition(status, "Promoted")["status"] == "True"
    assert _condition(status, "Stalled")["status"] == "False"
    assert status["observedGeneration"] == _curriculum(custom, ns, "wizard")["metadata"]["generation"]
    header = table.splitlines()[0].split()
    assert header[:6] == ["NAME", "STAGE", "PHASE", "READY", "ELO", "GATE"]
    assert "3/3" in table and "1120" in table and "s3 promoted +40 Elo" in table


def test_a_failing_gate_stops_the_curriculum_with_promoted_false(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns, gates({2: FAILING})):
        _apply_body(kubectl, ns, small("gated"))
        wait_until(
            lambda: _status(custom, ns, "gated").get("phase") == "Failed",
            timeout=180,
            interval=1,
            message=f"the curriculum stopped: {_status(custom, ns, 'gated')}",
        )
    status = _status(custom, ns, "gated")
    promoted = _condition(status, "Promoted")
    assert promoted["status"] == "False" and promoted["reason"] == "NotPromoted"
    assert (
        "stage 2" in promoted["message"]
        and "gain +10" in promoted["message"]
        and "[-15, +36]" in promoted["message"]
    )
    assert _condition(status, "Stalled")["status"] == "True"
    assert [s["phase"] for s in status["stages"]] == ["Promoted", "Rejected", "Pending"]
    assert status["currentModel"] == status["stages"][0]["model"]
    objects = _objects(custom, ns)
    names = {key[1] for key in objects}
    assert "gated-s2-gate" in names and not [n for n in names if n.startswith("gated-s3-")]
    # The gate AlignRound tells its own verdict too (as a gate outside a curriculum does).
    assert _condition(objects[("AlignRound", "gated-s1-gate")]["status"], "Promoted")["status"] == "True"
    assert (
        _condition(objects[("AlignRound", "gated-s2-gate")]["status"], "Promoted")["reason"] == "NotPromoted"
    )
    events = client.CoreV1Api(kube).list_namespaced_event(ns).items
    assert any(e.reason == "NotPromoted" and e.involved_object.name == "gated" for e in events)


def test_an_operator_restarted_mid_way_finishes_without_duplicates_and_delete_collects_the_chain(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    with WorkloadPlayer(kube, ns, gates({})) as player:
        with running_operator(kubeconfig, ns):
            _apply_body(kubectl, ns, small("restart"))
            wait_until(
                lambda: any(key[1].startswith("restart-s2-") for key in _objects(custom, ns)),
                timeout=120,
                interval=0.3,
                message="stage 2 created",
            )
        with running_operator(kubeconfig, ns):
            wait_until(
                lambda: _status(custom, ns, "restart").get("phase") == "Succeeded",
                timeout=180,
                interval=1,
                message=f"the curriculum finished after a restart: {_status(custom, ns, 'restart')}",
            )
            objects = _objects(custom, ns)
            assert len(objects) == 1 + 3 * 5
            jobs = Counter(j.metadata.labels["posttrain.dev/name"] for j in _jobs(kube, ns))
            assert set(jobs.values()) == {1} and len(jobs) == len(objects), jobs
            assert len({(p.kind, p.name, p.attempt) for p in player.played}) == len(objects)
            for body in objects.values():
                managers = {
                    m["manager"] for m in body["metadata"]["managedFields"] if m["operation"] == "Apply"
                }
                assert managers == {"posttrain-operator"}
            # A child deleted by hand is made again; an edit of one stage re-creates only that stage's spec.
            kubectl("delete", "-n", ns, "trainstage", "restart-s2-sft")
            wait_until(
                lambda: _phases(custom, ns).get(("TrainStage", "restart-s2-sft")) == "Succeeded",
                timeout=60,
                message="the deleted child made again",
            )
            before = {k: copy.deepcopy(v["spec"]) for k, v in _objects(custom, ns).items()}
            edited = small("restart")
            edited["spec"]["overrides"] = [{"stage": 3, "dpo": {"train": {"epochs": 1}}}]
            _apply_body(kubectl, ns, edited)
            wait_until(
                lambda: (
                    _objects(custom, ns)[("TrainStage", "restart-s3-dpo")]["spec"].get("train")
                    == {"epochs": 1}
                ),
                timeout=60,
                message="the edited stage's spec applied",
            )
            after = {k: v["spec"] for k, v in _objects(custom, ns).items()}
            assert sorted(k for k in after if after[k] != before[k]) == [("TrainStage", "restart-s3-dpo")]
        # Deleting the curriculum garbage-collects its chain (kube-controller-manager's collector).
        kubectl("delete", "-n", ns, "curriculum", "restart", "--wait=false")
        wait_until(
            lambda: not _objects(custom, ns),
            timeout=90,
            interval=1,
            message=f"the chain garbage-collected: {sorted(_objects(custom, ns))}",
        )
    assert set(PLURALS) == {"DataSlice", "EvolJob", "AlignRound", "TrainStage", "RewardModel"}

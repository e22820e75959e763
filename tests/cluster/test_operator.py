"""The operator against the real control plane; kwok and the workload player play the workloads."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from posttrain.files import load_resources
from posttrain.support.processes import free_port
from posttrain.testenv import wait_until

from tests.cluster.workload_player import Outcome, WorkloadPlayer, success_with
from tests.support.kube import document, labels_of, status_of

ROOT = Path(__file__).resolve().parents[2]
RENDERED = ROOT / "examples" / "progressive-rendered"
"""The progressive example's Curriculum rendered as plain manifests (`posttrain curriculum render`)."""
PROGRESSIVE = len(load_resources([RENDERED]))
"""Resources of the rendered progressive example (one Job each when it runs once)."""
QUICKSTART = ROOT / "examples" / "quickstart" / "pipeline.yaml"
QUICKSTART_RESOURCES = len(load_resources([QUICKSTART]))
"""Resources of the CPU quickstart (one Job each when it runs once)."""
GROUP, VERSION = "posttrain.dev", "v1alpha1"
PLURALS = {
    "DataSlice": "dataslices",
    "EvolJob": "evoljobs",
    "AlignRound": "alignrounds",
    "TrainStage": "trainstages",
    "RewardModel": "rewardmodels",
}


@contextmanager
def running_operator(kubeconfig: Path, namespace: str, port: int | None = None) -> Iterator[int]:
    """The operator in a thread (kopf's test runner), watching one namespace; yields its metrics port."""
    port = port or free_port()
    env = {
        "KUBECONFIG": str(kubeconfig),
        "POSTTRAIN_METRICS_PORT": str(port),
        "POSTTRAIN_PROGRESS_INTERVAL": "2",
        "POSTTRAIN_ARTIFACT_ROOT": "pvc://posttrain/artifacts",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with KopfRunner(
            ["run", "--standalone", "--namespace", namespace, "-m", "posttrain.handlers.operator"],
            timeout=60,
        ) as runner:
            yield port
        log = os.environ.get("POSTTRAIN_TEST_OPERATOR_LOG")
        if log:
            Path(log).write_text(runner.output)
        assert runner.exception is None, runner.exception
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _storage(
    core: client.CoreV1Api,
    namespace: str,
    secret: tuple[str, str] = ("teacher-b-api", "sk-test-planted-secret-value"),
) -> None:
    """The `posttrain` claim the examples use, bound to a hostPath volume so pods can be scheduled."""
    pv_name = f"posttrain-{namespace}"[:63]
    client.CoreV1Api(core.api_client).create_persistent_volume(
        client.V1PersistentVolume.model_validate(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv_name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/{pv_name}"},
                    "claimRef": {"namespace": namespace, "name": "posttrain"},
                },
            }
        )
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim.model_validate(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "posttrain"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret.model_validate(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret[0]},
                "stringData": {"api-key": secret[1]},
            }
        ),
    )
    wait_until(
        lambda: (
            status_of(core.read_namespaced_persistent_volume_claim("posttrain", namespace)).phase == "Bound"
        ),
        timeout=30,
        message="the posttrain claim to bind",
    )


def _read(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> dict[str, Any]:
    return document(custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name))


def _objects(custom: client.CustomObjectsApi, namespace: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for kind, plural in PLURALS.items():
        listed = document(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural))
        for item in listed["items"]:
            out[(kind, item["metadata"]["name"])] = item
    return out


def _phases(custom: client.CustomObjectsApi, namespace: str) -> dict[tuple[str, str], str]:
    return {k: (v.get("status") or {}).get("phase", "") for k, v in _objects(custom, namespace).items()}


def _apply(kubectl: Any, namespace: str, path: Path) -> None:
    kubectl("apply", "-n", namespace, "-f", str(path))


def _jobs(kube: client.ApiClient, namespace: str) -> list[Any]:
    return client.BatchV1Api(kube).list_namespaced_job(namespace).items


@pytest.fixture
def cluster_ns(kube: client.ApiClient, namespace: str, posttrain_crds: list[Path]) -> str:
    _storage(client.CoreV1Api(kube), namespace)
    return namespace


def test_progressive_example_runs_in_dependency_order(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    apps = client.AppsV1Api(kube)
    teacher_ready_at_start: list[bool] = []

    def check(pod: Any, config: Any) -> None:
        if config.kind == "EvolJob":
            deployments = apps.list_namespaced_deployment(
                ns, label_selector=f"posttrain.dev/name={config.name},app.kubernetes.io/component=teacher"
            ).items
            teacher_ready_at_start.append(
                bool(deployments) and all((status_of(d).ready_replicas or 0) >= 1 for d in deployments)
            )

    with running_operator(kubeconfig, ns) as port, WorkloadPlayer(kube, ns) as player:
        player.checks.append(check)
        _apply(kubectl, ns, RENDERED)
        wait_until(
            lambda: (
                set(_phases(custom, ns).values()) == {"Succeeded"} and len(_phases(custom, ns)) == PROGRESSIVE
            ),
            timeout=300,
            interval=1,
            message="every resource Succeeded",
            state=lambda: _phases(custom, ns),
        )
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        table = kubectl("get", "posttrain", "-n", ns).stdout
        # Teachers are removed once their resources finished.
        wait_until(
            lambda: not apps.list_namespaced_deployment(ns).items, timeout=60, message="teachers removed"
        )

    objects = _objects(custom, ns)
    # Dependency order: every workload started after the workloads of all its inputs had finished.
    started = {(p.kind, p.name): p.at for p in player.played}
    for key, body in objects.items():
        for ref in _refs(body["spec"]):
            assert started[ref] < started[key], f"{key} started before its input {ref}"
    # Every child exactly once: one Job per resource, one attempt each.
    owners = Counter(
        (j.metadata.labels["posttrain.dev/kind"], j.metadata.labels["posttrain.dev/name"])
        for j in _jobs(kube, ns)
    )
    assert owners == Counter({key: 1 for key in objects}), owners
    # One pod per workload, two for the two-node SFT stage (an Indexed Job).
    pods = Counter((p.kind, p.name) for p in player.played)
    assert pods == Counter({key: 2 if key[1].endswith("-sft") else 1 for key in objects}), pods
    assert teacher_ready_at_start and all(teacher_ready_at_start)
    # Status contract.
    for key, body in objects.items():
        status = body["status"]
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True", key
        assert conditions["InputsReady"]["status"] == "True"
        assert conditions["Progressing"]["status"] == "False"
        assert status["observedGeneration"] == body["metadata"]["generation"]
        assert status["outputs"] and status["startTime"] and status["completionTime"]
        assert all(c["observedGeneration"] == body["metadata"]["generation"] for c in conditions.values())
    assert "slice-3" in objects[("DataSlice", "wizard-data")]["status"]["outputs"]
    # kubectl get posttrain shows the columns.
    header = table.splitlines()[0].split()
    assert header[:4] == ["NAME", "PHASE", "READY", "PROGRESS"]
    assert table.count("Succeeded") == PROGRESSIVE
    for name in (
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds",
        "posttrain_resources",
        "posttrain_stage_duration_seconds",
    ):
        assert name in metrics_text
    assert 'posttrain_resources{kind="TrainStage",phase="Succeeded"} 9.0' in metrics_text
    events = client.CoreV1Api(kube).list_namespaced_event(ns).items
    reasons = Counter(e.reason for e in events if e.involved_object.api_version == f"{GROUP}/{VERSION}")
    assert reasons["Succeeded"] >= 12 and reasons["Started"] >= 12, reasons
    # The planted API key is only ever a reference.
    for job in _jobs(kube, ns):
        assert "sk-test-planted-secret-value" not in json.dumps(kube.sanitize_for_serialization(job))
    for cm in client.CoreV1Api(kube).list_namespaced_config_map(ns).items:
        assert "sk-test-planted-secret-value" not in json.dumps(cm.data or {})


def _refs(spec: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(spec, dict):
        if isinstance(spec.get("from"), dict):
            out.append((spec["from"]["kind"], spec["from"]["name"]))
        for value in spec.values():
            out.extend(_refs(value))
    elif isinstance(spec, list):
        for value in spec:
            out.extend(_refs(value))
    return out


FAILING = """
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {name: flaky}
spec:
  method: sft
  model: {uri: pvc://posttrain/models/base}
  dataset: {uri: pvc://posttrain/data/sft.jsonl}
  retries: {limit: 2, backoffSeconds: 1}
---
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {name: after-flaky}
spec:
  method: dpo
  model: {from: {kind: TrainStage, name: flaky}}
  preferences: {uri: pvc://posttrain/data/prefs.jsonl}
"""


def test_failed_workload_is_retried_then_failed_and_dependants_wait(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)

    def decide(config: Any, attempt: int) -> Outcome:
        return Outcome(3, json.dumps({"error": "CUDA out of memory on rank 0"}))

    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns, decide) as player:
        kubectl("apply", "-n", ns, "-f", "-", input=FAILING)
        wait_until(
            lambda: _phases(custom, ns).get(("TrainStage", "flaky")) == "Failed",
            timeout=90,
            interval=0.5,
            message="flaky Failed",
        )
        flaky = _read(custom, ns, "trainstages", "flaky")
        wait_until(
            lambda: _phases(custom, ns).get(("TrainStage", "after-flaky")) == "Waiting",
            timeout=30,
            message="the dependant Waiting",
        )
        after = _read(custom, ns, "trainstages", "after-flaky")
    assert [p.attempt for p in player.played] == [1, 2, 3]
    assert len(_jobs(kube, ns)) == 3
    status = flaky["status"]
    assert status["attempt"] == 3
    assert status["lastFailure"]["exitCode"] == 3
    assert "CUDA out of memory" in status["lastFailure"]["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (
        ready["status"] == "False"
        and "exit code 3" in ready["message"]
        and "CUDA out of memory" in ready["message"]
    )
    waiting = next(c for c in after["status"]["conditions"] if c["type"] == "InputsReady")
    assert waiting["status"] == "False" and waiting["reason"] == "InputFailed"
    assert "TrainStage/flaky" in waiting["message"]


INVALID_INPUT = """
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {name: bad-data}
spec:
  method: sft
  model: {uri: pvc://posttrain/models/base}
  dataset: {uri: pvc://posttrain/data/prompts.jsonl}
  retries: {limit: 2, backoffSeconds: 1}
---
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {name: misspelt}
spec:
  method: sft
  model: {from: {kind: TrainStage, name: bad-data, output: modle}}
  dataset: {uri: pvc://posttrain/data/sft.jsonl}
"""


def test_invalid_input_is_not_retried_and_an_unknown_output_is_reported(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    error = "DataFileError: /mnt/pvc/posttrain/data/prompts.jsonl: line 1: invalid JSON"

    def decide(config: Any, attempt: int) -> Outcome:
        return Outcome(65, json.dumps({"error": error, "reason": "InvalidInput"}))

    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns, decide) as player:
        kubectl("apply", "-n", ns, "-f", "-", input=INVALID_INPUT)
        wait_until(
            lambda: _phases(custom, ns).get(("TrainStage", "bad-data")) == "Failed",
            timeout=90,
            interval=0.5,
            message="bad-data Failed",
        )
        time.sleep(3)  # longer than the backoff: a retry would have started by now
        bad = _read(custom, ns, "trainstages", "bad-data")
        misspelt = _read(custom, ns, "trainstages", "misspelt")
    assert [p.attempt for p in player.played] == [1]
    assert len(_jobs(kube, ns)) == 1
    status = bad["status"]
    assert status["attempt"] == 1
    assert (status["lastFailure"]["reason"], status["lastFailure"]["exitCode"]) == ("InvalidInput", 65)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidInput"
    assert "prompts.jsonl: line 1" in ready["message"]
    inputs = next(c for c in misspelt["status"]["conditions"] if c["type"] == "InputsReady")
    assert (inputs["status"], inputs["reason"]) == ("False", "OutputUnknown")
    assert inputs["message"] == "TrainStage/bad-data has no output 'modle'; its outputs are model"


def test_operator_restart_mid_pipeline_creates_no_duplicates(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    with WorkloadPlayer(kube, ns) as player:
        with running_operator(kubeconfig, ns):
            _apply(kubectl, ns, RENDERED)
            wait_until(
                lambda: list(_phases(custom, ns).values()).count("Succeeded") >= 7,
                timeout=120,
                interval=0.3,
                message="a third of the pipeline done",
            )
        with running_operator(kubeconfig, ns):
            wait_until(
                lambda: set(_phases(custom, ns).values()) == {"Succeeded"},
                timeout=300,
                interval=1,
                message="the pipeline finished after a restart",
                state=lambda: _phases(custom, ns),
            )
    owners = Counter(j.metadata.labels["posttrain.dev/name"] for j in _jobs(kube, ns))
    assert set(owners.values()) == {1} and len(owners) == PROGRESSIVE, owners
    assert len({(p.kind, p.name, p.attempt) for p in player.played}) == PROGRESSIVE


def test_delete_removes_children_and_spec_change_reruns_only_that_resource(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns) as player:
        _apply(kubectl, ns, QUICKSTART)
        wait_until(
            lambda: (
                set(_phases(custom, ns).values()) == {"Succeeded"}
                and len(_phases(custom, ns)) == QUICKSTART_RESOURCES
            ),
            timeout=120,
            interval=1,
            message="quickstart Succeeded",
            state=lambda: _phases(custom, ns),
        )
        before = _objects(custom, ns)
        # A real change of the spec, whatever the example sets.
        epochs = _read(custom, ns, "rewardmodels", "irm")["spec"]["reward"]["epochs"]
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "rewardmodels", "irm", {"spec": {"reward": {"epochs": epochs + 1}}}
        )
        wait_until(
            lambda: (
                _read(custom, ns, "rewardmodels", "irm").get("status", {}).get("observedGeneration") == 2
                and _phases(custom, ns)[("RewardModel", "irm")] == "Succeeded"
            ),
            timeout=60,
            interval=0.5,
            message="irm re-ran",
        )
        after_change = _objects(custom, ns)
        # The stages downstream of irm re-run too (their input digests changed); nothing else does.
        downstream = (("TrainStage", "rleif"), ("AlignRound", "arena-final"))
        wait_until(
            lambda: all(
                _phases(custom, ns)[key] == "Succeeded"
                and _objects(custom, ns)[key]["status"]["runId"] != before[key]["status"]["runId"]
                for key in downstream
            ),
            timeout=60,
            interval=0.5,
            message="rleif re-ran on the new reward model, and the arena round on rleif's model",
            state=lambda: _phases(custom, ns),
        )
        irm_status = after_change[("RewardModel", "irm")]["status"]
        assert irm_status["runId"] != before[("RewardModel", "irm")]["status"]["runId"]
        assert before[("RewardModel", "irm")]["status"]["runId"] in irm_status["history"]
        rerun = Counter(p.name for p in player.played)
        assert rerun == Counter(
            {name: 2 if name in ("irm", "rleif", "arena-final") else 1 for _, name in before}
        ), rerun
        kubectl("delete", "-n", ns, "trainstage", "sft")
        wait_until(
            lambda: not [j for j in _jobs(kube, ns) if j.metadata.labels["posttrain.dev/name"] == "sft"],
            timeout=60,
            message="sft's Job garbage-collected",
        )
        wait_until(lambda: _phases(custom, ns)[("TrainStage", "dpo")] in ("Succeeded", "Waiting"), timeout=10)
    cms = [
        c
        for c in client.CoreV1Api(kube).list_namespaced_config_map(ns).items
        if labels_of(c).get("posttrain.dev/name") == "sft"
    ]
    assert cms == []


def test_reapplying_under_another_name_reuses_the_result(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)
    doc = yaml.safe_load(FAILING.split("---")[0])
    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns) as player:
        kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))
        wait_until(lambda: _phases(custom, ns).get(("TrainStage", "flaky")) == "Succeeded", timeout=60)
        doc["metadata"]["name"] = "same-content"
        doc["spec"]["scheduling"] = {"priorityClassName": "high"}  # placement is not part of the content hash
        kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))
        wait_until(lambda: _phases(custom, ns).get(("TrainStage", "same-content")) == "Succeeded", timeout=60)
    first = _read(custom, ns, "trainstages", "flaky")["status"]
    second = _read(custom, ns, "trainstages", "same-content")["status"]
    assert len(player.played) == 1
    assert second["outputs"] == first["outputs"] and second["runId"] == first["runId"]
    assert next(c for c in second["conditions"] if c["type"] == "Ready")["reason"] == "Reused"


@pytest.mark.parametrize("example", ["quickstart", "progressive", "progressive-rendered"])
def test_examples_pass_server_side_validation(
    kubectl: Any, namespace: str, posttrain_crds: list[Path], example: str
) -> None:
    """Every example is accepted by the API server's schema and CEL rules as written (no defaults applied)."""
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(ROOT / "examples" / example))


def _stage(name: str, model_from: str) -> str:
    return f"""
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {{name: {name}}}
spec:
  method: sft
  model: {{from: {{kind: TrainStage, name: {model_from}}}}}
  dataset: {{uri: pvc://posttrain/data/sft.jsonl}}
"""


TWO_CYCLES = "---".join(
    [_stage("a", "b"), _stage("b", "a"), _stage("c", "d"), _stage("d", "c"), FAILING.split("---")[0]]
)


def test_every_resource_of_two_separate_cycles_reports_its_cycle(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)

    def reasons() -> dict[str, str]:
        out = {}
        for (_, name), body in _objects(custom, ns).items():
            conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
            out[name] = conditions.get("InputsReady", {}).get("reason", "")
        return out

    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns) as player:
        kubectl("apply", "-n", ns, "-f", "-", input=TWO_CYCLES)
        wait_until(
            lambda: (
                _phases(custom, ns).get(("TrainStage", "flaky")) == "Succeeded"
                and all(reasons().get(n) == "ReferenceCycle" for n in "abcd")
            ),
            timeout=60,
            interval=0.5,
            message="every resource of both cycles reports ReferenceCycle",
            state=reasons,
        )
    objects = _objects(custom, ns)
    for name, other in (("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")):
        status = objects[("TrainStage", name)]["status"]
        assert status["phase"] == "Waiting"
        inputs_ready = next(c for c in status["conditions"] if c["type"] == "InputsReady")
        cycle = f"TrainStage/{name} -> TrainStage/{other} -> TrainStage/{name}"
        assert inputs_ready["message"].startswith(f"reference cycle: {cycle}"), inputs_ready["message"]
    assert [p.name for p in player.played] == ["flaky"]


JUDGED_ROUND = """
apiVersion: posttrain.dev/v1alpha1
kind: AlignRound
metadata: {name: judged}
spec:
  datasets: [{uri: pvc://posttrain/data/instructions.jsonl}]
  student: {name: student, endpoint: {baseUrl: "http://student.example/v1", model: s}}
  teachers: [{name: teacher, endpoint: {baseUrl: "http://teacher.example/v1", model: t}}]
  judges: [{name: judge, endpoint: {baseUrl: "http://judge.example/v1", model: j}}]
"""


def test_a_round_whose_judge_flips_its_verdicts_is_marked_unreliable(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)

    flips = success_with({"reliability.swapPairs": 20, "reliability.positionFlips": 0.95})
    with running_operator(kubeconfig, ns), WorkloadPlayer(kube, ns, flips):
        kubectl("apply", "-n", ns, "-f", "-", input=JUDGED_ROUND)
        wait_until(
            lambda: _phases(custom, ns).get(("AlignRound", "judged")) == "Succeeded",
            timeout=90,
            interval=0.5,
            message="judged Succeeded",
        )
        judged = _read(custom, ns, "alignrounds", "judged")
    # The API server kept the condition (its type is in the CRD's schema) with the plan's figures.
    condition = next(c for c in judged["status"]["conditions"] if c["type"] == "JudgeReliable")
    assert (condition["status"], condition["reason"]) == ("False", "PositionBias")
    assert "position flips 0.95 (max 0.30)" in condition["message"]
    assert judged["status"]["metrics"]["reliability.positionFlips"] == 0.95


GATE = JUDGED_ROUND.replace("name: judged}", "name: gate}") + (
    "  align: {coTeaching: {enabled: false}, arena: {reference: teacher, referenceElo: 1000}}\n"
    "  promotion: {previous: teacher}\n"
)
GATE_FIGURES = {
    "elo.student": 1050.0,
    "eloLow.student": 1020.0,
    "elo.teacher": 1000.0,
    "studentWinRate": 0.75,
    "reliability.swapPairs": 20.0,
    "reliability.positionFlips": 0.1,
    "battles": 40.0,
    "battles.kept": 36.0,
}


def test_a_gate_reused_under_another_name_shows_the_metrics_and_verdicts_of_the_run(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, cluster_ns: str
) -> None:
    ns = cluster_ns
    custom = client.CustomObjectsApi(kube)

    figures = success_with(GATE_FIGURES)
    with running_operator(kubeconfig, ns) as port, WorkloadPlayer(kube, ns, figures) as player:
        kubectl("apply", "-n", ns, "-f", "-", input=GATE)
        wait_until(lambda: _phases(custom, ns).get(("AlignRound", "gate")) == "Succeeded", timeout=90)
        kubectl("apply", "-n", ns, "-f", "-", input=GATE.replace("name: gate}", "name: gate-again}"))
        wait_until(lambda: _phases(custom, ns).get(("AlignRound", "gate-again")) == "Succeeded", timeout=60)
        exported = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    table = kubectl("get", "alignrounds", "-n", ns).stdout
    made = _read(custom, ns, "alignrounds", "gate")["status"]
    reused = _read(custom, ns, "alignrounds", "gate-again")["status"]
    assert [p.name for p in player.played] == ["gate"]
    assert reused["runId"] == made["runId"] and reused["outputs"] == made["outputs"]
    assert reused["metrics"] == made["metrics"] and made["metrics"]["elo.student"] == 1050
    verdicts = [{c["type"]: c for c in s["conditions"]} for s in (made, reused)]
    for type_, expected in (("JudgeReliable", ("True", "Reliable")), ("Promoted", ("True", "Promoted"))):
        found = [(v[type_]["status"], v[type_]["reason"], v[type_]["message"]) for v in verdicts]
        assert found[0] == found[1] and found[0][:2] == expected, found
    assert verdicts[1]["Ready"]["reason"] == "Reused"
    # `kubectl get` fills the metric columns of the reused round too.
    header, *lines = table.splitlines()
    column = header.index("WINRATE")
    win_rates = {line.split()[0]: line[column:].split()[0] for line in lines}
    assert win_rates == {"gate": "0.75", "gate-again": "0.75"}, table
    # Prometheus counts the run once: the reused round's result was counted by the round that made it.
    assert (
        f'posttrain_judge_battles_total{{kind="AlignRound",name="gate",namespace="{ns}",outcome="kept"}} 36.0'
        in exported
    )
    assert 'name="gate-again"' not in exported

"""What GitOps tools read from the operator's status, on live objects of the real control plane.

Resources are driven to every outcome (kwok and the workload player decide how each workload ends):
not yet observed, waiting, running, backing off, succeeded, reused, failed after its retries,
blocked by that failure one and two references away, a missing input, a reference cycle, an invalid
spec, and a spec edited after success. Each object is captured as the API server returns it and
judged by Argo CD's health check (gitops/argocd/health.lua, under Lua 5.1 as Argo CD runs it) and by
kstatus (tests/support/kstatus.py, cli-utils' rules, which Flux's `wait` and kpt use), against the
verdict each case must get.

The captured objects are written to gitops/argocd/testdata/ with gitops/argocd/health_test.yaml (Argo
CD's format, plus each case's kstatus verdict), which tests/unit/test_gitops.py checks on every run:
this test regenerates the fixture from what the operator really writes.
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from kubernetes import client
from posttrain.api.metrics import Evol
from posttrain.api.resources import KINDS
from posttrain.testenv import wait_until

from tests.cluster.test_operator import GROUP, VERSION, _storage, running_operator
from tests.cluster.workload_player import Outcome, WorkloadPlayer, success
from tests.support import kstatus
from tests.support.argocd import ARGOCD, HEALTH_TESTS, assess
from tests.support.kube import document

ArgoHealth = Literal["Healthy", "Progressing", "Degraded"]
TIME = "2026-03-01T10:00:00Z"
"""Every timestamp of the fixture: the captured times would change it on every run."""

ENDPOINT = "{baseUrl: 'http://teacher.invalid/v1', model: teacher}"
MANIFESTS = f"""
apiVersion: posttrain.dev/v1alpha1
kind: DataSlice
metadata: {{name: seed}}
spec:
  sources: [{{uri: pvc://posttrain/data/seed.jsonl}}]
---
apiVersion: posttrain.dev/v1alpha1
kind: EvolJob
metadata: {{name: evol}}
spec:
  dataset: {{uri: pvc://posttrain/data/seed.jsonl}}
  teachers: [{{name: teacher, endpoint: {ENDPOINT}}}]
---
apiVersion: posttrain.dev/v1alpha1
kind: EvolJob
metadata: {{name: evol-done}}
spec:
  dataset: {{uri: pvc://posttrain/data/seed-2.jsonl}}
  teachers: [{{name: teacher, endpoint: {ENDPOINT}}}]
---
apiVersion: posttrain.dev/v1alpha1
kind: AlignRound
metadata: {{name: align}}
spec:
  datasets: [{{from: {{kind: EvolJob, name: evol}}}}]
  student: {{name: student, endpoint: {ENDPOINT}}}
  teachers: [{{name: teacher, endpoint: {ENDPOINT}}}]
  judges: [{{name: judge, endpoint: {ENDPOINT}}}]
---
apiVersion: posttrain.dev/v1alpha1
kind: RewardModel
metadata: {{name: flaky}}
spec:
  type: irm
  baseModel: {{uri: pvc://posttrain/models/base}}
  dataset: {{uri: pvc://posttrain/data/rankings.jsonl}}
  retries: {{limit: 1, backoffSeconds: 3600}}
---
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {{name: sft}}
spec:
  method: sft
  model: {{uri: pvc://posttrain/models/base}}
  dataset: {{uri: pvc://posttrain/data/sft.jsonl}}
  retries: {{limit: 1, backoffSeconds: 1}}
"""


def _dpo(name: str, reads: str) -> str:
    """A DPO TrainStage whose model is TrainStage `reads`."""
    return f"""
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {{name: {name}}}
spec:
  method: dpo
  model: {{from: {{kind: TrainStage, name: {reads}}}}}
  preferences: {{uri: pvc://posttrain/data/{name}.jsonl}}
"""


# sft fails; dpo reads it, dpo-2 reads dpo; orphan reads nothing that exists; loop-a and loop-b read
# each other.
READERS = [
    ("dpo", "sft"),
    ("dpo-2", "dpo"),
    ("orphan", "never-applied"),
    ("loop-a", "loop-b"),
    ("loop-b", "loop-a"),
]
MANIFESTS += "".join(f"---{_dpo(name, reads)}" for name, reads in READERS)
SEED_AGAIN = """
apiVersion: posttrain.dev/v1alpha1
kind: DataSlice
metadata: {name: seed-again}
spec:
  sources: [{uri: pvc://posttrain/data/seed.jsonl}]
"""
NEW = """
apiVersion: posttrain.dev/v1alpha1
kind: RewardModel
metadata: {name: new}
spec:
  type: prm
  baseModel: {uri: pvc://posttrain/models/base}
  dataset: {uri: pvc://posttrain/data/step-labels.jsonl}
"""
INVALID = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "TrainStage",
    "metadata": {"name": "invalid"},
    # `sft` needs a dataset; an older CRD (below) let it through.
    "spec": {"method": "sft", "model": {"uri": "pvc://posttrain/models/base"}},
}


@dataclass(frozen=True)
class Case:
    """One outcome: the object that shows it, how to recognise it, and what each tool must say."""

    name: str
    kind: str
    resource: str
    about: str
    phase: str
    reasons: dict[str, str]
    """Condition type -> reason that marks the state (the operator's own words)."""
    argocd: ArgoHealth
    kstatus: kstatus.Verdict

    def reached(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        status = obj.get("status") or {}
        conditions = {c["type"]: c.get("reason") for c in status.get("conditions") or []}
        return status.get("phase") == self.phase and all(
            conditions.get(t) == r for t, r in self.reasons.items()
        )


RUNNING = [
    Case(
        "waiting",
        "AlignRound",
        "align",
        "Waiting for an input that is still running.",
        "Waiting",
        {"InputsReady": "InputNotReady", "Reconciling": "InputNotReady"},
        "Progressing",
        "InProgress",
    ),
    Case(
        "running",
        "EvolJob",
        "evol",
        "Its workload runs.",
        "Running",
        {"Progressing": "WorkloadRunning", "Reconciling": "WorkloadRunning"},
        "Progressing",
        "InProgress",
    ),
    Case(
        "backoff",
        "RewardModel",
        "flaky",
        "The first attempt failed; waiting to start the retry.",
        "Running",
        {"Progressing": "BackOff", "Reconciling": "BackOff"},
        "Progressing",
        "InProgress",
    ),
    Case(
        "succeeded",
        "DataSlice",
        "seed",
        "Finished.",
        "Succeeded",
        {"Ready": "Succeeded"},
        "Healthy",
        "Current",
    ),
    Case(
        "failed",
        "TrainStage",
        "sft",
        "Failed after its retries.",
        "Failed",
        {"Ready": "WorkloadFailed", "Stalled": "WorkloadFailed"},
        "Degraded",
        "Failed",
    ),
    Case(
        "blocked",
        "TrainStage",
        "dpo",
        "Its input failed.",
        "Waiting",
        {"InputsReady": "InputFailed", "Stalled": "InputFailed"},
        "Degraded",
        "Failed",
    ),
    Case(
        "blocked-upstream",
        "TrainStage",
        "dpo-2",
        "Its input is blocked by a failure one more reference away.",
        "Waiting",
        {"InputsReady": "InputBlocked", "Stalled": "InputBlocked"},
        "Degraded",
        "Failed",
    ),
    Case(
        "missing",
        "TrainStage",
        "orphan",
        "Its input does not exist.",
        "Waiting",
        {"InputsReady": "InputMissing", "Stalled": "InputMissing"},
        "Degraded",
        "Failed",
    ),
    Case(
        "cycle",
        "TrainStage",
        "loop-a",
        "Part of a reference cycle.",
        "Waiting",
        {"InputsReady": "ReferenceCycle", "Stalled": "ReferenceCycle"},
        "Degraded",
        "Failed",
    ),
]
NEW_CASE = Case(
    "new",
    "RewardModel",
    "new",
    "Just applied; the operator has not looked at it yet (the CRD's status default).",
    "Pending",
    {},
    "Progressing",
    "InProgress",
)
REUSED = Case(
    "reused",
    "DataSlice",
    "seed-again",
    "The same content as a finished resource: its result reused.",
    "Succeeded",
    {"Ready": "Reused"},
    "Healthy",
    "Current",
)
INVALID_CASE = Case(
    "invalid",
    "TrainStage",
    "invalid",
    "A spec the models reject, stored under an older CRD that accepted it.",
    "Failed",
    {"Ready": "InvalidSpec", "Stalled": "InvalidSpec"},
    "Degraded",
    "Failed",
)
STALE = Case(
    "stale",
    "DataSlice",
    "seed",
    "Succeeded, then its spec was edited; the operator has not seen the edit yet.",
    "Succeeded",
    {"Ready": "Succeeded"},
    "Progressing",
    "InProgress",
)


def _plural(kind: str) -> str:
    return KINDS[kind].plural


def _get(custom: client.CustomObjectsApi, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    try:
        obj = document(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, _plural(kind), name))
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return obj


def _capture(
    custom: client.CustomObjectsApi, namespace: str, case: Case, timeout: float = 90
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = _get(custom, namespace, case.kind, case.resource)
        return obj if case.reached(obj) else None

    try:
        return wait_until(reached, timeout=timeout, interval=0.3, message=f"{case.name}: {case.about}")
    except TimeoutError:
        current = _get(custom, namespace, case.kind, case.resource)
        raise AssertionError(
            f"{case.name} never reached: {json.dumps((current or {}).get('status'))}"
        ) from None


def _fixture(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The object as a test input: what a health check reads, without server bookkeeping or times."""
    metadata = obj["metadata"]
    text = json.dumps({"spec": obj["spec"], "status": obj.get("status")})
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", TIME, text).replace(namespace, "curriculum")
    body = json.loads(text)
    out = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {
            "name": metadata["name"],
            "namespace": "curriculum",
            "generation": metadata["generation"],
        },
        "spec": body["spec"],
    }
    if body["status"] is not None:
        out["status"] = body["status"]
    return out


def _judge(case: Case, obj: dict[str, Any]) -> dict[str, str]:
    """The Argo CD health of the object, after checking both tools' verdicts against the case."""
    health = assess(obj)
    verdict = kstatus.compute(obj)
    assert (health["status"], verdict.status) == (case.argocd, case.kstatus), (
        case.name,
        health,
        verdict,
        obj,
    )
    # Older kstatus releases (without the Ready rule) must agree: the verdict rests on Stalled/Reconciling.
    assert kstatus.compute(obj, ready_condition=False).status == case.kstatus, case.name
    return health


def _write_fixture(captured: list[tuple[Case, dict[str, Any], dict[str, str]]]) -> None:
    testdata = ARGOCD / "testdata"
    for old in testdata.glob("*.yaml"):
        old.unlink()
    tests = []
    for case, obj, health in captured:
        path = testdata / f"{case.kind.lower()}-{case.name}.yaml"
        header = f"# {case.about} Captured by tests/cluster/test_health.py.\n"
        path.write_text(header + yaml.safe_dump(obj, sort_keys=False))
        tests.append({"healthStatus": health, "inputPath": f"testdata/{path.name}", "kstatus": case.kstatus})
    preamble = HEALTH_TESTS.read_text().split("tests:", 1)[0]
    HEALTH_TESTS.write_text(preamble + yaml.safe_dump({"tests": tests}, sort_keys=False))


def _loosen_train_stage_crd(kubectl: Any, loose: bool) -> None:
    """Swap the TrainStage CRD's spec schema for one that accepts anything (as an older CRD might)."""
    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "trainstages.yaml").read_text())
    if loose:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(crd))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/trainstages.posttrain.dev")


def test_gitops_health_of_every_outcome(
    kube: client.ApiClient, kubeconfig: Path, kubectl: Any, namespace: str, posttrain_crds: list[Path]
) -> None:
    ns = namespace
    _storage(client.CoreV1Api(kube), ns)
    custom = client.CustomObjectsApi(kube)
    captured: list[tuple[Case, dict[str, Any], dict[str, str]]] = []

    def keep(case: Case, obj: dict[str, Any]) -> None:
        _judge(case, obj)  # the object as the operator wrote it
        fixture = _fixture(obj, ns)
        captured.append((case, fixture, _judge(case, fixture)))

    # Before the operator runs: the status default is all there is.
    kubectl("apply", "-n", ns, "-f", "-", input=NEW)
    new = _capture(custom, ns, NEW_CASE)
    assert new["status"] == {"phase": "Pending", "observedGeneration": 0}
    keep(NEW_CASE, new)
    # A spec the models reject, let in by a looser CRD (restored at once).
    _loosen_train_stage_crd(kubectl, loose=True)
    try:
        wait_until(
            lambda: (
                kubectl("create", "-n", ns, "-f", "-", input=json.dumps(INVALID), check=False).returncode == 0
            ),
            timeout=30,
            message="the loosened CRD to accept the invalid TrainStage",
        )
    finally:
        _loosen_train_stage_crd(kubectl, loose=False)

    def decide(config: Any, attempt: int) -> Outcome:
        if config.name == "evol":
            return Outcome(0, "", duration="1h")  # still running when captured
        if config.name in ("sft", "flaky"):
            return Outcome(3, json.dumps({"error": "CUDA out of memory on rank 0"}))
        if config.name == "evol-done":
            document = json.loads(success(config).message)
            document["metrics"] = {
                Evol.REQUESTS_SENT: 7.0,
                Evol.REQUESTS_SENT_BY.of("teacher"): 7.0,
                Evol.TOKENS_COMPLETION_BY.of("teacher"): 420.0,
            }
            return Outcome(0, json.dumps(document))
        return success(config)

    with running_operator(kubeconfig, ns) as port, WorkloadPlayer(kube, ns, decide):
        kubectl("apply", "-n", ns, "-f", "-", input=MANIFESTS)
        for case in RUNNING:
            keep(case, _capture(custom, ns, case))
        keep(INVALID_CASE, _capture(custom, ns, INVALID_CASE))
        kubectl("apply", "-n", ns, "-f", "-", input=SEED_AGAIN)
        keep(REUSED, _capture(custom, ns, REUSED))
        # The workload metrics of a finished run reach /metrics, labelled by the resource.
        wait_until(
            lambda: (
                ((_get(custom, ns, "EvolJob", "evol-done") or {}).get("status") or {}).get("phase")
                == "Succeeded"
            ),
            timeout=60,
            message="evol-done Succeeded",
        )
        exported = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    resource = f'kind="EvolJob",name="evol-done",namespace="{ns}"'
    assert (
        f'posttrain_teacher_tokens_total{{{resource},teacher="teacher",type="completion"}} 420.0' in exported
    )
    assert f'posttrain_teacher_requests_total{{{resource},teacher="teacher"}} 7.0' in exported

    # With the operator stopped, an edit stays unobserved.
    kubectl("patch", "-n", ns, "dataslice", "seed", "--type=merge", "-p", '{"spec": {"artifacts": {}}}')
    stale = wait_until(
        lambda: (obj := _get(custom, ns, "DataSlice", "seed")) and obj["metadata"]["generation"] == 2 and obj,
        timeout=30,
        message="the edit of seed",
    )
    assert stale["status"]["observedGeneration"] == 1
    keep(STALE, stale)

    # The fixture covers every kind, phase and verdict.
    objects = [obj for _, obj, _ in captured]
    assert {o["kind"] for o in objects} == set(KINDS)
    assert {o["status"]["phase"] for o in objects} == {"Pending", "Waiting", "Running", "Succeeded", "Failed"}
    assert {c.kstatus for c, _, _ in captured} == {"InProgress", "Failed", "Current"}
    _write_fixture(captured)

"""GitOps support: what Argo CD, Flux and kstatus make of the status the operator writes.

The cases of gitops/argocd/health_test.yaml (Argo CD's format, plus each case's kstatus verdict) are
objects captured from the operator on a real control plane, driven to every outcome;
tests/cluster/test_health.py regenerates them. Here each case runs through Argo CD's health check
under Lua 5.1 (the Lua Argo CD embeds) and through kstatus' rules (tests/support/kstatus.py, the
computation Flux's `wait`, kpt and cli-utils use), and docs/gitops.md's table must say the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from posttrain.api.crd import all_crds
from posttrain.api.curriculum import KIND as CURRICULUM
from posttrain.api.curriculum import Curriculum
from posttrain.api.resources import API_VERSION, KINDS
from posttrain.api.status import UNOBSERVED, Status
from posttrain.plan.curriculum import plan_curriculum

from tests.support import kstatus
from tests.support.argocd import ARGOCD, assess, health_cases, health_scripts

ROOT = Path(__file__).resolve().parents[2]
FLUX = ROOT / "gitops" / "flux"
DOCS = ROOT / "docs" / "gitops.md"
HEALTHS = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def case_object(case: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    return obj


def case_name(case: dict[str, Any]) -> str:
    """`trainstage-blocked-upstream.yaml` -> `blocked-upstream`."""
    return Path(case["inputPath"]).stem.split("-", 1)[1]


def cases() -> Iterator[Any]:
    for case in health_cases():
        yield pytest.param(case, id=Path(case["inputPath"]).stem)


def test_every_kind_has_a_health_check() -> None:
    scripts = health_scripts()
    assert set(scripts) == {*KINDS, CURRICULUM}
    # One status contract, one script: every key carries the same file.
    assert len(set(scripts.values())) == 1


@pytest.mark.parametrize("case", cases())
def test_argocd_and_kstatus_verdicts_of_a_captured_case(case: dict[str, Any]) -> None:
    obj = case_object(case)
    assert obj["apiVersion"] == API_VERSION
    Status.model_validate(obj["status"])  # a status of the current contract
    expected = case["healthStatus"]
    assert expected["status"] in HEALTHS
    assert assess(obj) == expected
    verdict = kstatus.compute(obj)
    assert verdict.status == case["kstatus"], verdict
    # kstatus releases without the Ready rule agree: the verdict rests on Stalled and Reconciling.
    assert kstatus.compute(obj, ready_condition=False).status == case["kstatus"]


def test_cases_cover_every_kind_phase_and_verdict() -> None:
    inputs = [case_object(c) for c in health_cases()]
    assert {o["kind"] for o in inputs} == set(KINDS)
    assert {o["status"]["phase"] for o in inputs} == {"Pending", "Waiting", "Running", "Succeeded", "Failed"}
    assert {c["healthStatus"]["status"] for c in health_cases()} == {"Healthy", "Progressing", "Degraded"}
    assert {c["kstatus"] for c in health_cases()} == {"Current", "InProgress", "Failed"}
    listed = {Path(c["inputPath"]).name for c in health_cases()}
    assert listed == {p.name for p in (ARGOCD / "testdata").glob("*.yaml")}, "a test input without a case"
    names = {case_name(c) for c in health_cases()}
    assert {
        "failed",
        "blocked",
        "blocked-upstream",
        "missing",
        "cycle",
        "invalid",
        "running",
        "waiting",
    } <= names


def test_only_a_success_for_the_current_spec_is_current() -> None:
    for case in health_cases():
        obj = case_object(case)
        succeeded = obj["status"]["phase"] == "Succeeded"
        observed = obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert (case["kstatus"] == "Current") == (succeeded and observed), case_name(case)
        assert (case["healthStatus"]["status"] == "Healthy") == (case["kstatus"] == "Current")
        assert (case["healthStatus"]["status"] == "Degraded") == (case["kstatus"] == "Failed")


def test_a_block_names_its_root_cause_at_any_depth() -> None:
    by_name = {case_name(c): (c, case_object(c)) for c in health_cases()}
    failed = by_name["failed"][1]["metadata"]["name"]
    for name in ("blocked", "blocked-upstream"):
        case, obj = by_name[name]
        message = kstatus.compute(obj).message
        assert f"TrainStage/{failed}" in message and "failed" in message, (name, message)
        assert case["healthStatus"]["message"] == message


def test_a_cycle_is_named_once() -> None:
    [case] = [c for c in health_cases() if case_name(c) == "cycle"]
    message = kstatus.compute(case_object(case)).message
    assert message.startswith("reference cycle: ") and message.count("reference cycle") == 1, message


def test_health_follows_the_life_of_one_resource() -> None:
    """The same object with only its conditions changing, as the operator writes them."""
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "TrainStage",
        "metadata": {"name": "sft", "generation": 3},
        "spec": {"method": "sft"},
        "status": UNOBSERVED.wire(),
    }
    seen = [(assess(obj)["status"], kstatus.compute(obj).status)]
    for phase, ready, abnormal in (
        ("Running", "Unknown", "Reconciling"),
        ("Succeeded", "True", None),
        ("Failed", "False", "Stalled"),
    ):
        conditions = [{"type": "Ready", "status": ready, "reason": phase, "message": phase.lower()}]
        for kind in ("Stalled", "Reconciling"):
            status = "True" if kind == abnormal else "False"
            conditions.append({"type": kind, "status": status, "reason": phase, "message": phase.lower()})
        obj["status"] = {"phase": phase, "observedGeneration": 3, "conditions": conditions}
        seen.append((assess(obj)["status"], kstatus.compute(obj).status))
    assert seen == [
        ("Progressing", "InProgress"),
        ("Progressing", "InProgress"),
        ("Healthy", "Current"),
        ("Degraded", "Failed"),
    ]
    obj["metadata"]["generation"] = 4  # edited after it failed: the old verdict no longer holds
    assert (assess(obj)["status"], kstatus.compute(obj).status) == ("Progressing", "InProgress")


def test_a_new_object_is_never_current() -> None:
    """The CRDs default `status`, so a just-applied object reads as not yet observed."""
    for name, crd in all_crds().items():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert schema["default"] == {"phase": "Pending", "observedGeneration": 0}, name
        assert Status.model_validate(schema["default"]) == UNOBSERVED
    new = {"apiVersion": API_VERSION, "kind": "DataSlice", "metadata": {"name": "d", "generation": 1}}
    assert kstatus.compute(new).status == "Current"  # what a missing status would mean to kstatus
    defaulted = {**new, "status": UNOBSERVED.wire()}
    assert kstatus.compute(defaulted).status == "InProgress"
    assert assess(defaulted) == {
        "status": "Progressing",
        "message": "Waiting for the posttrain operator to pick the resource up",
    }


def _curriculum_outcomes() -> dict[str, dict[str, Any]]:
    """A Curriculum as the plan leaves it at each outcome (stage running, succeeded, stopped, failed)."""
    document = yaml.safe_load((ROOT / "examples" / "progressive" / "curriculum.yaml").read_text())
    document["metadata"]["generation"] = 1
    curriculum = Curriculum.model_validate(document)
    gate = {"phase": "Succeeded", "outputs": {}, "conditions": []}
    passing = {"elo.student": 1040.0, "eloLow.student": 1010.0, "elo.previous": 1000.0}
    failing = {"elo.student": 1000.0, "eloLow.student": 980.0, "elo.previous": 1000.0}
    failed_child = {
        "phase": "Failed",
        "conditions": [
            {"type": "Stalled", "status": "True", "reason": "Failed", "message": "retries used up"}
        ],
    }

    def status(children: Any) -> dict[str, Any]:
        return plan_curriculum(curriculum, children, datetime(2025, 1, 1, tzinfo=UTC)).status

    def done(key: tuple[str, str], metrics: dict[str, float]) -> dict[str, Any]:
        return {**gate, "metrics": metrics} if key[1].endswith("-gate") else {"phase": "Succeeded"}

    return {
        "running": status(lambda key: {"phase": "Running"}),
        "succeeded": status(lambda key: done(key, passing)),
        "not-promoted": status(lambda key: done(key, failing)),
        "stage-failed": status(
            lambda key: failed_child if key[1].endswith("-s1-sft") else {"phase": "Running"}
        ),
    }


@pytest.mark.parametrize(
    ("outcome", "argocd", "verdict"),
    [
        ("running", "Progressing", "InProgress"),
        ("succeeded", "Healthy", "Current"),
        ("not-promoted", "Degraded", "Failed"),
        ("stage-failed", "Degraded", "Failed"),
    ],
)
def test_a_curriculum_reads_the_same_in_argocd_and_kstatus(outcome: str, argocd: str, verdict: str) -> None:
    status = _curriculum_outcomes()[outcome]
    obj = {"apiVersion": API_VERSION, "kind": CURRICULUM, "metadata": {"name": "wizard", "generation": 1}}
    obj["status"] = status
    health = assess(obj)
    assert (health["status"], kstatus.compute(obj).status) == (argocd, verdict)
    if verdict != "Current":
        assert health["message"] == kstatus.compute(obj).message
    if outcome == "not-promoted":
        assert "not promoted" in health["message"] and "gain +0" in health["message"]
    if outcome == "stage-failed":
        assert "TrainStage/wizard-s1-sft: retries used up" in health["message"]


# --- the kstatus computation itself (cli-utils' rules) -------------------------------------------


def _object(generation: int | None = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "x"}
    if generation is not None:
        metadata["generation"] = generation
    obj: dict[str, Any] = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": metadata}
    if status is not None:
        obj["status"] = status
    return obj


def _condition(type_: str, status: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": "Because", "message": message}


@pytest.mark.parametrize(
    ("obj", "verdict"),
    [
        (_object(status={"observedGeneration": 1}), "InProgress"),
        (_object(status={"observedGeneration": 2}), "Current"),
        (_object(status={}), "Current"),  # no observedGeneration: the generation check is skipped
        (_object(generation=None, status={"observedGeneration": 5}), "Current"),
        (
            _object(status={"observedGeneration": 2, "conditions": [_condition("Reconciling", "True")]}),
            "InProgress",
        ),
        (_object(status={"observedGeneration": 2, "conditions": [_condition("Stalled", "True")]}), "Failed"),
        (
            _object(status={"conditions": [_condition("Stalled", "False"), _condition("Ready", "True")]}),
            "Current",
        ),
        (_object(status={"conditions": [_condition("Ready", "False")]}), "InProgress"),
        (_object(status={"conditions": [_condition("Ready", "Unknown")]}), "InProgress"),
        (_object(status={"conditions": [_condition("Progressing", "True")]}), "Current"),
    ],
)
def test_kstatus_rules(obj: dict[str, Any], verdict: str) -> None:
    assert kstatus.compute(obj).status == verdict


def test_kstatus_takes_the_first_abnormal_condition_and_its_message() -> None:
    both = [_condition("Stalled", "True", "stuck"), _condition("Reconciling", "True", "working")]
    assert kstatus.compute(_object(status={"conditions": both})) == kstatus.Result("Failed", "stuck")
    assert kstatus.compute(_object(status={"conditions": both[::-1]})) == kstatus.Result(
        "InProgress", "working"
    )


def test_kstatus_without_the_ready_rule_and_on_deletion() -> None:
    not_ready = _object(status={"conditions": [_condition("Ready", "False")]})
    assert kstatus.compute(not_ready, ready_condition=False).status == "Current"
    deleted = _object(status={"conditions": [_condition("Stalled", "True")]})
    deleted["metadata"]["deletionTimestamp"] = "2026-03-01T10:00:00Z"
    assert kstatus.compute(deleted).status == "Terminating"


# --- Flux and the docs ---------------------------------------------------------------------------


def test_flux_examples() -> None:
    documents = [d for path in sorted(FLUX.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    release = kinds["HelmRelease"]
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/posttrain-operator"
    assert (ROOT / "charts" / "posttrain-operator" / "Chart.yaml").is_file()
    curriculum = kinds["Kustomization"]
    assert (ROOT / curriculum["spec"]["path"]).is_dir()
    assert curriculum["spec"]["dependsOn"] and curriculum["spec"]["wait"] is True
    # kstatus, Flux's default health check, reads the conditions: no expressions to keep in step.
    assert "healthCheckExprs" not in curriculum["spec"]
    # Its comments say what Flux shows, in the verdicts the captured cases get.
    comments = " ".join(
        line for line in (FLUX / "curriculum.yaml").read_text().splitlines() if line.startswith("#")
    )
    for verdict in {c["kstatus"] for c in health_cases()} | {"Stalled", "Reconciling"}:
        assert verdict in comments, verdict


def docs_table() -> dict[str, dict[str, str]]:
    """docs/gitops.md's table of cases: case name -> {column: cell}."""
    lines = [line for line in DOCS.read_text().splitlines() if line.startswith("| `")]
    header = next(line for line in DOCS.read_text().splitlines() if line.startswith("| case |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = dict(zip(columns, cells, strict=True))
    return rows


def test_docs_say_what_each_tool_shows_for_every_case() -> None:
    table = docs_table()
    assert set(table) == {case_name(c) for c in health_cases()}
    for case in health_cases():
        row = table[case_name(case)]
        obj = case_object(case)
        assert row["phase"] == obj["status"]["phase"], row
        assert row["Argo CD"] == case["healthStatus"]["status"], row
        assert row["kstatus (Flux, kpt)"] == case["kstatus"], row
        conditions = {c["type"]: c for c in obj["status"].get("conditions", [])}
        for written in re.findall(r"`(\w+)=(\w+)`", row["conditions"]):
            assert conditions[written[0]]["status"] == written[1], (row, written)

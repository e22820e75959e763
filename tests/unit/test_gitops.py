"""GitOps support: the Argo CD health checks (Lua) and the Flux examples in gitops/.

The health checks run through Lua 5.1 (lupa), the Lua version Argo CD embeds, on the cases of
gitops/argocd/health_test.yaml, the format Argo CD's own resource customizations use. Each case's
input is checked against the status model first, so the cases follow the real status contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51
from posttrain.api.resources import API_VERSION, GROUP, KINDS
from posttrain.api.status import Status

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "gitops" / "argocd"
FLUX = ROOT / "gitops" / "flux"
HEALTHS = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health_scripts() -> dict[str, str]:
    """Kind -> Lua script, as the Kustomize component puts them into argocd-cm."""
    component = yaml.safe_load((ARGOCD / "kustomization.yaml").read_text())
    generator = next(g for g in component["configMapGenerator"] if g["name"] == "argocd-cm")
    assert generator["behavior"] == "merge"
    prefix = f"resource.customizations.health.{GROUP}_"
    scripts = {}
    for entry in generator["files"]:
        key, _, path = entry.partition("=")
        assert key.startswith(prefix), key
        scripts[key[len(prefix) :]] = (ARGOCD / path).read_text()
    return scripts


def assess(script: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Run a health script the way Argo CD does: a fresh Lua state, the object as the global `obj`."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    assert result is not None, "the script returned nothing"
    return {key: result[key] for key in ("status", "message") if result[key] is not None}


def case_list() -> list[dict[str, Any]]:
    """The cases of health_test.yaml: {healthStatus: {status, message}, inputPath}."""
    tests: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    return tests


def cases() -> Iterator[Any]:
    for case in case_list():
        yield pytest.param(case, id=Path(case["inputPath"]).stem)


def test_every_kind_has_a_health_check() -> None:
    scripts = health_scripts()
    assert set(scripts) == set(KINDS)
    # One status contract, one script: every key carries the same file.
    assert len(set(scripts.values())) == 1


@pytest.mark.parametrize("case", cases())
def test_health_check_case(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert obj["apiVersion"] == API_VERSION
    if "status" in obj:
        Status.model_validate(obj["status"])  # the case is a status the operator can write
    expected = case["healthStatus"]
    assert expected["status"] in HEALTHS
    assert assess(health_scripts()[obj["kind"]], obj) == expected


def test_cases_cover_every_kind_phase_and_health() -> None:
    inputs = [yaml.safe_load((ARGOCD / c["inputPath"]).read_text()) for c in case_list()]
    assert {o["kind"] for o in inputs} == set(KINDS)
    phases = {o.get("status", {}).get("phase") for o in inputs}
    assert {"Pending", "Waiting", "Running", "Succeeded", "Failed"} <= phases
    healths = {c["healthStatus"]["status"] for c in case_list()}
    assert healths == {"Healthy", "Progressing", "Degraded"}
    listed = {Path(c["inputPath"]).name for c in case_list()}
    assert listed == {p.name for p in (ARGOCD / "testdata").glob("*.yaml")}, "a test input without a case"


def test_health_follows_phase_changes_of_one_resource() -> None:
    """One resource through its life: the same object, only its status changing."""
    script = health_scripts()["TrainStage"]
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "TrainStage",
        "metadata": {"name": "sft", "generation": 3},
        "spec": {"method": "sft"},
    }
    seen = [assess(script, obj)["status"]]
    for phase, ready in (("Running", "Unknown"), ("Succeeded", "True"), ("Failed", "False")):
        obj["status"] = {
            "phase": phase,
            "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": ready, "reason": phase, "message": phase.lower()}],
        }
        seen.append(assess(script, obj)["status"])
    assert seen == ["Progressing", "Progressing", "Healthy", "Degraded"]
    obj["metadata"]["generation"] = 4  # edited after it failed: the old verdict no longer holds
    assert assess(script, obj)["status"] == "Progressing"


def test_flux_examples() -> None:
    documents = [d for path in sorted(FLUX.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    release = kinds["HelmRelease"]
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/posttrain-operator"
    assert (ROOT / "charts" / "posttrain-operator" / "Chart.yaml").is_file()
    curriculum = kinds["Kustomization"]
    assert (ROOT / curriculum["spec"]["path"]).is_dir()
    assert curriculum["spec"]["dependsOn"] and curriculum["spec"]["wait"] is True
    expressions = curriculum["spec"]["healthCheckExprs"]
    assert {e["kind"] for e in expressions} == set(KINDS)
    assert all(e["apiVersion"] == API_VERSION for e in expressions)
    # The same judgement for every kind, and the same one as the Argo CD check: by phase and generation.
    assert len({(e["current"], e["failed"]) for e in expressions}) == 1
    for expression in (expressions[0]["current"], expressions[0]["failed"]):
        assert "status.observedGeneration == metadata.generation" in expression
    assert "'Succeeded'" in expressions[0]["current"] and "'Failed'" in expressions[0]["failed"]

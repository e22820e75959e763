"""The API models: validation, the generated CRDs and the examples."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from posttrain.api import KINDS, DataRef, TrainStageSpec
from posttrain.api.align import AlignRoundSpec
from posttrain.api.crd import all_crds, openapi_schema
from posttrain.api.loading import ManifestError, parse_objects
from posttrain.api.metrics import Data, Evol, Metric, find, unknown
from posttrain.api.references import iter_references, resolve
from posttrain.api.uri import ArtifactUri
from posttrain.files import load_resources, read_documents
from posttrain.plan.graph import Graph
from pydantic import Field, ValidationError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"

# Short names of the built-in kinds of Kubernetes 1.36 (kubectl api-resources).
BUILTIN_SHORT_NAMES = {
    "cm",
    "csr",
    "cs",
    "ds",
    "deploy",
    "ep",
    "ev",
    "hpa",
    "ing",
    "limits",
    "netpol",
    "no",
    "ns",
    "pc",
    "pdb",
    "po",
    "psp",
    "pv",
    "pvc",
    "quota",
    "rc",
    "rs",
    "sa",
    "sc",
    "sts",
    "svc",
    "crd",
    "crds",
    "csidrivers",
    "csinodes",
    "ingclass",
    "vac",
    "ipaddr",
    "svccidr",
    "rcs",
    "vap",
    "vapb",
    "mwc",
}


def test_generated_crds_match_the_committed_files() -> None:
    generated = all_crds()
    on_disk = {p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert on_disk == set(generated), "crds/ holds other files than `posttrain crds` generates"
    for name, body in generated.items():
        committed = yaml.safe_load((ROOT / "crds" / name).read_text())
        assert committed == body, f"crds/{name} is stale: run `posttrain crds`"


def test_drift_check_sees_a_model_change() -> None:
    class Changed(TrainStageSpec):
        new_knob: int = Field(default=1)
        """A field added after generation."""

    before = openapi_schema(TrainStageSpec)
    after = openapi_schema(Changed)
    assert before != after
    assert "newKnob" in after["properties"]


def _walk_properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from _walk_properties(prop, f"{path}.{name}")
        if "items" in prop:
            yield from _walk_properties(prop["items"], f"{path}.{name}[]")
        if isinstance(prop.get("additionalProperties"), dict):
            yield from _walk_properties(prop["additionalProperties"], f"{path}.{name}{{}}")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_properties(kind: str) -> None:
    info = KINDS[kind]
    crd = all_crds()[f"{info.plural}.yaml"]
    names = crd["spec"]["names"]
    assert crd["spec"]["group"] == "posttrain.dev"
    assert names["categories"] == ["posttrain"]
    assert not set(names["shortNames"]) & BUILTIN_SHORT_NAMES
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:3] == ["Phase", "Ready", "Progress"] and columns[-1] == "Age" and len(columns) == 5
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    undocumented = [p for p, prop in _walk_properties(spec) if not prop.get("description")]
    assert not undocumented, f"fields without a description: {undocumented}"
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "anyOf" not in text and "additionalProperties: false" not in text
    status = schema["properties"]["status"]["properties"]
    for field in (
        "phase",
        "conditions",
        "observedGeneration",
        "outputs",
        "metrics",
        "progress",
        "startTime",
        "completionTime",
    ):
        assert field in status


CLIENT_SIDE_APPLY_LIMIT = 262144
"""Bytes of annotations an object may carry: client-side `kubectl apply` (and Argo CD's default sync)
stores the whole applied object in `kubectl.kubernetes.io/last-applied-configuration`."""


def test_every_crd_fits_a_client_side_apply_with_room_to_spare() -> None:
    for name in all_crds():
        text = (ROOT / "crds" / name).read_text()
        assert len(text.encode()) < 0.8 * CLIENT_SIDE_APPLY_LIMIT, f"crds/{name} is {len(text)} bytes"


def test_the_curriculum_crd() -> None:
    crd = all_crds()["curricula.yaml"]
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "Curriculum",
        ["curr"],
        ["posttrain"],
    )
    assert not set(names["shortNames"]) & BUILTIN_SHORT_NAMES
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Stage", "Phase", "Ready", "Elo", "Gate", "Age"]
    assert columns["Elo"] == ".status.metrics.elo" and columns["Stage"] == ".status.stageSummary"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # Templates are documented at their top level; the rest in the other kinds' CRDs.
    assert "kubectl explain trainstages.spec" in spec["properties"]["sft"]["description"]
    assert spec["properties"]["sft"]["properties"]["train"]["description"]
    assert "description" not in spec["properties"]["sft"]["properties"]["train"]["properties"]["epochs"]
    assert spec["properties"]["overrides"]["items"]["properties"]["sft"][
        "x-kubernetes-preserve-unknown-fields"
    ]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"stage", "stageSummary", "currentModel", "lastGate", "stages"} <= set(status)
    assert "`overrides[].stage` must be at most `stages`" in yaml.safe_dump(crd)


def test_cel_rules_are_in_the_crds() -> None:
    crds = all_crds()
    train = yaml.safe_dump(crds["trainstages.yaml"])
    assert "method `dpo` needs preference data" in train
    assert "method is immutable" in train
    assert "exactly one of `uri` and `from` must be set" in train
    # The rule text is long: yaml folds it, so the check reads the document itself.
    assert "exactly one of `served` and `endpoint` and `verifier` must be set" in str(crds["evoljobs.yaml"])


def test_every_example_validates() -> None:
    for folder in ("quickstart", "progressive"):
        resources = load_resources([ROOT / "examples" / folder])
        graph = Graph.build(resources)
        assert graph.missing() == [] and graph.cycle() is None
        assert {r.kind for r in resources} == set(KINDS), folder
    progressive = load_resources([ROOT / "examples" / "progressive"])
    stages = [r for r in progressive if r.kind == "TrainStage" and r.spec.method == "dpo"]
    assert len(stages) == 3


def test_invalid_fixture_names_every_problem() -> None:
    with pytest.raises(ManifestError) as raised:
        load_resources([FIXTURES / "invalid.yaml"])
    problems = raised.value.problems
    text = "\n".join(problems)
    assert "TrainStage/bad-type: spec.train.epochs: Input should be a valid number" in text
    assert "EvolJob/unknown-field: spec.evol.roundz: unknown field" in text
    assert "DataSlice/both-uri-and-from: spec.sources[0]: exactly one of `uri` and `from`" in text
    assert "Pipeline/unknown-kind: kind: 'Pipeline' is not a posttrain kind" in text
    assert "TrainStage/dpo-without-preferences: spec: method `dpo` needs preference data" in text
    assert all(p.startswith(str(FIXTURES / "invalid.yaml")) for p in problems)
    assert len(problems) == 5


def test_duplicates_and_bad_api_version() -> None:
    body = {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "RewardModel",
        "metadata": {"name": "r"},
        "spec": {"type": "irm", "baseModel": {"uri": "file:///m"}, "dataset": {"uri": "file:///d"}},
    }
    with pytest.raises(ManifestError) as raised:
        parse_objects([("a.yaml", body), ("b.yaml", body), ("c.yaml", {**body, "apiVersion": "v1"})])
    assert raised.value.problems == [
        "b.yaml: RewardModel/r: duplicate of the resource in a.yaml",
        "c.yaml: RewardModel/r: apiVersion: must be posttrain.dev/v1alpha1, got 'v1'",
    ]


def test_reference_needs_exactly_one_of_uri_and_from() -> None:
    with pytest.raises(ValidationError):
        DataRef.model_validate({})
    assert DataRef.model_validate({"from": {"kind": "EvolJob", "name": "e"}}).from_ is not None


def test_participant_names_unique_and_student_distinct() -> None:
    teacher = {"name": "t", "endpoint": {"baseUrl": "http://x/v1", "model": "m"}}
    with pytest.raises(ValidationError, match="names in `teachers` must be unique"):
        KINDS["EvolJob"].spec_model.model_validate(
            {"dataset": {"uri": "file:///d"}, "teachers": [teacher, teacher]}
        )
    with pytest.raises(ValidationError, match="student's name must differ"):
        KINDS["AlignRound"].spec_model.model_validate(
            {
                "datasets": [{"uri": "file:///d"}],
                "student": teacher,
                "teachers": [teacher],
                "judges": [teacher],
            }
        )


def test_a_verifier_can_judge_but_not_teach_or_learn() -> None:
    model = {"name": "t", "endpoint": {"baseUrl": "http://x/v1", "model": "m"}}
    verifier = {"name": "v", "verifier": {"type": "arithmetic"}}
    align = AlignRoundSpec
    spec = align.model_validate(
        {
            "datasets": [{"uri": "file:///d"}],
            "student": model | {"name": "s"},
            "teachers": [model],
            "judges": [verifier],
        }
    )
    judge = spec.judges[0].verifier
    assert judge is not None and judge.type == "arithmetic"
    with pytest.raises(ValidationError, match="must be models: a verifier can only judge"):
        align.model_validate(
            {
                "datasets": [{"uri": "file:///d"}],
                "student": model | {"name": "s"},
                "teachers": [verifier],
                "judges": [model],
            }
        )
    with pytest.raises(ValidationError, match="must be models: a verifier can only judge"):
        align.model_validate(
            {
                "datasets": [{"uri": "file:///d"}],
                "student": verifier | {"name": "s"},
                "teachers": [model],
                "judges": [model],
            }
        )
    with pytest.raises(ValidationError, match="must be models: a verifier can only judge"):
        KINDS["EvolJob"].spec_model.model_validate({"dataset": {"uri": "file:///d"}, "teachers": [verifier]})
    with pytest.raises(ValidationError, match="exactly one of `served` and `endpoint` and `verifier`"):
        align.model_validate(
            {
                "datasets": [{"uri": "file:///d"}],
                "student": model | {"name": "s"},
                "teachers": [model],
                "judges": [verifier | {"endpoint": model["endpoint"]}],
            }
        )
    crd = str(all_crds()["alignrounds.yaml"])
    assert "self.teachers.all(p, !has(p.verifier)) && !has(self.student.verifier)" in crd


def test_references_are_found_and_resolved() -> None:
    documents = read_documents([ROOT / "examples" / "quickstart"])
    resources = {r.metadata.name: r for r in parse_objects(documents)}
    rleif = resources["rleif"]
    paths = [p for p, _ in iter_references(rleif.spec)]
    assert paths == [
        "model",
        "dataset",
        "rewardModels[0].model",
        "rewardModels[1].model",
        "train.evaluation.tasks.dataset",
    ]
    wire = resolve(rleif.spec, lambda path, ref: f"file:///out/{ref.kind}/{ref.name}/{ref.output or 'main'}")
    assert wire["model"] == {"uri": "file:///out/TrainStage/dpo/main"}
    assert wire["rewardModels"][1]["model"] == {"uri": "file:///out/RewardModel/prm/main"}
    assert TrainStageSpec.model_validate(wire).model.uri == "file:///out/TrainStage/dpo/main"


def test_graph_reports_missing_and_cycles() -> None:
    def stage(name: str, model_from: str) -> dict[str, Any]:
        return {
            "apiVersion": "posttrain.dev/v1alpha1",
            "kind": "TrainStage",
            "metadata": {"name": name},
            "spec": {
                "method": "sft",
                "model": {"from": {"kind": "TrainStage", "name": model_from}},
                "dataset": {"uri": "file:///d"},
            },
        }

    graph = Graph.build(
        parse_objects([("x", stage("a", "b")), ("x", stage("b", "a")), ("x", stage("c", "z"))])
    )
    assert graph.missing() == ["TrainStage/c: spec.model: TrainStage/z does not exist"]
    assert graph.cycle() == [("TrainStage", "a"), ("TrainStage", "b"), ("TrainStage", "a")]
    with pytest.raises(ValueError, match="reference cycle"):
        graph.order()


def test_importing_the_api_imports_neither_torch_nor_kopf() -> None:
    code = "import sys, posttrain.api, posttrain.plan.graph; print(sorted(m for m in ('torch', 'kopf', 'kubernetes', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_metric_names_follow_the_one_naming_rule() -> None:
    for bad in ("rowsRejected.", "rows_rejected", "Rows.in", "rows..in", "rows.<Item>"):
        with pytest.raises(ValueError):
            Metric(bad, "", "")
    every = [metric for info in KINDS.values() for metric in info.metrics]
    assert every and all(
        isinstance(metric, Metric) and metric.description and metric.unit for metric in every
    )


def test_a_printer_column_reads_a_metric_its_kind_writes() -> None:
    prefix = ".status.metrics."
    columns = [info for info in KINDS.values() if info.extra_column.json_path.startswith(prefix)]
    assert columns
    for info in columns:
        key = info.extra_column.json_path.removeprefix(prefix).replace("\\.", ".")
        assert key in info.metrics, info.kind
    assert Data.ROWS_OUT.json_path() == ".status.metrics.rows\\.out"
    with pytest.raises(ValueError):
        Evol.KEPT_BY_TEACHER.json_path()


def test_a_metric_family_fills_in_and_reads_back_its_items() -> None:
    assert Evol.ELIMINATED_BY_RULE.of("refusal") == "eliminated.refusal"
    assert Data.TARGET.items("target.language.en.US") == ("language", "en.US")
    assert Evol.KEPT.items("kept.teacher") is None and Evol.KEPT_BY_TEACHER.items("kept") is None
    assert find(Evol.ALL, "kept") == Evol.KEPT and find(Evol.ALL, "kept.gpt") == Evol.KEPT_BY_TEACHER
    assert unknown(Evol.ALL, ["yield.deepen", "rows", "rankings"]) == ["rows", "rankings"]


@pytest.mark.parametrize(
    ("uri", "scheme", "authority", "path", "local"),
    [
        ("file:///data/run", "file", "", "/data/run", "/data/run"),
        ("file://relative/run", "file", "", "relative/run", "relative/run"),
        ("pvc://store/runs/a", "pvc", "store", "runs/a", "/mnt/pvc/store/runs/a"),
        ("pvc://store", "pvc", "store", "", "/mnt/pvc/store"),
        ("s3://bucket/key/x.json", "s3", "bucket", "key/x.json", None),
        ("plain/path", "", "", "plain/path", "plain/path"),
    ],
)
def test_an_artifact_uri_parses_round_trips_and_has_a_local_path(
    uri: str, scheme: str, authority: str, path: str, local: str | None
) -> None:
    parsed = ArtifactUri.parse(uri)
    assert (parsed.scheme, parsed.authority, parsed.path) == (scheme, authority, path)
    assert str(parsed) == uri
    found = parsed.local_path("/mnt/pvc")
    assert (None if found is None else str(found)) == local
    assert parsed.claim == ("store" if scheme == "pvc" else None)


def test_an_artifact_uri_joins_parts_below_it() -> None:
    assert str(ArtifactUri.parse("s3://bucket/run/").join("a", "/b.json")) == "s3://bucket/run/a/b.json"
    assert str(ArtifactUri.parse("pvc://store").join("result.json")) == "pvc://store/result.json"
    assert str(ArtifactUri.parse("file:///out").join("model")) == "file:///out/model"


def test_the_readme_status_and_metrics_reference_lists_exactly_the_catalogue() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Status and metrics reference", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$", section, re.MULTILINE)
    listed = [(kind, name, unit.strip()) for kind, name, unit, _ in rows]
    expected = [(kind, str(metric), metric.unit) for kind, info in KINDS.items() for metric in info.metrics]
    assert sorted(listed) == sorted(expected)

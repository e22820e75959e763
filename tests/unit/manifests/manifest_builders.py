"""Builders for the manifests tests.

Resources with an identity, actions from the real plan, and helpers that walk bodies (strings, pods) and
round-trip them through the Kubernetes client's models.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from posttrain.api.references import iter_references, output_name
from posttrain.api.resources import KINDS, Resource
from posttrain.api.status import Output
from posttrain.files import load_resources
from posttrain.manifests import ManifestSettings, teacher_endpoint, teacher_name
from posttrain.plan.reconcile import plan
from posttrain.plan.types import InputState, Observed, ObservedTeacher, Settings, StartTeacher, StartWorkload

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = ManifestSettings()
PLAN_SETTINGS = Settings(artifact_root="pvc://posttrain/artifacts")
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
API_VERSION = "posttrain.dev/v1alpha1"
POD_OWNERS = ("Job", "Deployment")


def identify(
    resource: Resource,
    namespace: str = "ml",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Resource:
    """The resource as read from the API server: namespace, uid, generation and its own metadata."""
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{resource.kind}/{resource.metadata.name}"))
    metadata = resource.metadata.model_copy(
        update={
            "namespace": namespace,
            "uid": uid,
            "generation": 1,
            "labels": labels or {},
            "annotations": annotations or {},
        }
    )
    return resource.model_copy(update={"metadata": metadata})


def make(kind: str, name: str, spec: dict[str, Any], **identity: Any) -> Resource:
    """A validated resource from a wire spec, with an identity."""
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    return identify(Resource.parse(body), **identity)


def examples(folder: str) -> list[Resource]:
    """The resources of `examples/<folder>`, each with an identity."""
    return [identify(r) for r in load_resources([ROOT / "examples" / folder])]


def example(folder: str, kind: str, name: str, **identity: Any) -> Resource:
    """One resource of `examples/<folder>`."""
    found = next(r for r in load_resources([ROOT / "examples" / folder]) if r.key == (kind, name))
    return identify(found, **identity)


def ready_inputs(resource: Resource) -> dict[tuple[str, str], InputState]:
    """Every referenced resource as succeeded, with the referenced outputs on the `posttrain` claim."""
    outputs: dict[tuple[str, str], dict[str, Output]] = {}
    for _, ref in iter_references(resource.spec):
        if ref.from_ is None:
            continue
        key = (ref.from_.kind, ref.from_.name)
        out = output_name(ref.from_)
        uri = f"pvc://posttrain/artifacts/{KINDS[key[0]].plural}/{key[1]}/{out}"
        digest = "sha256:" + hashlib.sha256(uri.encode()).hexdigest()
        outputs.setdefault(key, {})[out] = Output(uri=uri, digest=digest)
    return {key: InputState(exists=True, phase="Succeeded", outputs=outs) for key, outs in outputs.items()}


def teacher_actions(resource: Resource) -> list[StartTeacher]:
    """The teachers the plan starts for the resource (inputs ready, nothing running yet)."""
    decision = plan(Observed(resource, inputs=ready_inputs(resource)), PLAN_SETTINGS, NOW)
    return [a for a in decision.actions if isinstance(a, StartTeacher)]


def start_workload(resource: Resource, settings: ManifestSettings = SETTINGS) -> StartWorkload:
    """The plan's StartWorkload for the resource, once its inputs succeeded and its teachers serve.

    The teachers serve at the endpoints the manifests layer gives them.
    """
    teachers = [
        ObservedTeacher(
            participant=a.participant.name,
            name=teacher_name(resource, a.participant.name),
            ready=True,
            endpoint=teacher_endpoint(resource, a.participant, settings),
        )
        for a in teacher_actions(resource)
    ]
    observed = Observed(resource, inputs=ready_inputs(resource), teachers=teachers)
    decision = plan(observed, PLAN_SETTINGS, NOW)
    starts = [a for a in decision.actions if isinstance(a, StartWorkload)]
    assert len(starts) == 1, decision.actions
    return starts[0]


def strings(value: Any) -> Iterator[str]:
    """Every string (keys and values) in a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def pod_templates(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod templates of the Jobs and Deployments among the bodies."""
    return [o["spec"]["template"] for o in objects if o["kind"] in POD_OWNERS]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one body of a kind."""
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for o in objects]
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Environment entries by name (names must be unique)."""
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names
    return {e["name"]: e for e in container["env"]}


_CLIENT = ApiClient()
_MODELS = {
    ("batch/v1", "Job"): "V1Job",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
}


def round_trip(body: dict[str, Any]) -> dict[str, Any]:
    """The body read into the Kubernetes client's typed model and written back.

    A misspelt or misplaced field does not survive, so comparing with the original checks the body's shape.
    """
    model = _MODELS[(body["apiVersion"], body["kind"])]
    typed = _CLIENT.deserialize(json.dumps(body), model, "application/json")
    written: dict[str, Any] = _CLIENT.sanitize_for_serialization(typed)
    return written

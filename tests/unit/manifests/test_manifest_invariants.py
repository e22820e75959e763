"""Properties of every body built for every example resource.

Shape, determinism, ownership, the restricted security profile, no GitOps metadata and no secret material.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from posttrain.api.resources import Resource
from posttrain.manifests import ManifestSettings, teacher_objects, workload_objects

from tests.unit.manifests.manifest_builders import (
    SETTINGS,
    by_kind,
    examples,
    identify,
    pod_templates,
    round_trip,
    start_workload,
    strings,
    teacher_actions,
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
ALLOWED_VOLUMES = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected", "downwardAPI"}
EXAMPLES = examples("progressive") + examples("quickstart")
KEY_MATERIAL = [
    re.compile(r"sk-[A-Za-z0-9]{16,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
SENTINEL = "sk-liveSENTINELdoNotCopy0123456789"
GITOPS_LABELS = {
    "app.kubernetes.io/instance": "argo-application",
    "argocd.argoproj.io/instance": "argo-application",
    "kustomize.toolkit.fluxcd.io/name": "flux-kustomization",
    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    "helm.toolkit.fluxcd.io/name": "flux-release",
    "team": "nlp-team",
}
GITOPS_ANNOTATIONS = {
    "argocd.argoproj.io/tracking-id": "argo-application:posttrain.dev/TrainStage:ml/sft",
    "argocd.argoproj.io/sync-options": "Prune=false",
    "kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"posttrain.dev/v1alpha1"}',
    "example.com/api-token": SENTINEL,
}


def build_all(resource: Resource, settings: ManifestSettings = SETTINGS) -> list[dict[str, Any]]:
    """Every child of the resource: its served participants' and one workload attempt's."""
    objects: list[dict[str, Any]] = []
    for action in teacher_actions(resource):
        objects += teacher_objects(resource, action.participant, settings)
    objects += workload_objects(resource, start_workload(resource, settings), settings)
    return objects


def ids(resource: Resource) -> str:
    return f"{resource.kind}/{resource.metadata.name}"


@pytest.fixture(scope="module", params=EXAMPLES, ids=ids)
def built(request: pytest.FixtureRequest) -> tuple[Resource, list[dict[str, Any]]]:
    resource: Resource = request.param
    return resource, build_all(resource)


def test_round_trip_helper_notices_misspelt_fields() -> None:
    job = by_kind(build_all(EXAMPLES[0]), "Job")
    assert round_trip(job) == job
    job["spec"]["backofLimit"] = 0
    job["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    written = round_trip(job)
    assert "backofLimit" not in written["spec"]
    assert "securityContex" not in written["spec"]["template"]["spec"]["containers"][0]


def test_bodies_have_the_kubernetes_shape(built: tuple[Resource, list[dict[str, Any]]]) -> None:
    _, objects = built
    for body in objects:
        assert round_trip(body) == body, body["kind"]


def test_bodies_are_deterministic(built: tuple[Resource, list[dict[str, Any]]]) -> None:
    resource, objects = built
    reparsed = Resource.parse(json.loads(json.dumps(resource.wire())))
    for again in (build_all(resource), build_all(reparsed)):
        assert json.dumps(again, sort_keys=True) == json.dumps(objects, sort_keys=True)
        assert json.dumps(again) == json.dumps(objects)


def test_children_are_owned_named_and_labelled(built: tuple[Resource, list[dict[str, Any]]]) -> None:
    resource, objects = built
    for body in objects:
        meta = body["metadata"]
        assert meta["namespace"] == "ml"
        assert DNS_1035.match(meta["name"]) and len(meta["name"]) <= 63
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "posttrain.dev/v1alpha1",
                "kind": resource.kind,
                "name": resource.metadata.name,
                "uid": resource.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "posttrain-operator"
        assert meta["labels"]["posttrain.dev/kind"] == resource.kind
        for labels in [meta["labels"], *[t["metadata"]["labels"] for t in pod_templates([body])]]:
            for key, value in labels.items():
                assert LABEL_KEY.match(key) and len(key.split("/")[-1]) <= 63, key
                assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_every_pod_is_restricted(built: tuple[Resource, list[dict[str, Any]]]) -> None:
    _, objects = built
    templates = pod_templates(objects)
    assert templates
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert pod["automountServiceAccountToken"] is False
        for forbidden in ("hostNetwork", "hostPID", "hostIPC", "hostUsers", "initContainers"):
            assert forbidden not in pod
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= ALLOWED_VOLUMES, volume
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": False,
            }
            assert "hostPort" not in json.dumps(container.get("ports", []))
            home = next(e for e in container["env"] if e["name"] == "HOME")
            assert home["value"] == "/tmp"
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_jobs_leave_suspend_to_kueue(built: tuple[Resource, list[dict[str, Any]]]) -> None:
    _, objects = built
    job = by_kind(objects, "Job")
    assert "suspend" not in job["spec"]
    queue = job["metadata"]["labels"].get("kueue.x-k8s.io/queue-name")
    assert queue == (built[0].spec.scheduling.queue_name or None)


def test_parent_gitops_metadata_is_never_copied() -> None:
    for resource in EXAMPLES:
        tracked = identify(resource, labels=GITOPS_LABELS, annotations=GITOPS_ANNOTATIONS)
        objects = build_all(tracked)
        assert json.dumps(objects, sort_keys=True) == json.dumps(
            build_all(identify(resource)), sort_keys=True
        )
        found = set(strings(objects))
        for key, value in [*GITOPS_LABELS.items(), *GITOPS_ANNOTATIONS.items()]:
            if key != "app.kubernetes.io/instance":
                assert key not in found
            assert value not in found
        for body in objects:
            for labels in [
                body["metadata"]["labels"],
                *[t["metadata"]["labels"] for t in pod_templates([body])],
            ]:
                assert labels["app.kubernetes.io/instance"] == resource.metadata.name
                assert not [k for k in labels if k.startswith(("argocd.", "kustomize.", "helm."))]


def test_secrets_appear_only_as_references() -> None:
    secret_names = {"teacher-b-api"}
    for resource in EXAMPLES:
        objects = build_all(identify(resource, annotations={"example.com/api-token": SENTINEL}))
        for text in strings(objects):
            assert SENTINEL not in text
            assert not [p.pattern for p in KEY_MATERIAL if p.search(text)], text
        for template in pod_templates(objects):
            for container in template["spec"]["containers"]:
                for entry in container["env"]:
                    if "valueFrom" in entry and "secretKeyRef" in entry["valueFrom"]:
                        assert "value" not in entry
                        assert entry["valueFrom"]["secretKeyRef"]["name"] in secret_names
                    if entry["name"].startswith(("POSTTRAIN_API_KEY_", "AWS_SECRET", "AWS_ACCESS")):
                        assert "value" not in entry, entry
        config_map = by_kind(objects, "ConfigMap")
        text = config_map["data"]["config.yaml"]
        assert "valueFrom" not in text and "POSTTRAIN_API_KEY_" not in text.replace(
            "apiKeyEnv: POSTTRAIN_API_KEY_", ""
        )


def test_api_keys_of_every_external_participant_reach_the_workload() -> None:
    checked = 0
    for resource in EXAMPLES:
        action = start_workload(resource)
        job = by_kind(workload_objects(resource, action, SETTINGS), "Job")
        env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        for endpoint in action.config.endpoints.values():
            if endpoint.api_key_env:
                assert endpoint.api_key_env in env
                checked += 1
    assert checked >= 5


def test_workload_endpoints_point_at_the_teacher_services() -> None:
    checked = 0
    for resource in EXAMPLES:
        action = start_workload(resource)
        for start in teacher_actions(resource):
            _, service = teacher_objects(resource, start.participant, SETTINGS)
            host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
            port = service["spec"]["ports"][0]["port"]
            endpoint = action.config.endpoints[start.participant.name]
            assert endpoint.base_url == f"http://{host}:{port}/v1"
            assert endpoint.model == start.participant.name
            checked += 1
    assert checked >= 8

"""The vLLM Deployment + Service of a served participant, and the endpoint a workload reaches it at."""

from __future__ import annotations

from typing import Any

import pytest
from posttrain.api.common import Participant
from posttrain.manifests import (
    SPEC_HASH_ANNOTATION,
    ManifestSettings,
    child_labels,
    teacher_endpoint,
    teacher_name,
    teacher_objects,
)
from posttrain.manifests.settings import VLLM_IMAGE

from tests.unit.manifests.manifest_builders import (
    SETTINGS,
    env_of,
    example,
    make,
    start_workload,
    teacher_actions,
)


def participant(resource: Any, name: str) -> Participant:
    found = [a.participant for a in teacher_actions(resource) if a.participant.name == name]
    assert len(found) == 1, name
    return found[0]


def evol(teacher: dict[str, Any], **extra: Any) -> Any:
    spec = {"dataset": {"uri": "pvc://datasets/seed.jsonl"}, "teachers": [{"name": "t", **teacher}], **extra}
    return make("EvolJob", "evo", spec)


def served_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = objects[0]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_served_teacher_is_a_vllm_deployment_and_a_service() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    teacher = participant(resource, "teacher-a")
    objects = teacher_objects(resource, teacher, SETTINGS)
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    deployment, service = objects
    labels = child_labels(resource, "teacher", participant="teacher-a")
    for body in objects:
        assert (
            body["metadata"]["name"] == "wizard-s1-evol-evol-teacher-a" == teacher_name(resource, "teacher-a")
        )
        assert body["metadata"]["namespace"] == "ml"
        assert body["metadata"]["labels"] == labels

    spec = deployment["spec"]
    assert deployment["apiVersion"] == "apps/v1"
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"] == {"matchLabels": labels}
    assert spec["template"]["metadata"]["labels"] == labels
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert "restartPolicy" not in pod  # Deployments restart always

    container = served_container(objects)
    assert container["name"] == "vllm"
    assert container["image"] == VLLM_IMAGE
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["args"] == [
        "--model",
        "/mnt/pvc/posttrain/models/teacher-a",
        "--served-model-name",
        "teacher-a",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--tensor-parallel-size",
        "2",
        "--max-model-len=8192",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    env = env_of(container)
    assert env["HOME"]["value"] == "/tmp" and env["HF_HOME"]["value"].startswith("/tmp/")
    assert env["VLLM_NO_USAGE_STATS"]["value"] == "1"

    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = next(v for v in volumes.values() if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"] == {"claimName": "posttrain", "readOnly": True}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[claim["name"]] == {
        "name": claim["name"],
        "mountPath": "/mnt/pvc/posttrain",
        "readOnly": True,
    }
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"

    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    startup_budget = (
        container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
    )
    assert startup_budget >= 1800
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"

    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]


def test_endpoint_is_the_service_dns_name_and_the_served_model_name() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    teacher = participant(resource, "teacher-a")
    endpoint = teacher_endpoint(resource, teacher, SETTINGS)
    assert endpoint.base_url == "http://wizard-s1-evol-evol-teacher-a.ml.svc:8000/v1"
    assert endpoint.model == "teacher-a"
    assert endpoint.api_key_env is None
    given = start_workload(resource).config.endpoints["teacher-a"]
    # The workload also learns the model's identity for the model-call cache: its weights, not its address.
    assert given == endpoint.model_copy(update={"identity": given.identity})
    assert given.identity == "weights:pvc://posttrain/models/teacher-a"
    other_port = teacher_endpoint(resource, teacher, ManifestSettings(teacher_port=9000))
    assert other_port.base_url == "http://wizard-s1-evol-evol-teacher-a.ml.svc:9000/v1"
    _, service = teacher_objects(resource, teacher, ManifestSettings(teacher_port=9000))
    assert service["spec"]["ports"][0]["port"] == 9000


def test_image_replicas_and_cpu_only_serving() -> None:
    served = {
        "model": {"uri": "pvc://models/m"},
        "gpus": 0,
        "replicas": 3,
        "image": "vllm/vllm-openai-cpu:v0.11.0",
    }
    resource = evol({"served": served})
    objects = teacher_objects(resource, participant(resource, "t"), SETTINGS)
    container = served_container(objects)
    assert objects[0]["spec"]["replicas"] == 3
    assert container["image"] == "vllm/vllm-openai-cpu:v0.11.0"
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "1"
    assert not [k for k in container["resources"]["limits"] if "gpu" in k]
    assert not [k for k in container["resources"]["requests"] if "gpu" in k]


def test_teachers_follow_the_resources_scheduling_and_gpu_resource() -> None:
    scheduling = {
        "nodeSelector": {"pool": "inference"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "priorityClassName": "serving",
        "queueName": "team-queue",
    }
    resource = evol(
        {"served": {"model": {"uri": "pvc://models/m"}, "gpus": 1}},
        scheduling=scheduling,
        resources={"gpuResource": "amd.com/gpu"},
    )
    deployment, _ = teacher_objects(resource, participant(resource, "t"), SETTINGS)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "inference"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["priorityClassName"] == "serving"
    assert served_container([deployment])["resources"]["limits"]["amd.com/gpu"] == "1"
    assert "kueue.x-k8s.io/queue-name" not in deployment["metadata"]["labels"]


def test_s3_models_stream_with_the_artifact_store_credentials() -> None:
    artifacts = {"uri": "s3://bucket/runs", "accessKeyIdSecretRef": {"name": "s3", "key": "id"}}
    resource = evol({"served": {"model": {"uri": "s3://bucket/models/m"}}}, artifacts=artifacts)
    objects = teacher_objects(resource, participant(resource, "t"), SETTINGS)
    container = served_container(objects)
    assert container["args"][:2] == ["--model", "s3://bucket/models/m"]
    assert container["args"][-2:] == ["--load-format", "runai_streamer"]
    assert env_of(container)["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3", "key": "id"}
    }
    assert not [v for v in objects[0]["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]

    explicit = evol({"served": {"model": {"uri": "s3://bucket/m"}, "engineArgs": ["--load-format=auto"]}})
    args = served_container(teacher_objects(explicit, participant(explicit, "t"), SETTINGS))["args"]
    assert [a for a in args if a.startswith("--load-format")] == ["--load-format=auto"]


def test_pvc_models_get_no_s3_variables() -> None:
    artifacts = {"uri": "s3://bucket/runs", "accessKeyIdSecretRef": {"name": "s3", "key": "id"}}
    resource = evol({"served": {"model": {"uri": "pvc://models/m"}}}, artifacts=artifacts)
    container = served_container(teacher_objects(resource, participant(resource, "t"), SETTINGS))
    assert not [name for name in env_of(container) if name.startswith("AWS_")]


def test_a_model_from_another_resource_needs_its_resolved_uri() -> None:
    resource = make(
        "AlignRound",
        "round-2",
        {
            "datasets": [{"uri": "pvc://data/evolved"}],
            "student": {
                "name": "student",
                "served": {"model": {"from": {"kind": "TrainStage", "name": "sft"}}},
            },
            "teachers": [{"name": "teacher", "served": {"model": {"uri": "pvc://models/teacher"}}}],
            "judges": [{"name": "judge", "served": {"model": {"uri": "pvc://models/teacher"}}}],
        },
    )
    student = resource.spec.student  # as written: the plan's StartTeacher carries the resolved URI
    with pytest.raises(ValueError, match="model_uri"):
        teacher_objects(resource, student, SETTINGS)
    objects = teacher_objects(resource, student, SETTINGS, model_uri="pvc://artifacts/trainstages/abc/model")
    container = served_container(objects)
    assert container["args"][:2] == ["--model", "/mnt/pvc/artifacts/trainstages/abc/model"]
    assert objects[0]["metadata"]["name"] == "round-2-align-student"


def test_external_participants_are_not_served() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    external = next(p for p in resource.spec.teachers if p.endpoint is not None)
    with pytest.raises(ValueError, match="not served"):
        teacher_objects(resource, external, SETTINGS)
    with pytest.raises(ValueError, match="not served"):
        teacher_endpoint(resource, external, SETTINGS)


def test_spec_hash_follows_the_served_settings() -> None:
    def spec_hash(served: dict[str, Any]) -> str:
        resource = evol({"served": {"model": {"uri": "pvc://models/m"}, **served}})
        deployment, _ = teacher_objects(resource, participant(resource, "t"), SETTINGS)
        value: str = deployment["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        return value

    base = spec_hash({})
    assert base == spec_hash({})
    assert len({base, spec_hash({"engineArgs": ["--max-model-len=2048"]}), spec_hash({"gpus": 2})}) == 3


def test_startup_budget_is_a_setting() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    settings = ManifestSettings(teacher_startup_seconds=3605)
    probe = served_container(teacher_objects(resource, participant(resource, "teacher-a"), settings))[
        "startupProbe"
    ]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 3605
    assert probe["periodSeconds"] * (probe["failureThreshold"] - 1) < 3605


def test_transformers_engine_serves_cpu_participants_from_the_trainer_image() -> None:
    resource = evol({"served": {"model": {"uri": "pvc://models/tiny/teacher"}, "gpus": 0}})
    teacher = participant(resource, "t")
    auto = ManifestSettings(serving_engine="auto", trainer_image="trainer:cpu")
    container = served_container(teacher_objects(resource, teacher, auto))
    assert container["image"] == "trainer:cpu"
    assert container["command"][:2] == ["python", "-c"] and container["command"][-1] == "serve"
    assert container["args"][:6] == ["/models/t", "--host", "0.0.0.0", "--port", "8000", "--device"]
    assert container["args"][6] == "cpu"
    # The pinned model path is the claim's folder mounted per participant; requests must name it.
    assert {"name": "pvc-models", "mountPath": "/models/t", "readOnly": True, "subPath": "tiny/teacher"} in (
        container["volumeMounts"]
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    assert teacher_endpoint(resource, teacher, auto).model == "/models/t"


def test_serving_engine_auto_keeps_vllm_for_gpu_participants_and_vllm_is_the_default() -> None:
    resource = evol({"served": {"model": {"uri": "pvc://models/m"}, "gpus": 1}})
    teacher = participant(resource, "t")
    for settings in (ManifestSettings(serving_engine="auto"), ManifestSettings()):
        container = served_container(teacher_objects(resource, teacher, settings))
        assert container["image"] == VLLM_IMAGE
        assert teacher_endpoint(resource, teacher, settings).model == "t"
    forced = ManifestSettings(serving_engine="transformers")
    assert served_container(teacher_objects(resource, teacher, forced))["args"][6] == "auto"
    with pytest.raises(ValueError, match="serving_engine"):
        ManifestSettings(serving_engine="tgi")

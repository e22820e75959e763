"""The ConfigMap + Job (+ headless Service) of a workload attempt, field by field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.workload import Endpoint, WorkloadConfig
from posttrain.manifests import CONFIG_PATH, ManifestSettings, child_labels, job_name, workload_objects
from posttrain.plan.types import StartWorkload
from posttrain_trainer.config import load_config

from tests.unit.manifests.manifest_builders import (
    SETTINGS,
    by_kind,
    env_of,
    example,
    make,
    start_workload,
)

TRAINER = "ghcr.io/posttrain/trainer:0.1.0"


def build(resource: Any, settings: ManifestSettings = SETTINGS) -> tuple[StartWorkload, list[dict[str, Any]]]:
    action = start_workload(resource, settings)
    return action, workload_objects(resource, action, settings)


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def sft(resources: dict[str, Any] | None = None, **extra: Any) -> Any:
    spec = {
        "method": "sft",
        "model": {"uri": "pvc://models/base-7b"},
        "dataset": {"uri": "pvc://datasets/sft.jsonl"},
        "artifacts": {"uri": "pvc://scratch/out"},
        "resources": resources or {},
        **extra,
    }
    return make("TrainStage", "stage", spec)


def test_cpu_workload_is_a_configmap_and_a_job() -> None:
    resource = example("progressive", "DataSlice", "wizard-data")
    action, objects = build(resource)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Job"]
    job = objects[1]
    name = job_name(resource, action.run_id, action.attempt)
    labels = child_labels(resource, "workload", run=action.run_id, attempt=action.attempt)
    for body in objects:
        assert body["metadata"]["name"] == name
        assert body["metadata"]["namespace"] == "ml"
        assert body["metadata"]["labels"] == labels
        assert body["metadata"]["annotations"]["posttrain.dev/name"] == "wizard-data"
    assert job["apiVersion"] == "batch/v1"

    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert "suspend" not in spec and "activeDeadlineSeconds" not in spec
    assert "completionMode" not in spec and "parallelism" not in spec
    assert spec["template"]["metadata"]["labels"] == labels
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert "subdomain" not in pod and "nodeSelector" not in pod and "tolerations" not in pod
    assert "priorityClassName" not in pod and "imagePullSecrets" not in pod

    container = container_of(job)
    assert container["name"] == "trainer"
    assert container["image"] == TRAINER
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["posttrain-trainer", "data", "--config", "/etc/posttrain/config.yaml"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "32Gi"},
        "limits": {"cpu": "8", "memory": "32Gi"},
    }
    env = env_of(container)
    assert env["POSTTRAIN_PVC_ROOT"] == {"name": "POSTTRAIN_PVC_ROOT", "value": "/mnt/pvc"}
    assert env["HOME"]["value"] == "/tmp"
    assert env["HF_HOME"]["value"].startswith("/tmp/")
    assert env["XDG_CACHE_HOME"]["value"].startswith("/tmp/")
    assert "ports" not in container and "NODE_RANK" not in env


def test_config_is_mounted_from_the_configmap_and_reads_back_as_the_action_config(tmp_path: Path) -> None:
    resource = example("progressive", "TrainStage", "wizard-s1-dpo")
    action, objects = build(resource)
    config_map, job = by_kind(objects, "ConfigMap"), by_kind(objects, "Job")
    assert config_map["immutable"] is True
    assert list(config_map["data"]) == ["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    assert load_config(path) == action.config
    assert load_config(path).typed_spec().preferences.uri.startswith("pvc://posttrain/artifacts/alignrounds/")

    pod = job["spec"]["template"]["spec"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume == {
        "name": "config",
        "configMap": {
            "name": config_map["metadata"]["name"],
            "items": [{"key": "config.yaml", "path": "config.yaml"}],
        },
    }
    mount = next(m for m in container_of(job)["volumeMounts"] if m["name"] == "config")
    assert mount == {"name": "config", "mountPath": "/etc/posttrain", "readOnly": True}
    assert mount["mountPath"] + "/" + config_volume["configMap"]["items"][0]["path"] == CONFIG_PATH


def test_claims_read_are_read_only_and_the_output_claim_is_writable() -> None:
    resource = sft()
    _, objects = build(resource)
    job = by_kind(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert {c: v["persistentVolumeClaim"]["readOnly"] for c, v in claims.items()} == {
        "datasets": True,
        "models": True,
        "scratch": False,
    }
    mounts = {m["name"]: m for m in container_of(job)["volumeMounts"]}
    for claim, volume in claims.items():
        mount = mounts[volume["name"]]
        assert mount["mountPath"] == f"/mnt/pvc/{claim}"
        assert mount["readOnly"] is volume["persistentVolumeClaim"]["readOnly"]


@pytest.mark.parametrize(
    ("cache", "writable"),
    [
        ("pvc://scratch/out/model-calls/ml", {"scratch"}),  # the default: beside the outputs
        ("pvc://calls/ml", {"scratch", "calls"}),
        ("pvc://models/model-calls/ml", {"scratch", "models"}),  # a claim read otherwise is written too
    ],
)
def test_the_model_call_cache_claim_is_mounted_writable(cache: str, writable: set[str]) -> None:
    action = start_workload(sft())
    assert action.config.model_cache is not None
    assert action.config.model_cache.uri.startswith("pvc://scratch/out/model-calls/")
    config = action.config.model_copy(
        update={"model_cache": action.config.model_cache.model_copy(update={"uri": cache})}
    )
    objects = workload_objects(sft(), dataclasses.replace(action, config=config), SETTINGS)
    pod = by_kind(objects, "Job")["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert {c for c, v in claims.items() if not v["persistentVolumeClaim"]["readOnly"]} == writable


def test_pvc_root_setting_moves_mounts_and_env() -> None:
    settings = ManifestSettings(pvc_root="/data/claims")
    _, objects = build(sft(), settings)
    container = container_of(by_kind(objects, "Job"))
    assert env_of(container)["POSTTRAIN_PVC_ROOT"]["value"] == "/data/claims"
    claim_paths = sorted(m["mountPath"] for m in container["volumeMounts"] if m["name"].startswith("pvc-"))
    assert claim_paths == ["/data/claims/datasets", "/data/claims/models", "/data/claims/scratch"]


def test_one_gpu_runs_the_trainer_directly_with_gpu_limits_and_shared_memory() -> None:
    _, objects = build(
        sft({"gpus": 1, "cpu": "4", "memory": "16Gi", "sharedMemory": "8Gi"}, timeoutSeconds=7200)
    )
    job = by_kind(objects, "Job")
    container = container_of(job)
    assert container["command"][0] == "posttrain-trainer"
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    shm = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert shm == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_gpu_resource_name_is_configurable() -> None:
    _, objects = build(sft({"gpus": 2, "gpuResource": "amd.com/gpu"}))
    limits = container_of(by_kind(objects, "Job"))["resources"]["limits"]
    assert limits["amd.com/gpu"] == "2" and "nvidia.com/gpu" not in limits


def test_several_gpus_on_one_node_run_torchrun_standalone() -> None:
    _, objects = build(sft({"gpus": 4}))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Job"]
    assert container_of(by_kind(objects, "Job"))["command"] == [
        "torchrun",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=4",
        "-m",
        "posttrain_trainer.cli",
        "train",
        "--config",
        "/etc/posttrain/config.yaml",
    ]


def test_reward_training_is_distributed_too() -> None:
    _, objects = build(example("progressive", "RewardModel", "wizard-irm"))
    assert container_of(by_kind(objects, "Job"))["command"][:4] == [
        "torchrun",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=8",
    ]


def test_multi_node_training_is_an_indexed_job_with_a_headless_service() -> None:
    resource = example("progressive", "TrainStage", "wizard-s1-sft")
    action, objects = build(resource)
    assert [o["kind"] for o in objects] == ["Service", "ConfigMap", "Job"]
    service, _, job = objects
    name = job_name(resource, action.run_id, action.attempt)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]

    assert service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["posttrain.dev/attempt"] == "1"
    assert service["spec"]["ports"] == [
        {"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}
    ]

    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimit"] == 0 and "suspend" not in spec
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name
    assert len(f"{name}-1") <= 63

    container = container_of(job)
    env = env_of(container)
    assert env["NNODES"]["value"] == "2"
    assert env["NPROC_PER_NODE"]["value"] == "8"
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["NODE_RANK"] == {
        "name": "NODE_RANK",
        "valueFrom": {
            "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
        },
    }
    assert container["command"] == [
        "torchrun",
        "--nnodes=$(NNODES)",
        "--nproc-per-node=$(NPROC_PER_NODE)",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        "posttrain_trainer.cli",
        "train",
        "--config",
        "/etc/posttrain/config.yaml",
    ]
    assert container["ports"] == [{"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"}]
    assert container["resources"]["limits"] == {"cpu": "32", "memory": "512Gi", "nvidia.com/gpu": "8"}


def test_cpu_only_multi_node_training_runs_one_process_per_node() -> None:
    _, objects = build(sft({"nodes": 3}))
    env = env_of(container_of(by_kind(objects, "Job")))
    assert env["NNODES"]["value"] == "3" and env["NPROC_PER_NODE"]["value"] == "1"


def test_nodes_are_ignored_by_workloads_that_do_not_train() -> None:
    resource = make(
        "DataSlice", "data", {"sources": [{"uri": "pvc://d/in.jsonl"}], "resources": {"nodes": 4}}
    )
    _, objects = build(resource)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Job"]
    job = by_kind(objects, "Job")
    assert "completionMode" not in job["spec"]
    assert container_of(job)["command"][0] == "posttrain-trainer"


def test_scheduling_passes_through_and_the_queue_label_goes_on_the_job_only() -> None:
    scheduling = {
        "nodeSelector": {"pool": "a100", "zone": "b"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "spot",
                "operator": "Equal",
                "value": "true",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            },
        ],
        "priorityClassName": "training-high",
        "queueName": "team-queue",
    }
    _, objects = build(sft({"gpus": 1}, scheduling=scheduling))
    job, config_map = by_kind(objects, "Job"), by_kind(objects, "ConfigMap")
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100", "zone": "b"}
    assert pod["tolerations"] == scheduling["tolerations"]
    assert pod["priorityClassName"] == "training-high"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert "kueue.x-k8s.io/queue-name" not in config_map["metadata"]["labels"]
    assert "suspend" not in job["spec"]


def test_images_pull_policy_and_pull_secrets() -> None:
    settings = ManifestSettings(
        trainer_image="registry.example.com/trainer:1.2",
        image_pull_policy="Always",
        image_pull_secrets=("regcred",),
    )
    _, objects = build(sft(), settings)
    job = by_kind(objects, "Job")
    container = container_of(job)
    assert container["image"] == "registry.example.com/trainer:1.2"
    assert container["imagePullPolicy"] == "Always"
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    _, objects = build(sft(image="registry.example.com/custom:9"), settings)
    assert container_of(by_kind(objects, "Job"))["image"] == "registry.example.com/custom:9"


def test_evol_job_gets_the_external_api_key_by_reference_and_the_served_endpoint_in_its_config() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    action, objects = build(resource)
    env = env_of(container_of(by_kind(objects, "Job")))
    assert env["POSTTRAIN_API_KEY_TEACHER_B"] == {
        "name": "POSTTRAIN_API_KEY_TEACHER_B",
        "valueFrom": {"secretKeyRef": {"name": "teacher-b-api", "key": "api-key"}},
    }
    assert not [
        name
        for name in env
        if name.startswith("POSTTRAIN_API_KEY_") and name != "POSTTRAIN_API_KEY_TEACHER_B"
    ]
    assert (
        action.config.endpoints["teacher-a"].base_url == "http://wizard-s1-evol-evol-teacher-a.ml.svc:8000/v1"
    )
    assert action.config.endpoints["teacher-b"].api_key_env == "POSTTRAIN_API_KEY_TEACHER_B"


def test_align_round_shares_one_secret_between_two_external_participants() -> None:
    _, objects = build(example("progressive", "AlignRound", "wizard-s1-align"))
    env = env_of(container_of(by_kind(objects, "Job")))
    ref = {"secretKeyRef": {"name": "teacher-b-api", "key": "api-key"}}
    assert env["POSTTRAIN_API_KEY_TEACHER_B"]["valueFrom"] == ref
    assert env["POSTTRAIN_API_KEY_JUDGE"]["valueFrom"] == ref
    assert "POSTTRAIN_API_KEY_STUDENT" not in env


def test_s3_credentials_are_secret_references_and_the_endpoint_is_plain() -> None:
    artifacts = {
        "uri": "s3://bucket/runs",
        "endpointUrl": "https://minio.example.com",
        "accessKeyIdSecretRef": {"name": "s3", "key": "id"},
        "secretAccessKeySecretRef": {"name": "s3", "key": "secret"},
    }
    resource = make(
        "TrainStage",
        "stage",
        {
            "method": "sft",
            "model": {"uri": "s3://bucket/base"},
            "dataset": {"uri": "s3://bucket/sft"},
            "artifacts": artifacts,
        },
    )
    _, objects = build(resource)
    job = by_kind(objects, "Job")
    env = env_of(container_of(job))
    assert env["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}},
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3", "key": "secret"}}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"] and "value" not in env["AWS_ACCESS_KEY_ID"]
    assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "https://minio.example.com"}
    assert not [v for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]


def test_no_s3_variables_without_s3_settings() -> None:
    _, objects = build(sft())
    assert not [name for name in env_of(container_of(by_kind(objects, "Job"))) if name.startswith("AWS_")]


def test_operator_labels_join_but_never_override_the_contract() -> None:
    settings = ManifestSettings(
        workload_labels={
            "team": "nlp",
            "app.kubernetes.io/name": "other",
            "argocd.argoproj.io/instance": "app",
        }
    )
    resource = example("progressive", "TrainStage", "wizard-s1-sft")
    action, objects = build(resource, settings)
    contract = child_labels(resource, "workload", run=action.run_id, attempt=action.attempt)
    for body in objects:
        labels = body["metadata"]["labels"]
        assert labels["team"] == "nlp" and labels.items() >= contract.items()
        assert "argocd.argoproj.io/instance" not in labels
    job = by_kind(objects, "Job")
    assert job["spec"]["template"]["metadata"]["labels"] == {"team": "nlp", **contract}
    assert by_kind(objects, "Service")["spec"]["selector"] == contract


def test_an_action_of_another_resource_is_refused() -> None:
    resource = sft()
    action = start_workload(resource)
    other = dataclasses.replace(action, run_id="0" * 16)
    with pytest.raises(ValueError, match="does not belong"):
        workload_objects(resource, other, SETTINGS)
    foreign = start_workload(example("progressive", "DataSlice", "wizard-data"))
    with pytest.raises(ValueError, match="does not belong"):
        workload_objects(resource, foreign, SETTINGS)


def test_an_api_key_variable_without_a_secret_is_refused() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    action = start_workload(resource)
    endpoints = dict(action.config.endpoints)
    endpoints["teacher-a"] = Endpoint(
        base_url="http://x/v1", model="teacher-a", api_key_env="POSTTRAIN_API_KEY_TEACHER_A"
    )
    config = WorkloadConfig.model_validate({**action.config.model_dump(), "endpoints": endpoints})
    with pytest.raises(ValueError, match="no apiKeySecretRef"):
        workload_objects(resource, StartWorkload(action.run_id, action.attempt, config), SETTINGS)


def test_every_attempt_gets_its_own_children() -> None:
    resource = sft()
    action = start_workload(resource)
    first = workload_objects(resource, action, SETTINGS)
    second = workload_objects(resource, dataclasses.replace(action, attempt=2), SETTINGS)
    assert by_kind(first, "Job")["metadata"]["name"].endswith("-1")
    assert by_kind(second, "Job")["metadata"]["name"].endswith("-2")
    assert by_kind(second, "Job")["metadata"]["labels"]["posttrain.dev/attempt"] == "2"
    volume = next(
        v for v in by_kind(second, "Job")["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    assert volume["configMap"]["name"] == by_kind(second, "ConfigMap")["metadata"]["name"]

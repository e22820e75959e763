"""The children of one workload attempt: a ConfigMap with the config and a Job that runs the trainer.

Inputs: the resource (for its settings and metadata), a `StartWorkload` action of the plan (run id,
attempt and the resolved `WorkloadConfig`), and the operator's `ManifestSettings`.
Outputs: `[ConfigMap, Job]`, or `[Service, ConfigMap, Job]` for multi-node training, where the
headless Service gives the Indexed Job's pods stable host names for the torchrun rendezvous.

The pod runs `posttrain-trainer <workload> --config /etc/posttrain/config.yaml`; training with more
than one GPU runs the same entry point under `torchrun` (standalone on one node; across nodes with
`NODE_RANK` from the pod's completion index and rank 0 as `MASTER_ADDR`). Only the GPU-training
workloads (`train`, `reward`) are distributed; the others run in one pod whatever `nodes` says.

The Job never retries by itself (`backoffLimit: 0`): retries belong to the plan, with its own backoff
and its own attempt numbers. It never sets `suspend`, which belongs to Kueue when the queue label is
set. Pods have no Kubernetes API token: the result travels through the termination message and the
artifact store.
"""

from __future__ import annotations

from typing import Any, Protocol

import yaml

from posttrain.api.common import Participant
from posttrain.api.resources import Resource
from posttrain.api.tracking import MLFLOW_TOKEN_ENV, WANDB_API_KEY_ENV, Tracking
from posttrain.api.workload import WorkloadConfig
from posttrain.manifests.naming import (
    NAME_ANNOTATION,
    QUEUE_LABEL,
    child_labels,
    child_metadata,
    extra_labels,
    job_name,
)
from posttrain.manifests.pods import (
    TERMINATION_MESSAGE_PATH,
    claim_mounts,
    container_security_context,
    home_env,
    pod_basics,
    pvc_uris,
    run_settings,
    s3_env,
    scheduling_fields,
    scratch_volumes,
    secret_env,
)
from posttrain.manifests.settings import ManifestSettings

CONFIG_DIR = "/etc/posttrain"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
WORKLOAD_CONTAINER = "trainer"
"""Name of the container whose termination message holds the result document."""
DISTRIBUTED_WORKLOADS = ("train", "reward")
"""Workloads that train on GPUs and run under torchrun when given more than one GPU or node."""
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class WorkloadStart(Protocol):
    """What the builder needs of the plan's `StartWorkload` action (any object with these fields)."""

    @property
    def run_id(self) -> str:
        """The run id: the Job's name and the output folder are derived from it."""

    @property
    def attempt(self) -> int:
        """The attempt number within the run, from 1."""

    @property
    def config(self) -> WorkloadConfig:
        """The configuration the workload reads (from its ConfigMap)."""


def workload_objects(
    resource: Resource, action: WorkloadStart, settings: ManifestSettings
) -> list[dict[str, Any]]:
    """The bodies to create for one attempt of the resource's workload, in creation order.

    Args:
        resource: the parent resource, parsed, with its uid.
        action: the plan's `StartWorkload` (run id, attempt, resolved config).
        settings: operator-wide settings.

    Returns:
        `[ConfigMap, Job]`, or `[headless Service, ConfigMap, Job]` for multi-node training.

    Raises:
        ValueError: if the action does not belong to the resource, or the config names an API key
            variable for a participant without a secret reference.
    """
    config = action.config
    if (config.kind, config.name) != resource.key or config.run_id != action.run_id:
        raise ValueError(
            f"the config of {config.kind}/{config.name} run {config.run_id} does not belong to "
            f"{resource.kind}/{resource.metadata.name} run {action.run_id}"
        )
    spec = run_settings(resource.spec)
    name = job_name(resource, action.run_id, action.attempt)
    labels = child_labels(resource, "workload", run=action.run_id, attempt=action.attempt)
    distributed = config.workload in DISTRIBUTED_WORKLOADS
    nodes = spec.resources.nodes if distributed else 1

    objects: list[dict[str, Any]] = []
    if nodes > 1:
        objects.append(_headless_service(resource, name, labels, settings))
    objects.append(_config_map(resource, name, labels, config, settings))
    objects.append(_job(resource, name, labels, config, nodes, distributed, settings))
    return objects


# libyaml's emitter when PyYAML was built with it: the pure-Python one cost ~10 ms per workload config,
# the largest share of starting a Job in the operator's profile.
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def config_text(config: WorkloadConfig) -> str:
    """The config document as the trainer reads it (YAML, keys sorted, so it is byte-for-byte stable)."""
    return yaml.dump(
        config.wire(), Dumper=_DUMPER, sort_keys=True, default_flow_style=False, allow_unicode=True
    )


def _config_map(
    resource: Resource,
    name: str,
    labels: dict[str, str],
    config: WorkloadConfig,
    settings: ManifestSettings,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(resource, name, labels, settings.workload_labels),
        # One ConfigMap per attempt, never edited: immutability spares the kubelet from watching it.
        "immutable": True,
        "data": {CONFIG_KEY: config_text(config)},
    }


def _headless_service(
    resource: Resource, name: str, labels: dict[str, str], settings: ManifestSettings
) -> dict[str, Any]:
    port = settings.rendezvous_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(resource, name, labels, settings.workload_labels),
        "spec": {
            "clusterIP": "None",
            "selector": dict(labels),
            # Ranks look each other up before any pod is Ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def _participants(spec: Any) -> list[Participant]:
    found: list[Participant] = []
    for attr in ("student", "teachers", "judges"):
        value = getattr(spec, attr, None)
        for participant in value if isinstance(value, list) else [value] if value else []:
            if isinstance(participant, Participant) and participant.name not in {p.name for p in found}:
                found.append(participant)
    return found


def api_key_env(resource: Resource, config: WorkloadConfig) -> list[dict[str, Any]]:
    """`POSTTRAIN_API_KEY_<NAME>` variables of external participants, from their secret references.

    The variable names come from the config's endpoints (the plan names them), the secrets from the
    resource's participants.

    Raises:
        ValueError: if an endpoint names a variable but its participant has no secret reference.
    """
    by_name = {p.name: p for p in _participants(resource.spec)}
    env: list[dict[str, Any]] = []
    for participant_name, endpoint in sorted(config.endpoints.items()):
        if not endpoint.api_key_env:
            continue
        participant = by_name.get(participant_name)
        ref = participant.endpoint.api_key_secret_ref if participant and participant.endpoint else None
        if ref is None:
            raise ValueError(
                f"endpoint {participant_name!r} expects its API key in {endpoint.api_key_env} but the "
                "participant has no apiKeySecretRef"
            )
        env.append(secret_env(endpoint.api_key_env, ref))
    return env


def tracking_env(resource: Resource) -> list[dict[str, Any]]:
    """WANDB_API_KEY / MLFLOW_TRACKING_TOKEN of a learning resource's `tracking`, from its Secrets.

    The trainer sets the project, server and experiment from the spec itself.
    """
    tracking = getattr(resource.spec, "tracking", None)
    if not isinstance(tracking, Tracking):
        return []
    env: list[dict[str, Any]] = []
    if tracking.wandb is not None and tracking.wandb.api_key_secret_ref is not None:
        env.append(secret_env(WANDB_API_KEY_ENV, tracking.wandb.api_key_secret_ref))
    if tracking.mlflow is not None and tracking.mlflow.token_secret_ref is not None:
        env.append(secret_env(MLFLOW_TOKEN_ENV, tracking.mlflow.token_secret_ref))
    return env


def _command(workload: str, gpus: int, nodes: int, distributed: bool) -> list[str]:
    entry = [workload, "--config", CONFIG_PATH]
    if distributed and nodes > 1:
        # $(VAR) is expanded by the kubelet from the container's environment.
        return [
            "torchrun",
            "--nnodes=$(NNODES)",
            "--nproc-per-node=$(NPROC_PER_NODE)",
            "--node-rank=$(NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
            "-m",
            "posttrain_trainer.cli",
            *entry,
        ]
    if distributed and gpus > 1:
        return [
            "torchrun",
            "--standalone",
            "--nnodes=1",
            f"--nproc-per-node={gpus}",
            "-m",
            "posttrain_trainer.cli",
            *entry,
        ]
    return ["posttrain-trainer", *entry]


def _rendezvous_env(name: str, nodes: int, gpus: int, settings: ManifestSettings) -> list[dict[str, Any]]:
    return [
        {"name": "NNODES", "value": str(nodes)},
        {"name": "NPROC_PER_NODE", "value": str(max(gpus, 1))},
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
        # Indexed Job pods are named <job>-<index> within the Service's subdomain.
        {"name": "MASTER_ADDR", "value": f"{name}-0.{name}"},
        {"name": "MASTER_PORT", "value": str(settings.rendezvous_port)},
    ]


def _job(
    resource: Resource,
    name: str,
    labels: dict[str, str],
    config: WorkloadConfig,
    nodes: int,
    distributed: bool,
    settings: ManifestSettings,
) -> dict[str, Any]:
    spec = run_settings(resource.spec)
    compute = spec.resources
    gpus = compute.gpus

    quantities: dict[str, str] = {"cpu": compute.cpu, "memory": compute.memory}
    if gpus > 0:
        quantities[compute.gpu_resource] = str(gpus)

    env: list[dict[str, Any]] = [{"name": "POSTTRAIN_PVC_ROOT", "value": settings.pvc_root}, *home_env()]
    env += api_key_env(resource, config)
    env += tracking_env(resource)
    env += s3_env(spec.artifacts)
    if nodes > 1:
        env += _rendezvous_env(name, nodes, gpus, settings)

    # The model-call cache is written as well: its claim (usually the output's) is mounted read-write.
    written = [config.output_uri] + ([config.model_cache.uri] if config.model_cache is not None else [])
    claim_volumes, claim_volume_mounts = claim_mounts(pvc_uris(config.spec), written, settings.pvc_root)
    scratch, scratch_mounts = scratch_volumes(compute.shared_memory)
    volumes = [
        {"name": "config", "configMap": {"name": name, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
        *scratch,
        *claim_volumes,
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        *scratch_mounts,
        *claim_volume_mounts,
    ]

    container: dict[str, Any] = {
        "name": WORKLOAD_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": _command(config.workload, gpus, nodes, distributed),
        "env": env,
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # A crash before the trainer writes its message still leaves the log's tail for the status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if nodes > 1:
        container["ports"] = [
            {"name": "rendezvous", "containerPort": settings.rendezvous_port, "protocol": "TCP"}
        ]

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **pod_basics(settings.image_pull_secrets),
        **scheduling_fields(spec.scheduling),
        "containers": [container],
        "volumes": volumes,
    }
    if nodes > 1:
        pod_spec["subdomain"] = name

    job_spec: dict[str, Any] = {"backoffLimit": 0}
    if spec.timeout_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.timeout_seconds
    if nodes > 1:
        job_spec.update({"completionMode": "Indexed", "completions": nodes, "parallelism": nodes})
    job_spec["template"] = {
        "metadata": {
            "labels": {**extra_labels(settings.workload_labels), **labels},
            "annotations": {
                NAME_ANNOTATION: resource.metadata.name,
                "kubectl.kubernetes.io/default-container": WORKLOAD_CONTAINER,
            },
        },
        "spec": pod_spec,
    }

    metadata = child_metadata(resource, name, labels, settings.workload_labels)
    if spec.scheduling.queue_name:
        metadata["labels"][QUEUE_LABEL] = spec.scheduling.queue_name
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}

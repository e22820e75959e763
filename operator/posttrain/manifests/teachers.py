"""A served participant (teacher, student or judge): a model server Deployment and a ClusterIP Service.

Inputs: the resource, one of its participants with `served` set, the operator's `ManifestSettings`
and, when the participant's model is a `from` reference, the URI it resolved to.
Outputs: `[Deployment, Service]`, and the `Endpoint` a workload uses to reach the server
(`http://<service>.<namespace>.svc:<port>/v1`, model name = participant name).

The server is vLLM's OpenAI-compatible API server (Kwon et al., 2023, "Efficient Memory Management for
Large Language Model Serving with PagedAttention"), or, for CPU nodes (`ManifestSettings.serving_engine`:
`transformers`, or `auto` for a participant without GPUs), `transformers serve` from the trainer image:
it is pinned to one model, loaded before it listens, and requests must name that model by the path it
was given, so the model's folder is also mounted at `/models/<participant>` (a `pvc://` model only). The model is read from its claim, mounted
read-only, or streamed from S3 (vLLM's `runai_streamer` load format, credentials of the resource's
artifact store). A startup probe on `/health` gives model loading `teacher_startup_seconds`; the
readiness probe on `/v1/models` keeps the Service empty until the model answers, which is what the
plan waits for before it starts the workload. The Deployment uses `Recreate`: GPUs are rarely free
for a second copy during a rollout.

The Deployment carries `posttrain.dev/spec-hash`, a hash of its desired spec, so a driver can tell
an existing server that no longer matches the resource (another model, image or engine argument).
"""

from __future__ import annotations

import json
import math
from typing import Any

from posttrain.api import labels
from posttrain.api.common import Participant, ServedModel
from posttrain.api.resources import Resource
from posttrain.api.uri import S3, ArtifactUri
from posttrain.api.workload import Endpoint
from posttrain.manifests.naming import (
    NAME_ANNOTATION,
    child_labels,
    child_metadata,
    extra_labels,
    namespace_of,
    short_hash,
    teacher_name,
)
from posttrain.manifests.pods import (
    claim_mounts,
    claim_of,
    claim_volume_name,
    container_security_context,
    home_env,
    local_path,
    pod_basics,
    run_settings,
    s3_env,
    scheduling_fields,
    scratch_volumes,
)
from posttrain.manifests.settings import ManifestSettings

TEACHER_CONTAINER = "vllm"
VLLM_COMMAND = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
"""Set explicitly so the arguments mean the same whatever entry point an image declares."""
TRANSFORMERS_COMMAND = [
    "python",
    "-c",
    "from huggingface_hub import typer_factory; from transformers.cli.serve import Serve; "
    "app = typer_factory(help='serve'); app.command(name='serve')(Serve); app()",
    "serve",
]
"""`transformers serve` alone: the full `transformers` CLI also imports its chat client, which needs
`requests`, not in the trainer's locked environment."""
TRANSFORMERS_MODEL_DIR = "/models"
SPEC_HASH_ANNOTATION = labels.SPEC_HASH_ANNOTATION
PROBE_PERIOD_SECONDS = 10


def _served(participant: Participant) -> ServedModel:
    if participant.served is None:
        raise ValueError(f"participant {participant.name!r} is an external endpoint; it is not served")
    return participant.served


def served_model_uri(participant: Participant, model_uri: str | None = None) -> str:
    """The URI of the model to serve: `model_uri` when given (a resolved `from`), else the spec's.

    Raises:
        ValueError: if the participant is not served, or its model is a reference and no URI is given.
    """
    served = _served(participant)
    uri = model_uri or served.model.uri
    if uri is None:
        raise ValueError(
            f"the model of participant {participant.name!r} is a `from` reference; pass the URI it "
            "resolved to as model_uri"
        )
    return uri


def vllm_args(participant: Participant, model_uri: str, settings: ManifestSettings) -> list[str]:
    """Arguments of the vLLM server: model, served name, address, tensor parallelism, engine args."""
    served = _served(participant)
    args = [
        "--model",
        local_path(model_uri, settings.pvc_root),
        "--served-model-name",
        participant.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(settings.teacher_port),
        "--tensor-parallel-size",
        str(max(served.gpus, 1)),
    ]
    if ArtifactUri.parse(model_uri).scheme == S3 and not any(
        a.startswith("--load-format") for a in served.engine_args
    ):
        args += ["--load-format", "runai_streamer"]
    return args + list(served.engine_args)


def serving_engine(participant: Participant, settings: ManifestSettings) -> str:
    """`vllm` or `transformers`: the operator's choice, or by the participant's GPUs when `auto`."""
    served = _served(participant)
    if settings.serving_engine == "auto":
        return "vllm" if served.gpus > 0 else "transformers"
    return settings.serving_engine


def transformers_args(participant: Participant, settings: ManifestSettings) -> list[str]:
    """Arguments of `transformers serve`: the model (at its per-participant path), address, device."""
    served = _served(participant)
    return [
        f"{TRANSFORMERS_MODEL_DIR}/{participant.name}",
        "--host",
        "0.0.0.0",
        "--port",
        str(settings.teacher_port),
        "--device",
        "auto" if served.gpus > 0 else "cpu",
        *served.engine_args,
    ]


def _model_subpath_mount(participant: Participant, uri: str) -> dict[str, Any]:
    """The model's folder, from its claim, at the path `transformers serve` is pinned to."""
    claim = claim_of(uri)
    if claim is None:
        raise ValueError(
            f"participant {participant.name!r}: the transformers engine serves pvc:// models only, not {uri!r}"
        )
    path = ArtifactUri.parse(uri).path.strip("/")
    mount: dict[str, Any] = {
        "name": claim_volume_name(claim),
        "mountPath": f"{TRANSFORMERS_MODEL_DIR}/{participant.name}",
        "readOnly": True,
    }
    if path:
        mount["subPath"] = path
    return mount


def _probe(path: str, failure_threshold: int, period: int = PROBE_PERIOD_SECONDS) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def teacher_objects(
    resource: Resource,
    participant: Participant,
    settings: ManifestSettings,
    model_uri: str | None = None,
) -> list[dict[str, Any]]:
    """The Deployment and Service that serve one participant of the resource.

    Args:
        resource: the parent resource, parsed, with its uid.
        participant: a participant of the resource with `served` set.
        settings: operator-wide settings.
        model_uri: the URI the participant's model resolved to, when it is a `from` reference.

    Returns:
        `[Deployment, Service]`.

    Raises:
        ValueError: if the participant is not served or its model cannot be located.
    """
    served = _served(participant)
    uri = served_model_uri(participant, model_uri)
    spec = run_settings(resource.spec)
    name = teacher_name(resource, participant.name)
    labels = child_labels(resource, "teacher", participant=participant.name)
    port = settings.teacher_port

    engine = serving_engine(participant, settings)
    requests: dict[str, str] = {"cpu": served.cpu, "memory": served.memory}
    # No CPU limit: throttling the server's tokenizer and scheduler threads only adds latency.
    limits: dict[str, str] = {"memory": served.memory}
    if served.gpus > 0:
        requests[spec.resources.gpu_resource] = str(served.gpus)
        limits[spec.resources.gpu_resource] = str(served.gpus)

    env = [
        *home_env(),
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    if engine == "transformers":
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})  # the model is local: never ask the hub
    if ArtifactUri.parse(uri).scheme == S3:
        env += s3_env(spec.artifacts)

    claim_volumes, claim_volume_mounts = claim_mounts([uri], [], settings.pvc_root)
    scratch, scratch_mounts = scratch_volumes(None)
    if engine == "transformers":
        image = served.image or settings.trainer_image
        command, args = list(TRANSFORMERS_COMMAND), transformers_args(participant, settings)
        claim_volume_mounts.append(_model_subpath_mount(participant, uri))
        ready_path = "/health"  # its model list would look the model up in a hub cache
    else:
        image = served.image or settings.vllm_image
        command, args = list(VLLM_COMMAND), vllm_args(participant, uri, settings)
        ready_path = "/v1/models"
    container: dict[str, Any] = {
        "name": TEACHER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "args": args,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [*scratch_mounts, *claim_volume_mounts],
        "securityContext": container_security_context(),
        "startupProbe": _probe("/health", math.ceil(settings.teacher_startup_seconds / PROBE_PERIOD_SECONDS)),
        "readinessProbe": _probe(ready_path, 3),
        # Restarts a server whose engine died (vLLM then fails /health) after about 2.5 minutes.
        "livenessProbe": _probe("/health", 5, period=30),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        **pod_basics(settings.image_pull_secrets),
        **scheduling_fields(spec.scheduling),
        "containers": [container],
        "volumes": [*scratch, *claim_volumes],
    }
    deployment_spec: dict[str, Any] = {
        "replicas": served.replicas,
        "strategy": {"type": "Recreate"},
        "revisionHistoryLimit": 2,
        "selector": {"matchLabels": dict(labels)},
        "template": {
            "metadata": {
                "labels": {**extra_labels(settings.workload_labels), **labels},
                "annotations": {
                    NAME_ANNOTATION: resource.metadata.name,
                    "kubectl.kubernetes.io/default-container": TEACHER_CONTAINER,
                },
            },
            "spec": pod_spec,
        },
    }
    spec_hash = short_hash(json.dumps(deployment_spec, sort_keys=True), 16)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            resource, name, labels, settings.workload_labels, {SPEC_HASH_ANNOTATION: spec_hash}
        ),
        "spec": deployment_spec,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(resource, name, labels, settings.workload_labels),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(labels),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def teacher_endpoint(resource: Resource, participant: Participant, settings: ManifestSettings) -> Endpoint:
    """How a workload reaches the served participant: its Service's cluster DNS name.

    The model name is the participant's name (vLLM's `--served-model-name`), or the path
    `transformers serve` is pinned to; no API key.
    """
    _served(participant)
    name = teacher_name(resource, participant.name)
    model = participant.name
    if serving_engine(participant, settings) == "transformers":
        model = f"{TRANSFORMERS_MODEL_DIR}/{participant.name}"
    return Endpoint(
        base_url=f"http://{name}.{namespace_of(resource)}.svc:{settings.teacher_port}/v1",
        model=model,
    )

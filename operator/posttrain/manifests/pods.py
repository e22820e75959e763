"""Pieces every pod of posttrain shares: security context, storage mounts, secrets, scheduling.

Pods satisfy the Pod Security Standard "restricted": non-root with fixed ids, no privilege escalation,
every capability dropped, the runtime's default seccomp profile, and only configMap, emptyDir,
persistentVolumeClaim and secret volumes. The root filesystem stays writable (Python packages write
caches), but HOME and every cache point at an emptyDir on /tmp, so the images need no writable home.

Secrets reach containers only as `valueFrom.secretKeyRef`: no body built here ever holds a secret's
value, and the ConfigMap of a workload holds references at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from posttrain.api.common import ArtifactStore, RunSettings, Scheduling, SecretKeyRef
from posttrain.api.uri import PVC, ArtifactUri
from posttrain.manifests.naming import dns_name

RUN_AS = 1000
TMP_DIR = "/tmp"
SHM_DIR = "/dev/shm"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def pod_security_context() -> dict[str, Any]:
    """The pod-level security context of the "restricted" profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The container-level security context of the "restricted" profile."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": False,
    }


def home_env() -> list[dict[str, Any]]:
    """HOME and the caches of Python, Hugging Face, Triton and torch under /tmp (an emptyDir)."""
    return [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "XDG_CACHE_HOME", "value": f"{TMP_DIR}/.cache"},
        {"name": "HF_HOME", "value": f"{TMP_DIR}/huggingface"},
        {"name": "TRITON_CACHE_DIR", "value": f"{TMP_DIR}/.triton"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    """An environment variable set from a Secret's key (the value never passes through posttrain)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def s3_env(artifacts: ArtifactStore) -> list[dict[str, Any]]:
    """S3 credentials (by reference) and endpoint of the artifact store, as far as they are set."""
    env: list[dict[str, Any]] = []
    if artifacts.access_key_id_secret_ref is not None:
        env.append(secret_env("AWS_ACCESS_KEY_ID", artifacts.access_key_id_secret_ref))
    if artifacts.secret_access_key_secret_ref is not None:
        env.append(secret_env("AWS_SECRET_ACCESS_KEY", artifacts.secret_access_key_secret_ref))
    if artifacts.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": artifacts.endpoint_url})
    return env


def claim_of(uri: str) -> str | None:
    """The claim of a `pvc://CLAIM/path` URI; None for other schemes."""
    return ArtifactUri.parse(uri).claim


def pvc_uris(value: Any) -> Iterator[str]:
    """Every `pvc://` string in a JSON-like value (a resolved spec), depth first."""
    if isinstance(value, str):
        if ArtifactUri.parse(value).scheme == PVC:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from pvc_uris(item)
    elif isinstance(value, list):
        for item in value:
            yield from pvc_uris(item)


def local_path(uri: str, pvc_root: str) -> str:
    """Where a `pvc://` or `file://` URI is found inside a pod; other URIs are returned unchanged."""
    path = ArtifactUri.parse(uri).local_path(pvc_root)
    return uri if path is None else str(path)


def claim_volume_name(claim: str) -> str:
    """A volume name (DNS label, at most 63 characters) for a claim name (a DNS subdomain)."""
    return dns_name("pvc-" + claim)


def claim_mounts(
    read: Iterable[str], written: Iterable[str], pvc_root: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volume mounts) for the claims of the URIs read and written, sorted by claim.

    A claim that is only read is mounted read-only; one that is written (the output's) read-write.
    """
    written_claims = {c for c in map(claim_of, written) if c}
    read_claims = {c for c in map(claim_of, read) if c} - written_claims
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for claim in sorted(read_claims | written_claims):
        name = claim_volume_name(claim)
        read_only = claim in read_claims
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": name, "mountPath": f"{pvc_root.rstrip('/')}/{claim}", "readOnly": read_only})
    return volumes, mounts


def scratch_volumes(shared_memory: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): an emptyDir on /tmp (HOME, caches) and an in-memory /dev/shm.

    Without `shared_memory` the /dev/shm emptyDir has no size of its own and counts against the
    container's memory limit.
    """
    shm: dict[str, Any] = {"medium": "Memory"}
    if shared_memory:
        shm["sizeLimit"] = shared_memory
    volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "dshm", "emptyDir": shm}]
    mounts = [{"name": "tmp", "mountPath": TMP_DIR}, {"name": "dshm", "mountPath": SHM_DIR}]
    return volumes, mounts


def scheduling_fields(scheduling: Scheduling) -> dict[str, Any]:
    """nodeSelector, tolerations and priorityClassName for a pod spec, as far as they are set."""
    out: dict[str, Any] = {}
    if scheduling.node_selector:
        out["nodeSelector"] = dict(sorted(scheduling.node_selector.items()))
    if scheduling.tolerations:
        out["tolerations"] = [t.wire() for t in scheduling.tolerations]
    if scheduling.priority_class_name:
        out["priorityClassName"] = scheduling.priority_class_name
    return out


def pod_basics(image_pull_secrets: Iterable[str]) -> dict[str, Any]:
    """Pod spec fields every posttrain pod has: no API token, no service links, restricted security."""
    out: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
    }
    secrets = list(image_pull_secrets)
    if secrets:
        out["imagePullSecrets"] = [{"name": name} for name in secrets]
    return out


def run_settings(spec: Any) -> RunSettings:
    """The spec as the settings every kind shares.

    Raises:
        TypeError: if the resource was not parsed with its kind's model.
    """
    if not isinstance(spec, RunSettings):
        raise TypeError(f"expected a parsed spec, got {type(spec).__name__}; use Resource.parse")
    return spec

"""Names, labels, annotations and ownerReferences of every child posttrain creates.

Names are deterministic, so building a child twice yields the same name and a repeated create is
harmless (the API server answers "already exists"). Every name is a valid DNS-1035 label of at most 63
characters, because Jobs of multi-node runs and teachers are also Service names; a name that had to be
shortened or changed carries a short hash of the original so two resources never share a child.

Labels are the contract with the adapters, which find children by them. Nothing is copied from the
parent's own labels or annotations: GitOps tools track their objects with labels and annotations
(Argo CD's `app.kubernetes.io/instance` and `argocd.argoproj.io/*`, Flux's `*.toolkit.fluxcd.io/*`),
and a child that carried them would be pruned as an unknown member of the application.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from posttrain.api import labels
from posttrain.api.curriculum import Curriculum
from posttrain.api.resources import API_VERSION, Resource

MAX_NAME = 63
MAX_LABEL_VALUE = 63
MAX_JOB_NAME = 56
"""Pods of an Indexed Job are named `<job>-<index>` as host names (at most 63 characters): leave room
for the index."""
COMPONENTS = ("workload", "teacher")
LABEL_PREFIX = labels.PREFIX
NAME_ANNOTATION = labels.NAME_ANNOTATION
"""Holds the parent's full name (its label may be a shortened form)."""
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GITOPS_KEYS = (labels.INSTANCE,)
GITOPS_PREFIXES = (
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "meta.helm.sh/",
)
_RESERVED_PREFIXES = ("app.kubernetes.io/", LABEL_PREFIX, "kueue.x-k8s.io/")
"""Keys the operator's extra labels may not set: posttrain's own, and Kueue's (the queue comes from
`spec.scheduling.queueName` and goes on Jobs only)."""
_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def short_hash(text: str, length: int = 6) -> str:
    """The first `length` hex digits of the SHA-256 of `text`."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_name(base: str, suffix: str = "", max_length: int = MAX_NAME) -> str:
    """A DNS-1035 label `<base><suffix>` of at most `max_length` characters.

    `suffix` (e.g. `-<run>-<attempt>`) is kept whole; `base` is lower-cased, characters outside
    `[a-z0-9-]` become `-`, a leading digit gets a `pt-` prefix, and it is shortened to fit. Whenever
    `base` had to change, a 6-digit hash of the original is appended, so distinct bases stay distinct.

    Raises:
        ValueError: if the suffix alone leaves no room for a base.
    """
    if suffix and not re.fullmatch(r"-[a-z0-9-]*[a-z0-9]", suffix):
        raise ValueError(f"suffix must be `-` and lowercase letters, digits and dashes, not {suffix!r}")
    clean = _INVALID.sub("-", base.lower()).strip("-") or "x"
    if not clean[0].isalpha():
        clean = "pt-" + clean
    tag = "-" + short_hash(base)
    room = max_length - len(suffix)
    if room < len(tag) + 1:
        raise ValueError(f"suffix {suffix!r} leaves no room in {max_length} characters")
    if clean != base or len(clean) > room:
        clean = clean[: room - len(tag)].rstrip("-") + tag
    return clean + suffix


def label_value(value: str) -> str:
    """`value` as a label value, shortened with a hash when it is invalid or too long.

    A valid value that is short enough is unchanged; the full value of a shortened one belongs in an
    annotation.
    """
    if len(value) <= MAX_LABEL_VALUE and _LABEL_VALUE.match(value):
        return value
    tag = "-" + short_hash(value, 10)
    head = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[: MAX_LABEL_VALUE - len(tag)]
    head = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", head)
    return (head + tag) if head else tag[1:]


def job_name(resource: Resource, run_id: str, attempt: int) -> str:
    """The name of one attempt's Job: `<resource>-<run id, 8 digits>-<attempt>`.

    Its ConfigMap and, for multi-node runs, its headless Service have the same name.

    The run id is a content hash that includes the kind, so resources of different kinds that share a
    name never share a Job. At most 56 characters, leaving room for Indexed Job host names.
    """
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or short_hash(run_id, 8)
    return dns_name(resource.metadata.name, f"-{run}-{attempt}", MAX_JOB_NAME)


def teacher_name(resource: Resource, participant: str) -> str:
    """The name of a served participant's Deployment and Service: `<resource>-<workload>-<participant>`.

    The workload (`evol`, `align`) stands for the kind, because an EvolJob and an AlignRound may share
    a name and a participant name.
    """
    suffix = "-" + _INVALID.sub("-", f"{resource.info.workload}-{participant}".lower()).strip("-")
    return dns_name(resource.metadata.name, suffix, MAX_NAME)


def child_labels(resource: Resource, component: str, **extra: str | int) -> dict[str, str]:
    """The labels of a child (and of its pods) of `resource`; the adapters select children by them.

    Args:
        resource: the parent.
        component: `workload` or `teacher`.
        **extra: further `posttrain.dev/<key>` labels: `run`, `attempt` (workloads), `participant`
            (teachers).

    Returns:
        The standard `app.kubernetes.io/*` labels and `posttrain.dev/kind`, `posttrain.dev/name` and
        the extras, every value a valid label value.
    """
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, not {component!r}")
    name = label_value(resource.metadata.name)
    found = {
        "app.kubernetes.io/name": "posttrain",
        labels.INSTANCE: name,
        labels.COMPONENT: component,
        "app.kubernetes.io/managed-by": "posttrain-operator",
        "app.kubernetes.io/part-of": "posttrain",
        labels.KIND: resource.kind,
        labels.NAME: name,
    }
    for key, value in extra.items():
        found[labels.PREFIX + key] = label_value(str(value))
    return found


def label_selector(resource: Resource, component: str, **extra: str | int) -> str:
    """A label selector (`key=value,...`) of the resource's children of one component.

    Narrowed to one run, attempt or participant when given.
    """
    return ",".join(f"{key}={value}" for key, value in child_labels(resource, component, **extra).items())


def extra_labels(configured: dict[str, str]) -> dict[str, str]:
    """Operator-configured labels that may go on children.

    No GitOps tracking labels, nothing under the prefixes of posttrain's own labels, no Kueue labels.
    """
    return {
        key: value
        for key, value in sorted(configured.items())
        if key not in GITOPS_KEYS
        and not key.startswith(GITOPS_PREFIXES)
        and not key.startswith(_RESERVED_PREFIXES)
    }


def owner_references(resource: Resource | Curriculum) -> list[dict[str, Any]]:
    """The controller reference to the parent: children are garbage-collected with it.

    Raises:
        ValueError: if the resource has no uid (it was not read from the API server).
    """
    if not resource.metadata.uid:
        raise ValueError(f"{resource.kind}/{resource.metadata.name} has no uid; read it from the API server")
    return [
        {
            "apiVersion": API_VERSION,
            "kind": resource.kind,
            "name": resource.metadata.name,
            "uid": resource.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def namespace_of(resource: Resource) -> str:
    """The namespace children live in: the parent's."""
    return resource.metadata.namespace or "default"


def child_metadata(
    resource: Resource,
    name: str,
    labels: dict[str, str],
    extra: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Object metadata of a child, owned by its parent.

    Name, namespace, labels (operator extras under the contract labels), the parent's full name as an
    annotation, and the ownerReference.
    """
    return {
        "name": name,
        "namespace": namespace_of(resource),
        "labels": {**extra_labels(extra), **labels},
        "annotations": {NAME_ANNOTATION: resource.metadata.name, **(annotations or {})},
        "ownerReferences": owner_references(resource),
    }

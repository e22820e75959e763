"""Typed reads of the Kubernetes client's models, whose every field is optional.

The API server fills in ``metadata``, ``spec`` and ``status`` of what it returns; these helpers say so
to the type checker, and fail the test (rather than raise ``AttributeError`` on None) where it did not.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from kubernetes import client

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class HasMetadata(Protocol):
    """Any Kubernetes object model."""

    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


class HasSpec(Protocol[T_co]):
    """An object model with a spec."""

    @property
    def spec(self) -> T_co | None: ...


class HasStatus(Protocol[T_co]):
    """An object model with a status."""

    @property
    def status(self) -> T_co | None: ...


def present(value: T | None, what: str) -> T:
    """``value``, failing the test where the API server left it unset.

    Args:
        value: a field of a client model.
        what: the field, in words, for the failure message.

    Raises:
        AssertionError: ``value`` is None.
    """
    if value is None:
        raise AssertionError(f"{what} is not set")
    return value


def document(value: object) -> dict[str, Any]:
    """A custom object (or a list of them) as ``CustomObjectsApi`` returns it: a JSON object, typed ``object``.

    Raises:
        AssertionError: ``value`` is not a JSON object.
    """
    assert isinstance(value, dict), f"a JSON object, not {type(value).__name__}"
    return value


def meta_of(obj: HasMetadata) -> client.V1ObjectMeta:
    """The object's metadata."""
    return present(obj.metadata, "metadata")


def spec_of(obj: HasSpec[T]) -> T:
    """The object's spec."""
    return present(obj.spec, "spec")


def status_of(obj: HasStatus[T]) -> T:
    """The object's status."""
    return present(obj.status, "status")


def name_of(obj: HasMetadata) -> str:
    """The object's name."""
    return present(meta_of(obj).name, "metadata.name")


def labels_of(obj: HasMetadata) -> dict[str, str]:
    """The object's labels (empty where it has none)."""
    return meta_of(obj).labels or {}


def annotations_of(obj: HasMetadata) -> dict[str, str]:
    """The object's annotations (empty where it has none)."""
    return meta_of(obj).annotations or {}


def phase_of(pod: client.V1Pod) -> str | None:
    """The pod's phase; None before the API server has given it a status."""
    return pod.status.phase if pod.status else None


def container_statuses_of(pod: client.V1Pod) -> list[client.V1ContainerStatus]:
    """The statuses of the pod's containers (set once they were created)."""
    return present(status_of(pod).container_statuses, "status.containerStatuses")


def terminated_of(pod: client.V1Pod, container: int = 0) -> client.V1ContainerStateTerminated:
    """How the pod's ``container``-th container ended."""
    statuses = container_statuses_of(pod)
    state = present(statuses[container].state, f"status.containerStatuses[{container}].state")
    return present(state.terminated, f"status.containerStatuses[{container}].state.terminated")

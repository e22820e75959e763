"""What the plan layer sees and decides, independent of where workloads run.

Drivers (the Kubernetes handlers, the local runner) translate their world into these observations and
carry out the actions: a Kubernetes driver renders `StartWorkload` as a ConfigMap + Job through the
manifests layer, the local runner as a local process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from posttrain.api.common import Participant
from posttrain.api.resources import Resource
from posttrain.api.status import Output, Phase
from posttrain.api.workload import Endpoint, ProgressDocument, Result, WorkloadConfig

WorkloadState = Literal["pending", "active", "succeeded", "failed"]


@dataclass(frozen=True)
class ObservedWorkload:
    """One attempt of a workload as the driver sees it (a Job and its pod, or a process)."""

    run_id: str
    """Run the attempt belongs to."""
    attempt: int
    """Attempt number, from 1."""
    name: str
    """Driver's name of it (the Job's name)."""
    state: WorkloadState
    """pending (not started), active, succeeded or failed."""
    exit_code: int | None = None
    """Exit code of the workload container, once it terminated."""
    reason: str = ""
    """Why it failed (BackoffLimitExceeded, DeadlineExceeded, Error, OOMKilled, ...)."""
    message: str = ""
    """The termination message (a result document, or `{"error": ...}`) or a condition message."""
    result: Result | None = None
    """The result document, when it succeeded and the driver could read it."""
    progress: ProgressDocument | None = None
    """The latest progress document, when the driver could read it."""


@dataclass(frozen=True)
class ObservedTeacher:
    """A served participant (a vLLM Deployment + Service, or a local server)."""

    participant: str
    """Participant name."""
    name: str
    """Driver's name of it (the Deployment's name)."""
    ready: bool
    """Serving: ready replicas >= 1 (the readiness probe checks /v1/models)."""
    endpoint: Endpoint | None = None
    """How a workload reaches it."""


@dataclass(frozen=True)
class InputState:
    """The state of a referenced resource, as far as the referencing one cares."""

    exists: bool
    phase: Phase | None = None
    current: bool = True
    """False while it works on a newer generation than its outputs describe."""
    outputs: dict[str, Output] = field(default_factory=dict)
    run_id: str | None = None
    stalled: str | None = None
    """The message of its `Stalled` condition while it is stalled (failed, or blocked itself)."""
    known_outputs: tuple[str, ...] | None = None
    """The outputs it produces, from its spec (`api.outputs`); None when the driver cannot tell."""


@dataclass(frozen=True)
class ReusableRun:
    """The result of a run that is finished already: what a resource of the same content takes over.

    It carries the result as a fresh run of it reports it, so the reusing resource gets the same
    status: outputs, metrics, and the conditions decided from them (`JudgeReliable`, `Promoted`).
    """

    origin: str
    """Where it came from: `Kind/name` of the resource that finished it, or `an earlier run (FOLDER)`."""
    outputs: dict[str, Output]
    """Its outputs."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Its metrics (the result document's)."""


@dataclass(frozen=True)
class Observed:
    """Everything the plan of one resource needs to know."""

    resource: Resource
    """The resource with its current status."""
    workloads: list[ObservedWorkload] = field(default_factory=list)
    """Attempts of workloads owned by the resource (every run)."""
    teachers: list[ObservedTeacher] = field(default_factory=list)
    """Served participants owned by the resource."""
    inputs: dict[tuple[str, str], InputState] = field(default_factory=dict)
    """(kind, name) -> state, for every referenced resource."""
    cycle: list[tuple[str, str]] | None = None
    """A reference cycle the resource is part of, if any."""
    reusable: ReusableRun | None = None
    """The result of the same run (same content hash) finished already, by another resource or earlier."""


@dataclass(frozen=True)
class StartTeacher:
    """Serve a participant for the resource."""

    participant: Participant


@dataclass(frozen=True)
class StopTeacher:
    """Stop serving a participant (by the driver's name)."""

    name: str


@dataclass(frozen=True)
class StartWorkload:
    """Start one attempt of the workload with this config."""

    run_id: str
    attempt: int
    config: WorkloadConfig


@dataclass(frozen=True)
class StopWorkload:
    """Stop an attempt that belongs to an outdated run (by the driver's name)."""

    name: str


Action = StartTeacher | StopTeacher | StartWorkload | StopWorkload


@dataclass(frozen=True)
class Event:
    """An event to record on the resource (a Kubernetes Event, a log line locally)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


MODEL_CACHE_OFF = "off"
"""The value of `--model-cache` (or `POSTTRAIN_MODEL_CACHE`) that turns the cache off."""


@dataclass(frozen=True)
class ModelCacheSettings:
    """Where workloads keep the replies of model calls, driver-wide."""

    enabled: bool = True
    """Give workloads the cache of their namespace."""
    root: str | None = None
    """Where the caches of all namespaces lie (one folder each); None: `model-calls` in the artifact
    root of the resource, so drivers pointed at the same store share it."""
    max_bytes: int | None = None
    """Size limit of a namespace's cache; None: unlimited."""

    @classmethod
    def parse(cls, location: str | None, max_bytes: str | int | None = None) -> ModelCacheSettings:
        """Settings from a command-line or environment value.

        Args:
            location: empty or None (the default place), `off`, or the root URI of the caches.
            max_bytes: the size limit in bytes, if any.

        Raises:
            ValueError: the size is not a positive whole number.
        """
        limit = int(max_bytes) if max_bytes not in (None, "") else None
        if limit is not None and limit <= 0:
            raise ValueError(f"model cache size limit must be positive, got {max_bytes}")
        if location == MODEL_CACHE_OFF:
            return cls(enabled=False, max_bytes=limit)
        return cls(root=location or None, max_bytes=limit)


@dataclass(frozen=True)
class Settings:
    """Driver-wide settings the plan needs."""

    artifact_root: str
    """Default root of outputs when a spec names none (`pvc://posttrain/artifacts`, `file://...`)."""
    progress_interval: float | None = 15.0
    """Seconds between progress reads while a workload runs; None when the driver cannot read the
    artifact store (then a running resource is looked at again only when its children change)."""
    model_cache: ModelCacheSettings = field(default_factory=lambda: ModelCacheSettings())
    """The model-call cache given to workloads (`WorkloadConfig.model_cache`)."""


@dataclass(frozen=True)
class Decision:
    """What to do now."""

    actions: list[Action]
    """Children to start or stop, in order."""
    status: dict[str, object]
    """The complete new status (wire form); the driver writes it only if it differs."""
    events: list[Event] = field(default_factory=list)
    """Events to record."""
    requeue_after: float | None = None
    """Look again after this many seconds even if nothing changes (backoff, progress)."""

"""The operator's reconciler: the indexes to the plan's observations, the decisions to the API server.

Every watch event that changes what the plan reads queues the owning resource (a `ResourceKey`) in a
work queue; a worker builds the observation from the indexes (so reconciling never LISTs), lets the
driver core and the plan decide, creates or deletes children through the manifests layer, and writes
status only when it changed. When a resource's phase changes, the resources that read from it are
queued, so a curriculum applied at once runs in dependency order.

One `Reconciler` per operator run: kopf's startup handler makes it and keeps it in the operator's memo;
the kopf handlers only hand it their events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from posttrain.adapters import metrics
from posttrain.adapters.artifacts import ArtifactReader
from posttrain.adapters.kube import Kube
from posttrain.adapters.observe import input_state, merge_patch, parse_resource, teachers, workloads
from posttrain.api import curriculum as curriculum_api
from posttrain.api.curriculum import Curriculum
from posttrain.api.references import iter_references
from posttrain.api.resources import Resource
from posttrain.api.status import Condition, Status
from posttrain.api.workload import BUDGET_EXHAUSTED_REASON, ProgressDocument
from posttrain.handlers.indexes import Indexes, ResourceKey, curriculum_of
from posttrain.handlers.workqueue import WorkQueue
from posttrain.manifests import (
    ManifestSettings,
    owner_references,
    teacher_endpoint,
    teacher_objects,
    workload_objects,
)
from posttrain.manifests.settings import VLLM_IMAGE
from posttrain.plan.conditions import stalled_message
from posttrain.plan.curriculum import CurriculumDecision, parse_curriculum, plan_curriculum
from posttrain.plan.driver import FinishedRun, Key, Lookups, complete
from posttrain.plan.reconcile import invalid_spec, output_uri, participants, plan
from posttrain.plan.types import (
    Decision,
    ModelCacheSettings,
    Observed,
    Settings,
    StartTeacher,
    StartWorkload,
    StopTeacher,
    StopWorkload,
)
from posttrain.support import times

log = logging.getLogger("posttrain.operator")


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of the operator process, from the environment (`posttrain operator` sets them)."""

    artifact_root: str = "pvc://posttrain/artifacts"
    """Default output root for resources that name none."""
    trainer_image: str = "ghcr.io/posttrain/trainer:0.1.0"
    """Image of the workload Jobs."""
    vllm_image: str = VLLM_IMAGE
    """Image of served teachers."""
    serving_engine: str = "vllm"
    """`vllm`, `transformers` or `auto` (`ManifestSettings.serving_engine`)."""
    workers: int = 4
    """Concurrent reconciles."""
    qps: float = 50.0
    """Client-side rate limit of API requests per second."""
    burst: int = 100
    """Burst of the rate limit."""
    metrics_port: int = 8080
    """Port of /metrics (0: off)."""
    progress_interval: float = 15.0
    """Seconds between progress reads of a running workload."""
    pvc_root: str | None = None
    """Where the operator has artifact claims mounted (to read progress.json), if anywhere."""
    model_cache: ModelCacheSettings = field(default_factory=ModelCacheSettings)
    """The model-call cache of the workloads (`POSTTRAIN_MODEL_CACHE`: a root URI or `off`;
    `POSTTRAIN_MODEL_CACHE_MAX_BYTES`)."""

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """The settings of the `POSTTRAIN_*` environment variables (defaults for those unset)."""
        env = os.environ
        defaults = cls()
        return cls(
            artifact_root=env.get("POSTTRAIN_ARTIFACT_ROOT", defaults.artifact_root),
            trainer_image=env.get("POSTTRAIN_TRAINER_IMAGE", defaults.trainer_image),
            vllm_image=env.get("POSTTRAIN_VLLM_IMAGE", defaults.vllm_image),
            serving_engine=env.get("POSTTRAIN_SERVING_ENGINE", defaults.serving_engine),
            workers=int(env.get("POSTTRAIN_WORKERS", defaults.workers)),
            qps=float(env.get("POSTTRAIN_KUBE_QPS", defaults.qps)),
            burst=int(env.get("POSTTRAIN_KUBE_BURST", defaults.burst)),
            metrics_port=int(env.get("POSTTRAIN_METRICS_PORT", defaults.metrics_port)),
            progress_interval=float(env.get("POSTTRAIN_PROGRESS_INTERVAL", defaults.progress_interval)),
            pvc_root=env.get("POSTTRAIN_OPERATOR_PVC_ROOT") or None,
            model_cache=ModelCacheSettings.parse(
                env.get("POSTTRAIN_MODEL_CACHE"), env.get("POSTTRAIN_MODEL_CACHE_MAX_BYTES")
            ),
        )


def fingerprint(metadata: dict[str, Any], status: Any) -> tuple[Any, ...]:
    """What of a posttrain resource's watch event can change a reconcile's outcome."""
    return (metadata.get("generation"), bool(metadata.get("deletionTimestamp")), status)


@dataclass
class Reconciler:
    """Reconciles posttrain resources from the indexes, through a work queue."""

    config: OperatorConfig
    indexes: Indexes
    kube: Kube
    reader: ArtifactReader
    queue: WorkQueue = field(init=False)
    seen: dict[Hashable, object] = field(default_factory=dict)
    """The last summary of each watched object the operator reacted to (or status it wrote)."""
    progress_read: dict[ResourceKey, float] = field(default_factory=dict)
    """When the progress of each running resource was last read (monotonic seconds)."""

    def __post_init__(self) -> None:
        """The work queue (workers start with the first key) and the manifests' settings."""
        self.queue = WorkQueue(self._reconcile_key, workers=self.config.workers)
        self.manifest_settings = ManifestSettings(
            trainer_image=self.config.trainer_image,
            vllm_image=self.config.vllm_image,
            serving_engine=self.config.serving_engine,
        )

    # Events ----------------------------------------------------------------------------------------
    def react(self, seen: Hashable, summary: object | None, owner: ResourceKey | None) -> bool:
        """Queue `owner` when the watched object `seen` changed since the operator last saw or wrote it.

        Most watch events carry nothing the plan reads: a Job's pod count moving, a pod being scheduled,
        the echo of the operator's own status patch. Reconciling only on a change of the summary the
        plan reads keeps the reconciles per resource near the number of real transitions.
        `summary=None`: the object was deleted. Returns whether `owner` was queued for a change.
        """
        if summary is None:
            self.seen.pop(seen, None)
        elif self.seen.get(seen) == summary:
            return False
        else:
            self.seen[seen] = summary
        if owner is not None:
            self.enqueue(owner)
        return True

    def forget(self, key: ResourceKey) -> None:
        """A resource was deleted: drop what is kept of it and look at what read from it."""
        self.seen.pop(key, None)
        self.queue.forget(key)
        for reader in self.indexes.readers(key):
            self.enqueue(reader)

    def enqueue(self, key: ResourceKey) -> None:
        """Queue a resource (the workers start with the first one)."""
        if not self.queue.started:
            self.queue.start()
        self.queue.add(key, self.priority(key))

    def priority(self, key: ResourceKey) -> int:
        """0 for a resource that may start or finish work, 1 for one still blocked on an input.

        A blocked resource's reconcile can only report `Waiting`; under a burst, the resources that can
        start their workloads go first.
        """
        for ref in self.indexes.refs(key):
            summary = self.indexes.summary(key.at(ref))
            if summary is None or (summary.get("status") or {}).get("phase") != "Succeeded":
                return 1
        return 0

    async def stop(self) -> None:
        """Stop the workers."""
        await self.queue.stop()

    # Observation -----------------------------------------------------------------------------------
    def lookups(self, namespace: str) -> Lookups:
        """The driver core's lookups of one namespace, from the indexes."""

        def refs_of(ref: Key) -> Iterable[Key]:
            return self.indexes.refs(ResourceKey(namespace, *ref))

        def finished_runs(kind: str, run: str) -> list[FinishedRun]:
            return self.indexes.finished_runs(namespace, kind, run)

        # Results are read from pods' termination messages; reuse comes from the index only.
        return Lookups(refs_of, finished_runs)

    def plan_settings(self, resource: Resource) -> Settings:
        """The plan's settings for one resource."""
        root = resource.spec.artifacts.uri or self.config.artifact_root
        return Settings(
            artifact_root=self.config.artifact_root,
            model_cache=self.config.model_cache,
            # Polling progress of a store the operator cannot read would only cost reconciles.
            progress_interval=self.config.progress_interval if self.reader.readable(root) else None,
        )

    def observe(self, key: ResourceKey, resource: Resource, settings: Settings) -> Observed:
        """The plan's view of one resource, from the indexes, completed by the driver core."""
        jobs = self.indexes.jobs(key)
        pods = {job["name"]: self.indexes.pod(key.namespace, job["name"]) or {} for job in jobs}
        endpoints = {
            p.name: teacher_endpoint(resource, p, self.manifest_settings)
            for p in participants(resource)
            if p.served
        }
        observed = Observed(
            resource=resource,
            workloads=workloads(jobs, pods),
            teachers=teachers(self.indexes.teachers(key), endpoints),
            inputs={ref: input_state(self.indexes.summary(key.at(ref))) for ref in _refs(resource)},
        )
        observed = complete(observed, self.lookups(key.namespace), settings)
        return self._with_progress(key, observed)

    def _with_progress(self, key: ResourceKey, observed: Observed) -> Observed:
        """Attach progress.json of the active attempt when the store is readable (throttled)."""
        status = observed.resource.status
        if status is None or not status.run_id:
            return observed
        active = [w for w in observed.workloads if w.state == "active" and w.run_id == status.run_id]
        if not active:
            return observed
        now = time.monotonic()
        if now - self.progress_read.get(key, 0.0) < self.config.progress_interval * 0.8:
            return observed
        self.progress_read[key] = now
        uri = output_uri(observed.resource, Settings(artifact_root=self.config.artifact_root), status.run_id)
        document = self.reader.read_json(uri, "progress.json")
        if document is None:
            return observed
        try:
            progress = ProgressDocument.model_validate(document)
        except ValidationError:
            return observed
        updated = [replace(w, progress=progress) if w is active[-1] else w for w in observed.workloads]
        return replace(observed, workloads=updated)

    # Reconcile -------------------------------------------------------------------------------------
    async def _reconcile_key(self, key: Hashable) -> float | None:
        assert isinstance(key, ResourceKey)
        return await self.reconcile(key)

    async def reconcile(self, key: ResourceKey) -> float | None:
        """Reconcile one resource; returns when to look again (seconds) or None."""
        summary = self.indexes.summary(key)
        if summary is None or summary["metadata"].get("deletionTimestamp"):
            return None
        started = time.perf_counter()
        result = "success"
        try:
            requeue = await self._reconcile(key, summary)
            if requeue is not None:
                result = "requeue_after"
            return requeue
        except Exception:
            result = "error"
            metrics.RECONCILE_ERRORS.labels(key.kind).inc()
            raise
        finally:
            metrics.RECONCILE_TOTAL.labels(key.kind, result).inc()
            metrics.RECONCILE_TIME.labels(key.kind).observe(time.perf_counter() - started)

    async def _reconcile(self, key: ResourceKey, summary: dict[str, Any]) -> float | None:
        if key.kind == curriculum_api.KIND:
            await self._reconcile_curriculum(key, summary)
            return None
        old_status: dict[str, Any] = summary.get("status") or {}
        try:
            resource = parse_resource(summary)
        except ValidationError as error:
            # The API server accepted what the models reject: report it, never crash.
            status = await self._report_invalid(key, summary, error)
            if status.get("phase") != old_status.get("phase") or _stalled(status) != _stalled(old_status):
                self._readers_changed(key)
            return None
        settings = self.plan_settings(resource)
        decision = plan(self.observe(key, resource, settings), settings, datetime.now(UTC))
        log.debug(
            "%s: %s -> %s, %s",
            key,
            old_status.get("phase"),
            decision.status.get("phase"),
            [type(a).__name__ for a in decision.actions] or "no actions",
        )
        await self._carry_out(resource, decision)
        if decision.status != old_status:
            await self._patch_status(key, old_status, decision.status)
            summary["status"] = decision.status  # our own view until the watch event arrives
            # The watch event of this patch brings nothing new: no reconcile for it.
            self.seen[key] = fingerprint(summary["metadata"], decision.status)
            owner = curriculum_of(summary, key.namespace)
            if owner is not None:
                self.enqueue(owner)  # its curriculum follows its children's status
        _post_events(summary, decision)
        if decision.status.get("phase") != old_status.get("phase"):
            self._phase_changed(key, decision.status)
        elif _stalled(decision.status) != _stalled(old_status):
            # A block travels down the chain: readers re-plan when this one turns stalled or not.
            self._readers_changed(key)
        return decision.requeue_after

    async def _report_invalid(
        self, key: ResourceKey, summary: dict[str, Any], error: ValidationError
    ) -> dict[str, Any]:
        """Write the invalid-spec verdict of a resource the models reject; return its new status."""
        old_status: dict[str, Any] = summary.get("status") or {}
        generation = summary["metadata"].get("generation", 1)
        status, message = invalid_spec(old_status, generation, error, datetime.now(UTC))
        await self._patch_status(key, old_status, status)
        log.warning("%s is invalid: %s", key, message)
        return status

    async def _reconcile_curriculum(self, key: ResourceKey, summary: dict[str, Any]) -> None:
        """Create, update and remove a curriculum's children as the plan says; write its status."""
        old_status: dict[str, Any] = summary.get("status") or {}
        try:
            parsed = parse_curriculum(summary)
        except ValidationError as error:
            await self._report_invalid(key, summary, error)
            return

        def child_status(ref: Key) -> dict[str, Any] | None:
            found = self.indexes.summary(key.at(ref))
            if found is None or found["metadata"].get("deletionTimestamp"):
                return None
            return dict(found.get("status") or {})

        decision = plan_curriculum(parsed, child_status, datetime.now(UTC))
        await self._apply_children(key, parsed, decision)
        if decision.status != old_status:
            await self._patch_status(key, old_status, decision.status)
            summary["status"] = decision.status
            self.seen[key] = fingerprint(summary["metadata"], decision.status)
        _post_events(summary, Decision([], decision.status, decision.events))

    async def _apply_children(
        self, key: ResourceKey, parsed: Curriculum, decision: CurriculumDecision
    ) -> None:
        """Apply every child whose spec or labels differ from what the index holds; remove those not wanted.

        Server-side apply is idempotent and names are deterministic, so an operator killed between two
        applies creates nothing twice when it runs again.
        """
        owner = owner_references(parsed)
        wanted: set[ResourceKey] = set()
        for body in decision.children:
            child = key.at((body["kind"], body["metadata"]["name"]))
            wanted.add(child)
            found = self.indexes.summary(child)
            if found is not None and _same_child(found, body, owner):
                continue
            metadata = {**body["metadata"], "namespace": key.namespace, "ownerReferences": owner}
            await asyncio.to_thread(self.kube.apply, {**body, "metadata": metadata})
        if not decision.complete:
            return
        for child in self.indexes.owned(key):
            if child not in wanted:
                await asyncio.to_thread(self.kube.delete_object, child.kind, child.namespace, child.name)

    def _readers_changed(self, key: ResourceKey) -> None:
        """Queue the readers of a resource whose phase or stalled state changed."""
        for reader in self.indexes.readers(key):
            self.queue.add(reader, self.priority(reader))

    def _phase_changed(self, key: ResourceKey, status: dict[str, Any]) -> None:
        """Queue the readers of a resource whose phase changed, and record its finished run.

        Records how long a finished run took, and the workload metrics of a run of its own that succeeded (a
        reused result was counted by the run that made it).
        """
        self._readers_changed(key)
        phase = status.get("phase")
        if phase == "Succeeded" and _ready_reason(status) in RESULTS_OF_THEIR_OWN:
            metrics.record_result(key.kind, key.name, key.namespace, Status.model_validate(status).metrics)
        if phase in ("Succeeded", "Failed") and status.get("startTime"):
            start = times.parse(str(status["startTime"]))
            metrics.STAGE_DURATION.labels(key.kind, phase).observe(
                (datetime.now(UTC) - start).total_seconds()
            )

    async def _carry_out(self, resource: Resource, decision: Decision) -> None:
        kube, settings = self.kube, self.manifest_settings
        namespace = resource.metadata.namespace or "default"
        for action in decision.actions:
            if isinstance(action, StartTeacher):
                for body in teacher_objects(resource, action.participant, settings):
                    await asyncio.to_thread(kube.create, body)
            elif isinstance(action, StopTeacher):
                await asyncio.to_thread(kube.delete, "Deployment", namespace, action.name)
                await asyncio.to_thread(kube.delete, "Service", namespace, action.name)
            elif isinstance(action, StartWorkload):
                for body in workload_objects(resource, action, settings):
                    await asyncio.to_thread(kube.create, body)
            elif isinstance(action, StopWorkload):
                await asyncio.to_thread(kube.delete, "Job", namespace, action.name)

    async def _patch_status(self, key: ResourceKey, old: dict[str, Any], new: dict[str, Any]) -> None:
        patch = merge_patch(old, new)
        if patch:
            await asyncio.to_thread(self.kube.patch_status, key.kind, key.namespace, key.name, patch)


def _same_child(found: dict[str, Any], body: dict[str, Any], owner: list[dict[str, Any]]) -> bool:
    """Whether an existing child already has the spec, labels and owner the curriculum gives it.

    A child made from the rendered manifests before the curriculum existed gets its owner this way.
    """
    labels = found["metadata"].get("labels") or {}
    wanted = body["metadata"].get("labels") or {}
    uids = {ref.get("uid") for ref in found["metadata"].get("ownerReferences") or []}
    return bool(
        found.get("spec") == body["spec"]
        and all(labels.get(k) == v for k, v in wanted.items())
        and {ref["uid"] for ref in owner} <= uids
    )


def _refs(resource: Resource) -> list[Key]:
    """(kind, name) of every resource the parsed spec reads from."""
    return [(r.from_.kind, r.from_.name) for _, r in iter_references(resource.spec) if r.from_ is not None]


def _post_events(summary: dict[str, Any], decision: Decision) -> None:
    body = {"apiVersion": summary["apiVersion"], "kind": summary["kind"], "metadata": summary["metadata"]}
    for event in decision.events:
        try:
            kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message[:1024])
        except LookupError:  # outside kopf's context (unit tests)
            log.info("%s %s: %s", event.type, event.reason, event.message)


def _stalled(status: dict[str, Any]) -> str | None:
    """The message of the status' True Stalled condition, or None."""
    return stalled_message([Condition.model_validate(c) for c in status.get("conditions") or []])


RESULTS_OF_THEIR_OWN = ("Succeeded", BUDGET_EXHAUSTED_REASON)
"""Ready reasons of a run that succeeded with a result it made (not `Reused`): its metrics are counted."""


def _ready_reason(status: dict[str, Any]) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)

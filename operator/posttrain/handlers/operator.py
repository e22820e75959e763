"""The operator: kopf watches the five kinds and their children; one reconcile per resource.

kopf keeps in-memory indexes of every posttrain resource and of the Jobs, pods and Deployments the
operator created (filled by the watch streams, so reconciling never LISTs); every watch event queues
the owning resource in a work queue; a worker builds the plan layer's observations from the indexes,
asks the plan what to do, creates or deletes children through the manifests layer, and writes status
only when it changed. When a resource's phase changes, the resources that read from it are queued, so a
curriculum applied at once runs in dependency order.

kopf's own bookkeeping: annotations under `posttrain.dev/` (progress and diff-base storage); this
module uses only event and index handlers, which keep no state on the objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as _version
from typing import Any, cast

import kopf
from pydantic import ValidationError

from posttrain.adapters import metrics
from posttrain.adapters.artifacts import ArtifactReader
from posttrain.adapters.kube import Kube
from posttrain.adapters.observe import (
    LABEL_COMPONENT,
    LABEL_KIND,
    deployment_summary,
    input_state,
    job_summary,
    merge_patch,
    owner_of,
    parse_resource,
    pod_summary,
    resource_summary,
    teachers,
    workloads,
)
from posttrain.api.references import iter_references
from posttrain.api.resources import GROUP, KINDS, VERSION, Resource
from posttrain.api.status import Condition, Output
from posttrain.api.workload import ProgressDocument
from posttrain.manifests import (
    ManifestSettings,
    teacher_endpoint,
    teacher_objects,
    workload_objects,
)
from posttrain.manifests.settings import VLLM_IMAGE
from posttrain.plan.conditions import set_condition
from posttrain.plan.driver import FinishedRun, Lookups, complete
from posttrain.plan.reconcile import output_uri, participants, plan, timestamp
from posttrain.plan.types import (
    Decision,
    InputState,
    Observed,
    Settings,
    StartTeacher,
    StartWorkload,
    StopTeacher,
    StopWorkload,
)

log = logging.getLogger("posttrain.operator")
USER_AGENT = f"posttrain-operator/{_version('posttrain')}"
Key = tuple[str, str, str]  # namespace, kind, name


@dataclass
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

    @classmethod
    def from_env(cls) -> OperatorConfig:
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
        )


@dataclass
class State:
    """Process-wide state: live index views, the queue and the client."""

    config: OperatorConfig = field(default_factory=OperatorConfig)
    indices: dict[str, Any] = field(default_factory=dict)
    queue: Any = None
    kube: Kube | None = None
    reader: ArtifactReader = field(default_factory=ArtifactReader)
    progress_read: dict[Key, float] = field(default_factory=dict)
    seen: dict[Hashable, Any] = field(default_factory=dict)
    """The last summary of each watched object the operator reacted to (or status it wrote)."""
    loop: asyncio.AbstractEventLoop | None = None


STATE = State()


def _first(index: Any, key: Hashable) -> Any:
    store = index.get(key) if index is not None else None
    if not store:
        return None
    for value in store:
        return value
    return None


def _all(index: Any, key: Hashable) -> list[Any]:
    store = index.get(key) if index is not None else None
    return list(store) if store else []


# One kopf index per kind holds everything the operator keeps of those resources, under tagged keys
# (one index handler per event instead of three):
#   (OBJECT, namespace, kind, name)            -> the resource's summary
#   (REFS, namespace, kind, name)              -> the (kind, name) pairs its spec reads from
#   (DEPENDANT, namespace, kind, name)         -> (kind, name) of each resource reading from it
#   (RUN, namespace, kind, run id)             -> {name, outputs} of each resource that finished the run
OBJECT, REFS, DEPENDANT, RUN = "object", "refs", "dependant", "run"


def _index_of(kind: str) -> Any:
    return STATE.indices.get(f"posttrain_{KINDS[kind].plural}") if kind in KINDS else None


def _refs_of(namespace: str, kind: str, name: str) -> list[tuple[str, str]]:
    """(kind, name) of every resource this one reads from, as kept in the index."""
    return _first(_index_of(kind), (REFS, namespace, kind, name)) or []


def _summary(key: Key) -> dict[str, Any] | None:
    return _first(_index_of(key[1]), (OBJECT, *key))  # type: ignore[no-any-return]


def _phases() -> Iterable[tuple[str, str]]:
    for info in KINDS.values():
        index = STATE.indices.get(f"posttrain_{info.plural}")
        if index is None:
            continue
        for key in list(index):
            if key[0] != OBJECT:
                continue
            value = _first(index, key)
            if value is not None:
                yield info.kind, (value.get("status") or {}).get("phase") or "Pending"


def _lookups(namespace: str) -> Lookups:
    """The driver core's lookups of one namespace, from the indexes."""

    def refs_of(key: tuple[str, str]) -> list[tuple[str, str]]:
        return _refs_of(namespace, *key)

    def finished_runs(kind: str, run: str) -> list[FinishedRun]:
        return [
            FinishedRun(other["name"], {n: Output.model_validate(o) for n, o in other["outputs"].items()})
            for other in _all(_index_of(kind), (RUN, namespace, kind, run))
        ]

    return Lookups(refs_of, finished_runs)


def _plan_settings(resource: Resource) -> Settings:
    return Settings(
        artifact_root=STATE.config.artifact_root,
        # Polling progress of a store the operator cannot read would only cost reconciles.
        progress_interval=STATE.config.progress_interval
        if STATE.reader.readable(resource.spec.artifacts.uri or STATE.config.artifact_root)
        else None,
    )


def _manifest_settings() -> ManifestSettings:
    return ManifestSettings(
        trainer_image=STATE.config.trainer_image,
        vllm_image=STATE.config.vllm_image,
        serving_engine=STATE.config.serving_engine,
    )


def observe(resource: Resource) -> Observed:
    """The plan's view of one resource, from the indexes."""
    namespace = resource.metadata.namespace or "default"
    key: Key = (namespace, resource.kind, resource.metadata.name)
    jobs = _all(STATE.indices.get("posttrain_jobs"), key)
    pods_index = STATE.indices.get("posttrain_pods")
    pods = {job["name"]: _first(pods_index, (namespace, job["name"])) or {} for job in jobs}
    observed_workloads = workloads(jobs, pods)
    settings = _manifest_settings()
    endpoints = {p.name: teacher_endpoint(resource, p, settings) for p in participants(resource) if p.served}
    observed_teachers = teachers(_all(STATE.indices.get("posttrain_teachers"), key), endpoints)
    inputs: dict[tuple[str, str], InputState] = {}
    refs = [(r.from_.kind, r.from_.name) for _, r in iter_references(resource.spec) if r.from_ is not None]
    for target in refs:
        inputs[target] = input_state(_summary((namespace, *target)))
    observed = Observed(
        resource=resource,
        workloads=observed_workloads,
        teachers=observed_teachers,
        inputs=inputs,
    )
    observed = complete(observed, _lookups(namespace), _plan_settings(resource))
    return _with_progress(key, observed)


def _with_progress(key: Key, observed: Observed) -> Observed:
    """Attach progress.json of the active attempt when the store is readable (throttled)."""
    status = observed.resource.status
    if status is None or not status.run_id:
        return observed
    active = [w for w in observed.workloads if w.state == "active" and w.run_id == status.run_id]
    if not active:
        return observed
    now = time.monotonic()
    if now - STATE.progress_read.get(key, 0.0) < STATE.config.progress_interval * 0.8:
        return observed
    STATE.progress_read[key] = now
    uri = output_uri(observed.resource, Settings(artifact_root=STATE.config.artifact_root), status.run_id)
    document = STATE.reader.read_json(uri, "progress.json")
    if document is None:
        return observed
    try:
        progress = ProgressDocument.model_validate(document)
    except ValidationError:
        return observed
    updated = [replace(w, progress=progress) if w is active[-1] else w for w in observed.workloads]
    return replace(observed, workloads=updated)


async def _carry_out(resource: Resource, decision: Decision) -> None:
    kube = STATE.kube
    assert kube is not None
    settings = _manifest_settings()
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


def _post_events(summary: dict[str, Any], decision: Decision) -> None:
    body = {
        "apiVersion": summary["apiVersion"],
        "kind": summary["kind"],
        "metadata": summary["metadata"],
    }
    for event in decision.events:
        try:
            kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message[:1024])
        except LookupError:  # outside kopf's context (unit tests)
            log.info("%s %s: %s", event.type, event.reason, event.message)


def _dependants(key: Key) -> list[Key]:
    namespace = key[0]
    found: list[Key] = []
    for info in KINDS.values():
        for kind, name in _all(STATE.indices.get(f"posttrain_{info.plural}"), (DEPENDANT, *key)):
            found.append((namespace, kind, name))
    return found


async def reconcile(key: Hashable) -> float | None:
    """Reconcile one resource; returns when to look again (seconds) or None."""
    assert isinstance(key, tuple)
    _namespace, kind, _name = key
    summary = _summary(key)
    if summary is None or summary["metadata"].get("deletionTimestamp"):
        return None
    started = time.perf_counter()
    result = "success"
    try:
        try:
            resource = parse_resource(summary)
        except ValidationError as error:
            # The API server accepted what the models reject: report it, never crash.
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())[:4000]
            generation = summary["metadata"].get("generation", 1)
            conditions = [Condition.model_validate(c) for c in (summary["status"].get("conditions") or [])]
            now = timestamp(datetime.now(UTC))
            for type_, value in (("Ready", "False"), ("Progressing", "False")):
                conditions = set_condition(conditions, type_, value, "InvalidSpec", message, generation, now)  # type: ignore[arg-type]
            status = {
                **summary["status"],
                "phase": "Failed",
                "observedGeneration": generation,
                "conditions": [c.wire() for c in conditions],
            }
            await _patch_status(key, summary["status"], status)
            log.warning("%s/%s/%s is invalid: %s", *key, message)
            return None
        decision = plan(observe(resource), _plan_settings(resource), datetime.now(UTC))
        log.debug(
            "%s/%s/%s: %s -> %s, %s",
            *key,
            (summary.get("status") or {}).get("phase"),
            decision.status.get("phase"),
            [type(a).__name__ for a in decision.actions] or "no actions",
        )
        await _carry_out(resource, decision)
        old_status = summary.get("status") or {}
        if decision.status != old_status:
            await _patch_status(key, old_status, decision.status)
            summary["status"] = decision.status  # our own view until the watch event arrives
            # The watch event of this patch brings nothing new: no reconcile for it.
            STATE.seen[key] = _fingerprint(summary["metadata"], decision.status)
        _post_events(summary, decision)
        new_phase = decision.status.get("phase")
        if new_phase != old_status.get("phase"):
            for dependant in _dependants(key):
                STATE.queue.add(dependant, _priority(dependant))
            if new_phase in ("Succeeded", "Failed") and decision.status.get("startTime"):
                start = datetime.strptime(str(decision.status["startTime"]), "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=UTC
                )
                metrics.STAGE_DURATION.labels(kind, new_phase).observe(
                    (datetime.now(UTC) - start).total_seconds()
                )
        if decision.requeue_after is not None:
            result = "requeue_after"
        return decision.requeue_after
    except Exception:
        result = "error"
        metrics.RECONCILE_ERRORS.labels(kind).inc()
        raise
    finally:
        metrics.RECONCILE_TOTAL.labels(kind, result).inc()
        metrics.RECONCILE_TIME.labels(kind).observe(time.perf_counter() - started)


async def _patch_status(key: Key, old: dict[str, Any], new: dict[str, Any]) -> None:
    assert STATE.kube is not None
    patch = merge_patch(old, new)
    if patch:
        await asyncio.to_thread(STATE.kube.patch_status, key[1], key[0], key[2], patch)


def _api_client() -> Any:
    """A client for the cluster the operator runs in, or of the kubeconfig (KUBECONFIG) outside one."""
    from kubernetes import client
    from kubernetes import config as kube_config

    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except kube_config.ConfigException:
        kube_config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    api = client.ApiClient(configuration)
    api.user_agent = USER_AGENT  # tells the operator's requests apart in audit logs
    return api


# --- kopf registration -------------------------------------------------------------------------------


@kopf.on.login()
def _login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials for kopf from the same configuration as the operator's client (in-cluster or
    KUBECONFIG, read when the operator starts rather than when the client library was imported)."""
    configuration = _api_client().configuration
    token = (configuration.api_key or {}).get("authorization", "") or (configuration.api_key or {}).get(
        "BearerToken", ""
    )
    # The in-cluster loader stores "bearer <token>" (lower case), a kubeconfig "Bearer <token>".
    scheme, _, rest = token.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        token = rest
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer" if token else None,
        token=token.strip() or None,
        default_namespace=None,
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that keeps nothing.

    kopf builds a deep copy of every event's body to diff it against the last handled one; only
    on.create/update/field handlers read that diff, and this operator registers none (index and event
    handlers only), so the copy was the largest single cost of processing an event.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    _ensure_started()


def _ensure_started() -> None:
    """Set up the client, the queue and the metrics once per operator run (whichever handler is first).

    A new queue per run: an operator restarted in the same process gets a fresh event loop.
    """
    loop = asyncio.get_running_loop()
    if STATE.queue is not None and STATE.loop is loop:
        return
    STATE.config = OperatorConfig.from_env()
    STATE.reader = ArtifactReader(STATE.config.pvc_root)
    STATE.kube = Kube(_api_client(), qps=STATE.config.qps, burst=STATE.config.burst)
    STATE.indices = {}
    STATE.seen = {}
    STATE.loop = loop
    from posttrain.handlers.workqueue import WorkQueue

    STATE.queue = WorkQueue(reconcile, workers=STATE.config.workers)
    metrics.serve(STATE.config.metrics_port, _phases)


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    if STATE.queue is not None:
        await STATE.queue.stop()
    STATE.queue = None
    STATE.loop = None


def _enqueue(key: Key | None, handler_kwargs: dict[str, Any]) -> None:
    _ensure_started()
    if not STATE.indices:
        # kopf hands its (live) indexes to handlers as keyword arguments; keep them for the workers.
        STATE.indices = {k: v for k, v in handler_kwargs.items() if k.startswith("posttrain_")}
    if key is None:
        return
    if not STATE.queue.started:
        STATE.queue.start()
    STATE.queue.add(key, _priority(key))


def _priority(key: Key) -> int:
    """0 for a resource that may start or finish work, 1 for one still blocked on an input.

    A blocked resource's reconcile can only report `Waiting`; under a burst, the resources that can
    start their workloads go first.
    """
    namespace = key[0]
    for target in _refs_of(*key):
        summary = _summary((namespace, *target))
        if summary is None or (summary.get("status") or {}).get("phase") != "Succeeded":
            return 1
    return 0


def _fingerprint(metadata: dict[str, Any], status: Any) -> tuple[Any, ...]:
    """What of a posttrain resource's watch event can change a reconcile's outcome."""
    return (metadata.get("generation"), bool(metadata.get("deletionTimestamp")), status)


def _react(seen: Hashable, fingerprint: Any, owner: Key | None, handler_kwargs: dict[str, Any]) -> None:
    """Queue `owner` when the watched object `seen` changed since the operator last saw or wrote it.

    Most watch events carry nothing the plan reads: a Job's pod count moving, a pod being scheduled,
    the echo of the operator's own status patch. Reconciling only on a change of the summary the plan
    reads keeps the reconciles per resource near the number of real transitions. `fingerprint=None`:
    the object was deleted.
    """
    _ensure_started()  # a new operator run (event loop) starts with nothing seen
    if fingerprint is None:
        STATE.seen.pop(seen, None)
    elif STATE.seen.get(seen) == fingerprint:
        return
    else:
        STATE.seen[seen] = fingerprint
    _enqueue(owner, handler_kwargs)


def _register() -> None:
    """Register the index and event handlers of every kind and every child type.

    Every handler is a coroutine: kopf runs plain functions in a thread pool, a hand-off per event that
    cost more than the handlers' own work.
    """
    for info in KINDS.values():
        plural = info.plural

        async def index(
            body: kopf.Body, namespace: str, name: str, _kind: str = info.kind, **_: Any
        ) -> dict[Any, Any]:
            refs = sorted(set(_refs(body.get("spec") or {})))
            out: dict[Any, Any] = {
                (OBJECT, namespace, _kind, name): resource_summary(body),
                (REFS, namespace, _kind, name): refs,
            }
            for ref in refs:
                out[(DEPENDANT, namespace, *ref)] = (_kind, name)
            status = body.get("status") or {}
            if status.get("phase") == "Succeeded" and status.get("runId"):
                out[(RUN, namespace, _kind, status["runId"])] = {
                    "name": name,
                    "outputs": dict(status.get("outputs") or {}),
                }
            return out

        kopf.index(GROUP, VERSION, plural, id=f"posttrain_{plural}")(cast(Any, index))

        async def on_resource(
            type: str | None,
            body: kopf.Body,
            namespace: str,
            name: str,
            _kind: str = info.kind,
            **kwargs: Any,
        ) -> None:
            key: Key = (namespace, _kind, name)
            if type == "DELETED":
                STATE.seen.pop(key, None)
                if STATE.queue is not None:
                    STATE.queue.forget(key)
                for dependant in _dependants(key):
                    _enqueue(dependant, kwargs)
                return
            _react(key, _fingerprint(body.get("metadata") or {}, body.get("status")), key, kwargs)

        kopf.on.event(GROUP, VERSION, plural, id=f"event_{plural}")(cast(Any, on_resource))

    children = {
        "posttrain_jobs": ("batch", "v1", "jobs", job_summary),
        "posttrain_teachers": ("apps", "v1", "deployments", deployment_summary),
    }
    for index_id, (group, version, plural, summarise) in children.items():

        async def child_index(
            body: kopf.Body, _summarise: Any = summarise, **_: Any
        ) -> dict[Key, Any] | None:
            owner = owner_of(body)
            return {owner: _summarise(body)} if owner else None

        kopf.index(group, version, plural, id=index_id, labels={LABEL_KIND: kopf.PRESENT})(
            cast(Any, child_index)
        )

        async def on_child(
            type: str | None,
            body: kopf.Body,
            namespace: str,
            name: str,
            _plural: str = plural,
            _summarise: Any = summarise,
            **kwargs: Any,
        ) -> None:
            fingerprint = None if type == "DELETED" else _summarise(body)
            _react((_plural, namespace, name), fingerprint, owner_of(body), kwargs)

        kopf.on.event(group, version, plural, id=f"event_{plural}", labels={LABEL_KIND: kopf.PRESENT})(
            cast(Any, on_child)
        )

    async def pod_index(body: kopf.Body, namespace: str, **_: Any) -> dict[tuple[str, str], Any] | None:
        summary = pod_summary(body)
        return {(namespace, summary["job"]): summary} if summary["job"] else None

    pod_labels: dict[str, Any] = {LABEL_KIND: kopf.PRESENT, LABEL_COMPONENT: "workload"}
    kopf.index("", "v1", "pods", id="posttrain_pods", labels=pod_labels)(cast(Any, pod_index))

    async def on_pod(type: str | None, body: kopf.Body, namespace: str, name: str, **kwargs: Any) -> None:
        # Only a finished pod tells the plan something (exit code, termination message).
        key = ("pods", namespace, name)
        if type == "DELETED":
            STATE.seen.pop(key, None)
            return
        summary = pod_summary(body)
        if summary["phase"] in ("Succeeded", "Failed"):
            _react(key, summary, owner_of(body), kwargs)

    kopf.on.event("", "v1", "pods", id="event_pods", labels=pod_labels)(cast(Any, on_pod))


def _refs(spec: Any) -> Iterable[tuple[str, str]]:
    """(kind, name) of every `from` reference in a raw spec (works on specs the models would reject)."""
    if isinstance(spec, dict):
        ref = spec.get("from")
        if isinstance(ref, dict) and isinstance(ref.get("kind"), str) and isinstance(ref.get("name"), str):
            yield ref["kind"], ref["name"]
        for value in spec.values():
            yield from _refs(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _refs(value)


_register()

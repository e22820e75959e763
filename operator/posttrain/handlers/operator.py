"""The operator's kopf registrations: index and event handlers that hand their events to the reconciler.

kopf keeps in-memory indexes of every posttrain resource and of the Jobs, pods and Deployments the
operator created (see `indexes`); every watch event that changes what the plan reads queues the owning
resource in the `Reconciler`'s work queue. The reconciler of an operator run is made by the startup
handler and kept in kopf's operator memo (each resource's memo is a shallow copy of it), so an operator
restarted in the same process starts afresh.

kopf's own bookkeeping: annotations under `posttrain.dev/` (progress and diff-base storage); only event
and index handlers are registered, which keep no state on the objects. Every handler is a coroutine:
kopf runs plain functions in a thread pool, a hand-off per event that costs more than the handlers' work.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from posttrain.adapters import metrics
from posttrain.adapters.artifacts import ArtifactReader
from posttrain.adapters.client import api_client, connection_info
from posttrain.adapters.kube import Kube
from posttrain.adapters.observe import (
    deployment_summary,
    job_summary,
    owner_of,
    pod_summary,
)
from posttrain.api import curriculum, labels
from posttrain.api.resources import GROUP, KINDS, VERSION
from posttrain.handlers.indexes import (
    JOBS,
    PODS,
    TEACHERS,
    ChildKey,
    IndexEntries,
    Indexes,
    ResourceKey,
    Summary,
    curriculum_of,
    index_id,
    resource_entries,
)
from posttrain.handlers.reconciler import OperatorConfig, Reconciler, fingerprint

CHILD_SUMMARIES = {"jobs": job_summary, "deployments": deployment_summary}
"""How each child type is summarised, by plural."""
CHILD_LABELS: dict[str, Any] = {labels.KIND: kopf.PRESENT}
POD_LABELS: dict[str, Any] = {labels.KIND: kopf.PRESENT, labels.COMPONENT: "workload"}


def reconciler_of(memo: kopf.Memo) -> Reconciler:
    """The reconciler of this operator run."""
    found = memo.get("reconciler")
    assert isinstance(found, Reconciler), "the startup handler makes the reconciler"
    return found


def _owner(body: kopf.Body) -> ResourceKey | None:
    owner = owner_of(body)
    return ResourceKey(*owner) if owner is not None else None


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials for kopf from the same configuration as the operator's client."""
    return connection_info()


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that keeps nothing.

    kopf builds a deep copy of every event's body to diff it against the last handled one; only
    on.create/update/field handlers read that diff, and this operator registers none (index and event
    handlers only), so the copy was the largest single cost of processing an event.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        """Nothing to diff against."""
        return {}

    def fetch(self, *, body: kopf.Body) -> None:
        """No last-handled state."""
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        """Keep nothing."""
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Configure kopf; make the reconciler of this run (client, queue, index views) and serve metrics."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    config = OperatorConfig.from_env()
    # kopf hands its live indexes (empty until the watch streams fill them) to every handler.
    indexes = Indexes(kwargs)
    reconciler = Reconciler(
        config=config,
        indexes=indexes,
        kube=Kube(api_client(), qps=config.qps, burst=config.burst),
        reader=ArtifactReader(config.pvc_root),
    )
    memo["reconciler"] = reconciler
    metrics.serve(config.metrics_port, indexes.phases, gpu_uses=indexes.gpu_uses)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the reconciler's workers."""
    await reconciler_of(memo).stop()


# --- posttrain resources ------------------------------------------------------------------------------


async def index_resource(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> IndexEntries:
    """The index entries of a posttrain resource (registered for every kind)."""
    return resource_entries(body, namespace or "", name)


async def on_resource(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A posttrain resource changed: reconcile it if what the plan reads changed."""
    reconciler = reconciler_of(memo)
    key = ResourceKey(namespace or "", str(body.get("kind")), name)
    owner = curriculum_of(body, namespace or "")
    if type == "DELETED":
        reconciler.forget(key)
        if owner is not None:
            reconciler.enqueue(owner)  # a child deleted by hand is made again
        return
    changed = reconciler.react(key, fingerprint(dict(body.get("metadata") or {}), body.get("status")), key)
    if changed and owner is not None:
        reconciler.enqueue(owner)


for _plural in [*(info.plural for info in KINDS.values()), curriculum.PLURAL]:
    kopf.index(GROUP, VERSION, _plural, id=index_id(_plural))(index_resource)
    kopf.on.event(GROUP, VERSION, _plural, id=f"event_{_plural}")(on_resource)


# --- children -----------------------------------------------------------------------------------------


async def index_child(
    body: kopf.Body, resource: kopf.Resource, **_: Any
) -> dict[ResourceKey, Summary] | None:
    """A Job or Deployment under its owner's key."""
    owner = _owner(body)
    return {owner: CHILD_SUMMARIES[resource.plural](body)} if owner else None


async def on_child(
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    resource: kopf.Resource,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A Job or Deployment changed: reconcile its owner if its summary changed."""
    summary = None if type == "DELETED" else CHILD_SUMMARIES[resource.plural](body)
    reconciler_of(memo).react(ChildKey(resource.plural, namespace or "", name), summary, _owner(body))


for _index, (_group, _plural) in {JOBS: ("batch", "jobs"), TEACHERS: ("apps", "deployments")}.items():
    kopf.index(_group, "v1", _plural, id=_index, labels=CHILD_LABELS)(index_child)
    kopf.on.event(_group, "v1", _plural, id=f"event_{_plural}", labels=CHILD_LABELS)(on_child)


@kopf.index("", "v1", "pods", id=PODS, labels=POD_LABELS)
async def index_pod(body: kopf.Body, namespace: str | None, **_: Any) -> dict[ChildKey, Summary] | None:
    """A workload pod under its Job's key."""
    summary = pod_summary(body)
    return {ChildKey("jobs", namespace or "", summary["job"]): summary} if summary["job"] else None


@kopf.on.event("", "v1", "pods", id="event_pods", labels=POD_LABELS)
async def on_pod(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Only a finished pod tells the plan something (exit code, termination message)."""
    reconciler = reconciler_of(memo)
    key = ChildKey("pods", namespace or "", name)
    if type == "DELETED":
        reconciler.seen.pop(key, None)
        return
    summary = pod_summary(body)
    if summary["phase"] in ("Succeeded", "Failed"):
        reconciler.react(key, summary, _owner(body))

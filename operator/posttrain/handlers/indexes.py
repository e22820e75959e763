"""Typed views of the operator's in-memory indexes (kopf fills them from the watch streams).

One kopf index per posttrain kind holds everything the operator keeps of those resources, so a watch
event costs one index handler, not four. Its entries are told apart by the type of their key (frozen
dataclasses of different types never compare equal, even with equal fields):

- `ResourceKey` -> `ResourceEntry`: the resource's summary and what it reads from,
- `ReadersOf` -> `ResourceKey`: each resource that reads from it,
- `RunKey` -> `RunEntry`: each resource that finished a run, with its result (for reuse).

Children have their own indexes: Jobs and teacher Deployments by their owner's `ResourceKey`, workload
pods by their Job's `ChildKey`. `Indexes` is the only reader of the raw kopf indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from posttrain.adapters.observe import resource_summary
from posttrain.api import curriculum, labels
from posttrain.api.resources import KINDS
from posttrain.api.status import Output
from posttrain.plan.driver import FinishedRun

Ref = tuple[str, str]
"""(kind, name) of a referenced resource (in the referencing resource's namespace)."""
Summary = dict[str, Any]
"""What `adapters.observe` keeps of an object (small dicts, not whole bodies)."""


@dataclass(frozen=True)
class ResourceKey:
    """A posttrain resource: the unit of the work queue."""

    namespace: str
    kind: str
    name: str

    def at(self, ref: Ref) -> ResourceKey:
        """The resource `ref` names, in this resource's namespace."""
        return ResourceKey(self.namespace, *ref)

    def __str__(self) -> str:
        """`namespace/Kind/name` (for logs)."""
        return f"{self.namespace}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class ReadersOf:
    """Index key of the resources that read from `resource`."""

    resource: ResourceKey


@dataclass(frozen=True)
class RunKey:
    """Index key of the resources of a kind that finished a run."""

    namespace: str
    kind: str
    run: str


@dataclass(frozen=True)
class OwnedBy:
    """Index key of the resources a Curriculum created (by their curriculum label)."""

    curriculum: ResourceKey


@dataclass(frozen=True)
class ChildKey:
    """A child object (Job, Deployment, pod).

    The key of what the operator last saw of it (to tell changes from echoes), and, for a Job, the key
    of its workload pod in the pod index.
    """

    plural: str
    namespace: str
    name: str


@dataclass(frozen=True)
class ResourceEntry:
    """What the index keeps of a posttrain resource."""

    summary: Summary
    refs: tuple[Ref, ...]
    """(kind, name) of everything its spec reads from, sorted, each once."""


@dataclass(frozen=True)
class RunEntry:
    """A resource that finished a run: its name, its outputs (wire form) and its metrics.

    The whole result, so a resource that reuses the run gets the status a fresh run gives.
    """

    name: str
    outputs: Mapping[str, Any]
    metrics: Mapping[str, float]


IndexEntries = dict[ResourceKey | ReadersOf | RunKey | OwnedBy, ResourceEntry | ResourceKey | RunEntry]


def index_id(plural: str) -> str:
    """The id (and handler keyword) of the index of one kind."""
    return f"posttrain_{plural}"


JOBS, TEACHERS, PODS = "posttrain_jobs", "posttrain_teachers", "posttrain_pods"
CURRICULA = index_id(curriculum.PLURAL)


def curriculum_of(body: Mapping[str, Any], namespace: str) -> ResourceKey | None:
    """The Curriculum a posttrain resource belongs to (its curriculum label), if any."""
    name = ((body.get("metadata") or {}).get("labels") or {}).get(labels.CURRICULUM)
    if not name or body.get("kind") == curriculum.KIND:
        return None
    return ResourceKey(namespace, curriculum.KIND, str(name))


def resource_entries(body: Mapping[str, Any], namespace: str, name: str) -> IndexEntries:
    """The index entries of one posttrain resource."""
    key = ResourceKey(namespace, str(body.get("kind")), name)
    if key.kind == curriculum.KIND:
        # A curriculum reads nothing itself: its children hold the references.
        return {key: ResourceEntry(resource_summary(body), ())}
    refs = tuple(sorted(set(raw_refs(body.get("spec") or {}))))
    entries: IndexEntries = {key: ResourceEntry(resource_summary(body), refs)}
    owner = curriculum_of(body, namespace)
    if owner is not None:
        entries[OwnedBy(owner)] = key
    for ref in refs:
        entries[ReadersOf(key.at(ref))] = key
    status = body.get("status") or {}
    if status.get("phase") == "Succeeded" and status.get("runId"):
        entries[RunKey(namespace, key.kind, status["runId"])] = RunEntry(
            name, dict(status.get("outputs") or {}), dict(status.get("metrics") or {})
        )
    return entries


def raw_refs(spec: Any) -> Iterator[Ref]:
    """(kind, name) of every `from` reference in a raw spec (works on specs the models would reject)."""
    if isinstance(spec, dict):
        ref = spec.get("from")
        if isinstance(ref, dict) and isinstance(ref.get("kind"), str) and isinstance(ref.get("name"), str):
            yield ref["kind"], ref["name"]
        for value in spec.values():
            yield from raw_refs(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from raw_refs(value)


class Indexes:
    """Typed reads of kopf's live indexes (handed to handlers as keyword arguments)."""

    def __init__(self, indices: Mapping[str, Any]) -> None:
        """Views of the posttrain indexes among kopf's handler keyword arguments."""
        self._indices = {k: v for k, v in indices.items() if k.startswith("posttrain_")}

    def _all(self, index_name: str, key: object) -> list[Any]:
        index = self._indices.get(index_name)
        store = index.get(key) if index is not None else None
        return list(store) if store else []

    def _first(self, index_name: str, key: object) -> Any:
        found = self._all(index_name, key)
        return found[0] if found else None

    def _of_kind(self, kind: str) -> str:
        if kind == curriculum.KIND:
            return CURRICULA
        return index_id(KINDS[kind].plural) if kind in KINDS else ""

    def owned(self, key: ResourceKey) -> list[ResourceKey]:
        """The resources (of the five kinds) labelled as the curriculum `key`'s."""
        found: list[ResourceKey] = []
        for info in KINDS.values():
            found.extend(self._all(index_id(info.plural), OwnedBy(key)))
        return found

    def entry(self, key: ResourceKey) -> ResourceEntry | None:
        """The index entry of a resource, if it exists."""
        entry = self._first(self._of_kind(key.kind), key)
        return entry if isinstance(entry, ResourceEntry) else None

    def summary(self, key: ResourceKey) -> Summary | None:
        """The summary of a resource, if it exists."""
        entry = self.entry(key)
        return entry.summary if entry is not None else None

    def refs(self, key: ResourceKey) -> tuple[Ref, ...]:
        """What a resource reads from (nothing if it does not exist)."""
        entry = self.entry(key)
        return entry.refs if entry is not None else ()

    def readers(self, key: ResourceKey) -> list[ResourceKey]:
        """The resources (of every kind) that read from `key`."""
        found: list[ResourceKey] = []
        for info in KINDS.values():
            found.extend(self._all(index_id(info.plural), ReadersOf(key)))
        return found

    def finished_runs(self, namespace: str, kind: str, run: str) -> list[FinishedRun]:
        """Resources of `kind` whose status records `run` as Succeeded."""
        entries: list[RunEntry] = self._all(self._of_kind(kind), RunKey(namespace, kind, run))
        return [
            FinishedRun(
                e.name,
                {n: Output.model_validate(o) for n, o in e.outputs.items()},
                {n: float(v) for n, v in e.metrics.items()},
            )
            for e in entries
        ]

    def jobs(self, key: ResourceKey) -> list[Summary]:
        """Summaries of the resource's Jobs."""
        return self._all(JOBS, key)

    def pod(self, namespace: str, job: str) -> Summary | None:
        """The summary of a Job's workload pod, if it has one."""
        summary: Summary | None = self._first(PODS, ChildKey("jobs", namespace, job))
        return summary

    def teachers(self, key: ResourceKey) -> list[Summary]:
        """Summaries of the resource's teacher Deployments."""
        return self._all(TEACHERS, key)

    def gpu_uses(self) -> Iterable[tuple[str, str, str, int, str | None, str | None]]:
        """(namespace, kind, name, GPUs, start, end) of every workload Job (for the GPU-seconds gauge)."""
        for key in list(self._indices.get(JOBS) or []):
            if isinstance(key, ResourceKey):
                for job in self._all(JOBS, key):
                    yield (
                        key.namespace,
                        key.kind,
                        key.name,
                        int(job.get("gpus") or 0),
                        job.get("start"),
                        job.get("end"),
                    )

    def phases(self) -> Iterable[tuple[str, str]]:
        """(kind, phase) of every resource (for the resource gauge)."""
        for info in KINDS.values():
            index = self._indices.get(index_id(info.plural))
            for key in list(index or []):
                entry = self._first(index_id(info.plural), key) if isinstance(key, ResourceKey) else None
                if isinstance(entry, ResourceEntry):
                    yield info.kind, (entry.summary.get("status") or {}).get("phase") or "Pending"

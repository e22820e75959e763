"""The operator's typed index views: one kopf index per kind, entries told apart by the type of the key."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from posttrain.handlers.indexes import (
    Indexes,
    ReadersOf,
    ResourceEntry,
    ResourceKey,
    RunKey,
    index_id,
    resource_entries,
)


def body(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ml", "generation": 1},
        "spec": spec,
        "status": status or {},
    }


def indexes_of(*bodies: dict[str, Any]) -> Indexes:
    """The kopf indexes as plain mappings of key -> values (a Store is an iterable of values)."""
    raw: dict[str, dict[Any, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for item in bodies:
        plural = {"TrainStage": "trainstages", "DataSlice": "dataslices"}[item["kind"]]
        for key, value in resource_entries(item, "ml", item["metadata"]["name"]).items():
            raw[index_id(plural)][key].append(value)
    return Indexes(raw)


DATA = body(
    "DataSlice",
    "d",
    {"sources": [{"uri": "pvc://x"}]},
    {
        "phase": "Succeeded",
        "runId": "r1",
        "outputs": {"dataset": {"uri": "pvc://out", "rows": 3}},
        "metrics": {"kept": 3, "dedup.removed": 1.5},
    },
)
STAGE = body(
    "TrainStage",
    "t",
    {
        "method": "sft",
        "model": {"from": {"kind": "TrainStage", "name": "base"}},
        "dataset": {"from": {"kind": "DataSlice", "name": "d"}},
    },
)


def test_keys_of_different_views_never_collide() -> None:
    key = ResourceKey("ml", "DataSlice", "d")
    readers: object = ReadersOf(key)  # the views are distinct types: only a test compares them
    assert key != readers and readers != RunKey("ml", "DataSlice", "d")
    entries = resource_entries(DATA, "ml", "d")
    assert isinstance(entries[key], ResourceEntry)
    assert set(entries) == {key, RunKey("ml", "DataSlice", "r1")}


def test_views_read_summaries_refs_readers_and_finished_runs() -> None:
    indexes = indexes_of(DATA, STAGE)
    stage, data = ResourceKey("ml", "TrainStage", "t"), ResourceKey("ml", "DataSlice", "d")
    assert indexes.refs(stage) == (("DataSlice", "d"), ("TrainStage", "base"))
    assert indexes.refs(ResourceKey("ml", "TrainStage", "missing")) == ()
    assert indexes.readers(data) == [stage]
    summary = indexes.summary(data)
    assert summary is not None and summary["status"]["phase"] == "Succeeded"
    [finished] = indexes.finished_runs("ml", "DataSlice", "r1")
    assert finished.name == "d" and finished.outputs["dataset"].rows == 3
    # The metrics too: a resource that reuses the run gets the status a fresh run gives.
    assert finished.metrics == {"kept": 3.0, "dedup.removed": 1.5}
    assert indexes.finished_runs("ml", "Unknown", "r1") == []
    assert sorted(indexes.phases()) == [("DataSlice", "Succeeded"), ("TrainStage", "Pending")]
    assert indexes.jobs(stage) == [] and indexes.pod("ml", "job") is None and indexes.teachers(stage) == []

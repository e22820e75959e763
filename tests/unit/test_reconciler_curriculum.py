"""The operator's Curriculum reconcile without a cluster: what it applies, skips, removes and writes."""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict
from typing import Any, cast

from posttrain.adapters.artifacts import ArtifactReader
from posttrain.adapters.kube import Kube
from posttrain.api.curriculum import PLURAL
from posttrain.api.resources import KINDS
from posttrain.handlers.indexes import (
    Indexes,
    OwnedBy,
    ResourceKey,
    curriculum_of,
    index_id,
    resource_entries,
)
from posttrain.handlers.reconciler import OperatorConfig, Reconciler
from posttrain.plan.curriculum import chain, parse_curriculum

from tests.unit.plan.test_curriculum import body as curriculum_body

KEY = ResourceKey("ns", "Curriculum", "wiz")


class FakeKube:
    """Records what the reconciler asks of the API server."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.statuses: list[dict[str, Any]] = []

    def apply(self, body: dict[str, Any]) -> None:
        self.applied.append(body)

    def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append((kind, namespace, name))
        return True

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)


def indexes(*bodies: dict[str, Any]) -> Indexes:
    plurals = {info.kind: info.plural for info in KINDS.values()} | {"Curriculum": PLURAL}
    raw: dict[str, dict[Any, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for item in bodies:
        entries = resource_entries(item, "ns", item["metadata"]["name"])
        for key, value in entries.items():
            raw[index_id(plurals[item["kind"]])][key].append(value)
    return Indexes(raw)


def the_curriculum(**spec: Any) -> dict[str, Any]:
    document = curriculum_body(**spec)
    document["metadata"]["uid"] = "uid-1"
    document["status"] = {}
    return document


OWNED = [{"apiVersion": "posttrain.dev/v1alpha1", "kind": "Curriculum", "name": "wiz", "uid": "uid-1"}]


def child(name: str, owners: list[dict[str, Any]] = OWNED, **changes: Any) -> dict[str, Any]:
    """A child as the chain has it, as the API server would show it (with a namespace and its owners)."""
    found = next(c for c in chain(parse_curriculum(the_curriculum())) if c["metadata"]["name"] == name)
    out = copy.deepcopy(found)
    out["metadata"]["namespace"] = "ns"
    out["metadata"]["ownerReferences"] = owners
    out["spec"].update(changes)
    out["status"] = {}
    return out


def reconcile(*bodies: dict[str, Any]) -> FakeKube:
    kube = FakeKube()
    reconciler = Reconciler(OperatorConfig(workers=1), indexes(*bodies), cast(Kube, kube), ArtifactReader())

    async def scenario() -> None:
        await reconciler.reconcile(KEY)
        await reconciler.stop()

    asyncio.run(scenario())
    return kube


def test_a_new_curriculum_applies_the_first_stage_owned_by_it() -> None:
    kube = reconcile(the_curriculum())
    names = [b["metadata"]["name"] for b in kube.applied]
    assert names == ["wiz-data", "wiz-s1-evol", "wiz-s1-align", "wiz-s1-sft", "wiz-s1-dpo", "wiz-s1-gate"]
    for body in kube.applied:
        assert body["metadata"]["namespace"] == "ns"
        (owner,) = body["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Curriculum",
            "wiz",
            "uid-1",
            True,
        )
        assert body["metadata"]["labels"]["posttrain.dev/curriculum"] == "wiz"
    assert kube.deleted == []
    (status,) = kube.statuses
    assert status["phase"] == "Running" and status["stageSummary"] == "1/3"
    assert status["stages"][0]["phase"] == "Pending"  # nothing of it exists yet


def test_a_child_that_already_has_its_spec_is_not_applied_again_and_one_that_differs_is() -> None:
    kube = reconcile(the_curriculum(), child("wiz-data"), child("wiz-s1-evol", evol={"rounds": 9}))
    names = [b["metadata"]["name"] for b in kube.applied]
    assert "wiz-data" not in names and "wiz-s1-evol" in names


def test_a_child_from_the_rendered_manifests_is_adopted() -> None:
    kube = reconcile(the_curriculum(), child("wiz-data", owners=[]))
    adopted = next(b for b in kube.applied if b["metadata"]["name"] == "wiz-data")
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_a_labelled_child_that_is_not_wanted_is_removed() -> None:
    stray = child("wiz-s1-evol")
    stray["metadata"]["name"] = "wiz-s9-evol"
    assert curriculum_of(stray, "ns") == KEY
    assert indexes(stray).owned(KEY) == [ResourceKey("ns", "EvolJob", "wiz-s9-evol")]
    kube = reconcile(the_curriculum(), stray)
    assert kube.deleted == [("EvolJob", "ns", "wiz-s9-evol")]


def test_an_invalid_chain_applies_and_removes_nothing() -> None:
    bad = the_curriculum(overrides=[{"stage": 1, "sft": {"train": {"epochs": -1}}}])
    kube = reconcile(bad, child("wiz-data"))
    assert kube.applied == [] and kube.deleted == []
    (status,) = kube.statuses
    assert status["phase"] == "Failed"
    assert "TrainStage/wiz-s1-sft: spec.train.epochs" in next(
        c["message"] for c in status["conditions"] if c["type"] == "Ready"
    )


def test_an_invalid_curriculum_spec_is_reported_not_raised() -> None:
    bad = the_curriculum()
    bad["spec"]["stages"] = 0
    kube = reconcile(bad)
    assert kube.applied == []
    (status,) = kube.statuses
    assert status["phase"] == "Failed"
    assert next(c for c in status["conditions"] if c["type"] == "Stalled")["status"] == "True"


def test_owned_by_keys_only_come_from_the_curriculum_label() -> None:
    plain = child("wiz-s1-evol")
    del plain["metadata"]["labels"]
    assert curriculum_of(plain, "ns") is None
    assert not any(isinstance(k, OwnedBy) for k in resource_entries(plain, "ns", "wiz-s1-evol"))

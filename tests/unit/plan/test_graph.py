"""The dependency graph: edges from references, missing resources, cycles and the run order."""

from __future__ import annotations

from typing import Any

import pytest
from posttrain.api.resources import Resource
from posttrain.plan.graph import Graph

from tests.unit.plan.plan_builders import examples, from_ref, make, sft_spec


def stage(name: str, model: str | None = None, dataset: dict[str, Any] | None = None) -> Resource:
    """An SFT stage starting from another stage's model (or a base model URI)."""
    spec = sft_spec(dataset)
    if model is not None:
        spec["model"] = from_ref("TrainStage", model)
    return make("TrainStage", name, spec)


def keys(*names: str) -> list[tuple[str, str]]:
    return [("TrainStage", n) for n in names]


def test_edges_come_from_references_only_with_the_output_named_or_defaulted() -> None:
    data = make(
        "DataSlice", "data", {"sources": [{"uri": "pvc://d/a"}, from_ref("EvolJob", "e", "rankings")]}
    )
    train = stage("t", model="base", dataset=from_ref("DataSlice", "data"))
    graph = Graph.build([data, train])
    assert graph.needs[("DataSlice", "data")] == [("sources[1]", ("EvolJob", "e"), "rankings")]
    assert graph.needs[("TrainStage", "t")] == [
        ("model", ("TrainStage", "base"), "model"),
        ("dataset", ("DataSlice", "data"), "dataset"),
    ]
    assert set(graph.resources) == {("DataSlice", "data"), ("TrainStage", "t")}


def test_missing_references_are_listed_with_the_field() -> None:
    graph = Graph.build(
        [
            stage("a", model="gone"),
            stage("b", dataset=from_ref("EvolJob", "nope")),
            stage("c"),
            stage("d", model="c"),
        ]
    )
    assert graph.missing() == [
        "TrainStage/a: spec.model: TrainStage/gone does not exist",
        "TrainStage/b: spec.dataset: EvolJob/nope does not exist",
    ]
    assert graph.cycle() is None
    assert graph.order() == keys("a", "b", "c", "d")


def test_no_cycle_in_a_chain_or_a_diamond() -> None:
    chain = Graph.build([stage("c", model="b"), stage("b", model="a"), stage("a")])
    assert chain.cycle() is None
    assert chain.order() == keys("a", "b", "c")
    top = make("DataSlice", "top", {"sources": [{"uri": "pvc://d/x"}]})
    left = stage("left", dataset=from_ref("DataSlice", "top"))
    right = stage("right", dataset=from_ref("DataSlice", "top"))
    bottom = stage("bottom", model="left", dataset=from_ref("DataSlice", "top"))
    bottom2 = make(
        "TrainStage",
        "bottom2",
        {**sft_spec(from_ref("DataSlice", "top")), "model": from_ref("TrainStage", "right")},
    )
    diamond = Graph.build([bottom, bottom2, left, right, top])
    assert diamond.cycle() is None
    assert diamond.order() == [
        ("DataSlice", "top"),
        ("TrainStage", "left"),
        ("TrainStage", "bottom"),
        ("TrainStage", "right"),
        ("TrainStage", "bottom2"),
    ]


def test_a_two_cycle_is_found_from_either_end() -> None:
    graph = Graph.build([stage("a", model="b"), stage("b", model="a")])
    assert graph.cycle() == keys("a", "b", "a")
    assert Graph.build([stage("b", model="a"), stage("a", model="b")]).cycle() == keys("b", "a", "b")


def test_a_self_reference_is_a_cycle() -> None:
    assert Graph.build([stage("a", model="a")]).cycle() == keys("a", "a")


def test_a_cycle_behind_an_acyclic_start_is_found_without_the_start() -> None:
    # x -> a -> b -> c -> a: the cycle is a, b, c; x only leads into it. y reads a missing resource.
    graph = Graph.build(
        [
            stage("y", model="missing"),
            stage("x", model="a"),
            stage("a", model="b"),
            stage("b", model="c"),
            stage("c", model="a"),
        ]
    )
    assert graph.cycle() == keys("a", "b", "c", "a")


def test_a_finished_branch_is_not_revisited() -> None:
    # d is fully explored from a; the search from b meets it again (state done) and goes on to the cycle.
    graph = Graph.build([stage("a", model="d"), stage("d"), stage("b", model="d"), stage("c", model="c")])
    assert graph.cycle() == keys("c", "c")


def test_order_refuses_a_cycle() -> None:
    graph = Graph.build([stage("a", model="b"), stage("b", model="a")])
    with pytest.raises(ValueError, match=r"reference cycle: TrainStage/a -> TrainStage/b -> TrainStage/a"):
        graph.order()


def test_cycle_of_names_the_cycle_each_resource_is_part_of() -> None:
    graph = Graph.build(
        [
            stage("a", model="b"),
            stage("b", model="a"),
            stage("c", model="d"),
            stage("d", model="c"),
            stage("e", model="a"),
            stage("s", model="s"),
            stage("f", model="missing"),
        ]
    )
    assert graph.cycle_of(("TrainStage", "a")) == keys("a", "b", "a")
    assert graph.cycle_of(("TrainStage", "b")) == keys("b", "a", "b")
    assert graph.cycle_of(("TrainStage", "d")) == keys("d", "c", "d")
    assert graph.cycle_of(("TrainStage", "s")) == keys("s", "s")
    assert graph.cycle_of(("TrainStage", "e")) is None, "only leads into a cycle"
    assert graph.cycle_of(("TrainStage", "f")) is None
    assert graph.cycle_of(("TrainStage", "unknown")) is None


def test_cycle_of_follows_the_first_edge_that_closes_a_cycle() -> None:
    # a -> b -> (a | c), c -> a: the first cycle through a in edge order is a, b, a.
    b = make(
        "TrainStage", "b", {**sft_spec(from_ref("TrainStage", "c")), "model": from_ref("TrainStage", "a")}
    )
    graph = Graph.build([stage("a", model="b"), b, stage("c", model="a")])
    assert graph.needs[("TrainStage", "b")][0][1] == ("TrainStage", "a")
    assert graph.cycle_of(("TrainStage", "a")) == keys("a", "b", "a")
    assert graph.cycle_of(("TrainStage", "c")) == keys("c", "a", "b", "c")


def test_long_chains_need_no_deep_recursion() -> None:
    names = [f"s{i}" for i in range(3000)]
    resources = [stage(names[0])] + [stage(n, model=names[i]) for i, n in enumerate(names[1:])]
    graph = Graph.build(list(reversed(resources)))
    assert graph.cycle() is None
    assert graph.order() == keys(*names)
    assert graph.cycle_of(("TrainStage", names[-1])) is None
    looped = Graph.build([stage(names[0], model=names[-1]), *resources[1:]])
    # s0 reads s2999, which reads s2998, ... s1 reads s0.
    assert looped.cycle() == keys(names[0], *reversed(names[1:]), names[0])


def test_the_examples_order_inputs_first() -> None:
    for folder in ("quickstart", "progressive"):
        resources = examples(folder)
        graph = Graph.build(resources)
        order = graph.order()
        assert sorted(order) == sorted(r.key for r in resources)
        position = {key: i for i, key in enumerate(order)}
        for key, edges in graph.needs.items():
            for _, target, _ in edges:
                assert position[target] < position[key], (folder, key, target)
    quickstart = Graph.build(examples("quickstart")).order()
    assert quickstart[0] == ("DataSlice", "seed-data")
    assert quickstart[-2:] == [("TrainStage", "rleif"), ("AlignRound", "arena-final")]

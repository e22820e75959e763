"""The driver core both drivers share: per-resource cycles, the run order around cycles, reuse lookups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from posttrain.api.status import Output
from posttrain.plan.driver import FinishedRun, Key, complete, wants_reuse
from posttrain.plan.graph import Graph
from posttrain.plan.reconcile import current_run, output_uri
from posttrain.plan.types import Observed

from tests.unit.plan.plan_builders import SETTINGS, active, make, output, sft, sft_spec, with_status
from tests.unit.plan.test_graph import keys, stage


@dataclass
class FakeLookups:
    """Lookups from a graph, a table of finished runs and a table of stored results."""

    graph: Graph
    finished: dict[tuple[str, str], list[FinishedRun]] = field(default_factory=dict)
    stored: dict[str, dict[str, Output]] = field(default_factory=dict)

    def refs_of(self, key: Key) -> Iterable[Key]:
        return self.graph.refs_of(key)

    def finished_runs(self, kind: str, run: str) -> Iterable[FinishedRun]:
        return self.finished.get((kind, run), [])

    def stored_outputs(self, uri: str) -> dict[str, Output] | None:
        return self.stored.get(uri)


def test_every_cycle_is_listed_once_and_the_acyclic_part_keeps_its_order() -> None:
    graph = Graph.build(
        [
            *(stage("x", model="a"), stage("a", model="b"), stage("b", model="a")),
            *(stage("c", model="d"), stage("d", model="c"), stage("late", model="base"), stage("base")),
        ]
    )
    assert graph.cycles() == [keys("a", "b", "a"), keys("c", "d", "c")]
    assert graph.problems() == [
        "reference cycle: TrainStage/a -> TrainStage/b -> TrainStage/a",
        "reference cycle: TrainStage/c -> TrainStage/d -> TrainStage/c",
    ]
    order = graph.run_order()
    assert sorted(order) == sorted(graph.resources)
    assert order.index(("TrainStage", "base")) < order.index(("TrainStage", "late"))
    assert order.index(("TrainStage", "a")) < order.index(("TrainStage", "x"))


def test_each_resource_of_each_cycle_gets_its_own_cycle() -> None:
    graph = Graph.build(
        [stage("a", model="b"), stage("b", model="a"), stage("c", model="d"), stage("d", model="c")]
    )
    lookups = FakeLookups(graph)
    for name, other in (("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")):
        resource = graph.resources[("TrainStage", name)]
        observed = complete(Observed(resource), lookups, SETTINGS)
        assert observed.cycle == keys(name, other, name)


def test_a_finished_run_of_another_resource_of_the_kind_is_reusable() -> None:
    resource = sft("second")
    run = current_run(Observed(resource))
    assert run is not None
    outputs = {"model": output("x/model")}
    lookups = FakeLookups(
        Graph.build([resource]),
        finished={("TrainStage", run): [FinishedRun("second", {}), FinishedRun("first", outputs)]},
    )
    observed = complete(Observed(resource), lookups, SETTINGS)
    assert (observed.reusable, observed.reusable_from) == (outputs, "TrainStage/first")
    # Not once an attempt of the run exists.
    assert complete(Observed(resource, workloads=[active(run)]), lookups, SETTINGS).reusable is None


def test_a_result_left_in_the_content_addressed_folder_is_reusable() -> None:
    resource = sft()
    run = current_run(Observed(resource))
    assert run is not None
    outputs = {"model": output("y/model")}
    folder = output_uri(resource, SETTINGS, run)
    observed = complete(
        Observed(resource), FakeLookups(Graph.build([resource]), stored={folder: outputs}), SETTINGS
    )
    assert observed.reusable == outputs and observed.reusable_from == f"an earlier run ({folder})"


def test_reuse_is_looked_for_only_before_the_run_starts() -> None:
    resource = make("TrainStage", "s", sft_spec())
    run = current_run(Observed(resource))
    assert run is not None
    assert wants_reuse(Observed(resource), run)
    assert wants_reuse(Observed(with_status(resource, {"runId": "older", "phase": "Succeeded"})), run)
    teachers_starting = with_status(resource, {"runId": run, "attempt": 0, "phase": "Running"})
    assert wants_reuse(Observed(teachers_starting), run)
    started = with_status(resource, {"runId": run, "attempt": 1, "phase": "Running"})
    assert not wants_reuse(Observed(started), run)
    reused = with_status(resource, {"runId": run, "attempt": 0, "phase": "Succeeded"})
    assert not wants_reuse(Observed(reused), run)
    assert not wants_reuse(Observed(resource, workloads=[active(run)]), run)

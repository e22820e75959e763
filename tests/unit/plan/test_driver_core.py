"""The driver core both drivers share: per-resource cycles, the run order around cycles, reuse lookups."""

from __future__ import annotations

from posttrain.api.status import Output
from posttrain.api.workload import Result, ResultOutput
from posttrain.plan.driver import FinishedRun, Lookups, complete, wants_reuse
from posttrain.plan.graph import Graph
from posttrain.plan.reconcile import current_run, output_uri
from posttrain.plan.types import Observed, ReusableRun

from tests.unit.plan.plan_builders import SETTINGS, active, make, output, sft, sft_spec, with_status
from tests.unit.plan.test_graph import keys, stage


def lookups(
    graph: Graph,
    finished: dict[tuple[str, str], list[FinishedRun]] | None = None,
    stored: dict[str, Result] | None = None,
) -> Lookups:
    """Lookups from a graph, a table of finished runs and (unless None) a table of stored results."""
    runs = finished or {}

    def finished_runs(kind: str, run: str) -> list[FinishedRun]:
        return runs.get((kind, run), [])

    if stored is None:
        return Lookups(graph.refs_of, finished_runs)
    return Lookups(graph.refs_of, finished_runs, stored.get)


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
    by_graph = lookups(graph)
    for name, other in (("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")):
        resource = graph.resources[("TrainStage", name)]
        observed = complete(Observed(resource), by_graph, SETTINGS)
        assert observed.cycle == keys(name, other, name)


def test_a_finished_run_of_another_resource_of_the_kind_is_reusable() -> None:
    resource = sft("second")
    run = current_run(Observed(resource))
    assert run is not None
    outputs = {"model": output("x/model")}
    first = FinishedRun("first", outputs, {"loss": 0.25})
    with_runs = lookups(
        Graph.build([resource]),
        finished={("TrainStage", run): [FinishedRun("second", {}), first]},
    )
    observed = complete(Observed(resource), with_runs, SETTINGS)
    # The whole result, metrics too: the reusing resource's conditions are decided from them.
    assert observed.reusable == ReusableRun("TrainStage/first", outputs, {"loss": 0.25})
    # Not once an attempt of the run exists.
    assert complete(Observed(resource, workloads=[active(run)]), with_runs, SETTINGS).reusable is None


def test_a_result_left_in_the_content_addressed_folder_is_reusable() -> None:
    resource = sft()
    run = current_run(Observed(resource))
    assert run is not None
    folder = output_uri(resource, SETTINGS, run)
    document = Result(
        outputs={"model": ResultOutput(uri="y/model", rows=5, digest="sha256:y")}, metrics={"loss": 0.5}
    )
    observed = complete(
        Observed(resource), lookups(Graph.build([resource]), stored={folder: document}), SETTINGS
    )
    expected = {"model": Output(uri="y/model", rows=5, digest="sha256:y")}
    assert observed.reusable == ReusableRun(f"an earlier run ({folder})", expected, {"loss": 0.5})


def test_a_stored_result_that_does_not_fit_the_status_is_not_reused() -> None:
    resource = sft()
    run = current_run(Observed(resource))
    assert run is not None
    folder = output_uri(resource, SETTINGS, run)
    unfit = Result(outputs={"model": ResultOutput(uri="u" * 3000)})
    observed = complete(
        Observed(resource), lookups(Graph.build([resource]), stored={folder: unfit}), SETTINGS
    )
    assert observed.reusable is None


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


def test_nothing_is_reusable_when_no_run_finished_and_nothing_is_stored() -> None:
    resource = sft()
    graph = Graph.build([resource])
    elsewhere = Result(outputs={"model": ResultOutput(uri="z")})
    for found_by in (lookups(graph), lookups(graph, stored={"pvc://elsewhere": elsewhere})):
        observed = complete(Observed(resource), found_by, SETTINGS)
        assert (observed.reusable, observed.cycle) == (None, None)

"""The plan's side of budgets and of the model-call cache.

A run that stopped at its budget succeeds with reason `BudgetExhausted` (its partial outputs are
usable downstream); the budget is part of the content hash; every workload is told where the
namespace's model-call cache is, and knows each model by an identity that does not depend on the
driver (a local server's port or a cluster Service's name).
"""

from __future__ import annotations

from typing import Any

from posttrain.api.workload import BUDGET_EXHAUSTED_REASON, Endpoint, Result, ResultOutput
from posttrain.plan.reconcile import current_run, plan
from posttrain.plan.types import ModelCacheSettings, Observed, ObservedTeacher, Settings
from posttrain.support.times import timestamp

from tests.support import kstatus
from tests.unit.plan.plan_builders import (
    SETTINGS,
    T0,
    conditions,
    done_input,
    evol,
    external,
    from_ref,
    make,
    served,
    starts,
    status_document,
    succeeded,
    teacher,
)

BUDGET = {"tokens": {"teacher": 1000}, "requests": 50}


def partial_result() -> Result:
    return Result(
        outputs={"dataset": ResultOutput(uri="pvc://posttrain/artifacts/evoljobs/r/dataset.jsonl", rows=3)},
        metrics={"kept": 2.0, "budget.exhausted": 1.0},
        budget_exhausted="tokens of teacher: 1040 of 1000",
    )


def test_a_run_stopped_at_its_budget_succeeds_with_reason_budget_exhausted_and_its_partial_outputs() -> None:
    resource = evol(budget=BUDGET)
    run = current_run(Observed(resource))
    assert run is not None
    decision = plan(Observed(resource, workloads=[succeeded(run, res=partial_result())]), SETTINGS, T0)
    assert decision.status["phase"] == "Succeeded"
    assert status_document(decision)["outputs"]["dataset"]["rows"] == 3
    by_type = conditions(decision)
    ready = by_type["Ready"]
    assert (ready.status, ready.reason) == ("True", BUDGET_EXHAUSTED_REASON)
    assert "tokens of teacher: 1040 of 1000" in ready.message and "partial" in ready.message
    assert (by_type["Progressing"].status, by_type["Progressing"].reason) == (
        "False",
        BUDGET_EXHAUSTED_REASON,
    )
    assert ("Warning", BUDGET_EXHAUSTED_REASON) in [(e.type, e.reason) for e in decision.events]
    # Current for kstatus (Flux, Argo CD): the stages after it go on with the partial output.
    body = {"metadata": {"generation": 1}, "status": decision.status}
    assert kstatus.compute(body).status == "Current"


def test_a_run_within_its_budget_succeeds_as_before() -> None:
    resource = evol(budget=BUDGET)
    run = current_run(Observed(resource))
    assert run is not None
    whole = Result(outputs=partial_result().outputs, metrics={"kept": 2.0})
    decision = plan(Observed(resource, workloads=[succeeded(run, res=whole)]), SETTINGS, T0)
    assert conditions(decision)["Ready"].reason == "Succeeded"


def test_the_budget_is_part_of_the_content_hash() -> None:
    # A larger budget is a new run, which replays what the first paid for from the model-call cache.
    small = current_run(Observed(evol(budget=BUDGET)))
    larger = current_run(Observed(evol(budget={**BUDGET, "requests": 500})))
    unset = current_run(Observed(evol()))
    assert len({small, larger, unset}) == 3


def test_a_workload_is_told_the_run_start_its_gpus_and_the_namespace_cache() -> None:
    resource = make(
        "EvolJob",
        "evol",
        {
            "dataset": {"uri": "pvc://data/seed.jsonl"},
            "teachers": [
                {**served("teacher"), "served": {"model": {"uri": "pvc://m/t"}, "gpus": 2, "replicas": 2}}
            ],
            "resources": {"gpus": 1},
        },
        namespace="ml",
    )
    decision = plan(Observed(resource, teachers=[teacher("teacher")]), SETTINGS, T0)
    (start,) = starts(decision)
    config = start.config
    assert config.started_at == timestamp(T0) == decision.status["startTime"]
    assert config.gpus == 2 * 2 + 1
    assert config.model_cache is not None
    assert config.model_cache.uri == "pvc://posttrain/artifacts/model-calls/ml"
    assert config.model_cache.max_bytes is None


def cache_uri(resource: Any, settings: Settings) -> str | None:
    decision = plan(Observed(resource, teachers=[teacher("teacher")]), settings, T0)
    (start,) = starts(decision)
    return start.config.model_cache.uri if start.config.model_cache is not None else None


def test_the_cache_lies_in_the_artifact_root_unless_the_driver_names_another_place_or_turns_it_off() -> None:
    store = "s3://bucket/posttrain"
    own_store = evol(artifacts={"uri": "s3://team/outputs/"})
    assert cache_uri(evol(), Settings(artifact_root=store)) == f"{store}/model-calls/ml"
    assert cache_uri(own_store, Settings(artifact_root=store)) == "s3://team/outputs/model-calls/ml"
    elsewhere = Settings(artifact_root=store, model_cache=ModelCacheSettings.parse("s3://cache/", "1000"))
    assert cache_uri(evol(), elsewhere) == "s3://cache/ml"
    assert (
        cache_uri(evol(), Settings(artifact_root=store, model_cache=ModelCacheSettings.parse("off"))) is None
    )
    limited = plan(Observed(evol(), teachers=[teacher("teacher")]), elsewhere, T0)
    config = starts(limited)[0].config.model_cache
    assert config is not None and config.max_bytes == 1000


def test_the_local_runner_and_the_operator_pointed_at_one_store_give_workloads_the_same_cache_and_identities() -> (
    None
):
    store = "s3://bucket/posttrain"
    # The EvolJob reads a model another resource trained: its identity is that output's digest.
    spec = {
        "dataset": {"uri": "s3://bucket/seed.jsonl"},
        "teachers": [served("teacher", from_ref("TrainStage", "sft")), external("judge", secret=False)],
    }
    resource = make("EvolJob", "evol", spec)
    inputs = {("TrainStage", "sft"): done_input("model")}
    local = ObservedTeacher(
        "teacher", "local-1", True, Endpoint(base_url="http://127.0.0.1:41234/v1", model="/m")
    )
    cluster = ObservedTeacher(
        "teacher",
        "evol-teacher",
        True,
        Endpoint(base_url="http://evol-teacher.ml.svc:8000/v1", model="teacher"),
    )
    configs = []
    for served_by in (local, cluster):
        decision = plan(
            Observed(resource, teachers=[served_by], inputs=inputs), Settings(artifact_root=store), T0
        )
        configs.append(starts(decision)[0].config)
    on_laptop, in_cluster = configs
    assert on_laptop.model_cache == in_cluster.model_cache
    assert on_laptop.endpoints["teacher"].base_url != in_cluster.endpoints["teacher"].base_url
    assert on_laptop.endpoints["teacher"].identity == in_cluster.endpoints["teacher"].identity
    assert on_laptop.endpoints["teacher"].identity == f"weights:{done_input('model').outputs['model'].digest}"
    assert on_laptop.endpoints["judge"].identity == "endpoint:judge-model"


def test_model_cache_settings_reject_a_size_that_is_not_positive() -> None:
    for bad in ("0", "-5"):
        try:
            ModelCacheSettings.parse(None, bad)
        except ValueError as error:
            assert "positive" in str(error)
        else:
            raise AssertionError(f"{bad} accepted")
    assert ModelCacheSettings.parse("", "") == ModelCacheSettings()

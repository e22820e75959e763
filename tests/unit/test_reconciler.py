"""The reconciler's event handling without a cluster: what is queued, when, and at which priority."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from kubernetes import client
from posttrain.adapters.artifacts import ArtifactReader
from posttrain.adapters.kube import Kube
from posttrain.handlers.indexes import ChildKey, ResourceKey
from posttrain.handlers.reconciler import OperatorConfig, Reconciler, fingerprint
from posttrain.plan.types import ModelCacheSettings

from tests.unit.test_indexes import DATA, STAGE, indexes_of

STAGE_KEY, DATA_KEY = ResourceKey("ml", "TrainStage", "t"), ResourceKey("ml", "DataSlice", "d")


def recorded(events: list[tuple[str, object]]) -> list[Hashable]:
    """Feed the events to a reconciler whose reconcile only records the key; the keys reconciled."""
    handled: list[Hashable] = []

    async def record(key: Hashable) -> float | None:
        handled.append(key)
        return None

    async def scenario() -> None:
        reconciler = Reconciler(
            OperatorConfig(workers=1), indexes_of(DATA, STAGE), Kube(client.ApiClient()), ArtifactReader()
        )
        reconciler.queue.handler = record
        for event, value in events:
            if event == "forget":
                reconciler.forget(DATA_KEY)
            else:
                reconciler.react(ChildKey("jobs", "ml", "j"), value, STAGE_KEY)
            for _ in range(5):
                await asyncio.sleep(0)
        await reconciler.stop()

    asyncio.run(scenario())
    return handled


def test_only_a_changed_summary_queues_the_owner() -> None:
    first, moved = {"state": "active"}, {"state": "succeeded"}
    events: list[tuple[str, object]] = [("job", first), ("job", dict(first)), ("job", moved), ("job", None)]
    assert recorded(events) == [STAGE_KEY, STAGE_KEY, STAGE_KEY]


def test_a_deleted_resource_queues_its_readers() -> None:
    assert recorded([("forget", None)]) == [STAGE_KEY]


def test_blocked_resources_wait_behind_those_that_can_work() -> None:
    reconciler = Reconciler(
        OperatorConfig(), indexes_of(DATA, STAGE), Kube(client.ApiClient()), ArtifactReader()
    )
    assert reconciler.priority(DATA_KEY) == 0
    assert reconciler.priority(STAGE_KEY) == 1  # reads TrainStage/base, which does not exist
    assert fingerprint({"generation": 2}, {"phase": "Running"}) == (2, False, {"phase": "Running"})


def test_the_metrics_of_a_run_stopped_at_its_budget_are_counted_and_a_reused_result_is_not() -> None:
    from prometheus_client import REGISTRY

    reconciler = Reconciler(
        OperatorConfig(), indexes_of(DATA, STAGE), Kube(client.ApiClient()), ArtifactReader()
    )
    for name, reason in (("stopped", "BudgetExhausted"), ("reused", "Reused"), ("done", "Succeeded")):
        status = {
            "phase": "Succeeded",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": reason,
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "metrics": {"tokens.prompt.teacher": 7.0},
        }
        reconciler._phase_changed(ResourceKey("budgets", "EvolJob", name), status)
    counted = {
        name: REGISTRY.get_sample_value(
            "posttrain_teacher_tokens_total",
            {"namespace": "budgets", "kind": "EvolJob", "name": name, "teacher": "teacher", "type": "prompt"},
        )
        for name in ("stopped", "reused", "done")
    }
    assert counted == {"stopped": 7.0, "reused": None, "done": 7.0}
    asyncio.run(reconciler.stop())


def test_the_model_cache_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTTRAIN_MODEL_CACHE", "s3://shared/model-calls")
    monkeypatch.setenv("POSTTRAIN_MODEL_CACHE_MAX_BYTES", "1000")
    assert OperatorConfig.from_env().model_cache == ModelCacheSettings(
        root="s3://shared/model-calls", max_bytes=1000
    )
    monkeypatch.setenv("POSTTRAIN_MODEL_CACHE", "off")
    monkeypatch.delenv("POSTTRAIN_MODEL_CACHE_MAX_BYTES")
    assert not OperatorConfig.from_env().model_cache.enabled
    monkeypatch.delenv("POSTTRAIN_MODEL_CACHE")
    assert OperatorConfig.from_env().model_cache == ModelCacheSettings()

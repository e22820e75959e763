"""The workload metrics the operator exports from finished runs' results (adapters/metrics.py)."""

from __future__ import annotations

import uuid

from posttrain.adapters import metrics
from posttrain.api.metrics import Align
from posttrain.api.workload import Endpoint
from posttrain_trainer.client import Teachers
from prometheus_client import REGISTRY


def sample(family: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(family, labels)


def resource() -> dict[str, str]:
    """Labels of a resource no other test counted for (the registry is the process's)."""
    return {"namespace": "team", "kind": "EvolJob", "name": f"evol-{uuid.uuid4().hex[:8]}"}


def test_teacher_requests_and_tokens_come_from_the_client_counters() -> None:
    """The keys the trainer's teacher client writes are the ones the operator reads."""
    teachers = Teachers(
        {
            "teacher-a": Endpoint(base_url="http://a.invalid/v1", model="a"),
            "teacher-b": Endpoint(base_url="http://b.invalid/v1", model="b"),
        }
    )
    teachers.stats["teacher-a"].requests = 40
    teachers.stats["teacher-a"].prompt_tokens = 4000
    teachers.stats["teacher-a"].completion_tokens = 9000
    teachers.stats["teacher-b"].requests = 2
    teachers.stats["teacher-b"].completion_tokens = 300
    teachers.stats["teacher-b"].retries = 5
    labels = resource()
    metrics.record_result(labels["kind"], labels["name"], labels["namespace"], teachers.metrics())

    assert sample("posttrain_teacher_requests_total", **labels, teacher="teacher-a") == 40
    assert sample("posttrain_teacher_requests_total", **labels, teacher="teacher-b") == 2
    assert sample("posttrain_teacher_tokens_total", **labels, teacher="teacher-a", type="prompt") == 4000
    assert sample("posttrain_teacher_tokens_total", **labels, teacher="teacher-a", type="completion") == 9000
    assert sample("posttrain_teacher_tokens_total", **labels, teacher="teacher-b", type="completion") == 300
    # Nothing read, nothing counted: no series with a zero that was never measured.
    assert sample("posttrain_teacher_tokens_total", **labels, teacher="teacher-b", type="prompt") is None
    assert sample("posttrain_workload_requests_total", **labels) == 42
    # Retries and failures per teacher are not requests.
    assert sample("posttrain_teacher_requests_total", **labels, teacher="retried.teacher-b") is None


def test_a_second_run_adds_to_the_counters() -> None:
    labels = resource()
    for _ in range(2):
        metrics.record_result(
            labels["kind"], labels["name"], labels["namespace"], {"tokens.completion.t": 5.0}
        )
    assert sample("posttrain_teacher_tokens_total", **labels, teacher="t", type="completion") == 10


def test_judge_verdicts_and_swap_disagreements_of_an_align_round() -> None:
    labels = {**resource(), "kind": "AlignRound"}
    result: dict[str, float] = {
        Align.BATTLES: 22.0,
        Align.BATTLES_KEPT: 18.0,
        Align.BATTLES_INCONSISTENT: 4.0,
        Align.VERDICTS_UNPARSED: 8.0,
        Align.REQUESTS_SENT: 120.0,
        Align.STUDENT_WIN_RATE: 0.2,
    }
    metrics.record_result(labels["kind"], labels["name"], labels["namespace"], result)
    assert sample("posttrain_judge_battles_total", **labels, outcome="kept") == 18
    assert sample("posttrain_judge_battles_total", **labels, outcome="dropped") == 4
    assert sample("posttrain_judge_swap_disagreements_total", **labels) == 4
    assert sample("posttrain_judge_unparsed_verdicts_total", **labels) == 8
    assert sample("posttrain_workload_requests_total", **labels) == 120


def test_results_without_those_metrics_count_nothing() -> None:
    labels = {**resource(), "kind": "TrainStage"}
    metrics.record_result(labels["kind"], labels["name"], labels["namespace"], {"loss": 0.5, "steps": 10.0})
    metrics.record_result(
        labels["kind"],
        labels["name"],
        labels["namespace"],
        {"requests.sent": float("nan"), "tokens.prompt.t": -1.0},
    )
    for family in ("posttrain_workload_requests_total", "posttrain_judge_swap_disagreements_total"):
        assert sample(family, **labels) is None
    assert sample("posttrain_teacher_tokens_total", **labels, teacher="t", type="prompt") is None


def test_gpu_seconds_of_finished_failed_and_running_jobs() -> None:
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    uses: list[metrics.GpuUse] = [
        ("ns", "TrainStage", "sft", 8, "2025-12-31T23:00:00Z", "2025-12-31T23:30:00Z"),  # 8 x 1800 s
        ("ns", "TrainStage", "sft", 8, "2025-12-31T23:40:00Z", None),  # retry, running: 8 x 1200 s
        ("ns", "RewardModel", "irm", 2, "2025-12-31T23:50:00Z", "2025-12-31T23:55:00Z"),  # failed: 2 x 300
        ("ns", "DataSlice", "mix", 0, "2025-12-31T23:00:00Z", "2025-12-31T23:10:00Z"),  # CPU only
        ("ns", "TrainStage", "dpo", 4, None, None),  # not started
    ]
    assert metrics.gpu_seconds(uses, now) == {
        ("ns", "TrainStage", "sft"): 8 * 1800 + 8 * 1200,
        ("ns", "RewardModel", "irm"): 2 * 300,
    }


def test_the_gpu_seconds_gauge_is_read_from_the_index_when_scraped() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    uses: list[metrics.GpuUse] = [
        ("ns", "TrainStage", "sft", 1, "2025-12-31T23:00:00Z", "2025-12-31T23:00:10Z")
    ]
    metrics.serve(0, lambda: [("TrainStage", "Succeeded")], registry, gpu_uses=lambda: uses)
    text = generate_latest(registry).decode()
    assert 'posttrain_workload_gpu_seconds{kind="TrainStage",name="sft",namespace="ns"} 10.0' in text
    assert 'posttrain_resources{kind="TrainStage",phase="Succeeded"} 1.0' in text


def test_model_cache_hits_and_misses_budget_stops_and_wall_time_of_a_run() -> None:
    labels = resource()
    result = {"cache.hits": 90.0, "cache.misses": 10.0, "budget.exhausted": 1.0, "usage.wallSeconds": 42.5}
    metrics.record_result(labels["kind"], labels["name"], labels["namespace"], result)
    assert sample("posttrain_model_cache_lookups_total", **labels, result="hit") == 90
    assert sample("posttrain_model_cache_lookups_total", **labels, result="miss") == 10
    assert sample("posttrain_budget_exhausted_total", **labels) == 1
    assert sample("posttrain_workload_wall_seconds_total", **labels) == 42.5
    within = resource()
    metrics.record_result(within["kind"], within["name"], within["namespace"], {"budget.exhausted": 0.0})
    assert sample("posttrain_budget_exhausted_total", **within) is None

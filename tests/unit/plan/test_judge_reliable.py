"""The `JudgeReliable` condition: decided by the plan from an AlignRound's result and its thresholds."""

from __future__ import annotations

from typing import Any

from posttrain.api.status import Status
from posttrain.api.workload import Result, ResultOutput
from posttrain.plan.judging import judge_reliability
from posttrain.plan.reconcile import plan, run_id
from posttrain.plan.types import Observed

from tests.unit.plan.plan_builders import SETTINGS, T0, conditions, external, make, succeeded, with_spec


def align_round(**reliability: Any) -> Any:
    spec: dict[str, Any] = {
        "datasets": [{"uri": "pvc://data/instructions.jsonl"}],
        "student": external("student", secret=False),
        "teachers": [external("teacher", secret=False)],
        "judges": [external("judge", secret=False)],
    }
    if reliability:
        spec["align"] = {"reliability": reliability}
    return make("AlignRound", "align", spec)


def finished(resource: Any, metrics: dict[str, float]) -> Status:
    run = run_id(resource, {"datasets[0]": "pvc://data/instructions.jsonl"})
    res = Result(outputs={"preferences": ResultOutput(uri="pvc://out/p", rows=3)}, metrics=metrics)
    decision = plan(Observed(resource, workloads=[succeeded(run, res=res)]), SETTINGS, T0)
    status = Status.model_validate(decision.status)
    assert status.phase == "Succeeded"
    return status


def judge_reliable(status: Status) -> tuple[str, str, str]:
    found = {c.type: c for c in status.conditions}["JudgeReliable"]
    return found.status, found.reason, found.message


def test_a_round_within_every_threshold_is_reliable_with_its_figures_in_the_message() -> None:
    status = finished(
        align_round(),
        {
            "reliability.swapPairs": 40,
            "reliability.positionFlips": 0.1,
            "reliability.positionFlips.judge": 0.1,
        },
    )
    state, reason, message = judge_reliable(status)
    assert (state, reason) == ("True", "Reliable")
    assert "position flips 0.10 (max 0.30)" in message and "over 40 swapped verdict pairs" in message
    assert "judge agreement not measured (min 0.60)" in message
    assert "positionFlips judge=0.10" in message


def test_a_position_biased_round_is_unreliable_and_names_the_measure() -> None:
    status = finished(align_round(), {"reliability.swapPairs": 40, "reliability.positionFlips": 1.0})
    state, reason, message = judge_reliable(status)
    assert (state, reason) == ("False", "PositionBias")
    assert "position flips 1.00 (max 0.30)" in message
    # Ready is unaffected: the round itself succeeded.
    assert {c.type: c for c in status.conditions}["Ready"].status == "True"


def test_every_failing_measure_is_in_the_reason() -> None:
    metrics = {
        "reliability.positionFlips": 0.5,
        "judgeAgreement": 0.2,
        "reliability.selfPreference": 0.4,
        "reliability.anchorDrift": 0.6,
    }
    state, reason, _ = judge_reliable(finished(align_round(), metrics))
    assert (state, reason) == ("False", "PositionBias,JudgesDisagree,SelfPreference,AnchorDrift")


def test_the_thresholds_come_from_the_spec() -> None:
    metrics = {"reliability.positionFlips": 0.5, "reliability.anchorDrift": 0.1}
    strict = align_round(maxPositionFlips=0.6, maxAnchorDrift=0.05)
    state, reason, message = judge_reliable(finished(strict, metrics))
    assert (state, reason) == ("False", "AnchorDrift")
    assert "anchor drift 0.10 (max 0.05)" in message and "position flips 0.50 (max 0.60)" in message


def test_nothing_measured_is_unknown_not_reliable() -> None:
    assert judge_reliable(finished(align_round(), {"reliability.swapPairs": 0}))[:2] == (
        "Unknown",
        "NotMeasured",
    )


def test_other_kinds_get_no_judge_condition() -> None:
    resource = make(
        "TrainStage", "sft", {"method": "sft", "model": {"uri": "pvc://m"}, "dataset": {"uri": "pvc://d"}}
    )
    run = run_id(resource, {"model": "pvc://m", "dataset": "pvc://d"})
    res = Result(outputs={"model": ResultOutput(uri="pvc://out/m")}, metrics={"loss": 0.1})
    decision = plan(Observed(resource, workloads=[succeeded(run, res=res)]), SETTINGS, T0)
    assert decision.status["phase"] == "Succeeded" and "JudgeReliable" not in conditions(decision)


def test_a_new_run_drops_the_verdict_of_the_last_one() -> None:
    resource = align_round()
    status = finished(resource, {"reliability.positionFlips": 1.0})
    changed = with_spec(resource.model_copy(update={"status": status}), 2, align={"seed": 7})
    decision = plan(Observed(changed), SETTINGS, T0)
    assert decision.status["phase"] != "Succeeded" and "JudgeReliable" not in conditions(decision)


def test_the_decision_is_a_pure_function_of_spec_and_metrics() -> None:
    spec = align_round().spec
    first = judge_reliability(spec, {"reliability.positionFlips": 0.31})
    assert first == judge_reliability(spec, {"reliability.positionFlips": 0.31})
    assert (
        first.status == "False"
        and judge_reliability(spec, {"reliability.positionFlips": 0.3}).status == "True"
    )

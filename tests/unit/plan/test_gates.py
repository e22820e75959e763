"""Promotion gates: an AlignRound with `spec.promotion` says whether its student beat `previous`."""

from __future__ import annotations

from typing import Any

import pytest
from posttrain.api.align import GateRule
from posttrain.api.workload import Result, ResultOutput
from posttrain.plan.gates import decide_gate

from tests.unit.plan.plan_builders import T0, Driver, make, status_document


def gate_round(**promotion: Any) -> Driver:
    """A standalone gate: a new TrainStage model (student) against the one it started from."""
    spec = {
        "datasets": [{"uri": "pvc://posttrain/eval.jsonl"}],
        "evalSet": {"uri": "pvc://posttrain/eval.jsonl"},
        "student": {"name": "dpo-2", "endpoint": {"baseUrl": "http://dpo-2/v1", "model": "dpo-2"}},
        "teachers": [{"name": "dpo-1", "endpoint": {"baseUrl": "http://dpo-1/v1", "model": "dpo-1"}}],
        "judges": [{"name": "judge", "endpoint": {"baseUrl": "http://judge/v1", "model": "j"}}],
        "align": {"coTeaching": {"enabled": False}, "arena": {"reference": "dpo-1", "referenceElo": 1000}},
        "promotion": {"previous": "dpo-1", **promotion},
    }
    return Driver(make("AlignRound", "dpo-2-gate", spec))


def finish(driver: Driver, metrics: dict[str, float]) -> dict[str, Any]:
    driver.step(T0)
    names = ["sft", "preferences", "battles", "elo", "skill-gaps"]
    outputs = {n: ResultOutput(uri=f"pvc://out/{n}", rows=1, digest=f"sha256:{n}") for n in names}
    driver.set_workload(1, "succeeded", exit_code=0, result=Result(outputs=outputs, metrics=metrics))
    decision = driver.step(T0)
    assert decision.status["phase"] == "Succeeded"
    return next(c for c in status_document(decision)["conditions"] if c["type"] == "Promoted")


def test_a_standalone_gate_promotes_when_the_interval_clears_the_previous_model() -> None:
    promoted = finish(gate_round(), {"elo.dpo-2": 1050, "eloLow.dpo-2": 1020, "elo.dpo-1": 1000})
    assert promoted["status"] == "True" and promoted["reason"] == "Promoted"
    assert "gain +50" in promoted["message"]
    rejected = finish(gate_round(), {"elo.dpo-2": 1010, "eloLow.dpo-2": 990, "elo.dpo-1": 1000})
    assert rejected["status"] == "False" and rejected["reason"] == "NotPromoted"


def test_a_standalone_gate_by_win_rate() -> None:
    promoted = finish(gate_round(rule="winRate", minWinRate=0.6), {"studentWinRate": 0.65})
    assert promoted["status"] == "True" and "win rate 0.65" in promoted["message"]


def test_a_round_without_promotion_has_no_promoted_condition() -> None:
    driver = gate_round()
    spec = driver.resource.spec.model_copy(update={"promotion": None})
    driver.resource = driver.resource.model_copy(update={"spec": spec})
    driver.step(T0)
    driver.set_workload(1, "succeeded", exit_code=0, result=Result(outputs={}, metrics={"elo.dpo-2": 1.0}))
    decision = driver.step(T0)
    assert "Promoted" not in {c["type"] for c in status_document(decision)["conditions"]}


def test_previous_must_be_a_teacher() -> None:
    with pytest.raises(ValueError, match="must name one of the teachers"):
        gate_round(previous="nobody")


def test_the_verdict_rule_is_shared_with_curricula() -> None:
    rule = GateRule(rule="eloGain", min_elo_gain=25)
    verdict = decide_gate(rule, "s", "p", {"elo.s": 1050, "eloLow.s": 1020, "elo.p": 1000}, [])
    assert not verdict.promoted and "above +25" in verdict.message

"""Promotion gates: an AlignRound with `spec.promotion` says whether its student beat `previous`."""

from __future__ import annotations

from typing import Any

import pytest
from posttrain.api.align import GateRule
from posttrain.api.status import Status
from posttrain.api.workload import Result, ResultOutput
from posttrain.plan.driver import FinishedRun, Lookups, complete
from posttrain.plan.gates import decide_gate
from posttrain.plan.reconcile import plan
from posttrain.plan.types import Observed

from tests.unit.plan.plan_builders import SETTINGS, T0, Driver, make, renamed, status_document


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


def test_a_gate_without_figures_is_inconclusive() -> None:
    inconclusive = finish(gate_round(), {})
    assert (inconclusive["status"], inconclusive["reason"]) == ("False", "GateInconclusive")


RELIABLE = {"reliability.swapPairs": 40, "reliability.positionFlips": 0.1}


@pytest.mark.parametrize(
    "figures",
    [
        {"elo.dpo-2": 1050, "eloLow.dpo-2": 1020, "elo.dpo-1": 1000, **RELIABLE},
        {"elo.dpo-2": 1010, "eloLow.dpo-2": 990, "elo.dpo-1": 1000, **RELIABLE},
        {
            "elo.dpo-2": 1050,
            "eloLow.dpo-2": 1020,
            "elo.dpo-1": 1000,
            "reliability.swapPairs": 40,
            "reliability.positionFlips": 0.9,
        },
    ],
    ids=["promoted", "not-promoted", "unreliable"],
)
def test_a_gate_reused_under_another_name_gets_the_status_of_the_run_it_reuses(
    figures: dict[str, float],
) -> None:
    fresh = gate_round()
    finish(fresh, figures)
    made = fresh.status
    assert made.run_id is not None

    def finished_runs(kind: str, run: str) -> list[FinishedRun]:
        found = kind == "AlignRound" and run == made.run_id
        return (
            [FinishedRun(fresh.resource.metadata.name, dict(made.outputs), dict(made.metrics))]
            if found
            else []
        )

    copy = renamed(fresh.resource, "dpo-2-gate-again")
    observed = complete(Observed(copy), Lookups(lambda key: (), finished_runs), SETTINGS)
    decision = plan(observed, SETTINGS, T0)
    reused = Status.model_validate(decision.status)
    assert decision.actions == []
    assert (reused.phase, reused.run_id, reused.attempt) == ("Succeeded", made.run_id, 0)
    assert reused.outputs == made.outputs and reused.metrics == made.metrics
    by_type = {c.type: c for c in reused.conditions}
    for type_ in ("JudgeReliable", "Promoted"):
        expected = next(c for c in made.conditions if c.type == type_)
        assert (by_type[type_].status, by_type[type_].reason, by_type[type_].message) == (
            expected.status,
            expected.reason,
            expected.message,
        )
    assert by_type["Ready"].reason == "Reused"
    assert by_type["Ready"].message == "reused the finished result of AlignRound/dpo-2-gate (same content)"


def test_previous_must_be_a_teacher() -> None:
    with pytest.raises(ValueError, match="must name one of the teachers"):
        gate_round(previous="nobody")


def test_the_verdict_rule_is_shared_with_curricula() -> None:
    rule = GateRule(rule="eloGain", min_elo_gain=25)
    verdict = decide_gate(rule, "s", "p", {"elo.s": 1050, "eloLow.s": 1020, "elo.p": 1000}, [])
    assert not verdict.promoted and "above +25" in verdict.message

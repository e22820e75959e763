"""kstatus' Stalled and Reconciling conditions, and a block that travels down a chain of references.

kstatus (Flux's `wait`, kpt) reports Failed only from `Stalled=True` and InProgress from
`Reconciling=True`; these tests pin which decisions set which, and that a resource whose input is
blocked, at any depth, is blocked too with the root cause in its message.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from posttrain.api.status import UNOBSERVED, Condition
from posttrain.plan.conditions import stalled_message, with_kstatus_conditions
from posttrain.plan.reconcile import plan, run_id
from posttrain.plan.types import Decision, InputState, Observed

from tests.support import kstatus
from tests.unit.plan.plan_builders import (
    SETTINGS,
    T0,
    active,
    at,
    conditions,
    done_input,
    failed,
    from_ref,
    input_in,
    make,
    result,
    sft,
    status_document,
    with_status,
)

URI_INPUTS = {"model": "pvc://models/base", "dataset": "pvc://data/sft.jsonl"}


def pair(decision: Decision) -> tuple[tuple[str, str], tuple[str, str]]:
    """(Stalled, Reconciling) as (status, reason)."""
    by_type = conditions(decision)
    return (
        (by_type["Stalled"].status, by_type["Stalled"].reason),
        (by_type["Reconciling"].status, by_type["Reconciling"].reason),
    )


def verdict(decision: Decision, generation: int = 1) -> str:
    """The kstatus verdict on the object with this status."""
    obj = {"kind": "TrainStage", "metadata": {"generation": generation}, "status": decision.status}
    return kstatus.compute(obj).status


def reading(kind: str, name: str, resource: str = "down") -> Any:
    """A DPO stage whose model is `kind/name`."""
    return make(
        "TrainStage",
        resource,
        {"method": "dpo", "model": from_ref(kind, name), "preferences": {"uri": "pvc://data/p.jsonl"}},
    )


def test_a_running_workload_is_reconciling() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    decision = plan(Observed(resource, workloads=[active(run)]), SETTINGS, T0)
    assert pair(decision) == (("False", "WorkloadRunning"), ("True", "WorkloadRunning"))
    assert conditions(decision)["Reconciling"].message == conditions(decision)["Progressing"].message
    assert verdict(decision) == "InProgress"


def test_backing_off_before_a_retry_is_reconciling() -> None:
    resource = sft(retries={"limit": 1, "backoffSeconds": 60})
    decision = plan(Observed(resource, workloads=[failed(run_id(resource, URI_INPUTS))]), SETTINGS, T0)
    assert pair(decision) == (("False", "BackOff"), ("True", "BackOff"))
    assert verdict(decision) == "InProgress"


def test_failing_after_the_retries_stalls_with_the_cause() -> None:
    resource = sft(retries={"limit": 0})
    observed = Observed(resource, workloads=[failed(run_id(resource, URI_INPUTS), message="out of memory")])
    decision = plan(observed, SETTINGS, T0)
    assert decision.status["phase"] == "Failed"
    assert pair(decision) == (("True", "WorkloadFailed"), ("False", "WorkloadFailed"))
    stalled = conditions(decision)["Stalled"]
    assert stalled.message == conditions(decision)["Ready"].message and "out of memory" in stalled.message
    assert verdict(decision) == "Failed"


def test_a_success_is_neither_and_current() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    observed = Observed(
        resource, workloads=[replace(active(run), state="succeeded", result=result(model="m"))]
    )
    decision = plan(observed, SETTINGS, T0)
    assert pair(decision) == (("False", "Succeeded"), ("False", "Succeeded"))
    assert verdict(decision) == "Current"


@pytest.mark.parametrize(
    ("state", "reason", "stalls"),
    [
        (input_in("Running"), "InputNotReady", False),
        (InputState(exists=False), "InputMissing", True),
        (input_in("Failed"), "InputFailed", True),
        (done_input("other"), "OutputMissing", True),
        (replace(input_in("Waiting"), stalled="input TrainStage/root failed"), "InputBlocked", True),
    ],
)
def test_waiting_stalls_only_for_what_waiting_does_not_resolve(
    state: InputState, reason: str, stalls: bool
) -> None:
    decision = plan(Observed(reading("TrainStage", "up"), inputs={("TrainStage", "up"): state}), SETTINGS, T0)
    assert decision.status["phase"] == "Waiting"
    expected = ("True", reason) if stalls else ("False", reason)
    assert pair(decision)[0] == expected
    assert pair(decision)[1] == (("False" if stalls else "True"), reason)
    assert conditions(decision)["Stalled"].message == conditions(decision)["InputsReady"].message
    assert verdict(decision) == ("Failed" if stalls else "InProgress")


def test_a_reference_cycle_stalls() -> None:
    resource = reading("TrainStage", "b", "a")
    cycle = [("TrainStage", "a"), ("TrainStage", "b"), ("TrainStage", "a")]
    observed = Observed(resource, inputs={("TrainStage", "b"): input_in("Waiting")}, cycle=cycle)
    decision = plan(observed, SETTINGS, T0)
    assert pair(decision)[0] == ("True", "ReferenceCycle")
    assert verdict(decision) == "Failed"


def test_members_of_a_cycle_do_not_quote_each_other() -> None:
    """Within a cycle every member is stalled: taking up each other's messages would never settle."""
    cycle = [("TrainStage", "a"), ("TrainStage", "b"), ("TrainStage", "a")]
    b_stalled = replace(input_in("Waiting"), stalled="reference cycle: TrainStage/b -> TrainStage/a")
    observed = Observed(reading("TrainStage", "b", "a"), inputs={("TrainStage", "b"): b_stalled}, cycle=cycle)
    decision = plan(observed, SETTINGS, T0)
    stalled = conditions(decision)["Stalled"]
    assert stalled.reason == "ReferenceCycle" and "is blocked" not in stalled.message


def test_a_block_travels_down_a_chain_naming_the_root_cause() -> None:
    """Root fails; mid reads root, leaf reads mid, tail reads leaf: each is blocked, root named."""
    root = sft("root", retries={"limit": 0})
    root_failed = plan(Observed(root, workloads=[failed(run_id(root, URI_INPUTS))]), SETTINGS, T0)
    chain = [("mid", "root"), ("leaf", "mid"), ("tail", "leaf")]
    upstream = root_failed
    for name, reads in chain:
        status = status_document(upstream)
        state = InputState(
            exists=True,
            phase=status["phase"],
            stalled=stalled_message([Condition.model_validate(c) for c in status["conditions"]]),
        )
        decision = plan(
            Observed(reading("TrainStage", reads, name), inputs={("TrainStage", reads): state}), SETTINGS, T0
        )
        stalled = conditions(decision)["Stalled"]
        assert stalled.status == "True" and "TrainStage/root failed" in stalled.message, (name, stalled)
        assert verdict(decision) == "Failed"
        upstream = decision
    assert conditions(upstream)["Stalled"].message == (
        "input TrainStage/leaf is blocked: input TrainStage/mid is blocked: input TrainStage/root failed"
    )
    assert conditions(upstream)["InputsReady"].reason == "InputBlocked"


def test_a_block_lifts_when_the_input_is_no_longer_stalled() -> None:
    blocked = plan(
        Observed(
            reading("TrainStage", "up"),
            inputs={("TrainStage", "up"): replace(input_in("Waiting"), stalled="x")},
        ),
        SETTINGS,
        T0,
    )
    resource = with_status(reading("TrainStage", "up"), blocked.status)
    again = plan(Observed(resource, inputs={("TrainStage", "up"): input_in("Running")}), SETTINGS, at(5))
    assert pair(again) == (("False", "InputNotReady"), ("True", "InputNotReady"))
    assert (
        conditions(again)["Stalled"].last_transition_time
        != conditions(blocked)["Stalled"].last_transition_time
    )


def test_a_new_object_defaulted_by_the_crd_is_planned_like_one_without_a_status() -> None:
    resource = sft()
    defaulted = with_status(resource, UNOBSERVED)
    assert plan(Observed(defaulted), SETTINGS, T0) == plan(Observed(resource), SETTINGS, T0)


def test_the_pair_follows_the_phase_for_any_status() -> None:
    ready = Condition(type="Ready", status="Unknown", reason="WorkloadRunning", last_transition_time="t")
    out = with_kstatus_conditions([ready], "Running", 2, "t2")
    assert [c.type for c in out] == ["Ready", "Stalled", "Reconciling"]
    assert {c.type: (c.status, c.reason, c.observed_generation) for c in out if c.type != "Ready"} == {
        "Stalled": ("False", "Running", 2),
        "Reconciling": ("True", "Running", 2),
    }

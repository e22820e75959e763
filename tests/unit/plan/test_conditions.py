"""KEP-1623 conditions: setting one keeps the others and the order.

The lastTransitionTime is kept unless the status changes.
"""

from __future__ import annotations

from posttrain.api.status import Condition
from posttrain.plan.conditions import ORDER, get_condition, set_condition


def cond(type: str, status: str, reason: str = "R", time: str = "2025-01-01T00:00:00Z") -> Condition:
    return Condition.model_validate(
        {
            "type": type,
            "status": status,
            "reason": reason,
            "observedGeneration": 1,
            "lastTransitionTime": time,
        }
    )


def test_a_new_condition_gets_the_time_and_generation() -> None:
    out = set_condition([], "Ready", "Unknown", "Reconciling", "first", 3, "2025-01-02T00:00:00Z")
    assert out == [
        Condition(
            type="Ready",
            status="Unknown",
            reason="Reconciling",
            message="first",
            observed_generation=3,
            last_transition_time="2025-01-02T00:00:00Z",
        )
    ]


def test_same_status_keeps_the_transition_time_but_takes_reason_message_generation() -> None:
    old = [cond("Ready", "Unknown", "WorkloadRunning")]
    out = set_condition(old, "Ready", "Unknown", "BackOff", "retry soon", 2, "2025-01-05T00:00:00Z")
    (ready,) = out
    assert ready.last_transition_time == "2025-01-01T00:00:00Z"
    assert (ready.reason, ready.message, ready.observed_generation) == ("BackOff", "retry soon", 2)
    assert old[0].reason == "WorkloadRunning", "the input list is not modified"


def test_a_status_change_moves_the_transition_time() -> None:
    out = set_condition(
        [cond("Ready", "Unknown")], "Ready", "True", "Succeeded", "", 1, "2025-01-05T00:00:00Z"
    )
    assert out[0].status == "True"
    assert out[0].last_transition_time == "2025-01-05T00:00:00Z"


def test_other_conditions_are_kept_and_the_order_is_fixed() -> None:
    progressing = cond("Progressing", "True", "WorkloadRunning")
    ready = cond("Ready", "Unknown")
    out = set_condition([progressing, ready], "InputsReady", "True", "InputsSucceeded", "", 1, "t")
    assert [c.type for c in out] == list(ORDER[:3])
    assert out[0] == ready and out[2] == progressing


def test_a_long_message_is_cut_to_fit_the_schema() -> None:
    out = set_condition([], "Ready", "False", "WorkloadFailed", "x" * 40000, 1, "t")
    assert len(out[0].message) == 32000


def test_get_condition() -> None:
    conditions = [cond("Ready", "True"), cond("Progressing", "False")]
    assert get_condition(conditions, "Progressing") == conditions[1]
    assert get_condition(conditions, "InputsReady") is None
    assert get_condition([], "Ready") is None

"""A spec the API server accepted but the models reject fails the resource (the plan's verdict)."""

from __future__ import annotations

import pytest
from posttrain.api.resources import Resource
from posttrain.api.status import Status
from posttrain.plan.reconcile import invalid_spec
from pydantic import ValidationError

from tests.unit.plan.plan_builders import API_VERSION, at, stamp


def rejection() -> ValidationError:
    body = {
        "apiVersion": API_VERSION,
        "kind": "TrainStage",
        "metadata": {"name": "t"},
        "spec": {"method": "sft"},
    }
    with pytest.raises(ValidationError) as caught:
        Resource.parse(body)
    return caught.value


def test_an_invalid_spec_fails_with_the_field_paths_and_keeps_the_rest_of_the_status() -> None:
    error = rejection()
    before = {"phase": "Running", "runId": "r1", "conditions": [], "attempt": 1}
    status, message = invalid_spec(before, 3, error, at(10))

    assert message == "model: Field required"
    typed = Status.model_validate(status)
    assert (typed.phase, typed.observed_generation, typed.run_id, typed.attempt) == ("Failed", 3, "r1", 1)
    by_type = {c.type: c for c in typed.conditions}
    assert set(by_type) == {"Ready", "Progressing", "Stalled", "Reconciling"}
    # Stalled: kstatus (Flux, kpt) reports it Failed.
    expected = {"Ready": "False", "Progressing": "False", "Stalled": "True", "Reconciling": "False"}
    for condition in by_type.values():
        assert (condition.status, condition.reason, condition.message) == (
            expected[condition.type],
            "InvalidSpec",
            message,
        )
        assert (condition.observed_generation, condition.last_transition_time) == (3, stamp(10))
    # Evaluated again later: the same status (the transition time stays).
    assert invalid_spec(status, 3, error, at(99)) == (status, message)


def test_an_invalid_new_resource_without_status_fails_too() -> None:
    status, _ = invalid_spec(None, 1, rejection(), at(0))
    assert status["phase"] == "Failed" and len(status["conditions"]) == 4


def test_a_rule_of_the_whole_spec_is_named_as_the_spec() -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "TrainStage",
        "metadata": {"name": "t"},
        "spec": {"method": "sft", "model": {"uri": "pvc://m"}},
    }
    with pytest.raises(ValidationError) as caught:
        Resource.parse(body)
    _, message = invalid_spec(None, 1, caught.value, at(0))
    assert message.startswith("spec: ") and "needs `dataset`" in message

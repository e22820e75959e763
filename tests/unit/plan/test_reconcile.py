"""The reconcile decision of one resource.

Input gating, phases, conditions, runs, retries, teachers, reuse, convergence and crash safety.

Every test that produces a decision also plans again with its status written (`replan`): the status
must come out identical and nothing new may be created, which is what keeps the operator from patch
loops and duplicate Jobs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from posttrain.api.status import Output, Phase, Status
from posttrain.api.workload import INVALID_INPUT_REASON, ProgressDocument
from posttrain.plan.reconcile import (
    HISTORY_LIMIT,
    TEACHER_POLL_SECONDS,
    WAITING_RECHECK_SECONDS,
    api_key_env,
    current_run,
    output_uri,
    participants,
    plan,
    run_id,
)
from posttrain.plan.types import (
    Decision,
    InputState,
    Observed,
    ReusableRun,
    Settings,
    StartTeacher,
    StopTeacher,
    StopWorkload,
    WorkloadState,
)
from posttrain.support.times import timestamp

from tests.support import kstatus
from tests.unit.plan.plan_builders import (
    SETTINGS,
    T0,
    Driver,
    active,
    applied,
    at,
    conditions,
    done_input,
    evol,
    example,
    examples,
    external,
    failed,
    from_ref,
    input_in,
    make,
    output,
    pending,
    renamed,
    replan,
    result,
    served,
    sft,
    sft_spec,
    stamp,
    starts,
    status_document,
    succeeded,
    teacher,
    with_spec,
    with_status,
)

URI_INPUTS = {"model": "pvc://models/base", "dataset": "pvc://data/sft.jsonl"}
UP = ("EvolJob", "up")


def reading_up(name: str = "down", **extra: Any) -> Any:
    """An SFT stage whose dataset is EvolJob/up's main output."""
    return sft(name, from_ref(*UP), **extra)


def run_of(decision: Decision) -> str:
    value = decision.status["runId"]
    assert isinstance(value, str)
    return value


def event_list(decision: Decision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in decision.events]


def finished(resource: Any, inputs: dict[tuple[str, str], InputState] | None = None) -> tuple[Any, str]:
    """The resource after a successful first run (attempt 1) at 100 s; returns it and the run id."""
    driver = Driver(resource, inputs=inputs or {})
    driver.step(at(0))
    driver.set_workload(1, "succeeded", result=result(model="pvc://out/model"))
    driver.step(at(100))
    assert driver.status.phase == "Succeeded"
    assert driver.status.run_id is not None
    return driver.resource, driver.status.run_id


# --- the first reconcile and input gating -----------------------------------------------------------


def test_first_reconcile_of_a_resource_with_uri_inputs_starts_attempt_one() -> None:
    resource = sft()
    observed = Observed(resource)
    decision = plan(observed, SETTINGS, T0)
    run = run_id(resource, URI_INPUTS)
    assert decision.actions == [starts(decision)[0]]
    start = starts(decision)[0]
    assert (start.run_id, start.attempt) == (run, 1)
    config = start.config
    assert (config.workload, config.kind, config.name, config.namespace) == (
        "train",
        "TrainStage",
        "sft",
        "ml",
    )
    assert config.run_id == run
    assert config.output_uri == f"pvc://posttrain/artifacts/trainstages/{run}"
    assert config.spec == resource.spec.wire()
    assert config.endpoints == {}
    status = Status.model_validate(decision.status)
    assert status.phase == "Running"
    assert (status.observed_generation, status.run_id, status.attempt) == (1, run, 1)
    assert status.start_time == stamp(0) and status.completion_time is None
    assert status.inputs == URI_INPUTS
    by_type = conditions(decision)
    assert [c.type for c in status.conditions] == [
        "Ready",
        "InputsReady",
        "Progressing",
        "Stalled",
        "Reconciling",
    ]
    assert (by_type["Ready"].status, by_type["Ready"].reason) == ("Unknown", "WorkloadStarting")
    assert (by_type["InputsReady"].status, by_type["InputsReady"].reason) == ("True", "InputsSucceeded")
    assert (by_type["Progressing"].status, by_type["Progressing"].message) == ("True", "attempt 1 starting")
    for condition in status.conditions:
        assert condition.observed_generation == 1
        assert condition.last_transition_time == stamp(0)
    assert event_list(decision) == [("Normal", "Running"), ("Normal", "Started")]
    assert decision.events[1].message == f"run {run} started"
    assert decision.requeue_after == SETTINGS.progress_interval
    again = replan(observed, decision, T0)
    assert event_list(again) == [], "no second Started event while the Job is not observed yet"
    assert starts(again)[0].attempt == 1, "the same attempt again: a deterministic name, harmless"


@pytest.mark.parametrize("name", [r.metadata.name for r in examples("quickstart")])
def test_ready_is_unknown_from_the_first_reconcile(name: str) -> None:
    resource = example(name)
    observed = Observed(resource)
    decision = plan(observed, SETTINGS, T0)
    ready = conditions(decision)["Ready"]
    assert ready.status == "Unknown"
    assert ready.observed_generation == 1
    assert decision.status["phase"] in ("Waiting", "Running")
    replan(observed, decision, T0)


def test_a_status_without_conditions_gets_ready_unknown_first() -> None:
    resource = with_status(reading_up(), {"phase": "Pending"})
    decision = plan(Observed(resource, inputs={UP: input_in("Running")}), SETTINGS, T0)
    assert conditions(decision)["Ready"].status == "Unknown"


def test_a_missing_input_waits_and_says_so() -> None:
    resource = reading_up()
    observed = Observed(resource)
    decision = plan(observed, SETTINGS, T0)
    assert decision.status["phase"] == "Waiting"
    assert decision.actions == []
    by_type = conditions(decision)
    assert (by_type["InputsReady"].status, by_type["InputsReady"].reason) == ("False", "InputMissing")
    assert by_type["InputsReady"].message == "EvolJob/up does not exist"
    assert (by_type["Progressing"].status, by_type["Progressing"].reason) == ("False", "WaitingForInputs")
    assert (by_type["Ready"].status, by_type["Ready"].reason) == ("Unknown", "InputMissing")
    assert [(e.type, e.reason, e.message) for e in decision.events] == [
        ("Normal", "Waiting", "EvolJob/up does not exist")
    ]
    # Waiting looks at its inputs again by itself, in case the notice of their change is lost.
    assert decision.requeue_after == WAITING_RECHECK_SECONDS
    assert "runId" not in decision.status
    replan(observed, decision, T0)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (InputState(exists=True), "waiting for EvolJob/up"),
        (input_in("Running"), "waiting for EvolJob/up"),
        (input_in("Waiting"), "waiting for EvolJob/up"),
        (replace(done_input("dataset"), current=False), "waiting for EvolJob/up"),
        (input_in("Failed", current=False), "waiting for EvolJob/up"),
    ],
)
def test_an_input_that_has_not_succeeded_for_its_spec_is_awaited(state: InputState, message: str) -> None:
    observed = Observed(reading_up(), inputs={UP: state})
    decision = plan(observed, SETTINGS, T0)
    inputs_ready = conditions(decision)["InputsReady"]
    assert (inputs_ready.reason, inputs_ready.message) == ("InputNotReady", message)
    assert decision.status["phase"] == "Waiting"
    replan(observed, decision, T0)


def test_a_waiting_status_does_not_follow_the_phases_of_the_input() -> None:
    # Each upstream transition would otherwise cost every waiting dependant a status write.
    first = plan(Observed(reading_up(), inputs={UP: InputState(exists=True)}), SETTINGS, T0)
    waiting = with_status(reading_up(), first.status)
    for phase in ("Waiting", "Running", "Failed"):
        later = plan(
            Observed(waiting, inputs={UP: input_in(phase, current=phase != "Failed")}), SETTINGS, at(60)
        )
        assert later.status == first.status, phase
        assert later.actions == [] and later.events == []


def test_a_failed_input_is_named() -> None:
    observed = Observed(reading_up(), inputs={UP: input_in("Failed")})
    decision = plan(observed, SETTINGS, T0)
    inputs_ready = conditions(decision)["InputsReady"]
    assert (inputs_ready.reason, inputs_ready.message) == ("InputFailed", "input EvolJob/up failed")
    assert conditions(decision)["Ready"].reason == "InputFailed"


@pytest.mark.parametrize("phase", ["Pending", "Running", "Succeeded", "Failed"])
def test_an_unknown_output_is_reported_at_once_with_the_valid_names(phase: Phase) -> None:
    resource = sft("down", from_ref("EvolJob", "up", "ranking"))
    known = ("dataset", "evolved", "eliminated", "rankings")
    state = replace(input_in(phase), known_outputs=known)
    decision = plan(Observed(resource, inputs={UP: state}), SETTINGS, T0)
    inputs_ready = conditions(decision)["InputsReady"]
    assert (inputs_ready.status, inputs_ready.reason) == ("False", "OutputUnknown")
    assert inputs_ready.message == (
        "EvolJob/up has no output 'ranking'; its outputs are dataset, evolved, eliminated, rankings"
    )
    # Only a spec change ends this: not ready, rather than not known yet.
    assert (conditions(decision)["Ready"].status, conditions(decision)["Ready"].reason) == (
        "False",
        "OutputUnknown",
    )
    assert decision.status["phase"] == "Waiting" and starts(decision) == []
    assert conditions(decision)["Stalled"].status == "True"


def test_a_known_output_of_an_input_still_running_is_awaited() -> None:
    resource = sft("down", from_ref("EvolJob", "up", "rankings"))
    state = replace(input_in("Running"), known_outputs=("dataset", "rankings"))
    decision = plan(Observed(resource, inputs={UP: state}), SETTINGS, T0)
    assert conditions(decision)["InputsReady"].reason == "InputNotReady"


def test_a_missing_output_lists_the_outputs_there_are() -> None:
    resource = sft("down", from_ref("EvolJob", "up", "rankings"))
    decision = plan(Observed(resource, inputs={UP: done_input("dataset", "answers")}), SETTINGS, T0)
    assert conditions(decision)["InputsReady"].reason == "OutputMissing"
    assert conditions(decision)["InputsReady"].message == (
        "EvolJob/up has no output 'rankings' (it has: answers, dataset)"
    )
    none = plan(Observed(resource, inputs={UP: done_input()}), SETTINGS, T0)
    assert conditions(none)["InputsReady"].message == "EvolJob/up has no output 'rankings' (it has: none)"


def test_several_problems_give_the_most_serious_reason_and_every_message() -> None:
    resource = make(
        "TrainStage",
        "dpo",
        {
            "method": "dpo",
            "model": from_ref("TrainStage", "sft"),
            "preferences": from_ref("AlignRound", "align"),
        },
    )
    inputs = {("TrainStage", "sft"): input_in("Running"), ("AlignRound", "align"): input_in("Failed")}
    decision = plan(Observed(resource, inputs=inputs), SETTINGS, T0)
    inputs_ready = conditions(decision)["InputsReady"]
    assert inputs_ready.reason == "InputFailed"
    assert inputs_ready.message == "waiting for TrainStage/sft; input AlignRound/align failed"
    missing = plan(Observed(resource, inputs={("AlignRound", "align"): done_input()}), SETTINGS, T0)
    assert conditions(missing)["InputsReady"].reason == "InputMissing"
    assert conditions(missing)["InputsReady"].message == (
        "TrainStage/sft does not exist; AlignRound/align has no output 'preferences' (it has: none)"
    )


def test_a_reference_cycle_is_reported_in_status() -> None:
    resource = sft("a", from_ref("TrainStage", "b"))
    cycle = [("TrainStage", "a"), ("TrainStage", "b"), ("TrainStage", "a")]
    observed = Observed(resource, inputs={("TrainStage", "b"): input_in("Waiting")}, cycle=cycle)
    decision = plan(observed, SETTINGS, T0)
    assert decision.status["phase"] == "Waiting"
    by_type = conditions(decision)
    message = "reference cycle: TrainStage/a -> TrainStage/b -> TrainStage/a"
    assert (by_type["InputsReady"].reason, by_type["Ready"].status, by_type["Ready"].reason) == (
        "ReferenceCycle",
        "False",
        "ReferenceCycle",
    )
    assert by_type["InputsReady"].message.startswith(message + "; waiting for TrainStage/b")
    replan(observed, decision, T0)
    # A cycle is reported even over a finished result: the graph can no longer be run.
    done, _ = finished(sft("a"))
    changed = with_spec(done, 2, dataset=from_ref("TrainStage", "b"))
    cycled = plan(replace(observed, resource=with_status(changed, done.status)), SETTINGS, T0)
    assert conditions(cycled)["Ready"].reason == "ReferenceCycle"
    same_generation = with_status(resource, done.status)
    assert (
        conditions(plan(replace(observed, resource=same_generation), SETTINGS, T0))["Ready"].status == "False"
    )


def test_waiting_stops_the_teachers_and_the_workloads() -> None:
    resource = evol("e", dataset=from_ref("DataSlice", "seed"))
    driver = Driver(resource, inputs={("DataSlice", "seed"): done_input("dataset")})
    driver.step(at(0))
    driver.ready_teachers()
    driver.step(at(30))
    assert driver.status.phase == "Running" and len(driver.workloads) == 1
    driver.set_workload(1, "active", progress=ProgressDocument(done=1))
    driver.step(at(40))
    assert driver.status.progress is not None
    (job,) = driver.workloads
    driver.inputs = {}
    decision = driver.step(at(50))
    assert decision.status["phase"] == "Waiting"
    assert decision.actions == [StopWorkload(job), StopTeacher("srv-teacher")]
    assert "progress" not in decision.status
    assert driver.teachers == {} and driver.workloads == {}


def test_inputs_resolve_to_the_referenced_outputs_and_their_digests() -> None:
    rleif = example("rleif")
    inputs = {
        ("TrainStage", "dpo"): done_input("model", run="dpo-run"),
        ("EvolJob", "evol"): done_input("dataset", run="evol-run"),  # RL on the evolved prompts
        ("RewardModel", "irm"): done_input("model", run="irm-run"),
        ("RewardModel", "prm"): InputState(
            exists=True, phase="Succeeded", outputs={"model": output("prm-run/model", digest=None)}
        ),
    }
    decision = plan(Observed(rleif, inputs=inputs), SETTINGS, T0)
    assert decision.status["inputs"] == {
        "model": "sha256:dpo-run/model",
        "dataset": "sha256:evol-run/dataset",
        "rewardModels[0].model": "sha256:irm-run/model",
        "rewardModels[1].model": "pvc://posttrain/artifacts/prm-run/model",
        "train.evaluation.tasks.dataset": "file://data/benchmark.jsonl",  # a file: its URI stands for it
    }
    spec = starts(decision)[0].config.spec
    assert spec["model"] == {"uri": "pvc://posttrain/artifacts/dpo-run/model"}
    assert spec["dataset"]["uri"] == "pvc://posttrain/artifacts/evol-run/dataset"
    assert [m["model"]["uri"] for m in spec["rewardModels"]] == [
        "pvc://posttrain/artifacts/irm-run/model",
        "pvc://posttrain/artifacts/prm-run/model",
    ]
    assert "from" not in json.dumps(spec)


# --- content addressing -----------------------------------------------------------------------------


def test_the_run_id_hashes_what_decides_the_result() -> None:
    base = run_id(sft(), URI_INPUTS)
    assert base == run_id(sft(), dict(reversed(URI_INPUTS.items()))), "input order does not matter"
    assert base == run_id(renamed(sft(), "other"), URI_INPUTS), "the name is not hashed"
    not_hashed: dict[str, Any] = {
        "scheduling": {"nodeSelector": {"gpu": "h100"}, "queueName": "q"},
        "retries": {"limit": 5},
        "timeoutSeconds": 3600,
        "resources": {"gpus": 8},
        "image": "trainer:2",
        "artifacts": {"accessKeyIdSecretRef": {"name": "s3", "key": "id"}},
        "tracking": {"wandb": {"project": "wizard"}, "mlflow": {"trackingUri": "http://mlflow:5000"}},
    }
    for key, value in not_hashed.items():
        assert run_id(sft(**{key: value}), URI_INPUTS) == base, key
    assert run_id(sft(train={"epochs": 2}), URI_INPUTS) != base
    assert run_id(sft(artifacts={"uri": "s3://bucket/x"}), URI_INPUTS) != base
    assert run_id(sft(), {**URI_INPUTS, "dataset": "sha256:other"}) != base
    assert len(base) == 16 and int(base, 16) >= 0


def test_current_run_is_known_once_the_inputs_are() -> None:
    resource = reading_up()
    assert current_run(Observed(resource, inputs={UP: input_in("Running")})) is None
    ready = Observed(resource, inputs={UP: done_input("dataset")})
    run = current_run(ready)
    assert run == run_of(plan(ready, SETTINGS, T0))
    assert current_run(replace(ready, cycle=[("TrainStage", "down"), ("TrainStage", "down")])) is None


def test_outputs_go_to_a_content_addressed_folder() -> None:
    assert output_uri(sft(), SETTINGS, "abc") == "pvc://posttrain/artifacts/trainstages/abc"
    own = sft(artifacts={"uri": "s3://bucket/runs/"})
    assert output_uri(own, SETTINGS, "abc") == "s3://bucket/runs/trainstages/abc"
    assert output_uri(evol(), Settings("file:///tmp/a/"), "r") == "file:///tmp/a/evoljobs/r"


def test_an_unchanged_resource_under_another_name_reuses_the_finished_result() -> None:
    first, run = finished(sft("first"))
    assert first.status is not None
    second = renamed(first, "second")
    reused = ReusableRun("TrainStage/first", dict(first.status.outputs), dict(first.status.metrics))
    observed = Observed(second, reusable=reused)
    decision = plan(observed, SETTINGS, at(500))
    assert decision.actions == []
    status = Status.model_validate(decision.status)
    assert (status.phase, status.run_id, status.attempt) == ("Succeeded", run, 0)
    assert status.outputs == first.status.outputs
    ready = conditions(decision)["Ready"]
    assert (ready.status, ready.reason) == ("True", "Reused")
    assert ready.message == "reused the finished result of TrainStage/first (same content)"
    assert status.completion_time == stamp(500)
    assert event_list(decision) == [("Normal", "Succeeded")]
    assert status.metrics == first.status.metrics and status.metrics
    replan(observed, decision, at(500))


def test_a_reused_partial_result_says_its_outputs_are_partial() -> None:
    first, _ = finished(sft("first"))
    assert first.status is not None
    partial = {"loss": 0.5, "budget.exhausted": 1.0}
    reused = ReusableRun("TrainStage/first", dict(first.status.outputs), partial)
    decision = plan(Observed(renamed(first, "second"), reusable=reused), SETTINGS, at(500))
    assert Status.model_validate(decision.status).metrics == partial
    ready = conditions(decision)["Ready"]
    assert (ready.status, ready.reason) == ("True", "Reused")
    assert ready.message.endswith("; its outputs are partial: the run stopped at its budget")


def test_reuse_does_not_replace_an_attempt_that_exists() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    reusable = ReusableRun("TrainStage/other", {"model": output("x/model")})
    running = plan(Observed(resource, workloads=[active(run)], reusable=reusable), SETTINGS, T0)
    assert running.status["phase"] == "Running"
    status_says_started = with_status(resource, {"runId": run, "attempt": 1, "phase": "Running"})
    again = plan(Observed(status_says_started, reusable=reusable), SETTINGS, T0)
    assert again.status["phase"] == "Running" and starts(again)[0].attempt == 1


# --- teachers ---------------------------------------------------------------------------------------


def test_served_teachers_start_first_and_the_workload_waits_for_them() -> None:
    resource = evol(teachers=[served("big"), served("small"), external("api")])
    observed = Observed(resource)
    decision = plan(observed, SETTINGS, T0)
    assert [a.participant.name for a in decision.actions if isinstance(a, StartTeacher)] == ["big", "small"]
    assert starts(decision) == []
    progressing = conditions(decision)["Progressing"]
    assert (progressing.reason, progressing.message) == (
        "TeachersStarting",
        "waiting for served models to be ready: big, small",
    )
    assert conditions(decision)["Ready"].reason == "TeachersStarting"
    assert decision.status["phase"] == "Running"
    assert decision.requeue_after == TEACHER_POLL_SECONDS
    replan(observed, decision, T0)
    # One ready, one still starting: nothing is started twice, the workload still waits.
    half = replace(
        observed, resource=applied(resource, decision), teachers=[teacher("big"), teacher("small", False)]
    )
    waiting = plan(half, SETTINGS, at(30))
    assert waiting.actions == []
    one_gone = plan(replace(half, teachers=[teacher("small", False)]), SETTINGS, at(30))
    assert [a.participant.name for a in one_gone.actions if isinstance(a, StartTeacher)] == ["big"]
    assert conditions(waiting)["Progressing"].message.endswith(": small")
    # Ready but without a known endpoint is not ready yet.
    no_endpoint = replace(half, teachers=[teacher("big"), teacher("small", endpoint=False)])
    assert starts(plan(no_endpoint, SETTINGS, at(30))) == []
    ready = replace(half, teachers=[teacher("big"), teacher("small")])
    decision = plan(ready, SETTINGS, at(60))
    (start,) = starts(decision)
    assert {name: e.base_url for name, e in start.config.endpoints.items()} == {
        "big": "http://srv-big:8000/v1",
        "small": "http://srv-small:8000/v1",
        "api": "https://api.example.com/v1",
    }
    assert start.config.endpoints["api"].model == "api-model"
    assert start.config.endpoints["api"].api_key_env == "POSTTRAIN_API_KEY_API"


def test_external_endpoints_need_no_teachers_and_carry_the_key_variable() -> None:
    resource = evol(teachers=[external("gpt-x"), external("open", secret=False)])
    (start,) = starts(plan(Observed(resource), SETTINGS, T0))
    assert start.config.endpoints["gpt-x"].api_key_env == "POSTTRAIN_API_KEY_GPT_X"
    assert start.config.endpoints["open"].api_key_env is None
    assert api_key_env("a-b-c") == "POSTTRAIN_API_KEY_A_B_C"


def test_participants_are_the_student_teachers_and_judges_once_each() -> None:
    align = example("align")
    assert [p.name for p in participants(align)] == ["student", "teacher", "judge"]
    spec = align.spec.wire()
    spec["judges"] = [served("teacher"), served("judge2")]
    shared = make("AlignRound", "a", spec)
    assert [p.name for p in participants(shared)] == ["student", "teacher", "judge2"]
    assert participants(example("seed-data")) == []
    assert [p.name for p in participants(evol())] == ["teacher"]


def test_teachers_of_participants_no_longer_in_the_spec_are_stopped() -> None:
    resource = evol(teachers=[served("new")])
    observed = Observed(resource, teachers=[teacher("old"), teacher("new")])
    decision = plan(observed, SETTINGS, T0)
    assert StopTeacher("srv-old") in decision.actions
    assert StopTeacher("srv-new") not in decision.actions
    assert starts(decision)[0].config.endpoints.keys() == {"new"}


# --- a running attempt ------------------------------------------------------------------------------


def test_without_a_readable_store_a_running_attempt_is_not_polled() -> None:
    # The driver cannot read progress.json: only child events bring the resource back.
    blind = replace(SETTINGS, progress_interval=None)
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    first = plan(Observed(resource), blind, T0)
    assert [type(a).__name__ for a in first.actions] == ["StartWorkload"] and first.requeue_after is None
    started = applied(resource, first)
    for state in ("pending", "active"):
        workload = pending(run) if state == "pending" else replace(pending(run), state="active")
        decision = plan(Observed(started, workloads=[workload]), blind, at(5))
        assert decision.requeue_after is None, state


def test_a_created_attempt_is_starting_then_running_with_progress() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    started = applied(resource, plan(Observed(resource), SETTINGS, T0))
    observed = Observed(started, workloads=[pending(run)])
    decision = plan(observed, SETTINGS, at(5))
    assert decision.actions == []
    assert conditions(decision)["Progressing"].message == "attempt 1 starting"
    assert decision.requeue_after == SETTINGS.progress_interval
    assert event_list(decision) == []
    replan(observed, decision, at(5))
    doc = ProgressDocument(done=3, total=10, unit="rows", message="step 3", updated_at=1.0)
    observed = Observed(applied(started, decision), workloads=[active(run, progress=doc)])
    running = plan(observed, SETTINGS, at(20))
    assert (conditions(running)["Progressing"].reason, conditions(running)["Progressing"].message) == (
        "WorkloadRunning",
        "attempt 1 running",
    )
    assert conditions(running)["Ready"].reason == "WorkloadRunning"
    assert running.status["progress"] == {
        "done": 3,
        "total": 10,
        "unit": "rows",
        "message": "step 3",
        "summary": "3/10 rows",
    }
    replan(observed, running, at(20))
    # No progress document this time: the last one read stays.
    kept = plan(Observed(applied(started, running), workloads=[active(run)]), SETTINGS, at(35))
    assert kept.status["progress"] == running.status["progress"]
    unknown_total = plan(
        Observed(started, workloads=[active(run, progress=ProgressDocument(done=7, unit="steps"))]),
        SETTINGS,
        at(20),
    )
    assert status_document(unknown_total)["progress"]["summary"] == "7 steps"


def test_a_nonsensical_progress_document_does_not_break_the_status() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    doc = ProgressDocument(done=-5, total=-1, unit="u" * 50, message="m" * 5000)
    decision = plan(Observed(resource, workloads=[active(run, progress=doc)]), SETTINGS, T0)
    progress = Status.model_validate(decision.status).progress
    assert progress is not None
    assert (progress.done, progress.total, len(progress.unit), len(progress.message)) == (0, 0, 32, 1000)


# --- success ----------------------------------------------------------------------------------------


def test_success_records_outputs_metrics_and_stops_the_teachers() -> None:
    resource = evol()
    driver = Driver(resource)
    driver.step(at(0))
    driver.ready_teachers()
    driver.step(at(30))
    driver.set_workload(1, "active", progress=ProgressDocument(done=4, total=8, unit="rows"))
    driver.step(at(40))
    driver.set_workload(1, "succeeded", result=result(dataset="pvc://out/d"))
    observed = driver.observed()
    decision = driver.step(at(100))
    status = Status.model_validate(decision.status)
    assert status.phase == "Succeeded"
    assert status.outputs == {"dataset": Output(uri="pvc://out/d", rows=5, digest="sha256:dataset")}
    assert status.metrics == {"loss": 0.5}
    assert (status.start_time, status.completion_time) == (stamp(0), stamp(100))
    assert status.progress is not None and status.progress.summary == "8/8 rows"
    by_type = conditions(decision)
    assert (by_type["Ready"].status, by_type["Ready"].reason, by_type["Ready"].message) == (
        "True",
        "Succeeded",
        "attempt 1 succeeded",
    )
    assert (by_type["Progressing"].status, by_type["Progressing"].reason) == ("False", "Succeeded")
    assert decision.actions == [StopTeacher("srv-teacher")]
    assert [(e.type, e.reason, e.message) for e in decision.events] == [
        ("Normal", "Succeeded", "attempt 1 succeeded")
    ]
    assert decision.requeue_after is None
    replan(observed, decision, at(100))
    later = plan(replace(observed, resource=driver.resource, teachers=[]), SETTINGS, at(900))
    assert later.status == decision.status and later.actions == [] and later.events == []


def test_the_result_document_may_come_from_the_termination_message() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    message = result(model="pvc://out/m").model_dump_json(by_alias=True)
    done = succeeded(run, message=message)
    decision = plan(Observed(resource, workloads=[done]), SETTINGS, T0)
    assert decision.status["outputs"] == {
        "model": {"uri": "pvc://out/m", "rows": 5, "digest": "sha256:model"}
    }
    assert "progress" not in decision.status
    unknown_total = with_status(
        resource, {"runId": run, "attempt": 1, "progress": {"done": 6, "unit": "steps"}}
    )
    finished_progress = plan(Observed(unknown_total, workloads=[done]), SETTINGS, T0).status["progress"]
    assert finished_progress == {
        "done": 6,
        "total": 0,
        "unit": "steps",
        "message": "",
        "summary": "6/6 steps",
    }


@pytest.mark.parametrize(
    "message", ["", "   ", "not json", '{"error": "disk full"}', '{"outputs": {"m": 1}}']
)
def test_success_without_a_readable_result_is_a_failed_attempt(message: str) -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    decision = plan(Observed(resource, workloads=[succeeded(run, message=message)]), SETTINGS, T0)
    status = Status.model_validate(decision.status)
    assert status.phase == "Running"
    assert status.last_failure is not None
    assert (status.last_failure.reason, status.last_failure.exit_code) == ("ResultMissing", 0)
    assert status.last_failure.message == "the workload exited 0 but left no result document"
    assert conditions(decision)["Progressing"].reason == "BackOff"


def test_a_result_that_does_not_fit_the_status_is_a_failed_attempt_not_a_crash() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    bad = result(model="pvc://out/m")
    bad.outputs["model"].digest = "sha256:" + "f" * 200
    decision = plan(Observed(resource, workloads=[succeeded(run, res=bad)]), SETTINGS, T0)
    status = Status.model_validate(decision.status)
    assert status.phase == "Running"
    assert status.last_failure is not None and status.last_failure.reason == "ResultInvalid"
    assert "model" in status.last_failure.message


# --- failures and retries ---------------------------------------------------------------------------


def test_a_failed_attempt_is_retried_with_backoff_up_to_the_limit_then_failed() -> None:
    resource = sft(retries={"limit": 2, "backoffSeconds": 30, "maxBackoffSeconds": 600})
    driver = Driver(resource)
    driver.step(at(0))
    message = json.dumps({"error": "CUDA out of memory"})
    driver.set_workload(1, "failed", exit_code=137, reason="OOMKilled", message=message)
    observed = driver.observed()
    backoff = driver.step(at(10))
    status = Status.model_validate(backoff.status)
    assert status.phase == "Running"
    assert status.retry_after == stamp(40)
    assert status.last_failure is not None
    assert (status.last_failure.reason, status.last_failure.exit_code, status.last_failure.message) == (
        "OOMKilled",
        137,
        "CUDA out of memory",
    )
    progressing = conditions(backoff)["Progressing"]
    assert (progressing.status, progressing.reason) == ("True", "BackOff")
    assert progressing.message == (
        f"attempt 1 failed: OOMKilled (exit code 137): CUDA out of memory; retry 1 of 2 at {stamp(40)}"
    )
    assert conditions(backoff)["Ready"].status == "Unknown"
    assert [(e.type, e.reason, e.message) for e in backoff.events] == [
        ("Warning", "AttemptFailed", "attempt 1 failed: OOMKilled (exit code 137): CUDA out of memory")
    ]
    assert backoff.requeue_after == 30
    replan(observed, backoff, at(10))
    # Before the retry is due nothing changes: the same status, no event, look again when due.
    early = driver.step(at(30))
    assert early.status == backoff.status and early.events == [] and early.actions == []
    assert early.requeue_after == 10
    assert plan(driver.observed(), SETTINGS, at(39.9)).requeue_after == 0.5, "never a busy loop"
    retry = driver.step(at(40))
    assert [(a.run_id, a.attempt) for a in starts(retry)] == [(driver.status.run_id, 2)]
    assert event_list(retry) == [("Normal", "Retrying")]
    assert retry.events[0].message == "starting attempt 2"
    assert driver.status.attempt == 2 and driver.status.retry_after is None
    assert conditions(retry)["Progressing"].message == "attempt 2 starting"
    driver.set_workload(2, "failed", exit_code=1)
    driver.step(at(50))
    assert driver.status.retry_after == stamp(110), "the backoff doubles"
    driver.step(at(110))
    driver.set_workload(3, "failed", exit_code=3, message="boom")
    observed = driver.observed()
    final = driver.step(at(200))
    status = Status.model_validate(final.status)
    assert status.phase == "Failed"
    assert (status.attempt, status.completion_time, status.retry_after) == (3, stamp(200), None)
    cause = "attempt 3 of 3 failed: Error (exit code 3): boom"
    ready = conditions(final)["Ready"]
    assert (ready.status, ready.reason, ready.message) == ("False", "WorkloadFailed", cause)
    assert (conditions(final)["Progressing"].status, conditions(final)["Progressing"].reason) == (
        "False",
        "Failed",
    )
    assert [(e.type, e.reason, e.message) for e in final.events] == [("Warning", "Failed", cause)]
    assert final.requeue_after is None
    replan(observed, final, at(200))
    assert driver.started == [(status.run_id, 1), (status.run_id, 2), (status.run_id, 3)]
    # Failed stays failed: nothing is started again, however often it is planned.
    assert driver.step(at(10_000)).actions == []


@pytest.mark.parametrize(
    ("exit_code", "message"),
    [
        (65, json.dumps({"error": "DataError: 7 of 8 rows are malformed", "reason": "InvalidInput"})),
        (65, ""),  # the exit code alone: the termination message was lost
        (1, json.dumps({"error": "DataError: 7 of 8 rows are malformed", "reason": "InvalidInput"})),
    ],
)
def test_invalid_input_fails_at_once_without_a_retry(exit_code: int, message: str) -> None:
    resource = sft(retries={"limit": 3, "backoffSeconds": 30})
    run = run_id(resource, URI_INPUTS)
    workload = failed(run, exit_code=exit_code, message=message)
    decision = plan(Observed(resource, workloads=[workload]), SETTINGS, T0)
    status = Status.model_validate(decision.status)
    assert status.phase == "Failed" and status.attempt == 1 and status.retry_after is None
    assert starts(decision) == []
    assert status.last_failure is not None and status.last_failure.reason == "InvalidInput"
    ready = conditions(decision)["Ready"]
    assert (ready.status, ready.reason) == ("False", "InvalidInput")
    assert ready.message.startswith(f"attempt 1 failed: InvalidInput (exit code {exit_code})")
    assert ready.message.endswith("not retried: the input data or the settings must change")
    if message:
        assert "7 of 8 rows are malformed" in ready.message
    assert conditions(decision)["Stalled"].status == "True"  # kstatus: nothing more will happen


def test_a_crash_with_the_same_message_but_no_verdict_is_retried() -> None:
    resource = sft(retries={"limit": 3, "backoffSeconds": 30})
    run = run_id(resource, URI_INPUTS)
    workload = failed(run, exit_code=1, message=json.dumps({"error": "KeyError: 'messages'"}))
    decision = plan(Observed(resource, workloads=[workload]), SETTINGS, T0)
    status = Status.model_validate(decision.status)
    assert status.phase == "Running" and status.retry_after == stamp(30)
    assert status.last_failure is not None and status.last_failure.reason == "Error"


def test_the_backoff_is_capped() -> None:
    resource = sft(retries={"limit": 10, "backoffSeconds": 100, "maxBackoffSeconds": 250})
    run = run_id(resource, URI_INPUTS)
    attempts = [failed(run, n) for n in range(1, 4)]
    status = {"runId": run, "attempt": 3, "phase": "Running"}
    decision = plan(Observed(with_status(resource, status), workloads=attempts), SETTINGS, T0)
    assert decision.status["retryAfter"] == stamp(250)
    assert decision.requeue_after == 250


def test_without_retries_the_first_failure_fails_the_resource() -> None:
    resource = sft(retries={"limit": 0})
    run = run_id(resource, URI_INPUTS)
    decision = plan(
        Observed(resource, workloads=[failed(run, exit_code=None, reason="DeadlineExceeded")]), SETTINGS, T0
    )
    assert decision.status["phase"] == "Failed"
    assert conditions(decision)["Ready"].message == "attempt 1 of 1 failed: DeadlineExceeded"


def test_a_zero_backoff_retries_at_once() -> None:
    resource = sft(retries={"limit": 1, "backoffSeconds": 0})
    run = run_id(resource, URI_INPUTS)
    decision = plan(Observed(resource, workloads=[failed(run, reason="")]), SETTINGS, T0)
    assert [a.attempt for a in starts(decision)] == [2]
    assert event_list(decision) == [
        ("Normal", "Running"),
        ("Warning", "AttemptFailed"),
        ("Normal", "Retrying"),
    ]
    assert decision.events[1].message == "attempt 1 failed: Error (exit code 1)"
    assert "retryAfter" not in decision.status


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"error": "bad row 7"}', "bad row 7"),
        ('{"error": 7}', '{"error": 7}'),
        ("{not json", "{not json"),
        ("Traceback: boom", "Traceback: boom"),
        ("x" * 5000, "x" * 4000),
    ],
)
def test_the_failure_message_is_the_error_of_the_termination_message(message: str, expected: str) -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    decision = plan(Observed(resource, workloads=[failed(run, message=message)]), SETTINGS, T0)
    assert decision.status["lastFailure"] == {"reason": "Error", "exitCode": 1, "message": expected}


def test_an_overlong_failure_reason_is_cut() -> None:
    resource = sft()
    run = run_id(resource, URI_INPUTS)
    decision = plan(Observed(resource, workloads=[failed(run, reason="R" * 300)]), SETTINGS, T0)
    assert status_document(decision)["lastFailure"]["reason"] == "R" * 256


def test_progress_of_a_failed_attempt_is_not_shown_for_the_next() -> None:
    resource = sft(retries={"limit": 1, "backoffSeconds": 0})
    run = run_id(resource, URI_INPUTS)
    status = {"runId": run, "attempt": 1, "phase": "Running", "progress": {"done": 5, "total": 9}}
    decision = plan(Observed(with_status(resource, status), workloads=[failed(run)]), SETTINGS, T0)
    assert starts(decision)[0].attempt == 2
    assert "progress" not in decision.status


# --- spec changes, generations and history ----------------------------------------------------------


def test_a_spec_change_after_success_starts_a_new_run_and_keeps_the_old_outputs() -> None:
    done, old_run = finished(sft())
    changed = with_spec(done, 2, train={"epochs": 5})
    observed = Observed(changed, workloads=[succeeded(old_run, res=result(model="pvc://out/model"))])
    decision = plan(observed, SETTINGS, at(1000))
    status = Status.model_validate(decision.status)
    new_run = run_id(changed, URI_INPUTS)
    assert new_run != old_run
    assert (status.phase, status.run_id, status.attempt, status.observed_generation) == (
        "Running",
        new_run,
        1,
        2,
    )
    assert status.history == [old_run]
    assert (status.outputs, status.metrics, status.completion_time) == ({}, {}, None)
    assert status.start_time == stamp(1000)
    (start,) = starts(decision)
    assert start.config.output_uri.endswith(new_run) and not start.config.output_uri.endswith(old_run)
    for condition in status.conditions:
        assert condition.observed_generation == 2
    assert event_list(decision) == [("Normal", "Running"), ("Normal", "Started")]
    replan(observed, decision, at(1000))


def test_a_new_run_stops_the_attempts_of_the_old_one() -> None:
    resource = sft()
    old = with_spec(resource, 1, train={"epochs": 9})
    old_run = run_id(old, URI_INPUTS)
    workloads = [active(old_run, 1), failed(old_run, 2), pending(old_run, 3)]
    status = {"runId": old_run, "attempt": 3, "phase": "Running"}
    decision = plan(
        Observed(with_status(with_spec(old, 2, train={}), status), workloads=workloads), SETTINGS, T0
    )
    assert [a for a in decision.actions if isinstance(a, StopWorkload)] == [
        StopWorkload(workloads[0].name),
        StopWorkload(workloads[2].name),
    ]
    assert starts(decision)[0].attempt == 1
    assert decision.status["history"] == [], "an unfinished run is not history"


def test_a_change_of_where_or_how_often_it_runs_does_not_rerun_a_finished_resource() -> None:
    done, run = finished(sft())
    changed = with_spec(done, 2, retries={"limit": 7}, scheduling={"priorityClassName": "high"})
    observed = Observed(changed)
    decision = plan(observed, SETTINGS, at(1000))
    assert decision.actions == [] and decision.events == []
    status = Status.model_validate(decision.status)
    assert (status.phase, status.run_id, status.observed_generation) == ("Succeeded", run, 2)
    for condition in status.conditions:
        assert condition.observed_generation == 2, condition.type
    assert done.status is not None
    assert [c.last_transition_time for c in status.conditions] == [
        c.last_transition_time for c in done.status.conditions
    ]
    replan(observed, decision, at(1000))


def test_history_is_bounded_and_names_each_run_once() -> None:
    done, run = finished(sft())
    assert done.status is not None
    earlier = [f"{i:016x}" for i in range(HISTORY_LIMIT)]
    full = with_status(done, done.status.model_copy(update={"history": earlier}))
    decision = plan(Observed(with_spec(full, 2, train={"epochs": 4})), SETTINGS, at(1000))
    assert decision.status["history"] == [*earlier[1:], run]
    repeated = with_status(done, done.status.model_copy(update={"history": [run, "0" * 16]}))
    decision = plan(Observed(with_spec(repeated, 2, train={"epochs": 4})), SETTINGS, at(1000))
    assert decision.status["history"] == ["0" * 16, run]


def test_a_finished_run_stays_in_history_when_the_new_one_waited_first() -> None:
    resource = reading_up()
    driver = Driver(resource, inputs={UP: done_input("dataset", run="v1")})
    driver.step(at(0))
    driver.set_workload(1, "succeeded", result=result(model="pvc://out/model"))
    driver.step(at(10))
    old_run = driver.status.run_id
    # The spec changes while the input re-runs: the resource waits, then runs on the new input.
    driver.resource = with_spec(driver.resource, 2, train={"epochs": 4})
    driver.inputs = {UP: input_in("Running")}
    assert driver.step(at(20)).status["phase"] == "Waiting"
    driver.inputs = {UP: done_input("dataset", run="v2")}
    decision = driver.step(at(30))
    assert decision.status["phase"] == "Running"
    assert decision.status["history"] == [old_run]


def test_a_missing_generation_counts_as_one() -> None:
    resource = make("TrainStage", "x", sft_spec(), generation=None, namespace=None)
    decision = plan(Observed(resource), SETTINGS, T0)
    assert decision.status["observedGeneration"] == 1
    assert starts(decision)[0].config.namespace == "default"


# --- finished work while inputs re-run --------------------------------------------------------------


@pytest.mark.parametrize(
    "state", [input_in("Running"), replace(done_input("dataset"), current=False), InputState(exists=False)]
)
def test_finished_work_stays_finished_while_an_input_reruns(state: InputState) -> None:
    done, _ = finished(reading_up(), {UP: done_input("dataset")})
    decision = plan(Observed(done, inputs={UP: state}), SETTINGS, at(500))
    assert done.status is not None
    assert decision == Decision(actions=[], status=done.status.wire(), events=[], requeue_after=None)


def test_a_failed_resource_stays_failed_while_an_input_reruns() -> None:
    resource = reading_up(retries={"limit": 0})
    driver = Driver(resource, inputs={UP: done_input("dataset")})
    driver.step(at(0))
    driver.set_workload(1, "failed")
    driver.step(at(10))
    assert driver.status.phase == "Failed"
    driver.inputs = {UP: input_in("Running")}
    decision = driver.step(at(20))
    assert decision.status["phase"] == "Failed" and decision.actions == [] and decision.events == []
    # When the input finishes with new content, the new run starts.
    driver.inputs = {UP: done_input("dataset", run="v2")}
    decision = driver.step(at(30))
    assert decision.status["phase"] == "Running" and starts(decision)[0].attempt == 1


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_an_outcome_seen_again_after_waiting_keeps_its_completion_time(outcome: WorkloadState) -> None:
    # Finished at 10 s; then a change of where it runs (same run id) while the input re-runs makes it
    # wait; when the input is back unchanged, the same attempt's outcome is recorded again.
    driver = Driver(reading_up(retries={"limit": 0}), inputs={UP: done_input("dataset")})
    driver.step(at(0))
    driver.set_workload(1, outcome, result=result(model="pvc://m"))
    driver.step(at(10))
    assert driver.status.completion_time == stamp(10)
    driver.resource = with_spec(driver.resource, 2, scheduling={"priorityClassName": "low"})
    driver.inputs = {UP: input_in("Running")}
    assert driver.step(at(20)).status["phase"] == "Waiting"
    driver.inputs = {UP: done_input("dataset")}
    decision = driver.step(at(30))
    assert decision.status["phase"] == outcome.capitalize()
    assert decision.status["completionTime"] == stamp(10)
    assert driver.started == [(driver.status.run_id, 1)]


def test_a_running_attempt_goes_on_while_an_input_reruns() -> None:
    resource = evol("e", dataset=from_ref(*UP))
    driver = Driver(resource, inputs={UP: done_input("dataset")})
    driver.step(at(0))
    driver.ready_teachers()
    driver.step(at(30))
    driver.set_workload(1, "active")
    running = driver.step(at(40))
    driver.inputs = {UP: replace(done_input("dataset"), current=False)}
    held = driver.step(at(50))
    assert held.actions == [] and held.events == []
    assert held.status == running.status
    assert held.requeue_after == SETTINGS.progress_interval
    # The input came back with the same content: the attempt is still this run's.
    driver.inputs = {UP: done_input("dataset")}
    driver.set_workload(1, "succeeded", result=result(dataset="pvc://out/d"))
    assert driver.step(at(60)).status["phase"] == "Succeeded"
    assert len(driver.started) == 1


def test_an_attempt_still_seen_while_waiting_is_stopped_again() -> None:
    # The stop was asked for but the attempt still shows (a Job being deleted, a process exiting).
    resource = reading_up()
    run = run_id(resource, {**URI_INPUTS, "dataset": "sha256:up-run/dataset"})
    waiting = with_status(resource, {"phase": "Waiting", "runId": run, "attempt": 1, "observedGeneration": 1})
    observed = Observed(waiting, workloads=[active(run)], inputs={UP: input_in("Running")})
    decision = plan(observed, SETTINGS, T0)
    assert decision.status["phase"] == "Waiting"
    assert decision.actions == [StopWorkload(active(run).name)]


def test_a_running_attempt_is_stopped_when_an_input_fails_or_disappears() -> None:
    for state in (input_in("Failed"), InputState(exists=False)):
        driver = Driver(reading_up(), inputs={UP: done_input("dataset")})
        driver.step(at(0))
        driver.set_workload(1, "active")
        driver.step(at(5))
        driver.inputs = {UP: state}
        decision = driver.step(at(10))
        assert decision.status["phase"] == "Waiting"
        assert [type(a) for a in decision.actions] == [StopWorkload]


def test_a_changed_spec_waits_for_its_inputs_even_after_success() -> None:
    done, _ = finished(reading_up(), {UP: done_input("dataset")})
    changed = with_spec(done, 2, train={"epochs": 4})
    decision = plan(Observed(changed, inputs={UP: input_in("Running")}), SETTINGS, at(500))
    assert decision.status["phase"] == "Waiting"
    assert [(e.reason, e.message) for e in decision.events] == [("Waiting", "waiting for EvolJob/up")]


# --- crash safety -----------------------------------------------------------------------------------


def test_a_lost_status_patch_after_a_start_does_not_start_a_second_attempt() -> None:
    driver = Driver(sft())
    driver.step(at(0), lose_status=True)
    assert driver.resource.status is None and len(driver.workloads) == 1
    decision = driver.step(at(1))
    assert starts(decision) == []
    assert (decision.status["phase"], decision.status["attempt"]) == ("Running", 1)
    assert driver.started == [(decision.status["runId"], 1)]


def test_a_lost_status_patch_after_a_retry_neither_repeats_it_nor_skips_the_next_backoff() -> None:
    driver = Driver(sft(retries={"limit": 3, "backoffSeconds": 30}))
    driver.step(at(0))
    driver.set_workload(1, "failed")
    driver.step(at(10))
    assert driver.status.retry_after == stamp(40)
    driver.step(at(40), lose_status=True)  # attempt 2 is created, the status still says attempt 1
    decision = driver.step(at(41))
    assert starts(decision) == [] and decision.status["attempt"] == 2
    assert "retryAfter" not in decision.status
    driver.set_workload(2, "failed")
    backoff = driver.step(at(50))
    assert starts(backoff) == [], "attempt 2 failing waits its own backoff"
    assert backoff.status["retryAfter"] == stamp(110)
    assert [run_attempt[1] for run_attempt in driver.started] == [1, 2]


def test_an_attempt_not_yet_observed_is_requested_again_under_the_same_identity() -> None:
    driver = Driver(sft(retries={"limit": 3, "backoffSeconds": 0}))
    driver.step(at(0))
    driver.set_workload(1, "failed")
    first = driver.step(at(10))
    assert starts(first)[0].attempt == 2
    lagging = Observed(driver.resource, workloads=[w for w in driver.workloads.values() if w.attempt == 1])
    again = plan(lagging, SETTINGS, at(11))
    assert [(a.run_id, a.attempt) for a in starts(again)] == [(a.run_id, a.attempt) for a in starts(first)]
    assert again.events == [] and again.status == first.status


# --- conditions over time, events, time zones -------------------------------------------------------


def test_last_transition_time_moves_only_when_a_status_changes() -> None:
    driver = Driver(sft(retries={"limit": 1, "backoffSeconds": 5}))
    driver.step(at(0))
    driver.set_workload(1, "active")
    driver.step(at(10))
    driver.set_workload(1, "failed")
    driver.step(at(20))
    driver.step(at(30))
    driver.set_workload(2, "succeeded", result=result(model="pvc://m"))
    driver.step(at(40))
    times = {c.type: (c.status, c.last_transition_time) for c in driver.status.conditions}
    assert times == {
        "Ready": ("True", stamp(40)),
        "InputsReady": ("True", stamp(0)),
        "Progressing": ("False", stamp(40)),
        # Stalled never was; Reconciling was True from the start until the success.
        "Stalled": ("False", stamp(0)),
        "Reconciling": ("False", stamp(40)),
    }
    reasons_seen = {e for e in driver.events}
    assert reasons_seen == {
        "Normal/Running",
        "Normal/Started",
        "Warning/AttemptFailed",
        "Normal/Retrying",
        "Normal/Succeeded",
    }


def test_each_phase_transition_has_one_event() -> None:
    driver = Driver(reading_up())
    driver.step(at(0))
    driver.step(at(1))
    driver.inputs = {UP: done_input("dataset")}
    driver.step(at(2))
    driver.step(at(3))
    driver.set_workload(1, "succeeded", result=result(model="pvc://m"))
    driver.step(at(4))
    driver.step(at(5))
    assert driver.events == ["Normal/Waiting", "Normal/Running", "Normal/Started", "Normal/Succeeded"]


def test_the_time_is_taken_as_utc() -> None:
    resource = sft(retries={"backoffSeconds": 60})
    run = run_id(resource, URI_INPUTS)
    observed = Observed(resource, workloads=[failed(run)])
    aware = plan(observed, SETTINGS, T0)
    naive = plan(observed, SETTINGS, T0.replace(tzinfo=None))
    other_zone = plan(observed, SETTINGS, T0.astimezone(timezone(timedelta(hours=2))))
    assert aware == naive == other_zone
    assert aware.status["retryAfter"] == "2025-01-01T12:01:00Z"
    assert timestamp(datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)) == "2025-03-04T05:06:07Z"


# --- the whole lifecycle under arbitrary outcomes and lost patches ---------------------------------

Step = tuple[str, int]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tick", "teachers", "active", "succeed", "empty", "fail", "lose"]),
            st.integers(min_value=1, max_value=120),
        ),
        max_size=30,
    )
)
def test_any_sequence_of_outcomes_converges_without_duplicate_attempts(steps: list[Step]) -> None:
    limit = 2
    driver = Driver(evol(retries={"limit": limit, "backoffSeconds": 20, "maxBackoffSeconds": 60}))
    now = at(0)
    driver.step(now)
    for what, amount in steps:
        now += timedelta(seconds=amount)
        run = driver.status.run_id
        current = [
            w for w in driver.workloads.values() if w.run_id == run and w.state in ("pending", "active")
        ]
        if what == "teachers":
            driver.ready_teachers()
        elif current and what == "active":
            driver.set_workload(current[0].attempt, "active")
        elif current and what == "succeed":
            driver.set_workload(current[0].attempt, "succeeded", result=result(dataset="pvc://d"))
        elif current and what == "empty":
            driver.set_workload(current[0].attempt, "succeeded", exit_code=0)
        elif current and what == "fail":
            driver.set_workload(current[0].attempt, "failed", exit_code=amount)
        observed = driver.observed()
        decision = driver.step(now, lose_status=what == "lose")
        if what != "lose":
            replan(observed, decision, now)
        status = Status.model_validate(decision.status)
        attempts = [a for _, a in driver.started]
        assert attempts == list(range(1, len(attempts) + 1)), "each attempt once, in order"
        assert len(attempts) <= limit + 1
        in_flight = [w for w in driver.workloads.values() if w.state in ("pending", "active")]
        assert len(in_flight) <= 1
        assert status.attempt == max(attempts, default=0)
        if status.phase == "Succeeded":
            assert status.outputs == {"dataset": Output(uri="pvc://d", rows=5, digest="sha256:dataset")}
            assert driver.teachers == {}
        if status.phase == "Failed":
            # Invalid input (its exit code) fails at once; anything else uses every retry first.
            expected = (
                1 if status.last_failure and status.last_failure.reason == INVALID_INPUT_REASON else limit + 1
            )
            assert len(attempts) == expected
            assert (
                sum(w.state != "pending" and w.state != "active" for w in driver.workloads.values())
                == expected
            )
        if status.phase in ("Succeeded", "Failed"):
            assert conditions(decision)["Ready"].status == (
                "True" if status.phase == "Succeeded" else "False"
            )
            assert decision.requeue_after is None
        else:
            assert conditions(decision)["Ready"].status == "Unknown"
            assert decision.requeue_after is not None and decision.requeue_after > 0
        # kstatus (Flux, kpt): Current only after a success, Failed only once failed, InProgress between.
        by_type = conditions(decision)
        assert not (by_type["Stalled"].status == "True" and by_type["Reconciling"].status == "True")
        obj = {"kind": "EvolJob", "metadata": {"generation": 1}, "status": decision.status}
        verdict = {"Succeeded": "Current", "Failed": "Failed"}.get(status.phase, "InProgress")
        assert kstatus.compute(obj, ready_condition=False).status == verdict


def test_start_teacher_carries_the_resolved_model_uri() -> None:
    """A served model given as `from` reaches the driver as the URI of the referenced output."""
    from posttrain.api.resources import Resource
    from posttrain.api.status import Output
    from posttrain.plan.reconcile import plan as decide
    from posttrain.plan.types import InputState, Observed, Settings, StartTeacher

    body = {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "AlignRound",
        "metadata": {"name": "round", "generation": 1},
        "spec": {
            "datasets": [{"uri": "pvc://data/evolved"}],
            "student": {
                "name": "student",
                "served": {"model": {"from": {"kind": "TrainStage", "name": "sft"}}},
            },
            "teachers": [{"name": "teacher", "served": {"model": {"uri": "pvc://models/teacher"}}}],
            "judges": [{"name": "judge", "endpoint": {"baseUrl": "http://judge/v1", "model": "j"}}],
        },
    }
    stage = InputState(
        exists=True,
        phase="Succeeded",
        outputs={"model": Output(uri="pvc://artifacts/trainstages/abc/model", digest="sha256:1")},
    )
    observed = Observed(resource=Resource.parse(body), inputs={("TrainStage", "sft"): stage})
    from datetime import UTC, datetime

    decision = decide(observed, Settings(artifact_root="pvc://artifacts"), datetime(2026, 1, 1, tzinfo=UTC))
    started = {a.participant.name: a.participant for a in decision.actions if isinstance(a, StartTeacher)}
    assert started["student"].served is not None and started["teacher"].served is not None
    assert started["student"].served.model.uri == "pvc://artifacts/trainstages/abc/model"
    assert started["teacher"].served.model.uri == "pvc://models/teacher"

"""The decision for one resource: from what is observed, the children to start or stop and the status.

Pure and deterministic (the time is an argument), so it can be evaluated any number of times, after a
crash at any point, and converge: children have deterministic names (starting one twice is harmless),
the attempt counter is derived from the children that exist as well as from status, and a status is
written only when it differs from the current one.

Lifecycle of a run (a run is one content hash of spec and inputs):
  Waiting (inputs not ready) -> Running (teachers starting -> workload attempt 1..1+limit, with
  exponential backoff between attempts) -> Succeeded | Failed.
A changed spec or changed inputs give a new run id, hence a new run with its own output folder; the
outputs of earlier runs stay where they are (their ids are kept in `status.history`).
While an input re-runs, a finished resource (Succeeded or Failed) keeps its status, and an attempt in
flight goes on with its teachers (it reads the input digests it started with); a missing or failed
input or a cycle stops what runs and the resource waits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import ValidationError

from posttrain.api.common import ModelRef, Participant
from posttrain.api.references import iter_references, output_name, resolve
from posttrain.api.resources import Resource
from posttrain.api.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    Failure,
    Output,
    Phase,
    Progress,
    Status,
)
from posttrain.api.workload import Endpoint, Result, WorkloadConfig
from posttrain.plan.conditions import set_condition
from posttrain.plan.graph import describe_cycle
from posttrain.plan.types import (
    Action,
    Decision,
    Event,
    InputState,
    Observed,
    ObservedTeacher,
    ObservedWorkload,
    Settings,
    StartTeacher,
    StartWorkload,
    StopTeacher,
    StopWorkload,
)

# Settings that decide where and how often a workload runs, not what it computes: they are left out of
# the content hash, so changing them neither re-runs a finished resource nor defeats reuse.
NOT_HASHED = ("scheduling", "retries", "timeoutSeconds", "resources", "image")
HISTORY_LIMIT = 16
TEACHER_POLL_SECONDS = 30.0


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC, seconds precision (as Kubernetes writes times)."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def participants(resource: Resource) -> list[Participant]:
    """The participants a resource talks to, each name once (student, teachers, judges)."""
    spec = resource.spec
    found: list[Participant] = []
    for attr in ("student", "teachers", "judges"):
        value = getattr(spec, attr, None)
        for participant in value if isinstance(value, list) else [value] if value else []:
            if participant.name not in {p.name for p in found}:
                found.append(participant)
    return found


def api_key_env(participant: str) -> str:
    """The environment variable that carries an external participant's API key."""
    return "POSTTRAIN_API_KEY_" + participant.upper().replace("-", "_")


def run_id(resource: Resource, input_digests: dict[str, str]) -> str:
    """Content hash of the kind, the result-relevant spec and the digests of the inputs read."""
    spec = resource.spec.wire()
    for key in NOT_HASHED:
        spec.pop(key, None)
    artifacts = spec.get("artifacts", {})
    for secret in ("accessKeyIdSecretRef", "secretAccessKeySecretRef"):
        artifacts.pop(secret, None)
    document = {"kind": resource.kind, "spec": spec, "inputs": dict(sorted(input_digests.items()))}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def output_uri(resource: Resource, settings: Settings, run: str) -> str:
    """The content-addressed output folder of a run."""
    root = resource.spec.artifacts.uri or settings.artifact_root
    return f"{root.rstrip('/')}/{resource.info.plural}/{run}"


def _input_problems(observed: Observed) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    """(problems as (reason, message), digests by path, uris by path) of the references."""
    problems: list[tuple[str, str]] = []
    digests: dict[str, str] = {}
    uris: dict[str, str] = {}
    for path, ref in iter_references(observed.resource.spec):
        if ref.from_ is None:
            assert ref.uri is not None
            digests[path] = ref.uri
            uris[path] = ref.uri
            continue
        target = (ref.from_.kind, ref.from_.name)
        label = f"{target[0]}/{target[1]}"
        state = observed.inputs.get(target, InputState(exists=False))
        output = output_name(ref.from_)
        if not state.exists:
            problems.append(("InputMissing", f"{label} does not exist"))
        elif state.phase == "Failed" and state.current:
            problems.append(("InputFailed", f"input {label} failed"))
        elif state.phase != "Succeeded" or not state.current:
            problems.append(("InputNotReady", f"waiting for {label}"))
        elif output not in state.outputs:
            have = ", ".join(sorted(state.outputs)) or "none"
            problems.append(("OutputMissing", f"{label} has no output {output!r} (it has: {have})"))
        else:
            found = state.outputs[output]
            digests[path] = found.digest or found.uri
            uris[path] = found.uri
    return problems, digests, uris


REASON_PRIORITY = ("ReferenceCycle", "InputFailed", "InputMissing", "OutputMissing", "InputNotReady")


class _Status:
    """A mutable working copy of the status with condition helpers."""

    def __init__(self, status: Status, generation: int, now: datetime) -> None:
        self.value = status.model_copy(deep=True)
        self.generation = generation
        self.now = timestamp(now)
        self.value.observed_generation = generation

    def condition(self, type: ConditionType, status: ConditionStatus, reason: str, message: str = "") -> None:
        self.value.conditions = set_condition(
            self.value.conditions,
            type,
            status,
            reason,
            message,
            self.generation,
            self.now,
        )

    def phase(self, phase: Phase) -> None:
        self.value.phase = phase


def _failure(workload: ObservedWorkload) -> Failure:
    message = workload.message
    try:
        document = json.loads(message) if message.strip().startswith("{") else None
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        message = document["error"]
    reason = (workload.reason or "Error")[:256]
    return Failure(reason=reason, exit_code=workload.exit_code, message=message[:4000])


def _result(workload: ObservedWorkload) -> Result | None:
    if workload.result is not None:
        return workload.result
    try:
        return Result.model_validate_json(workload.message) if workload.message.strip() else None
    except ValueError:
        return None


def _outputs(result: Result) -> dict[str, Output] | str:
    """The result's outputs as status outputs, or why they do not fit the status schema."""
    outputs: dict[str, Output] = {}
    problems: list[str] = []
    for name, value in result.outputs.items():
        try:
            outputs[name] = Output.model_validate(value.wire())
        except ValidationError as error:
            # A workload bug must fail the attempt, not the operator.
            problems.extend(f"{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return "; ".join(problems) if problems else outputs


def _describe_failure(failure: Failure) -> str:
    code = f" (exit code {failure.exit_code})" if failure.exit_code is not None else ""
    detail = f": {failure.message}" if failure.message else ""
    return f"{failure.reason}{code}{detail}"


def plan(observed: Observed, settings: Settings, now: datetime) -> Decision:
    """Decide what to do for one resource.

    Args:
        observed: the resource with its status, its children, and the state of what it references.
        settings: driver-wide settings.
        now: the current time (UTC).

    Returns:
        The actions, the complete new status, events, and when to look again.
    """
    # Times are written with a `Z`: a naive time is taken as UTC, an aware one converted to it.
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    resource = observed.resource
    current = resource.status or Status()
    generation = resource.metadata.generation or 1
    work = _Status(current, generation, now)
    actions: list[Action] = []
    events: list[Event] = []
    if not current.conditions:
        work.condition("Ready", "Unknown", "Reconciling", "first reconcile")

    def decision(requeue: float | None = None) -> Decision:
        # Every condition was evaluated against this generation, also those that kept their status.
        work.value.conditions = [
            c.model_copy(update={"observed_generation": generation}) for c in work.value.conditions
        ]
        if work.value.phase != current.phase:
            kind: Literal["Normal", "Warning"] = "Warning" if work.value.phase == "Failed" else "Normal"
            reason = next((c.reason for c in work.value.conditions if c.type == "Progressing"), "")
            message = next((c.message for c in work.value.conditions if c.type == "Ready"), "")
            if work.value.phase == "Waiting":
                message = next((c.message for c in work.value.conditions if c.type == "InputsReady"), "")
            events.insert(0, Event(kind, work.value.phase, message or reason))
        return Decision(actions=actions, status=work.value.wire(), events=events, requeue_after=requeue)

    active_teachers = [t for t in observed.teachers]

    # 1. Inputs.
    problems, digests, uris = _input_problems(observed)
    if observed.cycle:
        problems.insert(0, ("ReferenceCycle", describe_cycle(observed.cycle)))
    up_to_date = current.observed_generation == generation and not observed.cycle
    if problems and up_to_date and current.phase in ("Succeeded", "Failed"):
        # Finished work stays finished while an input re-runs; a new input digest later starts a new run.
        return Decision(actions=[], status=current.wire(), events=[], requeue_after=None)
    in_flight = [
        w for w in observed.workloads if w.run_id == current.run_id and w.state in ("pending", "active")
    ]
    if (
        problems
        and up_to_date
        and current.phase == "Running"
        and in_flight
        and all(reason == "InputNotReady" for reason, _ in problems)
    ):
        # An input re-runs while an attempt runs on the input digests it started with (kept, as outputs
        # are content-addressed): let it go on, with its teachers. If the input comes back with the
        # same digests the attempt still counts; with new ones, a new run replaces it.
        return Decision(
            actions=[], status=current.wire(), events=[], requeue_after=settings.progress_interval
        )
    if problems:
        reason = min((r for r, _ in problems), key=REASON_PRIORITY.index)
        message = "; ".join(m for _, m in problems)
        work.phase("Waiting")
        work.condition("InputsReady", "False", reason, message)
        work.condition("Progressing", "False", "WaitingForInputs", message)
        work.condition("Ready", "False" if reason == "ReferenceCycle" else "Unknown", reason, message)
        work.value.progress = None
        # Nothing runs while waiting: an attempt would read inputs that are gone, failed or changing.
        actions.extend(StopWorkload(w.name) for w in observed.workloads if w.state in ("pending", "active"))
        actions.extend(StopTeacher(t.name) for t in active_teachers)
        return decision()
    work.condition("InputsReady", "True", "InputsSucceeded", "every input has succeeded")
    work.value.inputs = {path: digest for path, digest in digests.items()}

    # 2. The run.
    run = run_id(resource, digests)
    stale = [w for w in observed.workloads if w.run_id != run and w.state in ("pending", "active")]
    actions.extend(StopWorkload(w.name) for w in stale)
    if current.run_id != run:
        if current.run_id and current.outputs:
            # Outputs are only ever those of a successful run, also when it waited for inputs since.
            earlier = [h for h in current.history if h != current.run_id]
            work.value.history = [*earlier, current.run_id][-HISTORY_LIMIT:]
        work.value.run_id = run
        work.value.attempt = 0
        work.value.start_time = work.now
        work.value.completion_time = None
        work.value.last_failure = None
        work.value.retry_after = None
        work.value.progress = None
        work.value.outputs = {}
        work.value.metrics = {}
        work.phase("Pending")
    elif current.phase in ("Succeeded", "Failed"):
        actions.extend(StopTeacher(t.name) for t in active_teachers)
        return decision()

    mine = [w for w in observed.workloads if w.run_id == run]
    attempt = max([work.value.attempt, *(w.attempt for w in mine)])
    work.value.attempt = attempt
    latest = next((w for w in mine if w.attempt == attempt), None)

    if latest is None and attempt == 0 and observed.reusable is not None:
        return _succeed(
            work,
            actions,
            active_teachers,
            dict(observed.reusable),
            {},
            decision,
            f"reused the finished result of {observed.reusable_from or 'another resource'} (same content)",
            "Reused",
        )

    if latest is not None and latest.state == "succeeded":
        result = _result(latest)
        outputs = _outputs(result) if result is not None else None
        if result is not None and isinstance(outputs, dict):
            return _succeed(
                work,
                actions,
                active_teachers,
                outputs,
                result.metrics,
                decision,
                f"attempt {attempt} succeeded",
                "Succeeded",
            )
        latest = ObservedWorkload(
            run,
            attempt,
            latest.name,
            "failed",
            latest.exit_code,
            "ResultMissing" if outputs is None else "ResultInvalid",
            "the workload exited 0 but left no result document"
            if outputs is None
            else f"the result document does not fit the status: {outputs}",
        )

    if latest is not None and latest.state == "failed":
        failure = _failure(latest)
        work.value.last_failure = failure
        retries = resource.spec.retries
        used = attempt - 1
        if used >= retries.limit:
            message = f"attempt {attempt} of {retries.limit + 1} failed: {_describe_failure(failure)}"
            work.phase("Failed")
            work.value.completion_time = work.value.completion_time or work.now
            work.value.retry_after = None
            work.value.progress = None
            work.condition("Ready", "False", "WorkloadFailed", message)
            work.condition("Progressing", "False", "Failed", message)
            actions.extend(StopTeacher(t.name) for t in active_teachers)
            return decision()
        delay = min(retries.backoff_seconds * 2**used, retries.max_backoff_seconds)
        if work.value.retry_after is None:
            work.value.retry_after = timestamp(now + timedelta(seconds=delay))
            events.append(
                Event("Warning", "AttemptFailed", f"attempt {attempt} failed: {_describe_failure(failure)}")
            )
        due = _parse_time(work.value.retry_after)
        if now < due:
            wait = (due - now).total_seconds()
            # The due time, not a countdown: the status stays the same until something happens.
            message = (
                f"attempt {attempt} failed: {_describe_failure(failure)}; retry {used + 1} of "
                f"{retries.limit} at {work.value.retry_after}"
            )
            work.phase("Running")
            work.condition("Progressing", "True", "BackOff", message)
            work.condition("Ready", "Unknown", "BackOff", message)
            return decision(requeue=max(wait, 0.5))
        attempt += 1
        latest = None
        work.value.retry_after = None
        work.value.progress = None
        events.append(Event("Normal", "Retrying", f"starting attempt {attempt}"))

    if latest is not None:  # pending or active
        work.phase("Running")
        # A retry_after left by a status patch lost after the retry started belongs to the attempt
        # before; kept, it would let this attempt's failure skip its backoff.
        work.value.retry_after = None
        message = f"attempt {attempt} {'running' if latest.state == 'active' else 'starting'}"
        if latest.progress is not None:
            p = latest.progress
            total = f"/{p.total}" if p.total > 0 else ""
            work.value.progress = Progress(
                done=max(p.done, 0),
                total=max(p.total, 0),
                unit=p.unit[:32],
                message=p.message[:1000],
                summary=f"{max(p.done, 0)}{total} {p.unit}"[:64],
            )
        work.condition("Progressing", "True", "WorkloadRunning", message)
        work.condition("Ready", "Unknown", "WorkloadRunning", message)
        return decision(requeue=settings.progress_interval)

    # 3. Start: teachers first, then the workload.
    served = [p for p in participants(resource) if p.served is not None]
    by_participant = {t.participant: t for t in observed.teachers}
    # Servers of participants the spec no longer has would hold their GPUs until the run ends.
    wanted = {p.name for p in served}
    actions.extend(StopTeacher(t.name) for t in observed.teachers if t.participant not in wanted)
    missing = [p for p in served if p.name not in by_participant]
    actions.extend(StartTeacher(_with_model_uri(resource, p, uris)) for p in missing)
    not_ready = [
        p.name
        for p in served
        if not (
            p.name in by_participant
            and by_participant[p.name].ready
            and by_participant[p.name].endpoint is not None
        )
    ]
    work.phase("Running")
    if not_ready:
        message = "waiting for served models to be ready: " + ", ".join(not_ready)
        work.condition("Progressing", "True", "TeachersStarting", message)
        work.condition("Ready", "Unknown", "TeachersStarting", message)
        return decision(requeue=TEACHER_POLL_SECONDS)

    endpoints: dict[str, Endpoint] = {}
    for participant in participants(resource):
        if participant.endpoint is not None:
            endpoints[participant.name] = Endpoint(
                base_url=participant.endpoint.base_url,
                model=participant.endpoint.model,
                api_key_env=api_key_env(participant.name)
                if participant.endpoint.api_key_secret_ref
                else None,
            )
        else:
            teacher = by_participant[participant.name]
            assert teacher.endpoint is not None, f"served {participant.name} is ready without an endpoint"
            endpoints[participant.name] = teacher.endpoint
    attempt = max(attempt, 1)
    config = WorkloadConfig(
        workload=resource.info.workload,
        kind=resource.kind,
        name=resource.metadata.name,
        namespace=resource.metadata.namespace or "default",
        run_id=run,
        output_uri=output_uri(resource, settings, run),
        spec=resolve(resource.spec, lambda path, ref: uris[path]),
        endpoints=endpoints,
    )
    actions.append(StartWorkload(run, attempt, config))
    work.value.attempt = attempt
    message = f"attempt {attempt} starting"
    work.condition("Progressing", "True", "WorkloadStarting", message)
    work.condition("Ready", "Unknown", "WorkloadStarting", message)
    if attempt == 1 and (current.run_id != run or current.attempt < 1):
        # Only when the status did not record it yet: re-planning before the child shows up is quiet.
        events.append(Event("Normal", "Started", f"run {run} started"))
    return decision(requeue=settings.progress_interval)


def _succeed(
    work: _Status,
    actions: list[Action],
    teachers: list[ObservedTeacher],
    outputs: dict[str, Output],
    metrics: dict[str, float],
    decision: Callable[[], Decision],
    message: str,
    reason: str,
) -> Decision:
    work.phase("Succeeded")
    work.value.outputs = outputs
    work.value.metrics = metrics
    work.value.retry_after = None
    work.value.completion_time = work.value.completion_time or work.now
    if work.value.progress is not None:
        p = work.value.progress
        work.value.progress = p.model_copy(
            update={
                "done": p.total or p.done,
                "summary": f"{p.total or p.done}/{p.total or p.done} {p.unit}"[:64],
            }
        )
    work.condition("Ready", "True", reason, message)
    work.condition("Progressing", "False", reason, message)
    actions.extend(StopTeacher(t.name) for t in teachers)
    result: Decision = decision()
    return result


def conditions_of(status: dict[str, object]) -> list[Condition]:
    """Parsed conditions of a wire status (for drivers and tests)."""
    raw = status.get("conditions", [])
    assert isinstance(raw, list)
    return [Condition.model_validate(c) for c in raw]


def _with_model_uri(resource: Resource, participant: Participant, uris: dict[str, str]) -> Participant:
    """The participant with its served model as a URI (a `from` reference resolved to its output)."""
    assert participant.served is not None
    paths = {id(ref): path for path, ref in iter_references(resource.spec)}
    path = paths.get(id(participant.served.model))
    if participant.served.model.uri is not None or path is None or path not in uris:
        return participant
    model = ModelRef(uri=uris[path])
    return participant.model_copy(update={"served": participant.served.model_copy(update={"model": model})})


def current_run(observed: Observed) -> str | None:
    """The run id the resource would work on now, or None while its inputs are not ready.

    Drivers use it to look for another resource that already finished the same run (reuse).
    """
    problems, digests, _ = _input_problems(observed)
    if problems or observed.cycle:
        return None
    return run_id(observed.resource, digests)

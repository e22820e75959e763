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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from posttrain.api import metrics as metric_names
from posttrain.api.common import ModelRef, Participant
from posttrain.api.references import iter_references, output_name, resolve
from posttrain.api.resources import Resource
from posttrain.api.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    Failure,
    Output,
    Progress,
    Status,
)
from posttrain.api.workload import (
    BUDGET_EXHAUSTED_REASON,
    INVALID_INPUT_EXIT_CODE,
    INVALID_INPUT_REASON,
    Endpoint,
    ModelCacheConfig,
    ProgressDocument,
    Result,
    WorkloadConfig,
)
from posttrain.plan.conditions import set_condition, with_kstatus_conditions, without_condition
from posttrain.plan.gates import gate_condition
from posttrain.plan.graph import describe_cycle
from posttrain.plan.judging import RESULT_CONDITION_TYPES, result_conditions
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
from posttrain.support.times import parse as parse_time
from posttrain.support.times import timestamp

# Settings that decide where and how often a workload runs, not what it computes: they are left out of
# the content hash, so changing them neither re-runs a finished resource nor defeats reuse.
NOT_HASHED = ("scheduling", "retries", "timeoutSeconds", "resources", "image", "tracking")
HISTORY_LIMIT = 16
TEACHER_POLL_SECONDS = 30.0
REUSED_REASON = "Reused"
"""Reason of the Ready and Progressing conditions of a run whose result was taken over (not made)."""
WAITING_RECHECK_SECONDS = 30.0
"""How often a resource waiting on its inputs looks at them again by itself. Readers are queued when an
input's phase changes; this re-check is the safety net for a change whose notice was lost (an
operator killed between writing an input's status and queueing its readers)."""


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


MODEL_CACHE_FOLDER = "model-calls"
"""Folder of the model-call caches (one per namespace) in an artifact root."""


def model_cache(resource: Resource, settings: Settings) -> ModelCacheConfig | None:
    """The model-call cache of the resource's namespace, or None when the driver turned it off.

    It lies in the resource's artifact root unless the driver names another place, so a workload can
    always reach it with the credentials and mounts of its outputs.
    """
    cache = settings.model_cache
    if not cache.enabled:
        return None
    artifacts = (resource.spec.artifacts.uri or settings.artifact_root).rstrip("/")
    root = (cache.root or f"{artifacts}/{MODEL_CACHE_FOLDER}").rstrip("/")
    namespace = resource.metadata.namespace or "default"
    return ModelCacheConfig(uri=f"{root}/{namespace}", max_bytes=cache.max_bytes)


def run_gpus(resource: Resource) -> int:
    """GPUs a run holds: its workload's pods and its served participants' replicas."""
    spec = resource.spec
    served = sum(p.served.gpus * p.served.replicas for p in participants(resource) if p.served is not None)
    return int(spec.resources.gpus * spec.resources.nodes) + served


def _input_problems(observed: Observed) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    """(problems as (reason, message), digests by path, uris by path) of the references."""
    problems: list[tuple[str, str]] = []
    digests: dict[str, str] = {}
    uris: dict[str, str] = {}
    in_cycle = set(observed.cycle or ())
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
        elif state.known_outputs is not None and output not in state.known_outputs:
            # A misspelt or out-of-range name never appears: say so now, not when the input is done.
            valid = ", ".join(state.known_outputs)
            problems.append(("OutputUnknown", f"{label} has no output {output!r}; its outputs are {valid}"))
        elif state.phase == "Failed" and state.current:
            problems.append(("InputFailed", f"input {label} failed"))
        elif state.stalled is not None and state.current and target not in in_cycle:
            # Blocked itself: the block travels down the chain, naming the way to its root cause. Not
            # within a cycle: there the members' messages would quote each other without end.
            problems.append(("InputBlocked", f"input {label} is blocked: {state.stalled}"))
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


REASON_PRIORITY = (
    "ReferenceCycle",
    "OutputUnknown",
    "InputFailed",
    "InputBlocked",
    "InputMissing",
    "OutputMissing",
    "InputNotReady",
)
SPEC_ERRORS = ("ReferenceCycle", "OutputUnknown")
"""Reasons to wait that only a change of the spec ends: Ready is False, not Unknown."""


def _failure(workload: ObservedWorkload) -> Failure:
    message = workload.message
    try:
        document = json.loads(message) if message.strip().startswith("{") else None
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        message = document["error"]
    reason = (workload.reason or "Error")[:256]
    # The workload's own verdict: its input or config is unusable, so running it again cannot help.
    declared = isinstance(document, dict) and document.get("reason") == INVALID_INPUT_REASON
    if declared or workload.exit_code == INVALID_INPUT_EXIT_CODE:
        reason = INVALID_INPUT_REASON
    return Failure(reason=reason, exit_code=workload.exit_code, message=message[:4000])


def _result(workload: ObservedWorkload) -> Result | None:
    if workload.result is not None:
        return workload.result
    try:
        return Result.model_validate_json(workload.message) if workload.message.strip() else None
    except ValueError:
        return None


def result_outputs(result: Result) -> dict[str, Output] | str:
    """The result document's outputs as status outputs, or why they do not fit the status schema."""
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


@dataclass
class _Planning:
    """One evaluation of `plan()`: the working status, what is decided so far, what is known so far.

    Each phase of `PHASES` reads and extends it, and returns the decision when it is the one to decide.
    """

    observed: Observed
    settings: Settings
    now: datetime
    work: Status
    """A working copy of the status; it becomes the decision's status."""
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    """Why the inputs are not ready, as (reason, message)."""
    digests: dict[str, str] = field(default_factory=dict)
    """Input digests by field path (what the run id hashes)."""
    uris: dict[str, str] = field(default_factory=dict)
    """Input URIs by field path (what the workload reads)."""
    run: str = ""
    attempt: int = 0
    latest: ObservedWorkload | None = None
    """The latest attempt of the run, if one exists."""

    @classmethod
    def begin(cls, observed: Observed, settings: Settings, now: datetime) -> _Planning:
        # Times are written with a `Z`: a naive time is taken as UTC, an aware one converted to it.
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        current = observed.resource.status or Status()
        work = current.model_copy(deep=True)
        work.observed_generation = observed.resource.metadata.generation or 1
        planning = cls(observed, settings, now, work)
        if not current.conditions:
            planning.condition("Ready", "Unknown", "Reconciling", "first reconcile")
        return planning

    @property
    def resource(self) -> Resource:
        return self.observed.resource

    @property
    def current(self) -> Status:
        """The status the resource has now."""
        return self.resource.status or Status()

    @property
    def generation(self) -> int:
        return self.resource.metadata.generation or 1

    @property
    def stamp(self) -> str:
        return timestamp(self.now)

    def condition(self, type: ConditionType, status: ConditionStatus, reason: str, message: str = "") -> None:
        """Set a condition of the working status."""
        self.work.conditions = set_condition(
            self.work.conditions, type, status, reason, message, self.generation, self.stamp
        )

    def stop_teachers(self) -> None:
        """Stop every served participant of the resource."""
        self.actions.extend(StopTeacher(t.name) for t in self.observed.teachers)

    def decide(self, requeue: float | None = None) -> Decision:
        """The decision: the working status, the actions and events so far, an event for a new phase."""
        # Every condition was evaluated against this generation, also those that kept their status.
        self.work.conditions = [
            c.model_copy(update={"observed_generation": self.generation})
            for c in with_kstatus_conditions(
                self.work.conditions, self.work.phase, self.generation, self.stamp
            )
        ]
        events = list(self.events)
        if self.work.phase != self.current.phase:
            events.insert(0, _phase_event(self.work))
        return Decision(actions=self.actions, status=self.work.wire(), events=events, requeue_after=requeue)

    def unchanged(self, requeue: float | None = None) -> Decision:
        """The current status as it is, nothing to do."""
        return Decision(actions=[], status=self.current.wire(), events=[], requeue_after=requeue)


def _phase_event(status: Status) -> Event:
    """The event of a new phase: its message says why (the Ready condition, InputsReady when waiting)."""
    kind: Literal["Normal", "Warning"] = "Warning" if status.phase == "Failed" else "Normal"
    reason = next((c.reason for c in status.conditions if c.type == "Progressing"), "")
    explaining = "InputsReady" if status.phase == "Waiting" else "Ready"
    message = next((c.message for c in status.conditions if c.type == explaining), "")
    return Event(kind, status.phase, message or reason)


Step = Callable[[_Planning], Decision | None]
"""One phase of the plan: the decision, or None to let the next phase decide."""


def _read_inputs(planning: _Planning) -> Decision | None:
    """What the references say: problems (a cycle first), digests and URIs of the inputs."""
    problems, planning.digests, planning.uris = _input_problems(planning.observed)
    if planning.observed.cycle:
        problems.insert(0, ("ReferenceCycle", describe_cycle(planning.observed.cycle)))
    planning.problems = problems
    return None


def _kept_while_an_input_reruns(planning: _Planning) -> Decision | None:
    """Finished work, and an attempt in flight, are kept while an input re-runs."""
    current = planning.current
    up_to_date = current.observed_generation == planning.generation and not planning.observed.cycle
    if not planning.problems or not up_to_date:
        return None
    if current.phase in ("Succeeded", "Failed"):
        # Finished work stays finished while an input re-runs; a new input digest later starts a new run.
        return planning.unchanged()
    in_flight = [
        w
        for w in planning.observed.workloads
        if w.run_id == current.run_id and w.state in ("pending", "active")
    ]
    if current.phase == "Running" and in_flight and all(r == "InputNotReady" for r, _ in planning.problems):
        # An input re-runs while an attempt runs on the input digests it started with (kept, as outputs
        # are content-addressed): let it go on, with its teachers. If the input comes back with the
        # same digests the attempt still counts; with new ones, a new run replaces it.
        return planning.unchanged(requeue=planning.settings.progress_interval)
    return None


def _waiting(planning: _Planning) -> Decision | None:
    """Wait (and stop what runs) while an input is missing, failed, not ready, or in a cycle."""
    if not planning.problems:
        planning.condition("InputsReady", "True", "InputsSucceeded", "every input has succeeded")
        planning.work.inputs = dict(planning.digests)
        return None
    reason = min((r for r, _ in planning.problems), key=REASON_PRIORITY.index)
    message = "; ".join(m for _, m in planning.problems)
    planning.work.phase = "Waiting"
    planning.condition("InputsReady", "False", reason, message)
    planning.condition("Progressing", "False", "WaitingForInputs", message)
    planning.condition("Ready", "False" if reason in SPEC_ERRORS else "Unknown", reason, message)
    planning.work.progress = None
    # Nothing runs while waiting: an attempt would read inputs that are gone, failed or changing.
    planning.actions.extend(
        StopWorkload(w.name) for w in planning.observed.workloads if w.state in ("pending", "active")
    )
    planning.stop_teachers()
    return planning.decide(requeue=None if reason in SPEC_ERRORS else WAITING_RECHECK_SECONDS)


def _the_run(planning: _Planning) -> Decision | None:
    """The run of these inputs: a new one starts afresh, a finished one stays; its latest attempt."""
    current, work = planning.current, planning.work
    run = planning.run = run_id(planning.resource, planning.digests)
    observed = planning.observed.workloads
    planning.actions.extend(
        StopWorkload(w.name) for w in observed if w.run_id != run and w.state in ("pending", "active")
    )
    if current.run_id != run:
        _new_run(work, current, run, planning.stamp)
    elif current.phase in ("Succeeded", "Failed"):
        planning.stop_teachers()
        return planning.decide()
    mine = [w for w in observed if w.run_id == run]
    planning.attempt = work.attempt = max([work.attempt, *(w.attempt for w in mine)])
    planning.latest = next((w for w in mine if w.attempt == planning.attempt), None)
    return None


def _new_run(work: Status, current: Status, run: str, now: str) -> None:
    """Reset the working status for a new run (the outputs of the last successful one go to history)."""
    if current.run_id and current.outputs:
        # Outputs are only ever those of a successful run, also when it waited for inputs since.
        earlier = [h for h in current.history if h != current.run_id]
        work.history = [*earlier, current.run_id][-HISTORY_LIMIT:]
    work.run_id = run
    work.attempt = 0
    work.start_time = now
    work.completion_time = None
    work.last_failure = None
    work.retry_after = None
    work.progress = None
    work.outputs = {}
    work.metrics = {}
    work.phase = "Pending"
    for type_ in RESULT_CONDITION_TYPES:
        work.conditions = without_condition(work.conditions, type_)


def _reuse(planning: _Planning) -> Decision | None:
    """Succeed with the result of the same run finished elsewhere, before any attempt of it.

    The result is taken over whole, outputs and metrics, so the conditions decided from it
    (`JudgeReliable`, `Promoted`) are the ones a fresh run of the same content gets.
    """
    reusable = planning.observed.reusable
    if planning.latest is not None or planning.attempt != 0 or reusable is None:
        return None
    message = f"reused the finished result of {reusable.origin} (same content)"
    if reusable.metrics.get(metric_names.BUDGET_EXHAUSTED, 0.0) > 0:
        message += "; its outputs are partial: the run stopped at its budget"
    return _succeed(planning, dict(reusable.outputs), dict(reusable.metrics), message, REUSED_REASON)


def _latest_result(planning: _Planning) -> Decision | None:
    """Succeed with the result of a successful attempt; one without a usable result failed."""
    latest = planning.latest
    if latest is None or latest.state != "succeeded":
        return None
    result = _result(latest)
    outputs = result_outputs(result) if result is not None else None
    if result is not None and isinstance(outputs, dict):
        if result.budget_exhausted:
            # Succeeded, not Failed: the partial outputs are usable, and the stages after it go on.
            message = f"attempt {planning.attempt} stopped at the budget ({result.budget_exhausted}); outputs are partial"
            planning.events.append(Event("Warning", BUDGET_EXHAUSTED_REASON, message))
            return _succeed(planning, outputs, result.metrics, message[:4000], BUDGET_EXHAUSTED_REASON)
        message = f"attempt {planning.attempt} succeeded"
        return _succeed(planning, outputs, result.metrics, message, "Succeeded")
    planning.latest = ObservedWorkload(
        planning.run,
        planning.attempt,
        latest.name,
        "failed",
        latest.exit_code,
        "ResultMissing" if outputs is None else "ResultInvalid",
        "the workload exited 0 but left no result document"
        if outputs is None
        else f"the result document does not fit the status: {outputs}",
    )
    return None


def _failed(planning: _Planning) -> Decision | None:
    """A failed attempt with no retry left fails the resource; so does invalid input at once."""
    latest = planning.latest
    if latest is None or latest.state != "failed":
        return None
    failure = planning.work.last_failure = _failure(latest)
    retries = planning.resource.spec.retries
    permanent = failure.reason == INVALID_INPUT_REASON
    if planning.attempt - 1 < retries.limit and not permanent:
        return None
    if permanent:
        message = (
            f"attempt {planning.attempt} failed: {_describe_failure(failure)}; not retried: "
            "the input data or the settings must change"
        )
    else:
        message = f"attempt {planning.attempt} of {retries.limit + 1} failed: {_describe_failure(failure)}"
    work = planning.work
    work.phase = "Failed"
    work.completion_time = work.completion_time or planning.stamp
    work.retry_after = None
    work.progress = None
    planning.condition("Ready", "False", INVALID_INPUT_REASON if permanent else "WorkloadFailed", message)
    planning.condition("Progressing", "False", "Failed", message)
    planning.stop_teachers()
    return planning.decide()


def _backoff(planning: _Planning) -> Decision | None:
    """After a failed attempt with retries left: wait out the backoff, then go on to the next attempt."""
    latest, work = planning.latest, planning.work
    if latest is None or latest.state != "failed" or work.last_failure is None:
        return None
    retries = planning.resource.spec.retries
    used = planning.attempt - 1
    described = f"attempt {planning.attempt} failed: {_describe_failure(work.last_failure)}"
    if work.retry_after is None:
        delay = min(retries.backoff_seconds * 2**used, retries.max_backoff_seconds)
        work.retry_after = timestamp(planning.now + timedelta(seconds=delay))
        planning.events.append(Event("Warning", "AttemptFailed", described))
    due = parse_time(work.retry_after)
    if planning.now < due:
        # The due time, not a countdown: the status stays the same until something happens.
        message = f"{described}; retry {used + 1} of {retries.limit} at {work.retry_after}"
        work.phase = "Running"
        planning.condition("Progressing", "True", "BackOff", message)
        planning.condition("Ready", "Unknown", "BackOff", message)
        return planning.decide(requeue=max((due - planning.now).total_seconds(), 0.5))
    planning.attempt += 1
    planning.latest = None
    work.retry_after = None
    work.progress = None
    planning.events.append(Event("Normal", "Retrying", f"starting attempt {planning.attempt}"))
    return None


def _running(planning: _Planning) -> Decision | None:
    """An attempt is pending or active: report it and its progress."""
    latest, work = planning.latest, planning.work
    if latest is None:
        return None
    work.phase = "Running"
    # A retry_after left by a status patch lost after the retry started belongs to the attempt
    # before; kept, it would let this attempt's failure skip its backoff.
    work.retry_after = None
    message = f"attempt {planning.attempt} {'running' if latest.state == 'active' else 'starting'}"
    if latest.progress is not None:
        work.progress = _progress(latest.progress)
    planning.condition("Progressing", "True", "WorkloadRunning", message)
    planning.condition("Ready", "Unknown", "WorkloadRunning", message)
    return planning.decide(requeue=planning.settings.progress_interval)


def _progress(document: ProgressDocument) -> Progress:
    """The status form of a progress document (bounded, with a summary)."""
    done, total = max(document.done, 0), max(document.total, 0)
    of_total = f"/{document.total}" if document.total > 0 else ""
    return Progress(
        done=done,
        total=total,
        unit=document.unit[:32],
        message=document.message[:1000],
        summary=f"{done}{of_total} {document.unit}"[:64],
    )


def _teachers(planning: _Planning) -> Decision | None:
    """Before the workload: start the served participants, wait until every one is ready."""
    resource, observed = planning.resource, planning.observed
    served = [p for p in participants(resource) if p.served is not None]
    by_participant = {t.participant: t for t in observed.teachers}
    # Servers of participants the spec no longer has would hold their GPUs until the run ends.
    wanted = {p.name for p in served}
    planning.actions.extend(StopTeacher(t.name) for t in observed.teachers if t.participant not in wanted)
    planning.actions.extend(
        StartTeacher(_with_model_uri(resource, p, planning.uris))
        for p in served
        if p.name not in by_participant
    )
    not_ready = [
        p.name
        for p in served
        if p.name not in by_participant
        or not by_participant[p.name].ready
        or by_participant[p.name].endpoint is None
    ]
    planning.work.phase = "Running"
    if not not_ready:
        return None
    message = "waiting for served models to be ready: " + ", ".join(not_ready)
    planning.condition("Progressing", "True", "TeachersStarting", message)
    planning.condition("Ready", "Unknown", "TeachersStarting", message)
    return planning.decide(requeue=TEACHER_POLL_SECONDS)


def _endpoints(
    resource: Resource, teachers: list[ObservedTeacher], digests: Mapping[str, str]
) -> dict[str, Endpoint]:
    """How the workload reaches each participant (external endpoints, or the ready served ones).

    Each carries the model's identity for the model-call cache: the declared model of an external
    endpoint, the digest of a served model's weights (its input digest: the producing run's output
    digest, or the URI given), never the address, which differs between the local runner and a cluster.
    Verifiers run inside the workload: they have no endpoint.
    """
    by_participant = {t.participant: t for t in teachers}
    paths = {id(ref): path for path, ref in iter_references(resource.spec)}
    endpoints: dict[str, Endpoint] = {}
    for participant in participants(resource):
        if participant.verifier is not None:
            continue
        if participant.endpoint is not None:
            endpoints[participant.name] = Endpoint(
                base_url=participant.endpoint.base_url,
                model=participant.endpoint.model,
                api_key_env=api_key_env(participant.name)
                if participant.endpoint.api_key_secret_ref
                else None,
                identity=f"endpoint:{participant.endpoint.model}",
            )
        else:
            teacher = by_participant[participant.name]
            assert teacher.endpoint is not None, f"served {participant.name} is ready without an endpoint"
            assert participant.served is not None
            model = participant.served.model
            weights = digests.get(paths.get(id(model), ""), model.uri)
            identity = f"weights:{weights}" if weights else None
            endpoints[participant.name] = teacher.endpoint.model_copy(update={"identity": identity})
    return endpoints


def _start(planning: _Planning) -> Decision:
    """Start the next attempt of the workload."""
    resource, run = planning.resource, planning.run
    attempt = planning.work.attempt = max(planning.attempt, 1)
    config = WorkloadConfig(
        workload=resource.info.workload,
        kind=resource.kind,
        name=resource.metadata.name,
        namespace=resource.metadata.namespace or "default",
        run_id=run,
        output_uri=output_uri(resource, planning.settings, run),
        spec=resolve(resource.spec, lambda path, ref: planning.uris[path]),
        endpoints=_endpoints(resource, planning.observed.teachers, planning.digests),
        model_cache=model_cache(resource, planning.settings),
        started_at=planning.work.start_time,
        gpus=run_gpus(resource),
    )
    planning.actions.append(StartWorkload(run, attempt, config))
    message = f"attempt {attempt} starting"
    planning.condition("Progressing", "True", "WorkloadStarting", message)
    planning.condition("Ready", "Unknown", "WorkloadStarting", message)
    current = planning.current
    if attempt == 1 and (current.run_id != run or current.attempt < 1):
        # Only when the status did not record it yet: re-planning before the child shows up is quiet.
        planning.events.append(Event("Normal", "Started", f"run {run} started"))
    return planning.decide(requeue=planning.settings.progress_interval)


PHASES: tuple[Step, ...] = (
    _read_inputs,
    _kept_while_an_input_reruns,
    _waiting,
    _the_run,
    _reuse,
    _latest_result,
    _failed,
    _backoff,
    _running,
    _teachers,
)
"""The phases of `plan()` in order; the first that returns a decision decides, else `_start` does."""


def plan(observed: Observed, settings: Settings, now: datetime) -> Decision:
    """Decide what to do for one resource.

    Args:
        observed: the resource with its status, its children, and the state of what it references.
        settings: driver-wide settings.
        now: the current time (UTC).

    Returns:
        The actions, the complete new status, events, and when to look again.
    """
    planning = _Planning.begin(observed, settings, now)
    for phase in PHASES:
        decision = phase(planning)
        if decision is not None:
            return decision
    return _start(planning)


def _succeed(
    planning: _Planning, outputs: dict[str, Output], metrics: dict[str, float], message: str, reason: str
) -> Decision:
    work = planning.work
    work.phase = "Succeeded"
    work.outputs = outputs
    work.metrics = metrics
    work.retry_after = None
    work.completion_time = work.completion_time or planning.stamp
    if work.progress is not None:
        p = work.progress
        work.progress = p.model_copy(
            update={
                "done": p.total or p.done,
                "summary": f"{p.total or p.done}/{p.total or p.done} {p.unit}"[:64],
            }
        )
    planning.condition("Ready", "True", reason, message)
    planning.condition("Progressing", "False", reason, message)
    resource = planning.resource
    for decided in result_conditions(resource.kind, resource.spec, metrics):
        planning.condition(decided.type, decided.status, decided.reason, decided.message)
    # After JudgeReliable: a gate refuses to promote on unreliable judges.
    gate = gate_condition(resource, metrics, work.conditions)
    if gate is not None:
        planning.condition("Promoted", "True" if gate.promoted else "False", gate.reason, gate.message)
    planning.stop_teachers()
    return planning.decide()


def invalid_spec(
    status: Mapping[str, Any] | None, generation: int, error: ValidationError, now: datetime
) -> tuple[dict[str, Any], str]:
    """The status of a resource whose spec the models reject although the API server accepted it.

    The resource fails (Ready and Progressing False, Stalled True, reason InvalidSpec) instead of
    crashing the driver; the rest of its status is kept as it is (it may not even parse).

    Args:
        status: the resource's current status (wire form), if any.
        generation: the resource's generation.
        error: why the models reject the spec.
        now: the current time (UTC).

    Returns:
        The new status (wire form) and the message (one line per problem, with the field path).
    """
    current = dict(status or {})
    # A rule of the whole spec has no field path: name the spec.
    message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors())[
        :4000
    ]
    conditions = [Condition.model_validate(c) for c in current.get("conditions") or []]
    failed: tuple[ConditionType, ...] = ("Ready", "Progressing")
    for condition_type in failed:
        conditions = set_condition(
            conditions, condition_type, "False", "InvalidSpec", message, generation, timestamp(now)
        )
    conditions = with_kstatus_conditions(conditions, "Failed", generation, timestamp(now))
    new = {
        **current,
        "phase": "Failed",
        "observedGeneration": generation,
        "conditions": [c.wire() for c in conditions],
    }
    return new, message


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

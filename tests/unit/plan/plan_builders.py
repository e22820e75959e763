"""Small builders for the plan tests: resources, observations, workloads in each state, and a driver.

The driver (`Driver`) carries out a decision the way the operator and the local runner do: it records
started attempts and teachers as children, removes stopped ones, and writes the status unless the test
says the status patch was lost. Tests use it to follow a resource through its lifecycle.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from posttrain.api.resources import Resource
from posttrain.api.status import Condition, Output, Phase, Status
from posttrain.api.workload import Endpoint, ProgressDocument, Result, ResultOutput
from posttrain.files import load_resources
from posttrain.plan.reconcile import conditions_of, plan
from posttrain.plan.types import (
    Decision,
    InputState,
    Observed,
    ObservedTeacher,
    ObservedWorkload,
    ReusableRun,
    Settings,
    StartTeacher,
    StartWorkload,
    StopTeacher,
    StopWorkload,
    WorkloadState,
)
from posttrain.support import times

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = Settings(artifact_root="pvc://posttrain/artifacts", progress_interval=15.0)
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
API_VERSION = "posttrain.dev/v1alpha1"


def at(seconds: float) -> datetime:
    """The time `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    """`at(seconds)` as the status writes it."""
    return times.timestamp(at(seconds))


# --- resources --------------------------------------------------------------------------------------


def make(
    kind: str,
    name: str,
    spec: dict[str, Any],
    status: dict[str, Any] | None = None,
    generation: int | None = 1,
    namespace: str | None = "ml",
) -> Resource:
    """A validated resource from plain dicts (wire form)."""
    metadata: dict[str, Any] = {"name": name}
    if generation is not None:
        metadata["generation"] = generation
    if namespace is not None:
        metadata["namespace"] = namespace
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}
    if status is not None:
        body["status"] = status
    return Resource.parse(body)


def sft_spec(dataset: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A TrainStage (SFT) spec; the dataset defaults to a URI, the model to a URI."""
    return {
        "method": "sft",
        "model": {"uri": "pvc://models/base"},
        "dataset": dataset or {"uri": "pvc://data/sft.jsonl"},
        **extra,
    }


def sft(name: str = "sft", dataset: dict[str, Any] | None = None, **extra: Any) -> Resource:
    """An SFT TrainStage reading `dataset` (a URI unless given)."""
    return make("TrainStage", name, sft_spec(dataset, **extra))


def from_ref(kind: str, name: str, output: str | None = None) -> dict[str, Any]:
    """A `from:` reference."""
    ref: dict[str, Any] = {"kind": kind, "name": name}
    if output is not None:
        ref["output"] = output
    return {"from": ref}


def served(name: str, model: dict[str, Any] | None = None) -> dict[str, Any]:
    """A participant served by posttrain."""
    return {"name": name, "served": {"model": model or {"uri": "pvc://models/teacher"}, "gpus": 0}}


def external(name: str, secret: bool = True) -> dict[str, Any]:
    """A participant at an external OpenAI-compatible endpoint (with an API key secret)."""
    endpoint: dict[str, Any] = {"baseUrl": f"https://{name}.example.com/v1", "model": f"{name}-model"}
    if secret:
        endpoint["apiKeySecretRef"] = {"name": "keys", "key": name}
    return {"name": name, "endpoint": endpoint}


def evol(name: str = "evol", teachers: list[dict[str, Any]] | None = None, **extra: Any) -> Resource:
    """An EvolJob on a URI dataset with the given teachers (one served teacher by default)."""
    spec = {"dataset": {"uri": "pvc://data/seed.jsonl"}, "teachers": teachers or [served("teacher")], **extra}
    return make("EvolJob", name, spec)


@functools.cache
def _examples(folder: str) -> dict[str, Resource]:
    return {r.metadata.name: r for r in load_resources([ROOT / "examples" / folder])}


def example(name: str, folder: str = "quickstart") -> Resource:
    """A resource of an example pipeline, by name."""
    return _examples(folder)[name].model_copy(deep=True)


def examples(folder: str = "quickstart") -> list[Resource]:
    """Every resource of an example pipeline, in file order."""
    return [r.model_copy(deep=True) for r in _examples(folder).values()]


def with_spec(resource: Resource, generation: int, **changes: Any) -> Resource:
    """The resource with top-level spec fields replaced (wire names) and a new generation."""
    spec = {**resource.spec.wire(), **changes}
    body = resource.wire()
    body["spec"] = spec
    body["metadata"]["generation"] = generation
    return Resource.parse(body)


def renamed(resource: Resource, name: str) -> Resource:
    """The same resource under another name, without status."""
    body = resource.wire()
    body["metadata"]["name"] = name
    body.pop("status", None)
    return Resource.parse(body)


def with_status(resource: Resource, status: dict[str, Any] | Status | None) -> Resource:
    """The resource with the given status (wire form or model)."""
    value = Status.model_validate(status) if isinstance(status, dict) else status
    return resource.model_copy(update={"status": value})


# --- observations -----------------------------------------------------------------------------------


def output(name: str, digest: str | None = "auto", rows: int | None = 10) -> Output:
    """An output with a URI and (unless None) a digest derived from its name."""
    return Output(
        uri=f"pvc://posttrain/artifacts/{name}",
        rows=rows,
        digest=f"sha256:{name}" if digest == "auto" else digest,
    )


def done_input(*outputs: str, run: str = "up-run") -> InputState:
    """A referenced resource that succeeded with these outputs."""
    return InputState(
        exists=True,
        phase="Succeeded",
        outputs={o: output(f"{run}/{o}") for o in outputs},
        run_id=run,
    )


def input_in(phase: Phase, current: bool = True) -> InputState:
    """A referenced resource in `phase`, without outputs."""
    return InputState(exists=True, phase=phase, current=current)


def result(**outputs: str) -> Result:
    """A result document with the given outputs (name -> uri) and a loss."""
    return Result(
        outputs={k: ResultOutput(uri=v, rows=5, digest=f"sha256:{k}") for k, v in outputs.items()},
        metrics={"loss": 0.5},
    )


def workload(
    run: str,
    attempt: int,
    state: WorkloadState,
    **extra: Any,
) -> ObservedWorkload:
    """An attempt of `run` in `state`, named like a Job."""
    return ObservedWorkload(
        run_id=run, attempt=attempt, name=f"job-{run[:6]}-{attempt}", state=state, **extra
    )


def pending(run: str, attempt: int = 1) -> ObservedWorkload:
    """An attempt that is created but not running yet."""
    return workload(run, attempt, "pending")


def active(run: str, attempt: int = 1, progress: ProgressDocument | None = None) -> ObservedWorkload:
    """A running attempt."""
    return workload(run, attempt, "active", progress=progress)


def succeeded(run: str, attempt: int = 1, res: Result | None = None, message: str = "") -> ObservedWorkload:
    """A finished attempt with a result document (given, or none when `res` is None and no message)."""
    return workload(run, attempt, "succeeded", exit_code=0, result=res, message=message)


def failed(
    run: str, attempt: int = 1, exit_code: int | None = 1, reason: str = "Error", message: str = ""
) -> ObservedWorkload:
    """A failed attempt."""
    return workload(run, attempt, "failed", exit_code=exit_code, reason=reason, message=message)


def teacher(participant: str, ready: bool = True, endpoint: bool = True) -> ObservedTeacher:
    """A served participant's server."""
    return ObservedTeacher(
        participant=participant,
        name=f"srv-{participant}",
        ready=ready,
        endpoint=Endpoint(base_url=f"http://srv-{participant}:8000/v1", model=participant)
        if endpoint
        else None,
    )


# --- decisions --------------------------------------------------------------------------------------


def applied(resource: Resource, decision: Decision) -> Resource:
    """The resource with the decision's status written."""
    return with_status(resource, copy.deepcopy(decision.status))


def status_document(decision: Decision) -> dict[str, Any]:
    """The decision's status, the JSON document the operator patches (read into, as any such document)."""
    return decision.status


def conditions(decision: Decision) -> dict[str, Condition]:
    """The decision's conditions by type."""
    return {c.type: c for c in conditions_of(decision.status)}


def starts(decision: Decision) -> list[StartWorkload]:
    """The StartWorkload actions."""
    return [a for a in decision.actions if isinstance(a, StartWorkload)]


def creations(decision: Decision) -> set[tuple[str, ...]]:
    """What the decision would create, by identity: (workload, run, attempt) or (teacher, name)."""
    out: set[tuple[str, ...]] = set()
    for action in decision.actions:
        if isinstance(action, StartWorkload):
            out.add(("workload", action.run_id, str(action.attempt)))
        elif isinstance(action, StartTeacher):
            out.add(("teacher", action.participant.name))
    return out


def replan(observed: Observed, first: Decision, now: datetime, settings: Settings = SETTINGS) -> Decision:
    """Plan again after writing the first decision's status, with the same observations and time.

    Asserts convergence: the same status, nothing created that the first decision did not create, and
    no phase-transition event.
    """
    again = plan(replace(observed, resource=applied(observed.resource, first)), settings, now)
    assert again.status == first.status
    assert creations(again) <= creations(first)
    assert not [e for e in again.events if e.reason == again.status["phase"]]
    return again


@dataclass
class Driver:
    """Carries out decisions for one resource the way a driver does; children are kept by name."""

    resource: Resource
    inputs: dict[tuple[str, str], InputState] = field(default_factory=dict)
    workloads: dict[str, ObservedWorkload] = field(default_factory=dict)
    teachers: dict[str, ObservedTeacher] = field(default_factory=dict)
    settings: Settings = SETTINGS
    started: list[tuple[str, int]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    reusable: ReusableRun | None = None

    def observed(self) -> Observed:
        """The current observations."""
        return Observed(
            resource=self.resource,
            workloads=list(self.workloads.values()),
            teachers=list(self.teachers.values()),
            inputs=dict(self.inputs),
            reusable=self.reusable,
        )

    def step(self, now: datetime, lose_status: bool = False) -> Decision:
        """Plan, carry out the actions, and write the status (unless the patch is lost)."""
        decision = plan(self.observed(), self.settings, now)
        for action in decision.actions:
            if isinstance(action, StartWorkload):
                name = f"job-{action.run_id[:6]}-{action.attempt}"
                if name not in self.workloads:
                    self.started.append((action.run_id, action.attempt))
                    self.workloads[name] = ObservedWorkload(action.run_id, action.attempt, name, "pending")
            elif isinstance(action, StopWorkload):
                self.workloads.pop(action.name, None)
            elif isinstance(action, StartTeacher):
                self.teachers.setdefault(
                    action.participant.name, teacher(action.participant.name, ready=False)
                )
            elif isinstance(action, StopTeacher):
                self.teachers = {k: v for k, v in self.teachers.items() if v.name != action.name}
        self.events.extend(f"{e.type}/{e.reason}" for e in decision.events)
        if not lose_status:
            self.resource = applied(self.resource, decision)
        return decision

    def set_workload(self, attempt: int, state: WorkloadState, **extra: Any) -> None:
        """Move the attempt of the current run to `state`."""
        name = next(
            n for n, w in self.workloads.items() if w.attempt == attempt and w.run_id == self.status.run_id
        )
        self.workloads[name] = replace(self.workloads[name], state=state, **extra)

    def ready_teachers(self) -> None:
        """Every started teacher becomes ready."""
        self.teachers = {k: teacher(k) for k in self.teachers}

    @property
    def status(self) -> Status:
        """The written status."""
        assert self.resource.status is not None
        return self.resource.status

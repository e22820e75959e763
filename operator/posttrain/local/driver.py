"""The local runner: a second driver of the plan layer, with processes instead of Jobs.

Inputs: manifest files or folders (the same a cluster gets), a state folder (`.posttrain/`).
Outputs: a status per resource in `state/`, artifacts under `artifacts/`, events in `events.jsonl`.

Each pass builds an `Observed` for every resource, in dependency order, from what is on this machine:
its record (status, generation), its workload attempts (process alive? exit code? termination
message? result.json and progress.json in the output folder), the local servers it uses, and the
records of the resources it references. `plan()` decides; the driver carries the actions out:

- `StartWorkload`: write the config and queue the attempt; queued attempts start as local processes
  of `posttrain-trainer <workload> --config FILE` while fewer than `parallel` run (like a Job that
  Kueue keeps suspended until it is admitted). `POSTTRAIN_TERMINATION_LOG` points to a file in the
  attempt's folder: it is the termination message.
- `StopWorkload`: stop the process group of an attempt of an outdated run.
- `StartTeacher` / `StopTeacher`: register or drop a participant's use of a local model server.

Retries, backoff, input gating and reuse are the plan's, so a pipeline behaves here as it does on a
cluster. The run ends when nothing can move any more: every resource Succeeded, Failed, or Waiting on
something that will not change.

Resume: state is written after every change, so a runner that is interrupted (Ctrl-C) or killed
(SIGKILL) can be started again. Finished resources keep their Succeeded status for the same run id and
are not redone. Attempts that the runner stopped on Ctrl-C are restarted under the same attempt
number; workloads that outlived a killed runner are adopted (still running) or read (finished); an
attempt whose process vanished without an exit code counts as a failed attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from posttrain.api.common import ArtifactStore, DataRef, ExternalEndpoint, ModelRef
from posttrain.api.curriculum import KIND as CURRICULUM
from posttrain.api.curriculum import Curriculum, CurriculumStatus
from posttrain.api.loading import parse_manifests
from posttrain.api.outputs import outputs_of
from posttrain.api.references import iter_references, output_name
from posttrain.api.resources import Resource
from posttrain.api.status import Output, Status
from posttrain.api.uri import ArtifactUri
from posttrain.api.workload import Result
from posttrain.files import read_documents
from posttrain.local.servers import ServerCommand, Servers, TeacherUse, default_server_command
from posttrain.local.state import (
    ResourceRecord,
    StateDir,
    WorkloadDir,
    process_start_time,
    read_json,
    read_progress,
    read_result,
    spec_digest,
)
from posttrain.plan.conditions import stalled_message
from posttrain.plan.curriculum import ChainError, chain, plan_curriculum, validate_children
from posttrain.plan.driver import FinishedRun, Lookups, complete
from posttrain.plan.graph import Graph
from posttrain.plan.reconcile import api_key_env, participants, plan
from posttrain.plan.types import (
    Decision,
    Event,
    InputState,
    ModelCacheSettings,
    Observed,
    ObservedTeacher,
    ObservedWorkload,
    Settings,
    StartTeacher,
    StartWorkload,
    StopTeacher,
    StopWorkload,
)
from posttrain.support.processes import stop_group

Key = tuple[str, str]
TERMINAL = ("Succeeded", "Failed")
BLOCKED_REASONS = ("InputFailed", "InputMissing", "OutputMissing", "ReferenceCycle")


# Loading ---------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """Validated resources, with the manifest each came from, in dependency order where possible."""

    resources: list[Resource]
    sources: dict[Key, str]
    graph: Graph
    problems: list[str] = field(default_factory=list)
    """Missing references and cycles (the plan reports them in status; `--dry-run` prints them)."""
    order: list[Key] = field(default_factory=list)
    curricula: list[Curriculum] = field(default_factory=list)
    """Curricula: their children join `resources` as the plan creates them, stage by stage."""

    def add(self, resource: Resource, source: str) -> bool:
        """Add a resource or replace one of the same key; True when anything changed."""
        old = next((r for r in self.resources if r.key == resource.key), None)
        if old is not None and old.spec == resource.spec:
            return False
        if old is None:
            self.resources.append(resource)
        else:
            self.resources[self.resources.index(old)] = resource
        self.sources[resource.key] = source
        self.graph = Graph.build(self.resources)
        self.problems = self.graph.problems()
        self.order = self.graph.run_order()
        return True


def absolute_file_uri(uri: str, base: Path) -> str:
    """`file://relative/path` resolved against `base`; other URIs unchanged."""
    if not uri.startswith("file://") or uri.startswith("file:///"):
        return uri
    return "file://" + str((base / uri[len("file://") :]).resolve())


def with_absolute_uris(resource: Resource, base: Path) -> Resource:
    """A copy of the resource whose relative `file://` URIs are resolved against `base`."""
    spec = resource.spec.model_copy(deep=True)
    for _, ref in iter_references(spec):
        if ref.uri is not None:
            ref.uri = absolute_file_uri(ref.uri, base)
    store: ArtifactStore = spec.artifacts
    if store.uri is not None:
        store.uri = absolute_file_uri(store.uri, base)
    return resource.model_copy(update={"spec": spec})


PARTICIPANT_FIELDS = ("student", "teachers", "judges")
"""Spec fields that hold participants (one, or a list)."""


def with_endpoints(document: Any, endpoints: Mapping[str, ExternalEndpoint]) -> Any:
    """A manifest document whose participants named in `endpoints` use those endpoints instead.

    A participant so named loses its `served` model or `verifier` and gets the endpoint; when the
    environment variable `POSTTRAIN_API_KEY_<NAME>` is set, the endpoint reads its API key from it (the
    local runner's stand-in for a Secret). Other documents and participants are left as they are.
    """
    if not endpoints or not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        return document
    spec = dict(document["spec"])
    for field_name in PARTICIPANT_FIELDS:
        value = spec.get(field_name)
        if isinstance(value, list):
            spec[field_name] = [_with_endpoint(p, endpoints) for p in value]
        elif value is not None:
            spec[field_name] = _with_endpoint(value, endpoints)
    return {**document, "spec": spec}


def _with_endpoint(participant: Any, endpoints: Mapping[str, ExternalEndpoint]) -> Any:
    if not isinstance(participant, dict) or participant.get("name") not in endpoints:
        return participant
    name = str(participant["name"])
    endpoint = endpoints[name].wire()
    if os.environ.get(api_key_env(name)):
        endpoint["apiKeySecretRef"] = {"name": "local-environment", "key": api_key_env(name)}
    kept = {k: v for k, v in participant.items() if k not in ("served", "verifier", "endpoint")}
    return {**kept, "endpoint": endpoint}


def load_pipeline(
    paths: Iterable[str | Path], endpoints: Mapping[str, ExternalEndpoint] | None = None
) -> Pipeline:
    """Load and validate manifests with the API's models; resolve relative `file://` URIs.

    Args:
        paths: manifest files or folders.
        endpoints: participants (by name) to reach at these endpoints instead of what the manifests
            say (`posttrain run --endpoint`).

    Raises:
        ManifestError: listing every problem of every document.
    """
    documents = [(source, with_endpoints(d, endpoints or {})) for source, d in read_documents(paths)]
    parsed, curricula = parse_manifests(documents)
    sources: dict[Key, str] = {}
    for source, document in documents:
        if isinstance(document, dict):
            key = (str(document.get("kind")), str((document.get("metadata") or {}).get("name")))
            sources.setdefault(key, source)
    resources = [with_absolute_uris(r, Path(sources[r.key]).parent) for r in parsed]
    graph = Graph.build(resources)
    return Pipeline(resources, sources, graph, graph.problems(), graph.run_order(), curricula)


# Paths -----------------------------------------------------------------------------------------------


def local_path(uri: str, state: StateDir) -> Path | None:
    """Where a `file://` or `pvc://` URI lives on this machine; None for object stores."""
    return ArtifactUri.parse(uri).local_path(state.pvc_root)


# Display protocol ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceView:
    """What a display shows of one resource."""

    kind: str
    name: str
    phase: str
    reason: str
    message: str
    done: int = 0
    total: int = 0
    unit: str = ""
    run_id: str | None = None
    attempt: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def label(self) -> str:
        """`Kind/name`."""
        return f"{self.kind}/{self.name}"


class Display(Protocol):
    """Receives the runner's view of the pipeline."""

    def update(self, views: Sequence[ResourceView]) -> None:
        """The state of every resource after a pass."""

    def event(self, kind: str, name: str, event: Event) -> None:
        """An event of a resource."""

    def note(self, message: str) -> None:
        """A line about the runner itself (servers, interruptions)."""


class SilentDisplay:
    """A display that shows nothing (tests, `--quiet`)."""

    def update(self, views: Sequence[ResourceView]) -> None:
        """Show nothing."""

    def event(self, kind: str, name: str, event: Event) -> None:
        """Show nothing."""

    def note(self, message: str) -> None:
        """Show nothing."""


def view_of(kind: str, name: str, status: dict[str, Any] | None) -> ResourceView:
    """The display view of a wire status."""
    model = CurriculumStatus if kind == CURRICULUM else Status
    typed = model.model_validate(status) if status else Status()
    progressing = next((c for c in typed.conditions if c.type == "Progressing"), None)
    ready = next((c for c in typed.conditions if c.type == "Ready"), None)
    condition = progressing if typed.phase not in TERMINAL and progressing else ready
    progress = typed.progress
    return ResourceView(
        kind=kind,
        name=name,
        phase=typed.phase,
        reason=condition.reason if condition else "",
        message=condition.message if condition else "",
        done=progress.done if progress else 0,
        total=progress.total if progress else 0,
        unit=progress.unit if progress else "",
        run_id=typed.run_id,
        attempt=typed.attempt,
        metrics=dict(typed.metrics),
        start_time=typed.start_time,
        completion_time=typed.completion_time,
    )


# The runner ------------------------------------------------------------------------------------------


def default_trainer_command() -> list[str]:
    """`posttrain-trainer` of this interpreter (so it finds the same packages)."""
    return [sys.executable, "-m", "posttrain_trainer.cli"]


@dataclass
class RunOptions:
    """Settings of a local run."""

    trainer_command: list[str] = field(default_factory=default_trainer_command)
    """The trainer entry point; `<workload> --config FILE` is appended."""
    server_command: ServerCommand = field(default_factory=default_server_command)
    """How to start a local model server."""
    parallel: int = 1
    """Workload processes running at the same time (the rest wait in a queue)."""
    poll_interval: float = 0.5
    """Seconds between passes."""
    server_ready_timeout: float = 600.0
    server_linger: float = 120.0
    """Seconds an unused server stays up for a later stage that serves the same model."""
    """Seconds a server may take to answer before it counts as failed."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of workloads and servers."""
    model_cache: ModelCacheSettings = field(default_factory=ModelCacheSettings)
    """The model-call cache of the workloads (by default in the artifact root, shared with a cluster
    whose operator points at the same store)."""


@dataclass
class RunSummary:
    """How a run ended."""

    phases: dict[Key, str]
    interrupted: bool = False
    passes: int = 0
    stuck: list[str] = field(default_factory=list)
    """Resources that cannot move, with the reason (failed servers)."""

    @property
    def succeeded(self) -> bool:
        """Every resource succeeded and the run was not interrupted."""
        return not self.interrupted and all(p == "Succeeded" for p in self.phases.values())


class _Interrupted(Exception):
    pass


class LocalRunner:
    """Drives a pipeline to the end on this machine."""

    def __init__(
        self,
        pipeline: Pipeline,
        state: StateDir,
        options: RunOptions | None = None,
        display: Display | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """A runner of `pipeline` with its state under `state` (`clock` gives the plan its time)."""
        self.pipeline = pipeline
        self.state = state
        self.options = options or RunOptions()
        self.display: Display = display or SilentDisplay()
        self.clock = clock
        self.settings = Settings(
            artifact_root=state.artifact_root,
            progress_interval=self.options.poll_interval,
            model_cache=self.options.model_cache,
        )
        self.by_key = {r.key: r for r in pipeline.resources}
        self.records: dict[Key, ResourceRecord] = {}
        self.servers = Servers(
            state,
            self.options.server_command,
            ready_timeout=self.options.server_ready_timeout,
            linger=self.options.server_linger,
            env=self._env(),
            log=self.display.note,
        )
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # Through the pipeline: a curriculum's children join it while the runner runs.
        self.lookups = Lookups(
            lambda key: self.pipeline.graph.refs_of(key), self.finished_runs, self.stored_result
        )

    # Environment -----------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {
            "POSTTRAIN_PVC_ROOT": str(self.state.pvc_root),
            "PYTHONUNBUFFERED": "1",
            **self.options.env,
        }

    # Records ---------------------------------------------------------------------------------------
    def load_records(self) -> None:
        """Read (or create) the record of every resource and curriculum; a changed spec bumps the generation."""
        every: list[Resource | Curriculum] = [*self.pipeline.resources, *self.pipeline.curricula]
        for resource in every:
            self._load_record(resource)

    def _load_record(self, resource: Resource | Curriculum) -> None:
        digest = spec_digest(resource)
        record = self.state.load_record(*resource.key)
        if record is None:
            record = ResourceRecord(resource.kind, resource.metadata.name, 1, digest)
        elif record.spec_digest != digest:
            record.generation += 1
            record.spec_digest = digest
        record.source = self.pipeline.sources.get(resource.key, "")
        self.records[resource.key] = record
        self.state.save_record(record)

    # Curricula -------------------------------------------------------------------------------------
    def sync_curricula(self) -> bool:
        """Let the plan decide each curriculum's children and status; True when anything changed.

        A child the plan wants joins the pipeline (with its record, kept from an earlier run), so a
        curriculum runs here as it does on a cluster: stage by stage, through its gates.
        """
        changed = False
        for curriculum in self.pipeline.curricula:
            record = self.records[curriculum.key]
            metadata = curriculum.metadata.model_copy(update={"generation": record.generation})
            status = CurriculumStatus.model_validate(record.status) if record.status else None
            current = curriculum.model_copy(update={"metadata": metadata, "status": status})
            decision = plan_curriculum(current, self._child_status, self.clock())
            source = self.pipeline.sources.get(curriculum.key, "")
            try:
                children = validate_children(decision.children)
            except ChainError:  # the plan reports an invalid chain in the status; nothing is added
                children = []
            for child in children:
                resolved = with_absolute_uris(child, Path(source).parent)
                if self.pipeline.add(resolved, source):
                    changed = True
                    self.by_key[resolved.key] = resolved
                    self._load_record(resolved)
            changed = self._record_decision(curriculum.key, decision.status, decision.events) or changed
        return changed

    def _record_decision(self, key: Key, status: dict[str, Any], events: list[Event]) -> bool:
        """Save a new status and record the events; True when either changed anything."""
        record = self.records[key]
        changed = bool(events)
        if status != record.status:
            changed = True
            record.status = status
            self.state.save_record(record)
        for event in events:
            self._record_event(key, event)
        return changed

    def _child_status(self, key: Key) -> dict[str, Any] | None:
        record = self.records.get(key)
        return None if record is None or key not in self.by_key else dict(record.status or {})

    def _record_event(self, key: Key, event: Event) -> None:
        self.display.event(key[0], key[1], event)
        self.state.append_event(
            {
                "kind": key[0],
                "name": key[1],
                "type": event.type,
                "reason": event.reason,
                "message": event.message,
            }
        )

    def current(self, key: Key) -> Resource:
        """The resource with its generation and its last status."""
        resource = self.by_key[key]
        record = self.records[key]
        metadata = resource.metadata.model_copy(update={"generation": record.generation})
        return resource.model_copy(update={"metadata": metadata, "status": record.typed_status()})

    # Observation -----------------------------------------------------------------------------------
    def observe(self, key: Key) -> Observed:
        """Everything the plan needs about one resource.

        Read from this machine, completed by the driver core (its cycle, a reusable finished run).
        """
        resource = self.current(key)
        inputs: dict[Key, InputState] = {}
        for _, ref in iter_references(resource.spec):
            if ref.from_ is None:
                continue
            target = (str(ref.from_.kind), ref.from_.name)
            inputs[target] = self._input_state(target)
        observed = Observed(
            resource=resource,
            workloads=self._workloads(key),
            teachers=self._teachers(key),
            inputs=inputs,
        )
        return complete(observed, self.lookups, self.settings)

    # Lookups of the driver core ----------------------------------------------------------------------
    def finished_runs(self, kind: str, run: str) -> Iterator[FinishedRun]:
        """Resources of `kind` whose record has `run` Succeeded."""
        for (other_kind, name), record in self.records.items():
            status = record.typed_status()
            if (
                other_kind == kind
                and status is not None
                and status.run_id == run
                and status.phase == "Succeeded"
            ):
                yield FinishedRun(name, dict(status.outputs), dict(status.metrics))

    def stored_result(self, uri: str) -> Result | None:
        """The result an earlier runner left in a content-addressed folder (its state was lost)."""
        folder = local_path(uri, self.state)
        return read_result(folder) if folder is not None else None

    def _input_state(self, target: Key) -> InputState:
        if target not in self.by_key:
            return InputState(exists=False)
        record = self.records[target]
        known = tuple(outputs_of(target[0], self.by_key[target].spec))
        status = record.typed_status()
        if status is None:
            return InputState(exists=True, phase="Pending", known_outputs=known)
        return InputState(
            exists=True,
            phase=status.phase,
            current=status.observed_generation == record.generation,
            outputs=dict(status.outputs),
            run_id=status.run_id,
            stalled=stalled_message(status.conditions),
            known_outputs=known,
        )

    def _workloads(self, key: Key) -> list[ObservedWorkload]:
        out = []
        for workload in self.state.workload_dirs(*key):
            observed = self._observe_workload(workload)
            if observed is not None:
                out.append(observed)
        return out

    def _observe_workload(self, workload: WorkloadDir) -> ObservedWorkload | None:
        meta = read_json(workload.path / "meta.json")
        if not isinstance(meta, dict):
            shutil.rmtree(workload.path, ignore_errors=True)  # a start cut short before it was queued
            return None
        run_id, attempt, name = str(meta["runId"]), int(meta["attempt"]), str(meta["name"])
        output = local_path(str(meta["outputUri"]), self.state)
        code = workload.exit_code()
        if workload.stopped_marker.exists():
            return ObservedWorkload(
                run_id, attempt, name, "failed", code, "Stopped", "stopped: its run is outdated"
            )
        if code == 0:
            result = read_result(output) if output is not None else None
            if result is None:
                with contextlib.suppress(ValueError):
                    result = Result.model_validate_json(workload.termination_message())
            return ObservedWorkload(run_id, attempt, name, "succeeded", 0, result=result)
        process = workload.process()
        if process is None:
            return ObservedWorkload(run_id, attempt, name, "pending")
        if code is None and workload.is_running():
            progress = read_progress(output) if output is not None else None
            return ObservedWorkload(run_id, attempt, name, "active", progress=progress)
        if workload.interrupted_marker.exists():
            # The runner stopped it on Ctrl-C: start the same attempt again rather than count a failure.
            shutil.rmtree(workload.path, ignore_errors=True)
            return None
        message = workload.termination_message().strip() or workload.log_tail(15)
        if code is None:
            return ObservedWorkload(
                run_id,
                attempt,
                name,
                "failed",
                None,
                "ProcessLost",
                message or "the process ended without an exit code",
            )
        reason = "Error" if code < 128 else ("Killed" if code == 137 else f"Signal{code - 128}")
        return ObservedWorkload(run_id, attempt, name, "failed", code, reason, message)

    def _teachers(self, key: Key) -> list[ObservedTeacher]:
        label = f"{key[0]}/{key[1]}"
        return [
            ObservedTeacher(participant=participant, name=teacher, ready=ready, endpoint=endpoint)
            for teacher, participant, ready, endpoint, _ in self.servers.uses_of(label)
        ]

    # Actions ---------------------------------------------------------------------------------------
    def carry_out(self, key: Key, decision: Decision) -> None:
        """Apply the plan's actions for one resource."""
        for action in decision.actions:
            if isinstance(action, StartWorkload):
                self._queue_workload(key, action)
            elif isinstance(action, StopWorkload):
                self._stop_workload(key, action.name)
            elif isinstance(action, StartTeacher):
                self._start_teacher(key, action)
            elif isinstance(action, StopTeacher):
                self.servers.release(action.name)

    def _queue_workload(self, key: Key, action: StartWorkload) -> None:
        workload = self.state.workload_dir(key[0], key[1], action.run_id, action.attempt)
        if (workload.path / "meta.json").exists():
            return  # already queued or started: starting twice is harmless
        workload.path.mkdir(parents=True, exist_ok=True)
        config = action.config
        workload.config.write_text(json.dumps(config.wire(), indent=1, sort_keys=True))
        name = f"{key[0].lower()}-{key[1]}-{action.run_id[:8]}-{action.attempt}"
        meta = {
            "runId": action.run_id,
            "attempt": action.attempt,
            "name": name,
            "workload": config.workload,
            "outputUri": config.output_uri,
            "queuedAt": time.time(),
        }
        # meta.json is written last: it marks the attempt as queued (see _observe_workload).
        (workload.path / "meta.json").write_text(json.dumps(meta, sort_keys=True))

    def _stop_workload(self, key: Key, name: str) -> None:
        for workload in self.state.workload_dirs(*key):
            meta = read_json(workload.path / "meta.json") or {}
            if meta.get("name") != name:
                continue
            workload.stopped_marker.write_text("stopped by the plan\n")
            process = workload.process()
            if process and workload.is_running():
                stop_group(int(process["pid"]))

    def _start_teacher(self, key: Key, action: StartTeacher) -> None:
        participant = action.participant
        assert participant.served is not None
        model = self._model_path(participant.served.model)
        if model is None:
            self.display.note(f"{key[0]}/{key[1]}: cannot serve {participant.name}: its model is not local")
            return
        teacher = f"{key[0].lower()}-{key[1]}-{participant.name}"
        use = TeacherUse(resource=f"{key[0]}/{key[1]}", participant=participant.name)
        self.servers.acquire(teacher, use, model, list(participant.served.engine_args))

    def _model_path(self, ref: ModelRef | DataRef) -> Path | None:
        uri = ref.uri
        if ref.from_ is not None:
            target = (str(ref.from_.kind), ref.from_.name)
            status = self.records[target].typed_status() if target in self.records else None
            found: Output | None = status.outputs.get(output_name(ref.from_)) if status else None
            uri = found.uri if found else None
        return local_path(uri, self.state) if uri else None

    def start_queued(self) -> None:
        """Start queued attempts, in dependency order, while fewer than `parallel` run."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]
        queued: list[tuple[Key, WorkloadDir]] = []
        running = 0
        for key in self.pipeline.order:
            for workload in self.state.workload_dirs(*key):
                if not (workload.path / "meta.json").exists() or workload.stopped_marker.exists():
                    continue
                if workload.process() is None:
                    queued.append((key, workload))
                elif workload.exit_code() is None and workload.is_running():
                    running += 1
        for key, workload in queued:
            if running >= max(1, self.options.parallel):
                return
            self._launch(key, workload)
            running += 1

    def _launch(self, key: Key, workload: WorkloadDir) -> None:
        meta = read_json(workload.path / "meta.json") or {}
        argv = [*self.options.trainer_command, str(meta["workload"]), "--config", str(workload.config)]
        # A shell between the runner and the workload records the exit code in a file, so the code
        # survives the runner; it runs in its own session so Ctrl-C reaches the runner only and the
        # runner stops the whole group.
        script = '"$@"; code=$?; echo $code > "$POSTTRAIN_EXIT_FILE.tmp"; mv "$POSTTRAIN_EXIT_FILE.tmp" "$POSTTRAIN_EXIT_FILE"; exit $code'
        env = {
            **os.environ,
            **self._env(),
            "POSTTRAIN_TERMINATION_LOG": str(workload.termination_log),
            "POSTTRAIN_EXIT_FILE": str(workload.exit_code_file),
        }
        with workload.log.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                ["/bin/sh", "-c", script, "posttrain-workload", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=str(self.state.root),
            )
        self._children[child.pid] = child
        process = {"pid": child.pid, "startTime": process_start_time(child.pid), "startedAt": time.time()}
        (workload.process_file).write_text(json.dumps(process))
        record = self.records[key]
        record.starts += 1
        self.state.save_record(record)
        self.state.append_event(
            {
                "kind": key[0],
                "name": key[1],
                "type": "Normal",
                "reason": "WorkloadStarted",
                "message": f"{meta['name']}: {' '.join(argv)}",
            }
        )

    # The loop --------------------------------------------------------------------------------------
    def step(self) -> tuple[bool, list[ResourceView]]:
        """One pass over every resource in dependency order; returns (anything changed, views)."""
        changed = self.sync_curricula()
        self.servers.maintain()
        views = []
        for key in self.pipeline.order:
            decision = plan(self.observe(key), self.settings, self.clock())
            record = self.records[key]
            if decision.actions:
                changed = True
                self.carry_out(key, decision)
            changed = self._record_decision(key, decision.status, decision.events) or changed
            views.append(view_of(key[0], key[1], record.status))
        for curriculum in self.pipeline.curricula:
            views.append(
                view_of(curriculum.kind, curriculum.metadata.name, self.records[curriculum.key].status)
            )
        self.start_queued()
        return changed, views

    def stuck(self) -> list[str]:
        """Resources waiting for a server that failed (nothing will change for them)."""
        out = []
        for key in self.pipeline.order:
            failures = [
                f"{participant}: {failure}"
                for _, participant, _, _, failure in self.servers.uses_of(f"{key[0]}/{key[1]}")
                if failure
            ]
            if failures and self.records[key].phase not in TERMINAL:
                out.append(f"{key[0]}/{key[1]}: server failed ({'; '.join(failures)})")
        return out

    def settled(self, stuck: list[str]) -> bool:
        """True when no resource can move: finished, blocked on inputs, or waiting on failed servers."""
        stuck_keys = {s.split(":", 1)[0] for s in stuck}
        for key in self.pipeline.order:
            phase = self.records[key].phase
            if phase in TERMINAL or phase == "Waiting" or f"{key[0]}/{key[1]}" in stuck_keys:
                continue
            return False
        return True

    def run(self, max_passes: int | None = None) -> RunSummary:
        """Drive the pipeline until it settles (or Ctrl-C / SIGTERM), then stop the servers.

        Args:
            max_passes: stop after this many passes even if work remains (tests of resuming).
        """
        with self.state.lock():
            self.load_records()
            self.state.save_run_info(
                {
                    "manifests": sorted(set(self.pipeline.sources.values())),
                    "order": [list(k) for k in self.pipeline.order],
                    "startedAt": time.time(),
                    "pid": os.getpid(),
                    "state": "running",
                }
            )
            previous = signal.getsignal(signal.SIGTERM)
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                signal.signal(signal.SIGTERM, _raise_interrupt)
            passes = 0
            interrupted = False
            stuck: list[str] = []
            try:
                while True:
                    changed, views = self.step()
                    passes += 1
                    self.display.update(views)
                    stuck = self.stuck()
                    if not changed and self.settled(stuck):
                        break
                    if max_passes is not None and passes >= max_passes:
                        break
                    self._wait(self.options.poll_interval)
            except (KeyboardInterrupt, _Interrupted):
                interrupted = True
                self.display.note("interrupted: stopping workloads and servers (run again to resume)")
                self.interrupt()
            finally:
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGTERM, previous)
            if not interrupted and max_passes is None:
                self.servers.stop_all()
            info = self.state.run_info() or {}
            info.update({"finishedAt": time.time(), "state": "interrupted" if interrupted else "finished"})
            self.state.save_run_info(info)
            for stuck_line in stuck:
                self.display.note(stuck_line)
            keys = [*self.pipeline.order, *(c.key for c in self.pipeline.curricula)]
            return RunSummary(
                phases={k: self.records[k].phase for k in keys},
                interrupted=interrupted,
                passes=passes,
                stuck=stuck,
            )

    def _wait(self, seconds: float) -> None:
        """Sleep until the next pass, waking early when a workload this runner started exits.

        So a finished stage is followed at once by the stages that wait for it.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(child.poll() is not None for child in self._children.values()):
                return
            time.sleep(min(0.02, max(deadline - time.monotonic(), 0.0)))

    def interrupt(self) -> None:
        """Stop running attempts (they restart on resume) and every server."""
        for key in self.pipeline.order:
            for workload in self.state.workload_dirs(*key):
                process = workload.process()
                if process and workload.exit_code() is None and workload.is_running():
                    workload.interrupted_marker.write_text("stopped on Ctrl-C; restarted on resume\n")
                    stop_group(int(process["pid"]))
        self.servers.stop_all()

    def dry_run_lines(self) -> list[str]:
        """The dependency order, what each resource needs, and what a run would do with it."""
        lines = []
        for index, key in enumerate(self.pipeline.order, 1):
            needs = sorted({f"{k}/{n}" for _, (k, n), _ in self.pipeline.graph.needs.get(key, [])})
            record = self.state.load_record(*key)
            served = [p.name for p in participants(self.by_key[key]) if p.served is not None]
            note = ""
            if record is not None and record.status:
                note = f"  [{record.phase}]"
                if record.phase == "Succeeded" and record.spec_digest == spec_digest(self.by_key[key]):
                    note = "  [Succeeded: kept]"
            line = f"{index:2d}. {key[0]}/{key[1]}"
            if needs:
                line += f"  after {', '.join(needs)}"
            if served:
                line += f"  serves {', '.join(served)}"
            lines.append(line + note)
        for curriculum in self.pipeline.curricula:
            children = ", ".join(f"{c['kind']}/{c['metadata']['name']}" for c in chain(curriculum))
            lines.append(
                f"    Curriculum/{curriculum.metadata.name}: {curriculum.spec.stages} stages, each created"
                f" once the gate before it promoted: {children}"
            )
        return lines


def _raise_interrupt(signum: int, frame: object) -> None:
    raise _Interrupted()

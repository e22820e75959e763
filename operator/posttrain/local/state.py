"""The local runner's state folder (`.posttrain/` by default): everything a resumed run needs.

Layout:
    lock                          held (flock) by the runner that drives this folder
    run.json                      the manifests of the last run and when it started and ended
    events.jsonl                  every event and every workload start, one JSON object a line
    state/KIND/NAME.json          a resource's record: its status, generation and spec digest
    workloads/KIND/NAME/RUN-N/    one workload attempt: config.json, process.json, exit-code,
                                  termination-log, output.log (stdout and stderr), and markers
    servers/SERVER/               one local model server: server.json (pid, port, users), output.log
    artifacts/                    the artifact root (content-addressed output folders)
    pvc/CLAIM/                    where `pvc://CLAIM/path` URIs live locally
    report/                       report.html and its plots

Processes are recorded with their pid and their kernel start time, so a pid reused by another
process after a reboot or a long pause is not mistaken for the workload. A workload runs under a
small shell that writes its exit code to `exit-code` when it ends, so a workload that outlives the
runner (the runner was killed) still leaves its result for the next runner to read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.api.curriculum import KIND as CURRICULUM
from posttrain.api.curriculum import Curriculum, CurriculumStatus
from posttrain.api.resources import Resource
from posttrain.api.status import Status
from posttrain.api.uri import FILE, ArtifactUri
from posttrain.api.workload import ProgressDocument, Result

STATE_DIR = ".posttrain"


class StateLocked(RuntimeError):
    """Another runner drives this state folder."""


def write_json(path: Path, document: Any) -> None:
    """Write JSON atomically (a reader never sees half a file, a crash never leaves one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_jsonl(path: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, or of the `*.jsonl` files of a folder in name order.

    Lines that are not a JSON object (cut off by a crash, or not JSON) are skipped; a missing or
    unreadable file reads as empty. At most `limit` rows when given.
    """
    if path is None:
        return []
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    rows: list[dict[str, Any]] = []
    for file in files:
        try:
            lines = file.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if limit is not None and len(rows) >= limit:
                return rows
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_json(path: Path) -> Any:
    """The JSON document in a file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def spec_digest(resource: Resource | Curriculum) -> str:
    """A digest of the resource's spec, to notice that a manifest changed between runs."""
    text = json.dumps(resource.spec.wire(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), or None if it is gone.

    A zombie counts as gone: it has exited and only waits to be reaped.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no procfs: fall back to a signal probe
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                return 0
            return 0
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int | None, start_time: int | None) -> bool:
    """True while the process that was recorded (same pid and start time) still runs."""
    if not pid:
        return False
    current = process_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == 0 or current == start_time


@dataclass
class ResourceRecord:
    """What the runner remembers about one resource between passes and between runs."""

    kind: str
    name: str
    generation: int = 1
    """Bumped whenever the spec differs from the one the status was computed for."""
    spec_digest: str = ""
    status: dict[str, Any] | None = None
    """The status (wire form) the plan wrote last."""
    source: str = ""
    """The manifest file the resource came from."""
    starts: int = 0
    """Workload processes started for it, over all runs of the runner (resume tests read it)."""

    def wire(self) -> dict[str, Any]:
        """The record as stored in the state folder (camelCase keys)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "generation": self.generation,
            "specDigest": self.spec_digest,
            "status": self.status,
            "source": self.source,
            "starts": self.starts,
        }

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> ResourceRecord:
        """The record read back from the state folder (the inverse of `wire`)."""
        return cls(
            kind=document["kind"],
            name=document["name"],
            generation=int(document.get("generation", 1)),
            spec_digest=document.get("specDigest", ""),
            status=document.get("status"),
            source=document.get("source", ""),
            starts=int(document.get("starts", 0)),
        )

    @property
    def phase(self) -> str:
        """The phase of the last status, `Pending` before the first one."""
        return str((self.status or {}).get("phase", "Pending"))

    def typed_status(self) -> Status | None:
        """The last status as the api model (a Curriculum's with its stages), or None before the first one."""
        if not self.status:
            return None
        model = CurriculumStatus if self.kind == CURRICULUM else Status
        return model.model_validate(self.status)


class WorkloadDir:
    """The folder of one workload attempt and what can be read from it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def config(self) -> Path:
        """The workload's configuration file (what the trainer reads)."""
        return self.path / "config.json"

    @property
    def process_file(self) -> Path:
        """Pid and start time of the workload process, written when it starts."""
        return self.path / "process.json"

    @property
    def exit_code_file(self) -> Path:
        """The exit status of the workload process, written when it ends."""
        return self.path / "exit-code"

    @property
    def termination_log(self) -> Path:
        """The trainer's termination message (the result document, as a pod's would be)."""
        return self.path / "termination-log"

    @property
    def log(self) -> Path:
        """The workload's stdout and stderr."""
        return self.path / "output.log"

    @property
    def interrupted_marker(self) -> Path:
        """Written when the runner stopped the attempt on Ctrl-C: it is restarted, not failed."""
        return self.path / "interrupted"

    @property
    def stopped_marker(self) -> Path:
        """Written when the plan stopped the attempt (its run became outdated)."""
        return self.path / "stopped"

    def meta(self) -> dict[str, Any]:
        """config.json's bookkeeping: run id, attempt, driver name, output URI."""
        document = read_json(self.config) or {}
        return dict(document.get("posttrain", {}))

    def process(self) -> dict[str, Any] | None:
        """The recorded process (`pid`, `startTime`), or None before it started."""
        document = read_json(self.process_file)
        return document if isinstance(document, dict) else None

    def exit_code(self) -> int | None:
        """The process's exit status, or None while it runs or when it never wrote one."""
        try:
            return int(self.exit_code_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def termination_message(self) -> str:
        """The termination message, empty when there is none."""
        try:
            return self.termination_log.read_text()
        except OSError:
            return ""

    def is_running(self) -> bool:
        """Whether the recorded process (same pid and start time) still runs."""
        process = self.process()
        if process is None:
            return False
        return alive(process.get("pid"), process.get("startTime"))

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the log, empty when there is no log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def read_result(output_uri_path: Path) -> Result | None:
    """The result document in an output folder, if the workload finished writing it."""
    document = read_json(output_uri_path / "result.json")
    if not isinstance(document, dict):
        return None
    try:
        return Result.model_validate(document)
    except ValueError:
        return None


def read_progress(output_uri_path: Path) -> ProgressDocument | None:
    """The latest progress document in an output folder."""
    document = read_json(output_uri_path / "progress.json")
    if not isinstance(document, dict):
        return None
    try:
        return ProgressDocument.model_validate(document)
    except ValueError:
        return None


class StateDir:
    """The state folder of local runs."""

    def __init__(self, root: str | Path = STATE_DIR) -> None:
        self.root = Path(root).absolute()

    # Folders ---------------------------------------------------------------------------------------
    @property
    def artifacts(self) -> Path:
        """The artifact folder: outputs of every run, by plural and run id."""
        return self.root / "artifacts"

    @property
    def artifact_root(self) -> str:
        """The `file://` URI of the artifact folder (the plan's default output root)."""
        return str(ArtifactUri(FILE, "", str(self.artifacts)))

    @property
    def pvc_root(self) -> Path:
        """Where `pvc://CLAIM/path` URIs resolve: one folder per claim."""
        return self.root / "pvc"

    @property
    def report_dir(self) -> Path:
        """The end-of-run report (terminal text, plots and HTML)."""
        return self.root / "report"

    @property
    def servers(self) -> Path:
        """One folder per local model server (its state and log)."""
        return self.root / "servers"

    @property
    def events_file(self) -> Path:
        """The event journal, one JSON document per line."""
        return self.root / "events.jsonl"

    def exists(self) -> bool:
        """Whether a run has used this folder (it has resource records)."""
        return (self.root / "state").is_dir()

    def wipe(self) -> None:
        """Delete everything earlier runs left (`--fresh`); other files in the folder are kept."""
        for name in ("state", "workloads", "servers", "artifacts", "pvc", "report"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("run.json", "events.jsonl"):
            (self.root / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock; the kernel releases it when the runner dies, however it dies.

        Raises:
            StateLocked: when another runner holds it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("a+") as stream:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as error:
                raise StateLocked(f"another `posttrain run` is using {self.root}") from error
            try:
                yield
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)

    # Resources -------------------------------------------------------------------------------------
    def record_path(self, kind: str, name: str) -> Path:
        """The file of one resource's record."""
        return self.root / "state" / kind / f"{name}.json"

    def load_record(self, kind: str, name: str) -> ResourceRecord | None:
        """One resource's record, or None when it has none (or it is unreadable)."""
        document = read_json(self.record_path(kind, name))
        return ResourceRecord.from_wire(document) if isinstance(document, dict) else None

    def save_record(self, record: ResourceRecord) -> None:
        """Write one resource's record (atomically, as `write_json` does)."""
        write_json(self.record_path(record.kind, record.name), record.wire())

    def records(self) -> list[ResourceRecord]:
        """Every resource record, in the order of the last run's manifests where known."""
        found = []
        for path in sorted((self.root / "state").glob("*/*.json")):
            document = read_json(path)
            if isinstance(document, dict):
                found.append(ResourceRecord.from_wire(document))
        order = {tuple(key): i for i, key in enumerate((self.run_info() or {}).get("order", []))}
        return sorted(found, key=lambda r: order.get((r.kind, r.name), len(order)))

    # Workloads -------------------------------------------------------------------------------------
    def workload_dir(self, kind: str, name: str, run_id: str, attempt: int) -> WorkloadDir:
        """The folder of one attempt of one run of a resource."""
        return WorkloadDir(self.root / "workloads" / kind / name / f"{run_id}-{attempt}")

    def workload_dirs(self, kind: str, name: str) -> list[WorkloadDir]:
        """Every attempt folder of a resource, oldest run id first (sorted by name)."""
        base = self.root / "workloads" / kind / name
        if not base.is_dir():
            return []
        return [WorkloadDir(p) for p in sorted(base.iterdir()) if p.is_dir()]

    # Run bookkeeping -------------------------------------------------------------------------------
    def run_info(self) -> dict[str, Any] | None:
        """The last run's bookkeeping (`run.json`), or None before the first run."""
        document = read_json(self.root / "run.json")
        return document if isinstance(document, dict) else None

    def save_run_info(self, document: dict[str, Any]) -> None:
        """Replace the run's bookkeeping (`run.json`)."""
        write_json(self.root / "run.json", document)

    def append_event(self, document: dict[str, Any]) -> None:
        """Append one line to the event journal (append-only, one write per line)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": round(time.time(), 3), **document}, sort_keys=True) + "\n"
        with self.events_file.open("a") as stream:
            stream.write(line)

    def events(self) -> list[dict[str, Any]]:
        """The event journal (lines cut off by a crash are skipped)."""
        return read_jsonl(self.events_file)

"""Local OpenAI-compatible model servers for the participants the manifests serve.

A served participant (`served: {model: ...}`) gets a server process on this machine, started with the
trainer's serving entry point (`transformers serve` on a CPU, vLLM when it is installed and a GPU is
present). Participants that serve the same model folder with the same engine arguments share one
server: the quickstart's teacher and judge are the same tiny model, and a CPU has no room for copies.
A server keeps a list of its users (the driver's teacher names). When the last one leaves it idles for
`linger` seconds before it stops: in a chain, the next stage often serves the same model (the teacher
of an EvolJob is the teacher of the AlignRound after it), and starting a server costs more than
anything else on a CPU.

Servers run in their own session, so a runner that is killed leaves them running; the next runner
finds them through `servers/KEY/server.json` (pid, kernel start time, port) and adopts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.api.workload import Endpoint
from posttrain.local.state import StateDir, alive, process_start_time, read_json, write_json
from posttrain.support.processes import free_port, http_ok, stop_group

MAX_FAILURES = 2
"""Restarts of a server that died or never became ready before it counts as failed."""


@dataclass(frozen=True)
class ServerCommand:
    """How to start a local server for a model folder.

    `argv` is a template: `{model}` is the model folder, `{port}` the port, `{name}` the name clients
    send, and an element that is exactly `{engine_args}` expands to the participant's engine
    arguments. `model_name` is the template of the name sent in requests.
    """

    argv: tuple[str, ...]
    model_name: str = "{model}"

    def render(self, model: Path, port: int, engine_args: list[str]) -> list[str]:
        """The command line for one server."""
        name = self.name(model)
        out: list[str] = []
        for part in self.argv:
            if part == "{engine_args}":
                out.extend(engine_args)
            else:
                out.append(part.format(model=str(model), port=port, name=name))
        return out

    def name(self, model: Path) -> str:
        """The model name clients send."""
        return self.model_name.format(model=str(model), name=model.name)


def default_server_command() -> ServerCommand:
    """The trainer's serving engine (`posttrain.local.serve`), in this interpreter.

    Clients send the model folder as the model name (what `transformers serve` and the vLLM server expect).
    """
    return ServerCommand(
        argv=(sys.executable, "-m", "posttrain.local.serve", "{model}", "{port}", "{engine_args}"),
        model_name="{model}",
    )


def http_ready(base_url: str, timeout: float = 1.0) -> bool:
    """True when the server answers its health check (`GET /health`) or lists its models.

    vLLM and `transformers serve` both answer `/health`; `/v1/models` is the fallback for servers
    without it (and can fail offline in `transformers serve`, which looks the model up in a hub cache).
    """
    root = base_url.rstrip("/").removesuffix("/v1")
    return any(http_ok(url, timeout) for url in (root + "/health", base_url.rstrip("/") + "/models"))


@dataclass
class TeacherUse:
    """One participant of one resource using a server."""

    resource: str
    """`Kind/name` of the resource."""
    participant: str
    """Participant name."""


@dataclass
class ServerState:
    """What `server.json` records about one server."""

    key: str
    model: str
    """Model folder."""
    engine_args: list[str] = field(default_factory=list)
    pid: int | None = None
    start_time: int | None = None
    port: int | None = None
    model_name: str = ""
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0
    failed: str = ""
    """Why it counts as failed (empty while it is healthy or starting)."""
    users: dict[str, TeacherUse] = field(default_factory=dict)
    idle_since: float | None = None
    """When the last user left (the server lingers a while for the next one)."""

    @property
    def base_url(self) -> str:
        """The server's OpenAI-compatible API root on the loopback address."""
        return f"http://127.0.0.1:{self.port}/v1"

    def wire(self) -> dict[str, Any]:
        """The state as stored in `server.json` (camelCase keys)."""
        return {
            "key": self.key,
            "model": self.model,
            "engineArgs": self.engine_args,
            "pid": self.pid,
            "startTime": self.start_time,
            "port": self.port,
            "modelName": self.model_name,
            "startedAt": self.started_at,
            "ready": self.ready,
            "failures": self.failures,
            "failed": self.failed,
            "idleSince": self.idle_since,
            "users": {
                k: {"resource": u.resource, "participant": u.participant} for k, u in self.users.items()
            },
        }

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> ServerState:
        """The state read back from `server.json` (the inverse of `wire`)."""
        return cls(
            key=document["key"],
            model=document["model"],
            engine_args=list(document.get("engineArgs", [])),
            pid=document.get("pid"),
            start_time=document.get("startTime"),
            port=document.get("port"),
            model_name=document.get("modelName", ""),
            started_at=float(document.get("startedAt", 0.0)),
            ready=bool(document.get("ready", False)),
            failures=int(document.get("failures", 0)),
            failed=document.get("failed", ""),
            users={k: TeacherUse(**v) for k, v in document.get("users", {}).items()},
            idle_since=document.get("idleSince"),
        )


class Servers:
    """Starts, shares, watches and stops the local model servers of a state folder."""

    def __init__(
        self,
        state: StateDir,
        command: ServerCommand,
        ready_timeout: float = 600.0,
        linger: float = 120.0,
        env: dict[str, str] | None = None,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.state = state
        self.command = command
        self.ready_timeout = ready_timeout
        self.linger = linger
        self.env = env or {}
        self.log = log
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # Bookkeeping ----------------------------------------------------------------------------------
    def _file(self, key: str) -> Path:
        return self.state.servers / key / "server.json"

    def _all(self) -> list[ServerState]:
        out = []
        for path in sorted(self.state.servers.glob("*/server.json")):
            document = read_json(path)
            if isinstance(document, dict):
                out.append(ServerState.from_wire(document))
        return out

    def _save(self, server: ServerState) -> None:
        write_json(self._file(server.key), server.wire())

    @staticmethod
    def key_of(model: Path, engine_args: list[str]) -> str:
        """Servers are shared by model folder and engine arguments."""
        text = "\0".join([str(model), *engine_args])
        return model.name[:32] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]

    def log_file(self, key: str) -> Path:
        """The file the server's stdout and stderr go to."""
        return self.state.servers / key / "output.log"

    # Actions ---------------------------------------------------------------------------------------
    def acquire(self, teacher: str, use: TeacherUse, model: Path, engine_args: list[str]) -> None:
        """Register a participant's use of a server for the model, starting the server if needed."""
        key = self.key_of(model, engine_args)
        found = read_json(self._file(key))
        server = (
            ServerState.from_wire(found)
            if isinstance(found, dict)
            else ServerState(key=key, model=str(model), engine_args=list(engine_args))
        )
        server.users[teacher] = use
        server.idle_since = None
        if not model.exists():
            # Fail at once: restarting a server for a folder that is not there cannot help.
            server.failed = f"no model at {model}"
            self.log(f"server {key}: {server.failed}")
        elif not self._running(server):
            server.failures = 0
            server.failed = ""
            self._start(server)
        self._save(server)

    def release(self, teacher: str) -> None:
        """Drop a participant's use; stop the server when nobody uses it any more."""
        for server in self._all():
            if teacher in server.users:
                del server.users[teacher]
                if not server.users:
                    if self.linger > 0 and self._running(server) and not server.failed:
                        server.idle_since = time.time()
                    else:
                        self._stop(server)
                self._save(server)

    def maintain(self) -> None:
        """Reap exited servers, check readiness, restart dead ones, give up after repeated failures."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]
        for server in self._all():
            if not server.users and server.idle_since is not None:
                if time.time() - server.idle_since >= self.linger or not self._running(server):
                    server.idle_since = None
                    self._stop(server)
                    self._save(server)
                continue
            if not server.users or server.failed:
                continue
            changed = False
            if not self._running(server):
                reason = f"the server exited (log: {self.log_file(server.key)})"
                changed = self._failure(server, reason)
            elif not server.ready:
                if http_ready(server.base_url):
                    server.ready = True
                    changed = True
                    self.log(f"server {server.key} ready at {server.base_url} ({server.model})")
                elif time.time() - server.started_at > self.ready_timeout:
                    self._stop(server)
                    changed = self._failure(server, f"not ready after {int(self.ready_timeout)}s")
            if changed:
                self._save(server)

    def _failure(self, server: ServerState, reason: str) -> bool:
        server.failures += 1
        server.ready = False
        if server.failures > MAX_FAILURES:
            server.failed = reason
            server.pid = None
            self.log(f"server {server.key} failed: {reason}")
        else:
            self.log(f"server {server.key}: {reason}; restarting")
            self._start(server)
        return True

    def stop_all(self) -> None:
        """Stop every server this state folder knows (the end of a run, or Ctrl-C)."""
        for server in self._all():
            self._stop(server)
            server.users = {}
            server.idle_since = None
            self._save(server)

    # Observation -----------------------------------------------------------------------------------
    def uses_of(self, resource: str) -> list[tuple[str, str, bool, Endpoint | None, str]]:
        """(teacher name, participant, ready, endpoint, failure) for every use by the resource."""
        out = []
        for server in self._all():
            for teacher, use in server.users.items():
                if use.resource != resource:
                    continue
                ready = server.ready and not server.failed and self._running(server)
                endpoint = Endpoint(base_url=server.base_url, model=server.model_name) if ready else None
                out.append((teacher, use.participant, ready, endpoint, server.failed))
        return out

    def active(self) -> list[ServerState]:
        """Servers with users."""
        return [s for s in self._all() if s.users]

    # Processes -------------------------------------------------------------------------------------
    def _running(self, server: ServerState) -> bool:
        return alive(server.pid, server.start_time)

    def _start(self, server: ServerState) -> None:
        model = Path(server.model)
        port = free_port()
        argv = self.command.render(model, port, server.engine_args)
        log_path = self.log_file(server.key)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the runner; stopped as a whole group
                env={**os.environ, **self.env},
            )
        self._children[child.pid] = child
        server.pid = child.pid
        server.start_time = process_start_time(child.pid)
        server.port = port
        server.model_name = self.command.name(model)
        server.started_at = time.time()
        server.ready = False
        self.log(f"server {server.key} starting on port {port} ({model})")

    def _stop(self, server: ServerState) -> None:
        if server.pid and self._running(server):
            stop_group(server.pid)
            self.log(f"server {server.key} stopped")
        child = self._children.pop(server.pid or -1, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        server.pid = None
        server.ready = False

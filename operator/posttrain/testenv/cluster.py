"""Start and stop a real Kubernetes control plane as local processes, for tests and development.

:class:`ControlPlane` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
free loopback ports, creates fake GPU nodes that kwok keeps Ready, and writes an admin kubeconfig.
Pods scheduled onto the fake nodes go Running and, for Jobs, finish as ``stages.yaml`` says (see
the ``ANNOTATION_*`` constants for choosing an exit code, a termination message and a run time).

Every process runs in its own process group with its log in the work folder. They are stopped in
reverse order (SIGTERM, then SIGKILL after a grace period) by :meth:`ControlPlane.stop`, when the
``with`` block ends, when the interpreter exits, and on SIGTERM/SIGHUP (and SIGINT, unless it raises
KeyboardInterrupt, which unwinds to the same places); started with ``die_with_parent=True`` (the
default) they also die if this process is killed outright.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

from posttrain.support.processes import free_ports, group_alive, http_ok, stop_group, wait_ready
from posttrain.testenv.pki import FRONT_PROXY_CLIENT, Pki, make_pki

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "ANNOTATION_DURATION",
    "ANNOTATION_DURATION_MAX",
    "ANNOTATION_EXIT_CODE",
    "ANNOTATION_REASON",
    "ANNOTATION_TERMINATION_MESSAGE",
    "BINARIES",
    "ControlPlane",
    "ControlPlaneError",
    "FakeNode",
    "ToolError",
    "find_binaries",
    "runs_binary",
    "stop_recorded",
    "wait_until",
]

T = TypeVar("T")

# Pod annotations read by the kwok stages in stages.yaml.
ANNOTATION_EXIT_CODE = "posttrain.dev/kwok-exit-code"
"""Exit code of every regular container when the pod finishes; non-zero makes the pod Failed."""
ANNOTATION_TERMINATION_MESSAGE = "posttrain.dev/kwok-termination-message"
"""Text put into ``state.terminated.message`` of every regular container."""
ANNOTATION_REASON = "posttrain.dev/kwok-reason"
"""``state.terminated.reason`` (default ``Completed`` for exit code 0, ``Error`` otherwise)."""
ANNOTATION_DURATION = "posttrain.dev/kwok-duration"
"""How long the pod runs before it finishes, as a Go duration (``"30s"``); default 500ms."""
ANNOTATION_DURATION_MAX = "posttrain.dev/kwok-duration-max"
"""With :data:`ANNOTATION_DURATION`: the run time is drawn uniformly between the two."""

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)
NODE_BINARIES = ("kubelet", "crictl", "pause")
"""Built by ``hack/build-testenv.sh --node`` for a real node (``realnode.py``)."""
BIN_ENV = "POSTTRAIN_TESTENV_BIN"
KEEP_ENV = "POSTTRAIN_TESTENV_KEEP"

SERVICE_CIDR = "10.96.0.0/12"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
STAGES_FILE = Path(__file__).with_name("stages.yaml")
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-testenv.sh"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached."""


class ToolError(subprocess.CalledProcessError):
    """kubectl or helm failed; unlike its base class, the message includes what it printed."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


def find_binaries(*, build: bool = True, log: IO[str] | None = None, node: bool = False) -> Path:
    """Return the folder holding the control plane's binaries.

    ``$POSTTRAIN_TESTENV_BIN`` wins when set. Otherwise ``hack/build-testenv.sh`` is run: it prints the
    cached folder at once when the binaries are there, and builds them first when not (minutes to half
    an hour on a cold cache). Its progress goes to ``log`` (default: this process's stderr). With
    ``node``, also what a real node needs (``hack/build-testenv.sh --node``: kubelet, crictl, pause).
    """
    wanted = (*BINARIES, *NODE_BINARIES) if node else BINARIES
    override = os.environ.get(BIN_ENV)
    if override:
        folder = Path(override).expanduser()
        missing = [b for b in wanted if not os.access(folder / b, os.X_OK)]
        if missing:
            raise ControlPlaneError(f"${BIN_ENV}={folder} lacks {', '.join(missing)}")
        return folder
    if not build:
        raise ControlPlaneError(f"set ${BIN_ENV} or run {BUILD_SCRIPT}")
    if not BUILD_SCRIPT.is_file():
        raise ControlPlaneError(
            f"{BUILD_SCRIPT} not found: set ${BIN_ENV} to a folder with {', '.join(BINARIES)}"
        )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *(["--node"] if node else [])],
        stdout=subprocess.PIPE,
        stderr=log if log is not None else None,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    return Path(lines[-1])


@dataclass(frozen=True)
class FakeNode:
    """A node simulated by kwok: what the scheduler sees as its capacity."""

    name: str = "kwok-node-0"
    cpu: str = "256"
    memory: str = "2Ti"
    pods: str = "110"
    gpus: int = 8
    ephemeral_storage: str = "1Ti"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    address: str = ""
    """The node's InternalIP (pods' hostIP); the control plane picks one per node when empty."""

    def manifest(self, address: str = "") -> dict[str, Any]:
        """The Node object to create; its InternalIP is the spec's `address`, else `address`."""
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": self.ephemeral_storage,
        }
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": [dict(t) for t in self.taints]} if self.taints else {},
            "status": {
                "allocatable": resources,
                "capacity": resources,
                "addresses": [
                    {"type": "InternalIP", "address": self.address or address},
                    {"type": "Hostname", "address": self.name},
                ],
            },
        }


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.1,
    message: str = "a condition",
    state: Callable[[], object] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy and return that.

    Args:
        check: what is waited for; its first truthy result is returned.
        timeout: seconds before giving up.
        interval: seconds between calls of ``check``.
        message: what is waited for, in words (the timeout error names it).
        state: what the timeout error shows of the state it gave up in (e.g. the phases of the
            resources waited for), called once at the deadline. A state formatted into ``message``
            would be the state before the wait began, which misleads whoever reads the failure.

    Raises:
        TimeoutError: ``check`` returned nothing truthy within ``timeout`` seconds. Exceptions
            raised by ``check`` or ``state`` propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            shown = "" if state is None else f"; at the deadline: {state()}"
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}{shown}")
        time.sleep(interval)


_PR_SET_PDEATHSIG = 1


def spawn_logged(argv: list[str], log: Path, cwd: Path, with_parent: bool) -> subprocess.Popen[bytes]:
    """Start a binary in its own session, output appended to `log`, optionally dying with this process."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent() if with_parent else None,
        )


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` making the child get SIGKILL when the thread that started it goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class _Process:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    pid: int = 0

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return group_alive(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


TEMP_PREFIX = "posttrain-testenv-"
OWNER_FILE = "owner.pid"
WORKDIR_ENTRIES = (OWNER_FILE, "state.json", "kubeconfig", "pki", "etcd", "logs", "helm", "flexvolume")
"""What a control plane writes into its work folder (and nothing else)."""

# Control planes started by this interpreter and not yet stopped or detached.
_live: list[ControlPlane] = []
_live_lock = threading.RLock()  # re-entrant: a signal handler may run while it is held
_hooks_installed = False


def _stop_all() -> None:
    with _live_lock:
        planes = list(reversed(_live))
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


_previous_handlers: dict[int, Any] = {}


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, None) or previous is signal.default_int_handler:
            # Ignored, or Python's KeyboardInterrupt: the stack unwinds (with blocks, fixtures)
            # and atexit still runs, so stopping here would only pull the cluster from under it.
            continue
        _previous_handlers[sig] = previous
        signal.signal(sig, _on_signal)


def unmount_under(root: Path) -> None:
    """Lazily unmount every mount point at or below ``root``, deepest first."""
    prefix = str(root) + "/"
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _sweep_abandoned_workdirs() -> None:
    """Remove temporary work folders whose owning process died without cleaning up (SIGKILL)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            # A real node's run folder may hold mounts (a container's root, the volumes bound into
            # it): remove the mounts first, so the files behind them are left alone.
            unmount_under(folder)
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. ``workdir`` (default: a new
    temporary folder, removed on stop unless ``$POSTTRAIN_TESTENV_KEEP`` is set) holds the PKI, etcd's
    data, the logs and ``kubeconfig``.
    """

    def __init__(
        self,
        *,
        nodes: Sequence[FakeNode] | None = None,
        workdir: Path | None = None,
        bin_dir: Path | None = None,
        stages: Path = STAGES_FILE,
        die_with_parent: bool = True,
        use_service_account_credentials: bool = True,
        startup_timeout: float = 90.0,
        stop_timeout: float = 10.0,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self.apiserver_args = list(apiserver_args)
        """Extra kube-apiserver flags (e.g. an audit log for a benchmark)."""
        self.nodes: list[FakeNode] = list(nodes) if nodes is not None else [FakeNode()]
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self._bin_dir = bin_dir
        self.stages = stages
        self.die_with_parent = die_with_parent
        self.use_service_account_credentials = use_service_account_credentials
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.processes: list[_Process] = []
        self.port = 0
        self.ready_seconds: float | None = None
        self._pki: Pki | None = None
        self._stopped = False
        self._detached = False

    # ----- paths and addresses -------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        """The folder of the control plane's binaries, found on first use."""
        if self._bin_dir is None:
            self._bin_dir = find_binaries()
        return self._bin_dir

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig the control plane writes."""
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        """The API server's URL on the loopback address."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def pki(self) -> Pki:
        """The certificates of the running control plane.

        Raises:
            ControlPlaneError: before it has been started.
        """
        if self._pki is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._pki

    def env(self) -> dict[str, str]:
        """Environment for child processes that should talk to this cluster (KUBECONFIG, PATH)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # ----- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every component and return once the cluster can run pods."""
        if self.processes:
            raise ControlPlaneError("already started")
        begin = time.monotonic()
        deadline = begin + self.startup_timeout
        bin_dir = self.bin_dir
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        _install_exit_hooks()
        if self._own_workdir:
            _sweep_abandoned_workdirs()
            (self.workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        with _live_lock:
            _live.append(self)
        try:
            self._pki = make_pki(self.workdir / "pki", service_ip=SERVICE_IP)
            etcd_port, peer_port, self.port, cm_port, sched_port = free_ports(5)
            self._write_kubeconfig()

            etcd = self._spawn("etcd", self._etcd_argv(bin_dir, etcd_port, peer_port))
            self._wait(
                deadline,
                etcd,
                lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health", timeout=5),
                "etcd health",
            )

            apiserver = self._spawn("kube-apiserver", self._apiserver_argv(bin_dir, etcd_port))
            self._wait(deadline, apiserver, lambda: self._api_ok("/readyz"), "kube-apiserver /readyz")

            cm = self._spawn("kube-controller-manager", self._controller_manager_argv(bin_dir, cm_port))
            sched = self._spawn("kube-scheduler", self._scheduler_argv(bin_dir, sched_port))
            kwok = self._spawn("kwok", self._kwok_argv(bin_dir))

            for i, node in enumerate(self.nodes):
                self._request("POST", "/api/v1/nodes", node.manifest(address=f"10.100.0.{i + 1}"))
            for node in self.nodes:
                self._wait(
                    deadline, kwok, partial(self._node_schedulable, node.name), f"node {node.name} Ready"
                )
            self._wait(
                deadline,
                sched,
                lambda: http_ok(f"https://127.0.0.1:{sched_port}/readyz", timeout=5, insecure=True),
                "kube-scheduler /readyz",
            )
            self._wait(
                deadline,
                cm,
                lambda: http_ok(f"https://127.0.0.1:{cm_port}/healthz", timeout=5, insecure=True),
                "kube-controller-manager /healthz",
            )
            # The service account controller runs: namespaces get their "default" ServiceAccount.
            self._wait(
                deadline,
                cm,
                lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
                "the default ServiceAccount",
            )
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - begin
        return self

    def stop(self) -> None:
        """Stop every component in reverse start order; remove a temporary work folder."""
        if self._stopped:
            return
        self._stopped = True
        with _live_lock:
            if self in _live:
                _live.remove(self)
        for proc in reversed(self.processes):
            if proc.pid:
                stop_group(proc.pid, self.stop_timeout, proc.popen)
        if self._own_workdir:
            if os.environ.get(KEEP_ENV):
                (self.workdir / OWNER_FILE).unlink(missing_ok=True)  # kept on purpose: not abandoned
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def detach(self) -> dict[str, Any]:
        """Leave the processes running after this interpreter exits; return their record.

        The record (also written to ``workdir/state.json``) is what :func:`stop_recorded` needs.
        """
        self._detached = True
        with _live_lock:
            if self in _live:
                _live.remove(self)
        state = self.state()
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        return state

    def state(self) -> dict[str, Any]:
        """What a later process needs to use or stop this control plane (written to `state.json`)."""
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "workdir": str(self.workdir),
            "bin_dir": str(self.bin_dir),
            "processes": [
                {"name": p.name, "pid": p.pid, "binary": p.argv[0], "log": str(p.log)} for p in self.processes
            ],
        }

    # ----- clients -------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; raises on a non-zero exit when ``check``."""
        return self._run_tool("kubectl", args, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster, with its state kept in the work folder."""
        return self._run_tool("helm", args, input, check, timeout)

    def api_client(self) -> ApiClient:
        """A ``kubernetes`` client authenticated as the cluster admin."""
        from kubernetes import config

        load: Any = config.new_client_from_config  # the package has no type hints
        client: ApiClient = load(config_file=str(self.kubeconfig))
        return client

    def _run_tool(
        self, tool: str, args: Sequence[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        env = self.env()
        helm_home = self.workdir / "helm"
        env.setdefault("HELM_CACHE_HOME", str(helm_home / "cache"))
        env.setdefault("HELM_CONFIG_HOME", str(helm_home / "config"))
        env.setdefault("HELM_DATA_HOME", str(helm_home / "data"))
        proc = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ToolError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    # ----- internals -----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name=name, argv=argv, log=self.workdir / "logs" / f"{name}.log")
        proc.popen = spawn_logged(argv, proc.log, self.workdir, self.die_with_parent)
        proc.pid = proc.popen.pid
        self.processes.append(proc)
        return proc

    def _wait(self, deadline: float, proc: _Process, check: Callable[[], bool], what: str) -> None:
        def probe() -> bool:
            with contextlib.suppress(OSError, ControlPlaneError, ValueError):
                return bool(check())
            return False

        outcome = wait_ready(probe, deadline - time.monotonic(), proc.alive)
        if outcome == "exited":
            raise ControlPlaneError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        if outcome == "timeout":
            raise ControlPlaneError(
                f"timed out after {self.startup_timeout:.0f}s waiting for {what}; "
                f"{proc.name} log ({proc.log}):\n{proc.log_tail()}"
            )

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ControlPlaneError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from e
        return json.loads(raw) if raw.strip().startswith(b"{") else raw.decode()

    def _api_ok(self, path: str) -> bool:
        self._request("GET", path)
        return True

    def _node_schedulable(self, name: str) -> bool:
        node = self._request("GET", f"/api/v1/nodes/{name}")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        # The node lifecycle controller removes the not-ready taint once it sees the node Ready.
        tainted = any(
            t.get("key", "").startswith("node.kubernetes.io/") for t in node.get("spec", {}).get("taints", [])
        )
        return ready and not tainted

    def _write_kubeconfig(self) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        pki = self.pki
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "posttrain-testenv",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(pki.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_cert),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": "posttrain-testenv", "context": {"cluster": "posttrain-testenv", "user": "admin"}}
            ],
            "current-context": "posttrain-testenv",
            "preferences": {},
        }
        fd = os.open(self.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML: every client reads it

    def _etcd_argv(self, bin_dir: Path, port: int, peer_port: int) -> list[str]:
        peer = f"http://127.0.0.1:{peer_port}"
        client = f"http://127.0.0.1:{port}"
        return [
            str(bin_dir / "etcd"),
            "--name=testenv",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testenv={peer}",
            "--unsafe-no-fsync",
            "--watch-progress-notify-interval=5s",
            "--log-level=warn",
        ]

    def _apiserver_argv(self, bin_dir: Path, etcd_port: int) -> list[str]:
        pki = self.pki
        return [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--requestheader-client-ca-file={pki.ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.proxy_cert}",
            f"--proxy-client-key-file={pki.proxy_key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,"
            "PodSecurity,Priority,DefaultTolerationSeconds,ResourceQuota,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--allow-privileged=true",
            "--profiling=false",
            # logs, exec and port-forward on a real node (RealNode): kubelet trusts the cluster CA
            f"--kubelet-client-certificate={pki.admin_cert}",
            f"--kubelet-client-key={pki.admin_key}",
            "--kubelet-preferred-address-types=InternalIP",
            *self.apiserver_args,
        ]

    def _component_auth(self) -> list[str]:
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--cert-dir={self.workdir / 'pki'}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ]

    def _controller_manager_argv(self, bin_dir: Path, port: int) -> list[str]:
        pki = self.pki
        return [
            str(bin_dir / "kube-controller-manager"),
            *self._component_auth(),
            f"--secure-port={port}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--use-service-account-credentials={str(self.use_service_account_credentials).lower()}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",  # else it creates /usr/libexec/...
        ]

    def _scheduler_argv(self, bin_dir: Path, port: int) -> list[str]:
        return [str(bin_dir / "kube-scheduler"), *self._component_auth(), f"--secure-port={port}"]

    def _kwok_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "kwok"),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
        ]


def stop_recorded(state: Mapping[str, Any], *, timeout: float = 10.0) -> list[str]:
    """Stop the processes of a detached control plane from its record; return the names stopped.

    A pid is only signalled while it still runs the recorded binary, so a reused pid is left alone.
    """
    stopped = []
    for entry in reversed(list(state.get("processes", []))):
        pid = int(entry["pid"])
        if not runs_binary(pid, str(entry["binary"])):
            continue
        stop_group(pid, timeout)
        stopped.append(str(entry["name"]))
    return stopped


def runs_binary(pid: int, binary: str) -> bool:
    """Whether process ``pid`` exists and runs the executable ``binary``."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return exe.removesuffix(" (deleted)") == str(Path(binary).resolve())


def iter_logs(plane: ControlPlane) -> Iterator[tuple[str, Path]]:
    """(component, log file) of every started component."""
    for proc in plane.processes:
        yield proc.name, proc.log

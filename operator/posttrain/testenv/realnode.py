"""A real Kubernetes node on this machine: kubelet + containerd + runc, joined to a :class:`ControlPlane`.

Pods scheduled onto it run as real containers from images loaded without a registry (the OCI
archives of ``hack/build-images.sh``): the restricted security context on a real runtime, the
termination message, ``kubectl logs`` and ``exec``, OOM kills by the kernel. Everything it starts
lives under one run folder (containerd's state, kubelet's root, the CNI configuration, the logs);
containerd's image store is kept across runs (``image_store``) so images are imported once.

What it changes on the machine, and undoes on :meth:`RealNode.stop` (and, after a crash, on the next
start, from the run folder's record):

- kernel tunables kubelet forces (``vm.overcommit_memory``, ``kernel.panic``, ...): saved, restored;
- the bridge ``ptnode0`` (pods' network, no masquerade) and the ``POSTTRAIN-NODE`` nat chain that
  sends pods' traffic for the ``kubernetes`` Service (10.96.0.1:443) to the API server on 127.0.0.1
  (``route_localnet`` on the bridge only); Service names resolve through ``posttrain.testenv.dns``
  on the bridge's address (to ready endpoints: there is no kube-proxy);
- the ``kubepods`` cgroups, mounts under the run folder, containers and shims left running;
- the few paths kubelet and containerd hard-code (``/run/containerd``, ``/var/lib/kubelet``,
  ``/var/lib/cni``, ``/var/log/containers``), removed when the run created them.

One real node per machine: :meth:`RealNode.start` takes a machine-wide lock (``/run/posttrain-node``)
and waits while another node runs. Needs root, Debian's ``containerd``, ``runc`` and
``containernetworking-plugins``, and kubelet, crictl and pause from ``hack/build-testenv.sh --node``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from posttrain.support.processes import free_ports, stop_group
from posttrain.testenv.cluster import (
    NODE_BINARIES,
    SERVICE_IP,
    ControlPlane,
    ControlPlaneError,
    runs_binary,
    spawn_logged,
    unmount_under,
    wait_until,
)
from posttrain.testenv.oci import ImageConfig, archive_ref, write_archive

__all__ = [
    "RealNode",
    "RealNodeError",
    "cleanup_run",
    "default_image_store",
    "forget_machine_record",
    "real_node_available",
]


CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
BRIDGE = "ptnode0"
POD_SUBNET = "10.85.0.0/24"
GATEWAY = "10.85.0.1"
NAT_CHAIN = "POSTTRAIN-NODE"
SANDBOX_IMAGE = "localhost/posttrain/pause:3.10"
NODE_LABEL = "posttrain.dev/real-node"
MACHINE_DIR = Path("/run/posttrain-node")
"""The machine-wide lock and the record of the node that runs (tmpfs: gone after a reboot)."""
RECORD = "node.json"
SOCKET = MACHINE_DIR / "containerd.sock"
"""containerd's socket: a short path (a unix socket path has at most 107 bytes, a run folder under a
deep checkout or pytest's tmp_path is longer), and one node per machine runs anyway."""
HARD_CODED_PATHS = ("/run/containerd", "/var/lib/kubelet", "/var/lib/cni", "/var/log/containers")
"""Paths kubelet, containerd and libcni use whatever they are told; removed on stop when created."""
# What kubelet's kernel-tunables setup forces (protectKernelDefaults: false); restored on stop.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


class RealNodeError(ControlPlaneError):
    """The real node could not be started, or this machine cannot run one."""


def default_image_store() -> Path:
    """The root of containerd (content and unpacked images), kept across runs: images import once."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "posttrain" / "node" / "containerd"


def real_node_available(bin_dir: Path) -> str:
    """Why this machine cannot run a real node ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    for path in (CONTAINERD, CTR, RUNC, f"{CNI_BIN}/bridge", f"{CNI_BIN}/host-local"):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (hack/build-testenv.sh --node installs it)"
    for name in NODE_BINARIES:
        if not os.access(bin_dir / name, os.X_OK):
            return f"{bin_dir / name} is missing (hack/build-testenv.sh --node builds it)"
    return ""


def _default_ip() -> str:
    """The address of the interface holding the default route (kubelet refuses a loopback node IP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # UDP connect sends nothing
        return str(s.getsockname()[0])


def _sign_client_cert(ca_cert: Path, ca_key: Path, cn: str, org: str, cert_out: Path, key_out: Path) -> None:
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer: Any = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                ]
            )
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    cert_out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def _containerd_config(run: Path, image_store: Path) -> str:
    # containerd 1.6 (Debian bookworm). restrict_oom_score_adj: without CAP_SYS_RESOURCE runc cannot
    # lower oom_score_adj (the sandbox asks for -998) and every sandbox would fail.
    return f"""version = 2
root = "{image_store}"
state = "{run}/containerd/state"
oom_score = 0

[grpc]
  address = "{SOCKET}"
[ttrpc]
  address = "{SOCKET}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{SANDBOX_IMAGE}"
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN}"
      conf_dir = "{run}/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "{RUNC}"
          SystemdCgroup = false
          Root = "{run}/containerd/runc"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
  [plugins."io.containerd.internal.v1.opt"]
    path = "{run}/containerd/opt"
"""


def _cni_config(run: Path) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "ptnode",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(run / "cni" / "ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def _run(
    argv: Sequence[str], *, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _kubepods_cgroups() -> list[Path]:
    return [c for c in Path("/sys/fs/cgroup").glob("*/kubepods") if c.is_dir()] + [
        c for c in (Path("/sys/fs/cgroup/kubepods"),) if c.is_dir()
    ]


def _remove_cgroups() -> None:
    """Kill what still runs in kubelet's cgroups, then remove them, deepest first."""
    for top in _kubepods_cgroups():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    _kill(int(pid))
    time.sleep(0.2)
    for top in _kubepods_cgroups():
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _nat_rules(apiserver_port: int) -> list[list[str]]:
    return [
        ["-A", NAT_CHAIN, "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443", "-j", "DNAT",
         "--to-destination", f"127.0.0.1:{apiserver_port}"],
    ]  # fmt: skip


def _remove_nat() -> None:
    while _run(["iptables", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN]).returncode == 0:
        pass
    _run(["iptables", "-t", "nat", "-F", NAT_CHAIN])
    _run(["iptables", "-t", "nat", "-X", NAT_CHAIN])


def cleanup_run(run: Path, record: dict[str, Any] | None = None) -> list[str]:
    """Undo everything a node recorded in ``run`` did, whether it stopped or crashed; safe twice.

    ``record`` is the machine-wide copy of the node's record, for when the run folder is gone (a
    crashed test's temporary folder swept by the next control plane). Returns what was done, for the
    log. Processes are only killed while they still run the recorded binary (a reused pid is left
    alone) or when their command line names the run folder.
    """
    record = record or _load(run / RECORD) or {}
    done = _stop_recorded_processes(record)
    done += _delete_containers(run)
    done += _kill_containerd_processes(run)
    _remove_cgroups()
    for sock in (SOCKET, SOCKET.with_name(SOCKET.name + ".ttrpc")):
        sock.unlink(missing_ok=True)
    unmount_under(run)
    if record.get("image_store"):  # overlay rootfs mounts live under the state folder, but be sure
        unmount_under(Path(record["image_store"]) / "io.containerd.runtime.v2.task")
    if _run(["ip", "link", "del", BRIDGE]).returncode == 0:
        done.append(f"deleted bridge {BRIDGE}")
    _remove_nat()
    done += _restore_sysctls(record)
    _remove_created_paths(run, record)
    return done


def _stop_recorded_processes(record: dict[str, Any]) -> list[str]:
    """Stop the recorded processes that still run their recorded binary (a reused pid is left alone)."""
    done = []
    for proc in record.get("processes", []):
        if runs_binary(int(proc["pid"]), str(proc["binary"])):
            stop_group(int(proc["pid"]), 5.0)
            done.append(f"stopped {proc['name']}")
    return done


def _delete_containers(run: Path) -> list[str]:
    """Delete the containers whose shim died with containerd: runc's state is in the run folder."""
    done = []
    runc_root = run / "containerd" / "runc"
    for root in sorted(runc_root.glob("*")) if runc_root.is_dir() else []:
        ids = _run([RUNC, "--root", str(root), "list", "-q"]).stdout.split()
        for cid in ids:
            _run([RUNC, "--root", str(root), "delete", "--force", cid])
        if ids:
            done.append(f"deleted {len(ids)} container(s)")
    return done


def _kill_containerd_processes(run: Path) -> list[str]:
    """Kill the containerd processes (daemon and shims) whose command line names the run or its socket."""
    done = []
    for pid in _pids():
        cmd = _cmdline(pid)
        ours = f"{run}/" in cmd or f" {SOCKET} " in f"{cmd} "  # shims name the socket only
        if pid != os.getpid() and ours and "containerd" in cmd.split(" ")[0]:
            _kill(pid)
            done.append(f"killed {cmd.split(' ')[0]} {pid}")
    return done


def _restore_sysctls(record: dict[str, Any]) -> list[str]:
    """Set back the kernel settings the node changed to the values it recorded."""
    done = []
    for key, value in record.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            if Path("/proc/sys", key).read_text().strip() != value:
                Path("/proc/sys", key).write_text(value)
                done.append(f"restored {key.replace('/', '.')}={value}")
    return done


def _remove_created_paths(run: Path, record: dict[str, Any]) -> None:
    """Remove the fixed folders the node created, and its log links in a /var/log/containers it did not."""
    for path in record.get("created", []):
        if path in HARD_CODED_PATHS:
            shutil.rmtree(path, ignore_errors=True)
    if "/var/log/containers" not in record.get("created", []) and Path("/var/log/containers").is_dir():
        for link in Path("/var/log/containers").glob("*.log"):
            with contextlib.suppress(OSError):
                if os.readlink(link).startswith(f"{run}/"):
                    link.unlink()


def _without_blobs(archive: Path, stored: set[str], out: Path) -> None:
    """Copy an OCI archive leaving out the blobs the image store has.

    A new project layer on top of gigabytes of unchanged dependencies then imports in seconds (import reads
    layers from the store).
    """
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            name = member.name.removeprefix("./")
            if name.startswith("blobs/sha256/") and f"sha256:{name.rsplit('/', 1)[1]}" in stored:
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)


def forget_machine_record(run: Path) -> None:
    """Drop the machine-wide record when it names ``run`` (its node was cleaned up)."""
    record = _load(MACHINE_DIR / RECORD)
    if record is not None and record.get("run") == str(run):
        (MACHINE_DIR / RECORD).unlink(missing_ok=True)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _record_alive(record: dict[str, Any]) -> bool:
    return any(runs_binary(int(p["pid"]), str(p["binary"])) for p in record.get("processes", []))


class RealNode:
    """kubelet + containerd + runc on this machine, registered with ``plane`` as node ``name``.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. ``run`` (default
    ``<plane workdir>/node``) holds everything it starts; ``images`` are OCI archives loaded into the
    node's image store (skipped when the store has the same manifest under the same name).
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        name: str = "posttrain-node-0",
        run: Path | None = None,
        images: Sequence[Path] = (),
        image_store: Path | None = None,
        die_with_parent: bool = True,
        lock_timeout: float = 1800.0,
        ready_timeout: float = 120.0,
    ) -> None:
        self.plane = plane
        self.name = name
        self.run = (run or plane.workdir / "node").resolve()
        self.images = list(images)
        self.image_store = (image_store or default_image_store()).resolve()
        self.die_with_parent = die_with_parent
        self.lock_timeout = lock_timeout
        self.ready_timeout = ready_timeout
        self.node_ip = ""
        self.sock = SOCKET
        self.times: dict[str, float] = {}
        """Seconds taken: ``lock``, ``containerd``, ``images``, ``ready`` (kubelet start to Ready)."""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock: IO[str] | None = None
        self._record: dict[str, Any] = {}
        self._stopped = False

    # ----- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RealNode:
        """Start the node and return once it is Ready.

        Takes the machine lock, cleans up after a crashed run, starts containerd and kubelet and loads the
        images.
        """
        why = real_node_available(self.plane.bin_dir)
        if why:
            raise RealNodeError(f"no real node on this machine: {why}")
        t0 = time.monotonic()
        self._acquire()
        self.times["lock"] = time.monotonic() - t0
        try:
            self.run.mkdir(parents=True, exist_ok=True)
            for sub in ("logs", "cni/net.d", "cni/ipam", "containerd", "kubelet"):
                (self.run / sub).mkdir(parents=True, exist_ok=True)
            self.image_store.mkdir(parents=True, exist_ok=True)
            self.node_ip = _default_ip()
            self._record = {
                "run": str(self.run),
                "image_store": str(self.image_store),
                "created": [p for p in HARD_CODED_PATHS if not os.path.lexists(p)],
                "sysctls": {k: Path("/proc/sys", k).read_text().strip() for k in KUBELET_SYSCTLS},
                "processes": [],
                "owner": os.getpid(),
            }
            self._save_record()
            self._network()
            self._start_dns()
            self._start_containerd()
            self._load_images()
            self._start_kubelet()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Delete this node's pods, stop kubelet and containerd and leave the machine as found."""
        if self._stopped:
            return
        self._stopped = True
        kubelet = self._procs.get("kubelet")
        if kubelet is not None and kubelet.poll() is None:
            # Let kubelet tear the pods down (volumes, CNI DEL, sandboxes) while it still runs.
            with contextlib.suppress(Exception):
                self.plane.kubectl(
                    "delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={self.name}",
                    "--grace-period=0", "--force", "--wait=false", timeout=30, check=False,
                )  # fmt: skip
                wait_until(lambda: not self._pods_left(), timeout=30, interval=0.5, message="pods gone")
            stop_group(kubelet.pid, 10, kubelet)
        containerd = self._procs.get("containerd")
        if containerd is not None and containerd.poll() is None:
            crictl = self.plane.bin_dir / "crictl"
            if crictl.exists():
                with contextlib.suppress(Exception):
                    _run([str(crictl), "--runtime-endpoint", f"unix://{self.sock}", "rmp", "-af"], timeout=60)
            stop_group(containerd.pid, 10, containerd)
        with contextlib.suppress(Exception):
            self.plane.kubectl("delete", "node", self.name, "--wait=false", timeout=20, check=False)
        if self._record:
            cleanup_run(self.run)
        MACHINE_DIR.joinpath(RECORD).unlink(missing_ok=True)
        self._release()

    def detach(self) -> dict[str, Any]:
        """Leave the node running after this process exits (``posttrain dev-cluster up --real-node``).

        The machine-wide record names the run folder that :func:`cleanup_run` undoes.
        """
        self._record["owner"] = 0
        self._save_record()
        self._release()
        self._stopped = True
        return dict(self._record)

    # ----- helpers for tests ---------------------------------------------------------------------
    def crictl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run crictl against this node's containerd."""
        return _run([str(self.plane.bin_dir / "crictl"), "--runtime-endpoint", f"unix://{self.sock}", *args],
                    timeout=timeout)  # fmt: skip

    def ctr(self, *args: str, timeout: float = 600) -> str:
        """Run ``ctr`` in containerd's ``k8s.io`` namespace; raises on failure."""
        proc = _run([CTR, "-a", str(self.sock), "-n", "k8s.io", *args], timeout=timeout)
        if proc.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    # ----- internals -----------------------------------------------------------------------------
    def _acquire(self) -> None:
        """The machine-wide lock; a crashed earlier node (record with no live process) is cleaned up."""
        MACHINE_DIR.mkdir(parents=True, exist_ok=True)
        lock = (MACHINE_DIR / "lock").open("w")
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                previous = _load(MACHINE_DIR / RECORD)
                if previous is None or not _record_alive(previous):
                    break
                fcntl.flock(lock, fcntl.LOCK_UN)  # a detached node runs: wait for its `down`
            if time.monotonic() > deadline:
                lock.close()
                raise RealNodeError(f"another real node runs on this machine (see {MACHINE_DIR / RECORD})")
            time.sleep(0.5)
        self._lock = lock
        if previous is not None:
            cleanup_run(Path(previous["run"]), previous)
        for leftover in _kubepods_cgroups():  # a run whose record was lost
            if leftover.exists():
                _remove_cgroups()
                break

    def _release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _save_record(self) -> None:
        text = json.dumps(self._record, indent=2) + "\n"
        (self.run / RECORD).write_text(text)
        (MACHINE_DIR / RECORD).write_text(text)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = spawn_logged(argv, self.run / "logs" / f"{name}.log", self.run, self.die_with_parent)
        self._procs[name] = proc
        self._record["processes"].append({"name": name, "pid": proc.pid, "binary": argv[0]})
        self._save_record()
        return proc

    def _network(self) -> None:
        """The bridge with its gateway address, and the route from pods to the API server."""
        (self.run / "cni" / "net.d" / "10-ptnode.conflist").write_text(json.dumps(_cni_config(self.run)))
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        _run(["ip", "addr", "add", f"{GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE], check=True)
        _run(["ip", "link", "set", BRIDGE, "up"], check=True)
        # DNAT to 127.0.0.1 needs route_localnet, set on the bridge only (it goes with the bridge).
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")
        _remove_nat()
        _run(["iptables", "-t", "nat", "-N", NAT_CHAIN], check=True)
        for rule in _nat_rules(self.plane.port):
            _run(["iptables", "-t", "nat", *rule], check=True)
        _run(["iptables", "-t", "nat", "-A", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN], check=True)

    def _start_dns(self) -> None:
        """Service names for pods (``posttrain.testenv.dns``), on the bridge's gateway address."""
        pki = self.plane.pki
        self._spawn(
            "dns",
            [
                sys.executable, "-m", "posttrain.testenv.dns", f"--listen={GATEWAY}:53",
                f"--server={self.plane.server}", f"--ca={pki.ca_cert}", f"--cert={pki.admin_cert}",
                f"--key={pki.admin_key}", f"--service-ip={SERVICE_IP}",
            ],
        )  # fmt: skip

    def _start_containerd(self) -> None:
        t0 = time.monotonic()
        config = self.run / "containerd" / "config.toml"
        config.write_text(_containerd_config(self.run, self.image_store))
        proc = self._spawn("containerd", [CONTAINERD, "--config", str(config)])

        def up() -> bool:
            if proc.poll() is not None:
                raise RealNodeError(
                    f"containerd exited ({proc.returncode}); see {self.run}/logs/containerd.log"
                )
            return _run([CTR, "-a", str(self.sock), "version"], timeout=10).returncode == 0

        wait_until(up, timeout=30, interval=0.05, message="containerd")
        self.times["containerd"] = time.monotonic() - t0

    def _pause_archive(self) -> Path:
        """The sandbox image, from the static ``pause`` binary (no registry to pull it from)."""
        folder = self.image_store.parent / "pause"
        folder.mkdir(parents=True, exist_ok=True)
        layer = folder / "layer.tar"
        binary = self.plane.bin_dir / "pause"
        if not layer.is_file() or layer.stat().st_mtime < binary.stat().st_mtime:
            with tarfile.open(folder / "layer.tar.tmp", "w", format=tarfile.PAX_FORMAT) as tar:
                info = tar.gettarinfo(str(binary), arcname="pause")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                with binary.open("rb") as f:
                    tar.addfile(info, f)
            os.replace(folder / "layer.tar.tmp", layer)
        archive = folder / "pause.oci.tar"
        write_archive(SANDBOX_IMAGE, [layer], archive, ImageConfig(user="65535:65535", entrypoint=["/pause"]))
        return archive

    def _load_images(self) -> None:
        t0 = time.monotonic()
        present: dict[str, str] = {}
        for line in self.ctr("images", "ls").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3:
                present[fields[0]] = fields[2]
        stored = set(self.ctr("content", "ls", "-q").split())
        for archive in [self._pause_archive(), *self.images]:
            name, digest = archive_ref(archive)
            if present.get(name) == digest:
                continue
            thin = self.run / "images" / archive.name
            thin.parent.mkdir(exist_ok=True)
            _without_blobs(archive, stored, thin)
            self.ctr("images", "import", str(thin))
            thin.unlink()
        self.times["images"] = time.monotonic() - t0

    def _write_kubelet_files(self) -> tuple[Path, Path]:
        kd = self.run / "kubelet"
        pki = self.plane.pki
        cert, key = kd / "client.crt", kd / "client.key"
        _sign_client_cert(pki.ca_cert, pki.ca_key, f"system:node:{self.name}", "system:nodes", cert, key)
        ca = base64.b64encode(pki.ca_cert.read_bytes()).decode()
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "c", "cluster": {"server": self.plane.server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "kubelet", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "kubelet"}}],
            "current-context": "c",
        }
        (kd / "kubeconfig").write_text(json.dumps(kubeconfig))
        port, healthz = free_ports(2)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this machine may still be on cgroup v1
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "address": self.node_ip,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.run / "pod-logs"),
            "clusterDomain": "cluster.local",
            "clusterDNS": [GATEWAY],
            "resolvConf": "/etc/resolv.conf",
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,  # else KUBE-FIREWALL and canary chains, machine-wide
            "volumePluginDir": str(kd / "volume-plugins"),  # else /usr/libexec/kubernetes/...
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "rotateCertificates": False,
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "1h",
            "volumeStatsAggPeriod": "0s",
            "shutdownGracePeriod": "0s",
        }
        (kd / "config.json").write_text(json.dumps(config, indent=2))
        return kd / "kubeconfig", kd / "config.json"

    def _start_kubelet(self) -> None:
        kubeconfig, config = self._write_kubelet_files()
        t0 = time.monotonic()
        proc = self._spawn(
            "kubelet",
            [
                str(self.plane.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.run / 'kubelet' / 'root'}",
                f"--cert-dir={self.run / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                f"--node-labels={NODE_LABEL}=true",
                "--v=1",
            ],
        )

        def ready() -> bool:
            if proc.poll() is not None:
                raise RealNodeError(f"kubelet exited ({proc.returncode}); see {self.run}/logs/kubelet.log")
            with contextlib.suppress(ControlPlaneError, OSError, ValueError):
                return self.plane._node_schedulable(self.name)
            return False

        wait_until(ready, timeout=self.ready_timeout, interval=0.1, message=f"node {self.name} Ready")
        self.times["ready"] = time.monotonic() - t0

    def _pods_left(self) -> bool:
        proc = self.plane.kubectl(
            "get", "pods", "-A", f"--field-selector=spec.nodeName={self.name}", "-o", "name", check=False
        )
        return bool(proc.stdout.strip())

"""A real node killed outright (SIGKILL: no teardown) is cleaned up by the next node's start.

Runs before the session's node (file order) since one node per machine runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from posttrain.testenv.realnode import BRIDGE, KUBELET_SYSCTLS, MACHINE_DIR, NAT_CHAIN, RECORD, SOCKET

from tests.node.conftest import ROOT

CRASHING_NODE = """
import json, os, signal, sys
from posttrain.testenv import ControlPlane, wait_until
from posttrain.testenv.realnode import RealNode
plane = ControlPlane(nodes=[]).start()
node = RealNode(plane).start()
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
       "spec": {"containers": [{"name": "c", "image": "localhost/posttrain/pause:3.10"}]}}
plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
plane.kubectl("wait", "--for=condition=Ready", "pod/p", "--timeout=120s")
print(json.dumps({"run": str(node.run)}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _sysctls() -> dict[str, str]:
    return {k: Path("/proc/sys", k).read_text().strip() for k in KUBELET_SYSCTLS}


def _bridge_exists() -> bool:
    return subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0


def _nat_chain_exists() -> bool:
    return subprocess.run(["iptables", "-t", "nat", "-S", NAT_CHAIN], capture_output=True).returncode == 0


def _processes_naming(run: str) -> list[int]:
    """Processes whose command line names the run folder or the node's containerd socket (shims)."""
    pids = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{run}/" in cmd or f" {SOCKET} " in f"{cmd} ":
            pids.append(pid)
    return pids


def test_a_node_killed_outright_is_cleaned_up_by_the_next_start() -> None:
    # The machine's own values: a node that crashed before this test recorded them.
    earlier = MACHINE_DIR / RECORD
    before = json.loads(earlier.read_text())["sysctls"] if earlier.exists() else _sysctls()
    env = {k: v for k, v in os.environ.items() if k != "POSTTRAIN_TESTENV_KEEP"}
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_NODE], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])["run"]
    # What the crashed node left: its record, the bridge and nat chain, kubelet's sysctls, the shim
    # of the running pod (containers outlive kubelet and containerd).
    assert json.loads((MACHINE_DIR / RECORD).read_text())["run"] == run
    assert _bridge_exists() and _nat_chain_exists()
    assert _processes_naming(run), "the pod's shim survives"
    assert _sysctls() != before or before["vm/overcommit_memory"] == "1"  # kubelet's values

    restart = """
from posttrain.testenv import ControlPlane
from posttrain.testenv.realnode import RealNode
with ControlPlane(nodes=[]) as plane, RealNode(plane):
    pass
"""
    subprocess.run([sys.executable, "-c", restart], check=True, env=env, cwd=ROOT, timeout=300)
    assert not _processes_naming(run)
    assert not _bridge_exists() and not _nat_chain_exists()
    assert _sysctls() == before
    assert not (MACHINE_DIR / RECORD).exists()
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if f" {run}" in line]

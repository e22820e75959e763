"""``posttrain dev-cluster up|down|env``: a local control plane that outlives the command.

``up`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok detached from
the terminal, records their pids in ``<dir>/state.json`` and prints shell exports on stdout, so
``eval "$(posttrain dev-cluster up)"`` points kubectl at it. ``down`` stops them by the recorded pids;
``env`` prints the exports again. Also runnable as ``python -m posttrain.testenv``.

``up --real-node`` adds a real node (kubelet + containerd + runc, see ``realnode.py``) and, unless
``--nodes`` says otherwise, no kwok node, so every pod runs for real; ``--images DIR`` loads the OCI
archives of ``hack/build-images.sh`` into it. ``down`` stops the node first and undoes what it changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.testenv.cluster import (
    WORKDIR_ENTRIES,
    ControlPlane,
    ControlPlaneError,
    FakeNode,
    find_binaries,
    runs_binary,
    stop_recorded,
)
from posttrain.testenv.realnode import RealNode, cleanup_run, forget_machine_record

__all__ = ["DEFAULT_DIR", "main"]

DEFAULT_DIR = Path(".posttrain") / "dev-cluster"


def _load_state(folder: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _running(state: dict[str, Any]) -> list[str]:
    """Names of the recorded processes that still run their recorded binary."""
    return [
        str(p["name"]) for p in state.get("processes", []) if runs_binary(int(p["pid"]), str(p["binary"]))
    ]


def _clean(folder: Path) -> None:
    """Remove what a control plane wrote into ``folder``, and only that (it may be any folder)."""
    for name in WORKDIR_ENTRIES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if now empty


def _exports(state: dict[str, Any]) -> str:
    return (
        f"export KUBECONFIG={shlex.quote(str(state['kubeconfig']))}\n"
        f'export PATH={shlex.quote(str(state["bin_dir"]))}:"$PATH"\n'
    )


def _up(args: argparse.Namespace) -> int:
    folder: Path = args.dir.resolve()
    state = _load_state(folder)
    if state is not None:
        alive = _running(state)
        if len(alive) == len(state.get("processes", [])):
            print(f"dev cluster already running at {state['server']}", file=sys.stderr)
            sys.stdout.write(_exports(state))
            return 0
        print("cleaning up a dev cluster that is no longer whole", file=sys.stderr)
        _stop_real_node(state)
        stop_recorded(state)
    _clean(folder)
    folder.mkdir(parents=True, exist_ok=True)

    print("locating the control plane binaries (hack/build-testenv.sh) ...", file=sys.stderr)
    bin_dir = find_binaries(log=sys.stderr, node=args.real_node)
    count = args.nodes if args.nodes is not None else (0 if args.real_node else 1)
    nodes = [
        FakeNode(name=f"kwok-node-{i}", cpu=args.cpu, memory=args.memory, gpus=args.gpus)
        for i in range(count)
    ]
    plane = ControlPlane(nodes=nodes, workdir=folder, bin_dir=bin_dir, die_with_parent=False)
    try:
        plane.start()
        node = _start_real_node(plane, args) if args.real_node else None
    except ControlPlaneError as e:
        print(f"dev cluster failed to start: {e}\nlogs: {folder / 'logs'}", file=sys.stderr)
        return 1
    state = plane.detach()
    what = f"{count} kwok node(s), {args.gpus} GPU(s) each"
    if node is not None:
        state["real_node"] = node.detach()
        (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        what += f"; real node {node.name} Ready in {node.times['ready']:.1f}s"
    print(
        f"dev cluster ready in {plane.ready_seconds:.1f}s at {plane.server} ({what}); logs in {folder / 'logs'}",
        file=sys.stderr,
    )
    sys.stdout.write(_exports(state))
    return 0


def _start_real_node(plane: ControlPlane, args: argparse.Namespace) -> RealNode:
    images = sorted(args.images.glob("*.oci.tar")) if args.images else []
    print(f"starting a real node ({len(images)} image(s) to load) ...", file=sys.stderr)
    node = RealNode(plane, images=images, die_with_parent=False)
    try:
        node.start()
    except BaseException:
        plane.stop()
        raise
    return node


def _stop_real_node(state: dict[str, Any]) -> list[str]:
    node = state.get("real_node")
    if not node:
        return []
    done = cleanup_run(Path(node["run"]), node)
    forget_machine_record(Path(node["run"]))
    return done


def _down(args: argparse.Namespace) -> int:
    folder: Path = args.dir.resolve()
    state = _load_state(folder)
    if state is None:
        print(f"no dev cluster recorded in {folder}", file=sys.stderr)
        return 0
    for line in _stop_real_node(state):
        print(f"real node: {line}", file=sys.stderr)
    stopped = stop_recorded(state)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    if args.keep:
        (folder / "state.json").unlink(missing_ok=True)
    else:
        _clean(folder)
    return 0


def _env(args: argparse.Namespace) -> int:
    folder: Path = args.dir.resolve()
    state = _load_state(folder)
    if state is None or not _running(state):
        print(
            f"no dev cluster running in {folder}; start one with `posttrain dev-cluster up`", file=sys.stderr
        )
        return 1
    sys.stdout.write(_exports(state))
    return 0


def build_parser(prog: str = "posttrain dev-cluster") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help=f"state, kubeconfig and logs (default {DEFAULT_DIR})",
        )
        return p

    up = with_dir(sub.add_parser("up", help="start the control plane and print shell exports"))
    up.add_argument("--nodes", type=int, help="number of kwok nodes (default 1, or 0 with --real-node)")
    up.add_argument(
        "--real-node",
        action="store_true",
        help="also start a real node on this machine (kubelet + containerd + runc; root)",
    )
    up.add_argument("--images", type=Path, help="with --real-node: load every *.oci.tar of this folder")
    up.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node (default 8)")
    up.add_argument("--cpu", default="32", help="allocatable cpu per node (default 32)")
    up.add_argument("--memory", default="256Gi", help="allocatable memory per node (default 256Gi)")
    up.set_defaults(func=_up)
    down = with_dir(sub.add_parser("down", help="stop the control plane started by `up`"))
    down.add_argument("--keep", action="store_true", help="keep the folder (logs, etcd data)")
    down.set_defaults(func=_down)
    env = with_dir(sub.add_parser("env", help="print the shell exports for a running control plane"))
    env.set_defaults(func=_env)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "posttrain dev-cluster") -> int:
    """Run `posttrain dev-cluster` with `argv` and return its exit status."""
    args = build_parser(prog).parse_args(argv)
    code: int = args.func(args)
    return code

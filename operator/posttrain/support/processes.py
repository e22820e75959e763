"""Child processes of the local runner, the test control plane and the trainer's model server.

Each runs in its own process group (so a stop reaches its children too), on a free port, and is waited on
until it answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Literal

KILL_WAIT = 5.0
"""Seconds to wait for a group to go after SIGKILL."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports on `host` that are free now (held open together, so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free now."""
    return free_ports(1, host)[0]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still there (zombies included, until they are reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, signum: int) -> None:
    """Send a signal to a process group; a group that is gone (or not ours) is left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_group(pgid: int, grace: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM a process group, then SIGKILL it if it is still there after `grace` seconds.

    Args:
        pgid: the group, the pid of its leader (started with `start_new_session=True`).
        grace: seconds between SIGTERM and SIGKILL.
        popen: the leader's Popen when this process started it, so it is reaped through it; without
            one, a leader that is our child is reaped with `waitpid`.
    """
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        signal_group(pgid, signum)
        deadline = time.monotonic() + wait
        while True:
            if popen is not None:
                popen.poll()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pgid, os.WNOHANG)
            if not group_alive(pgid):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


def http_ok(url: str, timeout: float = 2.0, insecure: bool = False) -> bool:
    """Whether `GET url` answers 200 (False on any error).

    `insecure` skips the TLS certificate check (components with self-signed serving certificates).
    """
    context = None
    if url.startswith("https:") and insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


Readiness = Literal["ready", "exited", "timeout"]


def wait_ready(
    probe: Callable[[], bool],
    timeout: float,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.25,
) -> Readiness:
    """Poll `probe` until it is true, the process exits (`alive` false) or `timeout` seconds pass.

    The first polls come quickly (the delay grows from 20 ms to `interval`), so a fast server is not
    held up by the polling interval.

    Returns:
        `ready`, `exited` or `timeout`; the caller raises its own error with its own context.
    """
    deadline = time.monotonic() + timeout
    delay = min(0.02, interval)
    while True:
        if alive is not None and not alive():
            return "exited"
        if probe():
            return "ready"
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(delay)
        delay = min(delay * 1.5, interval)

"""The bottom layer's helpers: free ports, process groups, readiness and timestamps (posttrain.support)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from posttrain.support import times
from posttrain.support.processes import free_port, free_ports, group_alive, http_ok, stop_group, wait_ready


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(0 < port < 65536 for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))


@pytest.mark.parametrize("with_popen", [True, False])
def test_stop_group_stops_a_group_that_ignores_sigterm_and_its_children(with_popen: bool) -> None:
    script = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert group_alive(process.pid)

    stop_group(process.pid, grace=0.2, popen=process if with_popen else None)

    assert not group_alive(process.pid)
    if with_popen:  # otherwise stop_group reaped the leader itself and Popen cannot see its status
        assert process.poll() == -9


def test_stop_group_of_a_group_that_is_gone_returns() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    stop_group(process.pid, grace=0.1, popen=process)
    assert not group_alive(process.pid)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_readiness_waits_for_the_probe_and_reports_an_exited_process() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert http_ok(root + "/health") and not http_ok(root + "/missing")
        assert wait_ready(lambda: http_ok(root + "/health"), timeout=5) == "ready"
    finally:
        server.shutdown()
        server.server_close()
    assert not http_ok(root + "/health", timeout=0.5)
    assert wait_ready(lambda: False, timeout=5, alive=lambda: False) == "exited"
    assert wait_ready(lambda: False, timeout=0.05, interval=0.01) == "timeout"


def test_timestamps_are_rfc3339_utc_and_read_back() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert times.timestamp(moment) == "2026-01-02T03:04:05Z"
    assert times.timestamp(moment.timestamp()) == "2026-01-02T03:04:05Z"
    assert times.parse("2026-01-02T03:04:05Z") == moment
    assert times.parse("2026-01-02T04:04:05+01:00") == moment
    assert times.seconds("2026-01-02T03:04:05Z") == moment.timestamp()
    assert times.seconds(None) is None and times.seconds("") is None and times.seconds("soon") is None
    assert times.parse(times.timestamp()) <= datetime.now(UTC)

"""`posttrain run` as a user runs it: a process that is interrupted (Ctrl-C) or killed, then resumed.

The workloads are the fake trainer and the served model the fake OpenAI server, so these tests check
the runner's process handling end to end in seconds; tests/e2e/test_quickstart.py runs the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from posttrain.local.state import StateDir

from tests.unit.local.local_builders import FAKE_SERVER, FAKE_TRAINER, starts, write_pipeline


def posttrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "posttrain.cli", *args]


def run_command(manifests: Path, state: Path) -> list[str]:
    return posttrain(
        "run",
        str(manifests),
        "--state-dir",
        str(state),
        "--no-report",
        "--trainer-command",
        f"{sys.executable} {FAKE_TRAINER}",
        "--server-command",
        f"{sys.executable} {FAKE_SERVER} --port {{port}}",
        "--server-model-name",
        "fake",
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FAKE_TRAINER_LOG": str(tmp_path / "starts.log"),
        "FAKE_TRAINER": json.dumps({"EvolJob/evol": {"seconds": 4, "steps": 40}}),
    }


def wait_for_evol(log: Path, process: subprocess.Popen[str], limit: float = 60.0) -> None:
    deadline = time.time() + limit
    while "EvolJob/evol" not in starts(log):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the evol workload never started"
        time.sleep(0.05)
    time.sleep(0.3)


def finished_files(state: StateDir) -> dict[Path, float]:
    """result.json of every finished output folder, with its modification time."""
    return {path: path.stat().st_mtime for path in state.artifacts.rglob("result.json")}


def test_killed_runner_resumes_without_redoing_finished_stages(tmp_path: Path, env: dict[str, str]) -> None:
    manifests = write_pipeline(tmp_path / "manifests").parent
    state = StateDir(tmp_path / ".posttrain")
    log = tmp_path / "starts.log"
    runner = subprocess.Popen(run_command(manifests, state.root), env=env, text=True, stdout=subprocess.PIPE)
    wait_for_evol(log, runner)
    finished = finished_files(state)
    assert [p.parent.parent.name for p in finished] == ["dataslices"]

    runner.kill()  # SIGKILL: no cleanup at all; the evol workload and the teacher server keep running
    runner.wait(10)
    resumed = subprocess.run(
        run_command(manifests, state.root), env=env, text=True, capture_output=True, timeout=120
    )

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # Nothing was started twice: the finished data stage stayed finished, the running evol was adopted.
    assert starts(log) == ["DataSlice/data", "EvolJob/evol", "TrainStage/sft"]
    assert {p: m for p, m in finished_files(state).items() if p in finished} == finished
    assert sum(r.starts for r in state.records()) == 3
    status = subprocess.run(
        posttrain("status", "--state-dir", str(state.root)), text=True, capture_output=True
    )
    assert status.returncode == 0
    assert status.stdout.count("Succeeded") == 3, status.stdout


def test_ctrl_c_stops_the_work_and_a_second_run_resumes_it(tmp_path: Path, env: dict[str, str]) -> None:
    manifests = write_pipeline(tmp_path / "manifests").parent
    state = StateDir(tmp_path / ".posttrain")
    log = tmp_path / "starts.log"
    runner = subprocess.Popen(run_command(manifests, state.root), env=env, text=True, stdout=subprocess.PIPE)
    wait_for_evol(log, runner)

    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=60)

    assert runner.returncode == 130, output
    assert "resumes where it stopped" in output
    for workload in state.workload_dirs("EvolJob", "evol"):
        assert not workload.is_running()
    assert (state.run_info() or {})["state"] == "interrupted"

    resumed = subprocess.run(
        run_command(manifests, state.root), env=env, text=True, capture_output=True, timeout=120
    )

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert starts(log) == ["DataSlice/data", "EvolJob/evol", "EvolJob/evol", "TrainStage/sft"]
    # Plain log lines (stdout is not a terminal): events and progress.
    assert "EvolJob/evol Succeeded" in resumed.stdout


def test_dry_run_prints_the_order_and_runs_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    manifests = write_pipeline(tmp_path / "manifests").parent
    result = subprocess.run(
        posttrain("run", str(manifests), "--dry-run", "--state-dir", str(tmp_path / "s")),
        env=env,
        text=True,
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "   1. DataSlice/data",
        "   2. EvolJob/evol  after DataSlice/data  serves teacher",
        "   3. TrainStage/sft  after EvolJob/evol",
    ]
    assert not (tmp_path / "starts.log").exists()

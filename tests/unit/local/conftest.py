"""Fixtures of the local runner's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from posttrain.local.driver import RunOptions
from posttrain.local.state import StateDir

from tests.unit.local.local_builders import fake_options, write_pipeline


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    return write_pipeline(tmp_path / "manifests")


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


@pytest.fixture
def trainer_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the fake trainer appends `Kind/name runId` to on every start."""
    path = tmp_path / "starts.log"
    monkeypatch.setenv("FAKE_TRAINER_LOG", str(path))
    monkeypatch.setenv("FAKE_TRAINER", "{}")
    return path


@pytest.fixture
def options(trainer_log: Path) -> RunOptions:
    return fake_options()

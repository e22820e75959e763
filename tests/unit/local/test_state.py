"""The state folder: records, process identity, the lock, the event journal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from posttrain.local.state import (
    ResourceRecord,
    StateDir,
    StateLocked,
    alive,
    process_start_time,
    read_json,
    write_json,
)


def test_records_round_trip_in_the_order_of_the_last_run(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    for name in ("b", "a"):
        state.save_record(ResourceRecord("DataSlice", name, 2, "d", {"phase": "Succeeded"}, "x.yaml", 1))
    state.save_run_info({"order": [["DataSlice", "b"], ["DataSlice", "a"]]})
    records = state.records()
    assert [r.name for r in records] == ["b", "a"]
    assert records[0] == ResourceRecord("DataSlice", "b", 2, "d", {"phase": "Succeeded"}, "x.yaml", 1)
    assert records[0].phase == "Succeeded"


def test_json_writes_are_atomic_and_unreadable_files_read_as_none(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.json"
    write_json(path, {"x": 1})
    assert read_json(path) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]
    path.write_text("{cut off")
    assert read_json(path) is None


def test_a_process_is_identified_by_pid_and_start_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = process_start_time(child.pid)
        assert start is not None
        assert alive(child.pid, start)
        assert not alive(child.pid, start + 1)  # the same pid with another start time: a different process
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid, start)
    assert not alive(None, None)
    assert alive(os.getpid(), None)


def test_the_lock_admits_one_runner(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    with state.lock(), pytest.raises(StateLocked), state.lock():
        pass
    with state.lock():  # released
        pass


def test_the_event_journal_skips_lines_cut_off_by_a_crash(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.append_event({"reason": "Started"})
    with state.events_file.open("a") as stream:
        stream.write('{"reason": "Cut')
    assert [e["reason"] for e in state.events()] == ["Started"]


def test_fresh_wipes_the_runs_and_keeps_other_files(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.save_record(ResourceRecord("DataSlice", "a"))
    state.append_event({"reason": "Started"})
    (state.artifacts / "x").mkdir(parents=True)
    (state.root / "build.log").write_text("someone else's")
    state.wipe()
    assert sorted(p.name for p in state.root.iterdir()) == ["build.log"]

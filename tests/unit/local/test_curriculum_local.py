"""`posttrain run` on a Curriculum: the same chain as on a cluster, stage by stage, through its gates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from posttrain.api.curriculum import CurriculumStatus
from posttrain.local.driver import LocalRunner, RunOptions, load_pipeline
from posttrain.local.report import collect, status_table, summary_table, write_report
from posttrain.local.state import StateDir
from posttrain.plan.curriculum import chain

from tests.unit.local.local_builders import starts, write_pipeline

CURRICULUM = """
apiVersion: posttrain.dev/v1alpha1
kind: Curriculum
metadata: {name: loop}
spec:
  stages: 2
  student:
    name: student
    served: {model: {uri: file://models/student}, gpus: 0}
  data:
    sources: [{uri: file://seed.jsonl}]
    data: {evalSets: {diverse: 1}}
    retries: {limit: 0}
  evol:
    teachers: [{name: teacher, endpoint: {baseUrl: "http://127.0.0.1:9/v1", model: t}}]
    retries: {limit: 0}
  align:
    teachers: [{name: teacher, endpoint: {baseUrl: "http://127.0.0.1:9/v1", model: t}}]
    judges: [{name: judge, endpoint: {baseUrl: "http://127.0.0.1:9/v1", model: j}}]
    retries: {limit: 0}
  sft: {retries: {limit: 0}}
  dpo: {retries: {limit: 0}}
"""
PASS = {"elo.student": 1030.0, "eloLow.student": 1010.0, "eloHigh.student": 1050.0, "elo.previous": 1000.0}
FAIL = {"elo.student": 990.0, "eloLow.student": 970.0, "eloHigh.student": 1010.0, "elo.previous": 1000.0}


def behaviour(monkeypatch: pytest.MonkeyPatch, gate_1: dict[str, float]) -> None:
    plan = {
        "DataSlice/loop-data": {"outputs": ["dataset", "slice-1", "slice-2", "eval-diverse"]},
        "AlignRound/loop-s1-gate": {"metrics": {**gate_1, "studentWinRate": 0.6}},
        "AlignRound/loop-s2-gate": {"metrics": {**PASS, "studentWinRate": 0.6}},
    }
    monkeypatch.setenv("FAKE_TRAINER", json.dumps(plan))


def why_not(state: StateDir) -> list[str]:
    """The curriculum's stages that did not finish, with their messages (what a failure shows)."""
    status = curriculum_status(state)
    return [f"stage {s.stage}: {s.phase}: {s.message}" for s in status.stages if s.phase != "Promoted"]


def curriculum_status(state: StateDir) -> CurriculumStatus:
    record = state.load_record("Curriculum", "loop")
    assert record is not None and record.status is not None
    return CurriculumStatus.model_validate(record.status)


def test_a_curriculum_runs_locally_as_its_chain_with_the_previous_model_as_student(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour(monkeypatch, PASS)
    path = write_pipeline(tmp_path / "manifests", CURRICULUM)
    pipeline = load_pipeline([path])
    summary = LocalRunner(pipeline, state, options).run()
    assert summary.succeeded, (summary, why_not(state))
    status = curriculum_status(state)
    assert status.phase == "Succeeded" and status.stage_summary == "2/2"
    assert [s.phase for s in status.stages] == ["Promoted", "Promoted"]
    assert status.metrics["elo"] == 1060.0
    # The same chain the operator creates (and `posttrain curriculum render` writes), each run once.
    expected = [f"{c['kind']}/{c['metadata']['name']}" for c in chain(pipeline.curricula[0])]
    assert sorted(starts(trainer_log)) == sorted(expected)
    assert {f"{r.kind}/{r.metadata.name}" for r in pipeline.resources} == set(expected)
    # Stage 2's AlignRound served the model stage 1 trained.
    dpo = state.load_record("TrainStage", "loop-s1-dpo")
    assert dpo is not None and dpo.status is not None
    (workload,) = state.workload_dirs("AlignRound", "loop-s2-align")
    config = json.loads(workload.config.read_text())
    assert config["spec"]["student"]["served"]["model"]["uri"] == dpo.status["outputs"]["model"]["uri"]
    # The end-of-run report and status table take the curriculum's record in.
    summary_table(state)
    status_table(state)
    assert write_report(state).exists()
    assert any(row.kind == "Curriculum" for row in collect(state))
    assert "Curriculum/loop: 2 stages" in "\n".join(
        LocalRunner(load_pipeline([path]), state, options).dry_run_lines()
    )
    # A second run changes nothing and starts nothing.
    again = LocalRunner(load_pipeline([path]), state, options).run()
    assert again.succeeded and len(starts(trainer_log)) == len(expected)


def test_a_failing_gate_stops_the_local_run_before_the_next_stage(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour(monkeypatch, FAIL)
    path = write_pipeline(tmp_path / "manifests", CURRICULUM)
    summary = LocalRunner(load_pipeline([path]), state, options).run()
    assert not summary.succeeded
    assert summary.phases[("Curriculum", "loop")] == "Failed"
    status = curriculum_status(state)
    promoted = next(c for c in status.conditions if c.type == "Promoted")
    assert promoted.status == "False" and "gain -10" in promoted.message
    assert not [s for s in starts(trainer_log) if "-s2-" in s]


def test_a_curriculum_whose_state_was_lost_passes_its_gates_again_on_the_reused_results(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour(monkeypatch, PASS)
    path = write_pipeline(tmp_path / "manifests", CURRICULUM)
    assert LocalRunner(load_pipeline([path]), state, options).run().succeeded
    made = {name: state.load_record("AlignRound", name) for name in ("loop-s1-gate", "loop-s2-gate")}
    ran = len(starts(trainer_log))
    shutil.rmtree(state.root / "state")
    shutil.rmtree(state.root / "workloads")

    summary = LocalRunner(load_pipeline([path]), state, options).run()

    # Every run is taken over from its content-addressed folder, the gates' figures with it.
    assert summary.succeeded, (summary, why_not(state))
    assert len(starts(trainer_log)) == ran
    status = curriculum_status(state)
    assert [s.phase for s in status.stages] == ["Promoted", "Promoted"]
    assert status.metrics["elo"] == 1060.0
    for name, before in made.items():
        after = state.load_record("AlignRound", name)
        assert before is not None and before.status is not None
        assert after is not None and after.status is not None
        assert after.status["metrics"] == before.status["metrics"]
        promoted = next(c for c in after.status["conditions"] if c["type"] == "Promoted")
        assert (promoted["status"], promoted["reason"]) == ("True", "Promoted")
        ready = next(c for c in after.status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "Reused"

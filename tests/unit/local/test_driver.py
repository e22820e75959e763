"""The local driver: loading, running a chain, retries, failures, resume, reuse, servers, the queue.

Workloads are the fake trainer (tests/unit/local/fake_trainer.py) and served models the fake OpenAI
server, so every test runs the real driver loop, real processes and the real plan in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from posttrain.api.common import ExternalEndpoint
from posttrain.api.status import Status
from posttrain.local.driver import LocalRunner, RunOptions, load_pipeline, local_path
from posttrain.local.servers import ServerState
from posttrain.local.state import StateDir, StateLocked, alive, read_json

from tests.unit.local.local_builders import CHAIN, starts, write_pipeline

REPO = Path(__file__).resolve().parents[3]


def status_of(state: StateDir, kind: str, name: str) -> Status:
    record = state.load_record(kind, name)
    assert record is not None and record.status is not None
    return Status.model_validate(record.status)


def run(
    pipeline_file: Path, state: StateDir, options: RunOptions, max_passes: int | None = None
) -> LocalRunner:
    runner = LocalRunner(load_pipeline([pipeline_file]), state, options)
    runner.run(max_passes=max_passes)
    return runner


def step_until(runner: LocalRunner, condition: object, limit: float = 30.0) -> None:
    """Drive passes by hand (as `run` does) until the condition holds."""
    assert callable(condition)
    runner.load_records()
    deadline = time.time() + limit
    while not condition():
        assert time.time() < deadline, "condition not reached"
        runner.step()
        time.sleep(0.05)


def evol_active(state: StateDir) -> bool:
    return any(w.is_running() and w.exit_code() is None for w in state.workload_dirs("EvolJob", "evol"))


def evol_working(state: StateDir, log: Path) -> bool:
    """The evol workload runs and the fake trainer inside it has started its work."""
    return evol_active(state) and "EvolJob/evol" in starts(log)


def test_an_endpoint_replaces_the_participants_of_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = ExternalEndpoint(base_url="http://llm.example/v1", model="big-model")
    monkeypatch.setenv("POSTTRAIN_API_KEY_JUDGE", "secret")
    monkeypatch.delenv("POSTTRAIN_API_KEY_TEACHER", raising=False)
    pipeline = load_pipeline([REPO / "examples" / "quickstart"], {"teacher": endpoint, "judge": endpoint})
    by_key = {r.key: r for r in pipeline.resources}
    evol = by_key[("EvolJob", "evol")].spec
    assert evol.teachers[0].served is None and evol.teachers[0].endpoint == endpoint
    align = by_key[("AlignRound", "align")].spec
    (judge,) = align.judges
    assert judge.verifier is None and judge.endpoint.model == "big-model"
    # The key comes from the environment (the local runner's stand-in for a Secret), never the manifest.
    assert judge.endpoint.api_key_secret_ref.key == "POSTTRAIN_API_KEY_JUDGE"
    assert align.teachers[0].endpoint.api_key_secret_ref is None
    assert align.student.served is not None  # other names are left alone


def test_relative_file_uris_are_resolved_against_the_manifest_folder() -> None:
    pipeline = load_pipeline([REPO / "examples" / "quickstart"])
    by_key = {r.key: r for r in pipeline.resources}
    folder = (REPO / "examples" / "quickstart").resolve()
    data = by_key[("DataSlice", "seed-data")].spec
    assert data.sources[0].uri == f"file://{folder}/data/seed.jsonl"
    assert data.data.decontamination.benchmarks[0].uri == f"file://{folder}/data/benchmark.jsonl"
    evol = by_key[("EvolJob", "evol")].spec
    assert evol.teachers[0].served.model.uri == f"file://{folder}/teacher"
    assert evol.dataset.from_ is not None and evol.dataset.uri is None
    assert pipeline.order[0] == ("DataSlice", "seed-data")
    assert pipeline.order[-2:] == [("TrainStage", "rleif"), ("AlignRound", "arena-final")]
    assert pipeline.problems == []


def test_absolute_and_remote_uris_are_kept(tmp_path: Path) -> None:
    text = CHAIN.replace("file://seed.jsonl", "s3://bucket/seed.jsonl").replace(
        "file://models/student", "file:///opt/models/student"
    )
    pipeline = load_pipeline([write_pipeline(tmp_path, text)])
    by_key = {r.key: r for r in pipeline.resources}
    assert by_key[("DataSlice", "data")].spec.sources[0].uri == "s3://bucket/seed.jsonl"
    assert by_key[("TrainStage", "sft")].spec.model.uri == "file:///opt/models/student"


def test_pvc_uris_live_under_the_state_folder(state: StateDir) -> None:
    assert local_path("pvc://claim/a/b", state) == state.root / "pvc" / "claim" / "a" / "b"
    assert local_path("file:///x/y", state) == Path("/x/y")
    assert local_path("s3://bucket/key", state) is None


def test_a_chain_runs_to_the_end_with_its_teacher_served(
    pipeline_file: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    runner = LocalRunner(load_pipeline([pipeline_file]), state, options)
    summary = runner.run()

    assert summary.succeeded, summary
    assert starts(trainer_log) == ["DataSlice/data", "EvolJob/evol", "TrainStage/sft"]
    for kind, name in summary.phases:
        status = status_of(state, kind, name)
        assert status.phase == "Succeeded"
        assert status.run_id and status.attempt == 1
        assert next(c for c in status.conditions if c.type == "Ready").status == "True"
    # Outputs live in content-addressed folders under the state's artifact root.
    data = status_of(state, "DataSlice", "data")
    assert data.outputs["dataset"].uri == f"{state.artifact_root}/dataslices/{data.run_id}/dataset"
    # The teacher was served and its endpoint reached the workload's config.
    evol = status_of(state, "EvolJob", "evol")
    endpoints = json.loads((state.artifacts / "evoljobs" / str(evol.run_id) / "endpoints.json").read_text())
    assert endpoints["teacher"]["model"] == "fake"
    assert endpoints["teacher"]["baseUrl"].startswith("http://127.0.0.1:")
    # The sft stage read the evol output (the reference resolved to its URI).
    sft_config = json.loads(next(iter(state.workload_dirs("TrainStage", "sft"))).config.read_text())
    assert sft_config["spec"]["dataset"]["uri"] == evol.outputs["dataset"].uri
    # Every server is stopped at the end.
    for path in state.servers.glob("*/server.json"):
        server = ServerState.from_wire(read_json(path))
        assert not server.users and not alive(server.pid, server.start_time)
    reasons = [e["reason"] for e in state.events() if e["kind"] == "EvolJob"]
    assert reasons[:1] == ["Waiting"] and "Succeeded" in reasons


def test_a_second_run_redoes_nothing(
    pipeline_file: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    run(pipeline_file, state, options)
    before = {r.name: (r.starts, r.status) for r in state.records()}

    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert summary.succeeded
    assert len(starts(trainer_log)) == 3
    assert {r.name: (r.starts, r.status) for r in state.records()} == before


def test_a_changed_spec_reruns_that_resource_and_what_reads_it(
    pipeline_file: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    run(pipeline_file, state, options)
    old_evol = status_of(state, "EvolJob", "evol").run_id
    pipeline_file.write_text(
        pipeline_file.read_text().replace("name: evol}\nspec:", "name: evol}\nspec:\n  evol: {rounds: 2}")
    )

    run(pipeline_file, state, options)

    assert starts(trainer_log) == [
        "DataSlice/data",
        "EvolJob/evol",
        "TrainStage/sft",
        "EvolJob/evol",
        "TrainStage/sft",
    ]
    evol_record = state.load_record("EvolJob", "evol")
    assert evol_record is not None and evol_record.generation == 2
    evol = status_of(state, "EvolJob", "evol")
    assert evol.run_id != old_evol and evol.history == [old_evol]
    assert evol.observed_generation == 2
    data_record = state.load_record("DataSlice", "data")
    assert data_record is not None and data_record.generation == 1


def test_a_failed_attempt_is_retried_by_the_plan(
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
    trainer_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"EvolJob/evol": {"fail": 1}}))
    summary = run_summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert run_summary.succeeded, summary
    evol = status_of(state, "EvolJob", "evol")
    assert evol.attempt == 2 and evol.metrics == {"attempts": 2.0}
    assert evol.last_failure is not None
    assert evol.last_failure.exit_code == 1
    assert evol.last_failure.message == "RuntimeError: planned failure 1"
    assert [e["reason"] for e in state.events() if e["reason"] in ("AttemptFailed", "Retrying")] == [
        "AttemptFailed",
        "Retrying",
    ]


def test_invalid_input_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
    trainer_log: Path,
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"EvolJob/evol": {"invalid": True}}))
    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert not summary.succeeded
    assert summary.phases[("EvolJob", "evol")] == "Failed"
    assert starts(trainer_log).count("EvolJob/evol") == 1  # retries are left, yet none is used
    evol = status_of(state, "EvolJob", "evol")
    assert evol.last_failure is not None
    assert (evol.last_failure.reason, evol.last_failure.exit_code) == ("InvalidInput", 65)
    ready = next(c for c in evol.conditions if c.type == "Ready")
    assert ready.reason == "InvalidInput" and "rows.jsonl: line 1: not JSON" in ready.message
    assert not [e for e in state.events() if e["reason"] == "Retrying"]


def test_a_failure_blocks_what_reads_it_and_the_run_ends(
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
    trainer_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"EvolJob/evol": {"fail": 5}}))
    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert not summary.succeeded
    assert summary.phases == {
        ("DataSlice", "data"): "Succeeded",
        ("EvolJob", "evol"): "Failed",
        ("TrainStage", "sft"): "Waiting",
    }
    assert starts(trainer_log).count("EvolJob/evol") == 2  # the first attempt and one retry
    sft = status_of(state, "TrainStage", "sft")
    inputs_ready = next(c for c in sft.conditions if c.type == "InputsReady")
    assert inputs_ready.reason == "InputFailed"
    evol_dir = next(iter(state.workload_dirs("EvolJob", "evol")))
    assert "failing on purpose" in evol_dir.log.read_text()


def test_a_failure_blocks_the_whole_chain_below_it_naming_the_root_cause(
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"DataSlice/data": {"fail": 5}}))
    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert summary.phases == {
        ("DataSlice", "data"): "Failed",
        ("EvolJob", "evol"): "Waiting",
        ("TrainStage", "sft"): "Waiting",
    }
    stalled = {
        name: next(c for c in status_of(state, kind, name).conditions if c.type == "Stalled")
        for kind, name in summary.phases
    }
    assert all(c.status == "True" for c in stalled.values())
    assert (stalled["evol"].reason, stalled["evol"].message) == ("InputFailed", "input DataSlice/data failed")
    assert (stalled["sft"].reason, stalled["sft"].message) == (
        "InputBlocked",
        "input EvolJob/evol is blocked: input DataSlice/data failed",
    )


def test_an_interrupted_attempt_restarts_on_resume_and_finished_work_stays(
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
    trainer_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"EvolJob/evol": {"seconds": 30, "steps": 300}}))
    first = LocalRunner(load_pipeline([pipeline_file]), state, options)
    with state.lock():
        step_until(first, lambda: evol_working(state, trainer_log))
        first.interrupt()  # what Ctrl-C does
    assert not evol_active(state)
    data_before = state.load_record("DataSlice", "data")

    monkeypatch.setenv("FAKE_TRAINER", "{}")
    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert summary.succeeded
    assert starts(trainer_log) == ["DataSlice/data", "EvolJob/evol", "EvolJob/evol", "TrainStage/sft"]
    assert state.load_record("DataSlice", "data") == data_before
    evol = status_of(state, "EvolJob", "evol")
    assert evol.attempt == 1 and evol.last_failure is None  # restarted, not counted as a failure


def test_a_workload_that_outlives_a_killed_runner_is_adopted(
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
    trainer_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"EvolJob/evol": {"seconds": 1.5, "steps": 5}}))
    first = LocalRunner(load_pipeline([pipeline_file]), state, options)
    with state.lock():
        step_until(first, lambda: evol_working(state, trainer_log))
    # The first runner is gone without cleaning up (SIGKILL): its workload and server keep running.

    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert summary.succeeded
    assert starts(trainer_log) == ["DataSlice/data", "EvolJob/evol", "TrainStage/sft"]
    assert status_of(state, "EvolJob", "evol").attempt == 1


def test_a_workload_process_that_vanished_is_a_failed_attempt(
    pipeline_file: Path,
    state: StateDir,
    options: RunOptions,
    trainer_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"EvolJob/evol": {"seconds": 30, "steps": 300}}))
    first = LocalRunner(load_pipeline([pipeline_file]), state, options)
    with state.lock():
        step_until(first, lambda: evol_working(state, trainer_log))
    workload = next(iter(state.workload_dirs("EvolJob", "evol")))
    process = workload.process()
    assert process is not None
    os.killpg(process["pid"], signal.SIGKILL)  # the whole group: no exit code is written
    first.servers.stop_all()

    monkeypatch.setenv("FAKE_TRAINER", "{}")
    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert summary.succeeded
    evol = status_of(state, "EvolJob", "evol")
    assert evol.attempt == 2
    assert evol.last_failure is not None and evol.last_failure.reason == "ProcessLost"


def test_a_resource_with_the_same_content_reuses_the_finished_result(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    one = CHAIN.split("---")[0]
    run(write_pipeline(tmp_path, one), state, options)
    two = one.replace("name: data}", "name: data-copy}")  # the same spec applied under a new name
    summary = LocalRunner(load_pipeline([write_pipeline(tmp_path, one + "---" + two)]), state, options).run()

    assert summary.succeeded
    assert starts(trainer_log) == ["DataSlice/data"]
    original, copy = status_of(state, "DataSlice", "data"), status_of(state, "DataSlice", "data-copy")
    assert copy.outputs == original.outputs and copy.run_id == original.run_id
    assert next(c for c in copy.conditions if c.type == "Ready").reason == "Reused"


def test_finished_artifacts_are_reused_when_the_state_was_lost(
    pipeline_file: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    run(pipeline_file, state, options)
    shutil.rmtree(state.root / "state")
    shutil.rmtree(state.root / "workloads")

    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert summary.succeeded
    assert len(starts(trainer_log)) == 3
    assert {status_of(state, k, n).conditions[0].reason for k, n in summary.phases} == {"Reused"}


def test_at_most_parallel_workloads_run_and_the_rest_wait_queued(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = CHAIN.split("---")[0]
    text = "---".join(
        one.replace("name: data}", f"name: d{i}}}").replace("seed.jsonl", f"seed.jsonl#{i}") for i in range(3)
    )
    pipeline = load_pipeline(
        [write_pipeline(tmp_path, text.replace("#0", "").replace("#1", "").replace("#2", ""))]
    )
    # Distinct specs (no reuse): a different seed each.
    for i, resource in enumerate(pipeline.resources):
        resource.spec.data.seed = i
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({f"DataSlice/d{i}": {"seconds": 0.6} for i in range(3)}))
    options.parallel = 2
    runner = LocalRunner(pipeline, state, options)
    most = 0
    with state.lock():
        runner.load_records()
        for _ in range(400):
            runner.step()
            running = sum(
                1
                for i in range(3)
                for w in state.workload_dirs("DataSlice", f"d{i}")
                if w.is_running() and w.exit_code() is None
            )
            most = max(most, running)
            if all(runner.records[("DataSlice", f"d{i}")].phase == "Succeeded" for i in range(3)):
                break
            time.sleep(0.05)
    assert most == 2
    assert all(runner.records[("DataSlice", f"d{i}")].phase == "Succeeded" for i in range(3))


def test_a_server_that_cannot_start_ends_the_run_with_the_reason(
    pipeline_file: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    (pipeline_file.parent / "models" / "teacher").rmdir()
    summary = LocalRunner(load_pipeline([pipeline_file]), state, options).run()

    assert not summary.succeeded
    assert summary.phases[("EvolJob", "evol")] == "Running"
    assert len(summary.stuck) == 1 and "no model at" in summary.stuck[0]
    assert starts(trainer_log) == ["DataSlice/data"]


def test_a_second_runner_on_the_same_state_is_refused(
    pipeline_file: Path, state: StateDir, options: RunOptions
) -> None:
    with state.lock(), pytest.raises(StateLocked):
        LocalRunner(load_pipeline([pipeline_file]), state, options).run()


def test_references_to_missing_resources_wait_and_the_run_ends(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    text = CHAIN.split("---")[2]
    pipeline = load_pipeline([write_pipeline(tmp_path, text)])
    assert pipeline.problems == ["TrainStage/sft: spec.dataset: EvolJob/evol does not exist"]

    summary = LocalRunner(pipeline, state, options).run()

    assert summary.phases == {("TrainStage", "sft"): "Waiting"}
    assert status_of(state, "TrainStage", "sft").conditions[1].reason == "InputMissing"
    assert starts(trainer_log) == []


def test_dry_run_lists_the_order_and_what_is_kept(
    pipeline_file: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    pipeline = load_pipeline([pipeline_file])
    lines = LocalRunner(pipeline, state, options).dry_run_lines()
    assert lines == [
        " 1. DataSlice/data",
        " 2. EvolJob/evol  after DataSlice/data  serves teacher",
        " 3. TrainStage/sft  after EvolJob/evol",
    ]
    run(pipeline_file, state, options)
    assert all(
        line.endswith("[Succeeded: kept]") for line in LocalRunner(pipeline, state, options).dry_run_lines()
    )


ALIGN = """
---
apiVersion: posttrain.dev/v1alpha1
kind: AlignRound
metadata: {name: align}
spec:
  datasets: [{from: {kind: EvolJob, name: evol}}]
  student: {name: student, served: {model: {uri: file://models/student}, gpus: 0}}
  teachers: [{name: teacher, served: {model: {uri: file://models/teacher}, gpus: 0}}]
  judges: [{name: judge, served: {model: {uri: file://models/teacher}, gpus: 0}}]
"""


def server_starts(state: StateDir) -> dict[str, int]:
    """Model folder name -> times a server was started for it."""
    out = {}
    for path in state.servers.glob("*/server.json"):
        server = ServerState.from_wire(read_json(path))
        log = (path.parent / "output.log").read_text()
        out[Path(server.model).name] = log.count("$ ")
    return out


@pytest.mark.parametrize(("linger", "teacher_starts"), [(60.0, 1), (0.0, 2)])
def test_participants_share_a_server_per_model_and_it_lingers_for_the_next_stage(
    tmp_path: Path,
    state: StateDir,
    options: RunOptions,
    trainer_log: Path,
    linger: float,
    teacher_starts: int,
) -> None:
    options.server_linger = linger
    pipeline = load_pipeline(
        [
            write_pipeline(
                tmp_path, CHAIN.split("---\napiVersion: posttrain.dev/v1alpha1\nkind: TrainStage")[0] + ALIGN
            )
        ]
    )
    summary = LocalRunner(pipeline, state, options).run()

    assert summary.succeeded
    # evol's teacher, then align's teacher and judge: one model folder, one server at a time.
    assert server_starts(state) == {"teacher": teacher_starts, "student": 1}
    align = status_of(state, "AlignRound", "align")
    endpoints = json.loads(
        (state.artifacts / "alignrounds" / str(align.run_id) / "endpoints.json").read_text()
    )
    assert endpoints["teacher"] == endpoints["judge"] != endpoints["student"]


def stage_from(name: str, model: str, dataset: str = "{uri: file://seed.jsonl}") -> str:
    """An SFT stage starting from another stage's model."""
    model_ref = f"{{from: {{kind: TrainStage, name: {model}}}}}"
    return f"""
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {{name: {name}}}
spec: {{method: sft, model: {model_ref}, dataset: {dataset}}}
"""


# Two separate cycles, a <-> b and c <-> d (d also reads a resource that runs), beside a resource that runs.
TWO_CYCLES = "---".join(
    [
        CHAIN.split("---")[0],
        stage_from("a", "b"),
        stage_from("b", "a"),
        stage_from("c", "d"),
        stage_from("d", "c", "{from: {kind: DataSlice, name: data}}"),
    ]
)


def test_every_resource_of_every_cycle_reports_the_cycle_and_the_rest_runs(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path
) -> None:
    pipeline = load_pipeline([write_pipeline(tmp_path, TWO_CYCLES)])
    assert pipeline.problems == [
        "reference cycle: TrainStage/a -> TrainStage/b -> TrainStage/a",
        "reference cycle: TrainStage/c -> TrainStage/d -> TrainStage/c",
    ]

    summary = LocalRunner(pipeline, state, options).run()

    assert summary.phases[("DataSlice", "data")] == "Succeeded"
    assert starts(trainer_log) == ["DataSlice/data"]
    for name, other in (("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")):
        assert summary.phases[("TrainStage", name)] == "Waiting"
        inputs_ready = status_of(state, "TrainStage", name).conditions[1]
        assert inputs_ready.type == "InputsReady" and inputs_ready.reason == "ReferenceCycle", name
        cycle = f"TrainStage/{name} -> TrainStage/{other} -> TrainStage/{name}"
        assert inputs_ready.message.startswith(f"reference cycle: {cycle}"), inputs_ready.message


def test_validate_lists_every_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from posttrain.cli import main

    assert main(["validate", str(write_pipeline(tmp_path, TWO_CYCLES))]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "reference cycle: TrainStage/a -> TrainStage/b -> TrainStage/a",
        "reference cycle: TrainStage/c -> TrainStage/d -> TrainStage/c",
    ]


ROUND = """
apiVersion: posttrain.dev/v1alpha1
kind: AlignRound
metadata: {name: align}
spec:
  datasets: [{uri: file://seed.jsonl}]
  student: {name: student, endpoint: {baseUrl: "http://127.0.0.1:9/v1", model: s}}
  teachers: [{name: teacher, endpoint: {baseUrl: "http://127.0.0.1:9/v1", model: t}}]
  judges: [{name: judge, endpoint: {baseUrl: "http://127.0.0.1:9/v1", model: j}}]
"""


def test_the_local_runner_sets_judge_reliable_from_the_result_like_the_operator(
    tmp_path: Path, state: StateDir, options: RunOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    biased = {"reliability.swapPairs": 12, "reliability.positionFlips": 1.0}
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"AlignRound/align": {"metrics": biased}}))
    summary = LocalRunner(load_pipeline([write_pipeline(tmp_path / "round", ROUND)]), state, options).run()
    assert summary.succeeded, summary
    condition = next(
        c for c in status_of(state, "AlignRound", "align").conditions if c.type == "JudgeReliable"
    )
    assert (condition.status, condition.reason) == ("False", "PositionBias")
    assert "position flips 1.00 (max 0.30)" in condition.message


# The same round as a promotion gate: its student against the teacher it must beat.
GATE = ROUND.replace("name: align}", "name: gate}") + (
    "  align: {coTeaching: {enabled: false}, arena: {reference: teacher, referenceElo: 1000}}\n"
    "  promotion: {previous: teacher}\n"
)


def test_a_gate_applied_again_under_another_name_is_reused_with_its_verdict(
    tmp_path: Path, state: StateDir, options: RunOptions, trainer_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = {
        "elo.student": 1050.0,
        "eloLow.student": 1020.0,
        "elo.teacher": 1000.0,
        "reliability.positionFlips": 0.1,
    }
    monkeypatch.setenv("FAKE_TRAINER", json.dumps({"AlignRound/gate": {"metrics": figures}}))
    run(write_pipeline(tmp_path, GATE), state, options)
    again = GATE.replace("name: gate}", "name: gate-again}")
    summary = LocalRunner(
        load_pipeline([write_pipeline(tmp_path, GATE + "---" + again)]), state, options
    ).run()

    assert summary.succeeded
    assert starts(trainer_log) == ["AlignRound/gate"]
    made, reused = status_of(state, "AlignRound", "gate"), status_of(state, "AlignRound", "gate-again")
    assert reused.metrics == made.metrics and reused.metrics["elo.student"] == 1050.0
    verdicts = [{c.type: (c.status, c.reason) for c in s.conditions} for s in (made, reused)]
    assert verdicts[1]["Promoted"] == verdicts[0]["Promoted"] == ("True", "Promoted")
    assert verdicts[1]["JudgeReliable"] == verdicts[0]["JudgeReliable"] == ("True", "Reliable")
    assert verdicts[1]["Ready"] == ("True", "Reused")

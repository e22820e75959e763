"""The quickstart for real: `examples/quickstart/` run by `posttrain run` on this CPU, end to end.

What hack/quickstart.sh does, in a copy of the example (so the test leaves the checkout alone): make
the tiny student with `posttrain make-tiny-model`, run the pipeline with the real workloads, the
example's arithmetic stand-in teacher and a local `transformers serve` of the student, then check that
every resource succeeded, the report was written, each stage read the previous stage's output (no
data file but the seed and the benchmark), each stage moved its own metric the right way, and a
second run redoes nothing.

Slow (several minutes on 2 cores): every workload is its own process that imports torch, and the
served student starts `transformers serve`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.references import iter_references, output_name
from posttrain.local.driver import load_pipeline
from posttrain.local.lineage import LineageIndex
from posttrain.local.report import BarChart, Check, collect
from posttrain.local.state import StateDir

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "quickstart"

pytestmark = pytest.mark.slow


def posttrain(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # As hack/quickstart.sh: one thread per process (the tiny models need no more).
    return subprocess.run(
        [sys.executable, "-m", "posttrain.cli", *args],
        text=True,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[StateDir, subprocess.CompletedProcess[str]]:
    """A copy of the example, its tiny models made, run to the end once."""
    root = tmp_path_factory.mktemp("quickstart")
    example = root / "quickstart"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("models", ".posttrain"))
    made = posttrain("make-tiny-model", str(example / "models" / "tiny-student"), "--seed", "2", timeout=300)
    assert made.returncode == 0, made.stderr
    state = StateDir(root / ".posttrain")
    run = posttrain("run", str(example), "--state-dir", str(state.root), timeout=1800)
    return state, run


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_output(state: StateDir, kind: str, name: str, output: str) -> list[dict[str, Any]]:
    """The rows of one output of a finished resource (its URI from the resource's status)."""
    record = next(r for r in state.records() if (r.kind, r.name) == (kind, name))
    uri = (record.status or {})["outputs"][output]["uri"]
    return read_rows(Path(uri.removeprefix("file://")))


def checks_of(state: StateDir) -> dict[str, dict[str, Check]]:
    return {s.label: {c.metric: c for c in s.checks} for s in collect(state)}


def test_every_resource_succeeds_and_the_report_is_written(
    finished: tuple[StateDir, subprocess.CompletedProcess[str]],
) -> None:
    state, run = finished
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    phases = {f"{r.kind}/{r.name}": r.phase for r in state.records()}
    assert phases == {
        "DataSlice/seed-data": "Succeeded",
        "EvolJob/evol": "Succeeded",
        "AlignRound/arena-base": "Succeeded",
        "AlignRound/align": "Succeeded",
        "AlignRound/arena-final": "Succeeded",
        "RewardModel/irm": "Succeeded",
        "RewardModel/prm": "Succeeded",
        "TrainStage/sft": "Succeeded",
        "TrainStage/dpo": "Succeeded",
        "TrainStage/rleif": "Succeeded",
    }
    page = state.report_dir / "report.html"
    assert page.exists() and "TrainStage/rleif" in page.read_text()
    plots = {p.name for p in (state.report_dir / "plots").glob("*.png")}
    assert {
        "dataslice-seed-data-0.png",
        "evoljob-evol-0.png",
        "alignround-align-0.png",
        "trainstage-sft-0.png",
    } <= plots
    assert "report:" in run.stdout and "Succeeded" in run.stdout


def test_every_stage_reads_the_previous_stages_output(
    finished: tuple[StateDir, subprocess.CompletedProcess[str]],
) -> None:
    state, _ = finished
    assert sorted(p.name for p in (EXAMPLE / "data").iterdir()) == ["benchmark.jsonl", "seed.jsonl"]
    records = {(r.kind, r.name): r.status or {} for r in state.records()}
    chained = 0
    for resource in load_pipeline([EXAMPLE]).resources:
        inputs = records[resource.key]["inputs"]
        for path, ref in iter_references(resource.spec):
            if ref.from_ is None:
                # Files: the seed and benchmark sets, the tiny student to start from, the teacher program.
                assert ref.uri is not None
                assert ref.uri.rsplit("/", 2)[-2:] in (
                    ["data", "seed.jsonl"],
                    ["data", "benchmark.jsonl"],
                    ["models", "tiny-student"],
                    ["quickstart", "teacher"],
                ), f"{resource.key} {path}: {ref.uri}"
                continue
            upstream = records[(ref.from_.kind, ref.from_.name)]
            produced = upstream["outputs"][output_name(ref.from_)]
            assert inputs[path] in (produced.get("digest"), produced["uri"]), f"{resource.key} {path}"
            chained += 1
    # Every `from:` of the example was checked (counted in the file, not by the references' parser).
    assert chained == (EXAMPLE / "pipeline.yaml").read_text().count("from: {kind:")


def test_each_stage_moves_its_own_metric_the_right_way(
    finished: tuple[StateDir, subprocess.CompletedProcess[str]],
) -> None:
    state, _ = finished
    checks = checks_of(state)
    wanted = {
        "EvolJob/evol": ["judged difficulty: seeds → last round"],
        "TrainStage/sft": ["training loss", "eval.taskAccuracy"],
        "TrainStage/dpo": [
            "training loss",
            "eval.preferenceAccuracy",
            "held-out implicit reward margin",
            "eval.taskAccuracy",
        ],
        "TrainStage/rleif": ["reward.mean", "eval.reward"],
        "RewardModel/irm": ["training loss", "eval.accuracy", "eval.loss"],
        "RewardModel/prm": ["training loss", "eval.accuracy", "eval.loss"],
    }
    for label, metrics in wanted.items():
        for metric in metrics:
            check = checks[label][metric]
            assert check.ok, f"{label}: {check.text()}"
    # The held-out sums: right more often after SFT than before, and again after DPO and RLEIF than
    # after SFT (RLEIF on its own moves them by a sum or none on this tiny student; the report shows it).
    sft = checks["TrainStage/sft"]["eval.taskAccuracy"]
    rleif = checks["TrainStage/rleif"]["eval.taskAccuracy"]
    assert sft.before < sft.after < rleif.after
    assert checks["TrainStage/dpo"]["eval.taskAccuracy"].before == sft.after  # the same sums, in a chain

    sections = {s.label: s for s in collect(state)}
    evol = sections["EvolJob/evol"].metrics
    # The teacher keeps a share of its evolutions; each of the four rules eliminates some of the rest.
    assert 0 < evol["kept"] < evol["attempts"]
    for rule in ("noInformationGain", "refusal", "stopwordsOnly", "templateLeak"):
        assert evol[f"eliminated.{rule}"] > 0, rule
    assert evol["rows.rankings"] > 0
    align = sections["AlignRound/align"].metrics
    assert align["rows.sft"] > 0 and align["rows.preferences"] > 0 and align["rows.stepLabels"] > 0
    # The served student samples at a temperature: its candidates differ, so self-teaching makes pairs,
    # and the sampled solutions hold right steps as well as wrong ones for the PRM.
    assert align["rows.selfTeaching"] > 0
    labels = {
        label for row in read_output(state, "AlignRound", "align", "step-labels") for label in row["labels"]
    }
    assert labels == {0, 1}
    # An evolution that asks a benchmark sum is kept out of SFT: exactly the rows the files say.
    benchmark = {row["messages"][0]["content"] for row in read_rows(EXAMPLE / "data" / "benchmark.jsonl")}
    evolved = read_output(state, "EvolJob", "evol", "dataset")
    asking = sum(row["messages"][0]["content"] in benchmark for row in evolved)
    assert sections["TrainStage/sft"].metrics["rows.contaminated"] == asking
    assert align["verdicts.unparsed"] == 0  # every sum was checked by the verifier
    # The verifier reads the answers, not their order: measured reliable (no position flips).
    record = next(r for r in state.records() if (r.kind, r.name) == ("AlignRound", "align"))
    (reliable,) = [c for c in (record.status or {})["conditions"] if c["type"] == "JudgeReliable"]
    assert reliable["status"] == "True", reliable
    assert sections["AlignRound/align"].tables[0].title.startswith("arena Elo")


def test_the_students_elo_against_the_teacher_rises_between_rounds(
    finished: tuple[StateDir, subprocess.CompletedProcess[str]],
) -> None:
    state, _ = finished
    sections = {s.label: s for s in collect(state)}
    rounds = ["AlignRound/arena-base", "AlignRound/align", "AlignRound/arena-final"]
    rated = [sections[label].elo for label in rounds]
    # The three rounds rate the untrained, the SFT and the final student on the same sums against the
    # same reference participant, fixed at the same rating.
    assert all(r is not None for r in rated)
    assert {r[0] for r in rated if r is not None} == {"teacher"}
    base, sft, final = (r[1] for r in rated if r is not None)
    assert base < sft < final
    checks = checks_of(state)
    rose = checks["AlignRound/align"]["student Elo vs teacher (since AlignRound/arena-base)"]
    assert (rose.before, rose.after) == (base, sft) and rose.ok
    # The final round is checked against the SFT round, and the report charts all three.
    assert checks["AlignRound/arena-final"]["student Elo vs teacher (since AlignRound/align)"].after == final
    (chart,) = [
        c
        for c in sections["AlignRound/arena-final"].charts
        if isinstance(c, BarChart) and "across" in c.title
    ]
    assert chart.categories == rounds


def test_the_lineage_of_a_row_runs_from_its_source_line_to_the_stages_trained_on_it(
    finished: tuple[StateDir, subprocess.CompletedProcess[str]],
) -> None:
    state, _ = finished
    index = LineageIndex.scan([state.root])
    rows = [
        n
        for n in index.nodes.values()
        if any(p.resource == "EvolJob/evol" and p.output == "dataset" for p in n.places)
    ]
    assert len(rows) >= 12
    printed = posttrain("lineage", rows[0].id, "--root", str(state.root), "--json", timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == index.chain(rows[0].id)
    battled = 0
    for row in rows:
        (chain,) = index.chain(row.id)
        # Back: the EvolJob's row (the seed with its answer, or an evolution's answer) to the source line.
        path = [chain["node"], *ancestors(chain["madeFrom"])]
        assert path[0]["step"] in ("seed", "answer") and path[-1]["step"] == "select"
        assert all(node["step"] == "evolve" for node in path[1:-1])
        assert {p["resource"] for p in path[-1]["places"]} == {"DataSlice/seed-data"}
        source = path[-1]["source"]
        assert source["uri"].endswith("quickstart/data/seed.jsonl") and source["line"] >= 1
        # Forward: trained on by SFT and RLEIF, and battled where the AlignRound took it.
        used = {(c["node"]["step"], c["node"]["places"][0]["resource"]) for c in chain["usedBy"]}
        assert {("train", "TrainStage/sft"), ("train", "TrainStage/rleif")} <= used
        battles = [c["node"] for c in chain["usedBy"] if c["node"]["step"] == "battle"]
        assert all(b["places"][0]["resource"] == "AlignRound/align" for b in battles)
        assert all(b["details"]["stage"] in ("co-teaching", "self-teaching", "arena") for b in battles)
        battled += bool(battles)
    assert battled > 0  # the AlignRound reads the first `maxInstructions` rows
    # An eliminated evolution keeps its rule and leads nowhere.
    eliminated = [
        n for n in index.nodes.values() if n.step == "evolve" and n.details["verdict"] == "eliminated"
    ]
    assert all(n.details["rule"] and not index.descendants(n.id) for n in eliminated)
    # The seed file fed the datasets down the chain and every TrainStage: SFT trained on its rows,
    # DPO on its rows or from SFT's model, RLEIF on its rows.
    consumers = posttrain(
        "lineage", "--source", "data/seed.jsonl", "--root", str(state.root), "--json", timeout=120
    )
    found = json.loads(consumers.stdout)
    models = {m["resource"]: m for m in found["models"]}
    assert {"TrainStage/sft", "TrainStage/dpo", "TrainStage/rleif"} <= set(models)
    assert models["TrainStage/sft"]["rows"] > 0 and models["TrainStage/rleif"]["rows"] > 0
    assert models["TrainStage/dpo"]["rows"] > 0 or models["TrainStage/dpo"]["via"] == "TrainStage/sft"
    datasets = {(d["resource"], d["output"]) for d in found["datasets"]}
    assert {
        ("DataSlice/seed-data", "dataset"),
        ("EvolJob/evol", "dataset"),
        ("AlignRound/align", "battles"),
    } <= datasets


def ancestors(parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes up the first parent at each level."""
    return [parents[0]["node"], *ancestors(parents[0]["parents"])] if parents else []


def test_a_second_run_redoes_nothing(finished: tuple[StateDir, subprocess.CompletedProcess[str]]) -> None:
    state, _ = finished
    before = {(r.kind, r.name): (r.starts, (r.status or {}).get("runId")) for r in state.records()}
    example = next(Path(state.root).parent.glob("quickstart"))

    again = posttrain("run", str(example), "--state-dir", str(state.root), "--no-report", timeout=300)

    assert again.returncode == 0, again.stderr
    assert {(r.kind, r.name): (r.starts, (r.status or {}).get("runId")) for r in state.records()} == before
    status = posttrain("status", "--state-dir", str(state.root), timeout=60)
    assert status.stdout.count("Succeeded") == 10

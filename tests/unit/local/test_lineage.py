"""Row lineage through real workloads: DataSlice -> EvolJob -> AlignRound -> training manifests.

The data, evol and align workloads run for real against scripted OpenAI-format servers, laid out as
the local runner lays out its state folder (artifacts by plural and run id, workload configs naming
each run's resource); the learning workloads' manifests are written by the function the train
template calls (training itself is not needed to know what it read). Then `posttrain lineage`
follows a preference pair back to its source line and forward to the stage trained on it, and
`--source` lists every dataset and model the seed file fed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.lineage import lineage_of
from posttrain.api.workload import WorkloadConfig
from posttrain.cli import main
from posttrain.local.lineage import LineageIndex
from posttrain_trainer import align, data, evol
from posttrain_trainer.common.lineage import write_manifest
from posttrain_trainer.common.storage import Workspace

from tests.support.evol_teacher import http_responder
from tests.support.fake_openai import FakeOpenAI

SEEDS = [
    {"id": "add", "messages": [{"role": "user", "content": "What is the sum of 2 and 3?"}]},
    {"instruction": "Write a python function that reverses a string."},
    {"instruction": "Write a short poem about the sea and the sky."},
    {"instruction": "Explain how a bicycle stays upright when moving."},
]


def responder(request: dict[str, Any]) -> str:
    """The evol teacher (models `m`, `j`) and the align participants (`align-*`)."""
    model = request["model"]
    text = request["messages"][-1]["content"]
    if not model.startswith("align-"):
        return http_responder(request)
    if "[Answer of Assistant A]" in text:
        first = text.split("[Answer of Assistant A]\n", 1)[1].split("\n\n[Answer of Assistant B]")[0]
        return "Explanation: compared.\nScores: " + ("A=9, B=3" if "Teacher" in first else "A=3, B=9")
    return "Teacher answer, worked out in full." if model == "align-teacher" else "a guess"


def write_config(state: Path, kind: str, name: str, document: dict[str, Any]) -> WorkloadConfig:
    """The workload config, saved where the local runner keeps it (so runs are named by resource)."""
    folder = state / "workloads" / kind / name / f"{document['runId']}-1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(document))
    return WorkloadConfig.model_validate(document)


def document(
    state: Path, workload: str, kind: str, plural: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    run = f"{name}-run"
    return {
        "workload": workload,
        "kind": kind,
        "name": name,
        "runId": run,
        "outputUri": f"file://{state / 'artifacts' / plural / run}",
        "spec": spec,
    }


def participant(name: str, base_url: str) -> dict[str, Any]:
    return {
        "name": name,
        "endpoint": {"baseUrl": base_url, "model": f"align-{name}"},
        "sampling": {"temperature": 0},
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(state folder, seed file) after the pipeline ran."""
    root = tmp_path_factory.mktemp("lineage")
    state = root / ".posttrain"
    seeds = root / "seed.jsonl"
    seeds.write_text("".join(json.dumps(row) + "\n" for row in SEEDS))
    artifacts = state / "artifacts"

    data_doc = document(
        state, "data", "DataSlice", "dataslices", "seed-data", {"sources": [{"uri": f"file://{seeds}"}]}
    )
    data.run(write_config(state, "DataSlice", "seed-data", data_doc))
    sliced = artifacts / "dataslices" / "seed-data-run" / "dataset.jsonl"
    with FakeOpenAI(responder=responder) as server:
        evol_spec = {
            "dataset": {"uri": f"file://{sliced}"},
            "teachers": [
                {"name": "teacher", "endpoint": {"baseUrl": server.base_url, "model": "m"}},
                {"name": "judge", "endpoint": {"baseUrl": server.base_url, "model": "j"}},
            ],
            "evol": {
                "rounds": 2,
                "answer": {"passes": 1},
                "evolver": "teacher",
                "judge": "judge",
                "maxRetries": 0,
            },
        }
        evol_doc = document(state, "evol", "EvolJob", "evoljobs", "evol", evol_spec)
        evol_doc["endpoints"] = {
            "teacher": {"baseUrl": server.base_url, "model": "m"},
            "judge": {"baseUrl": server.base_url, "model": "j"},
        }
        evol.run(write_config(state, "EvolJob", "evol", evol_doc))
        evolved = artifacts / "evoljobs" / "evol-run" / "dataset.jsonl"
        align_spec = {
            "datasets": [{"uri": f"file://{evolved}"}],
            "student": participant("student", server.base_url),
            "teachers": [participant("teacher", server.base_url)],
            "judges": [participant("judge", server.base_url)],
            "align": {
                "coTeaching": {"suggestions": False, "sftMargin": 1, "preferenceMargin": 1},
                "arena": {"enabled": False},
                "maxRetries": 0,
            },
        }
        align_doc = document(state, "align", "AlignRound", "alignrounds", "align", align_spec)
        align_doc["endpoints"] = {
            name: {"baseUrl": server.base_url, "model": f"align-{name}"}
            for name in ("student", "teacher", "judge")
        }
        align.run(write_config(state, "AlignRound", "align", align_doc))
    preferences = artifacts / "alignrounds" / "align-run" / "preferences.jsonl"
    dpo_spec = {
        "method": "dpo",
        "model": {"uri": "file:///models/base"},
        "preferences": {"uri": f"file://{preferences}"},
    }
    dpo_model = train_manifest(state, "dpo", dpo_spec)
    rleif_spec = {
        "method": "rleif",
        "model": {"uri": dpo_model},
        "dataset": {"uri": f"file://{root / 'toy.jsonl'}"},
        "rewardModels": [{"role": "prm", "model": {"uri": "file:///models/prm"}}],
    }
    (root / "toy.jsonl").write_text(json.dumps({"instruction": "What is 1 plus 1?"}) + "\n")
    train_manifest(state, "rleif", rleif_spec)
    return state, seeds


def train_manifest(state: Path, name: str, spec: dict[str, Any]) -> str:
    """A TrainStage run folder with its manifest and a result naming its model; the model's URI."""
    doc = document(state, "train", "TrainStage", "trainstages", name, spec)
    config = write_config(state, "TrainStage", name, doc)
    workspace = Workspace(config.output_uri)
    write_manifest(config, workspace)
    model = f"{config.output_uri}/model"
    workspace.path("result.json").write_text(
        json.dumps({"outputs": {"model": {"uri": model}}, "metrics": {}})
    )
    workspace.publish()
    return model


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_output_row_carries_a_stable_id_and_its_parents(pipeline: tuple[Path, Path]) -> None:
    state, _ = pipeline
    artifacts = state / "artifacts"
    files = [
        artifacts / "dataslices" / "seed-data-run" / "dataset.jsonl",
        artifacts / "evoljobs" / "evol-run" / "dataset.jsonl",
        artifacts / "evoljobs" / "evol-run" / "evolved.jsonl",
        artifacts / "alignrounds" / "align-run" / "preferences.jsonl",
        artifacts / "alignrounds" / "align-run" / "sft.jsonl",
        artifacts / "alignrounds" / "align-run" / "battles.jsonl",
        artifacts / "trainstages" / "dpo-run" / "lineage.jsonl",
    ]
    for file in files:
        found = [lineage_of(row) for row in rows(file)]
        assert found and all(f is not None and len(f["id"]) == 16 and "step" in f for f in found), file
        assert all(f["parents"] or f.get("source") or f.get("model") for f in found if f is not None), file
    ids = [lineage_of(row) for row in rows(files[1])]
    assert len({i["id"] for i in ids if i}) == len(ids)  # distinct rows, distinct ids


def test_the_chain_of_a_preference_pair_reaches_its_source_line_and_the_stage_trained_on_it(
    pipeline: tuple[Path, Path],
) -> None:
    state, seeds = pipeline
    index = LineageIndex.scan([state])
    pairs = [n for n in index.nodes.values() if n.step == "pair"]
    assert pairs
    # A pair made from an evolved instruction: the longest chain.
    pair = max(pairs, key=lambda n: len(list(_path_to_source(index.ancestors(n.id)))))
    (found,) = index.chain(pair.id)
    steps = [node["step"] for node in _path_to_source({"node": found["node"], "parents": found["madeFrom"]})]
    assert steps == ["pair", "battle", "answer", "evolve", "select"] or steps == [
        "pair",
        "battle",
        "answer",
        "evolve",
        "evolve",
        "select",
    ]
    chain = list(_path_to_source({"node": found["node"], "parents": found["madeFrom"]}))
    battle, answer, evolution, selected = chain[1], chain[2], chain[3], chain[-1]
    assert (
        battle["places"][0]["resource"] == "AlignRound/align" and battle["places"][0]["output"] == "battles"
    )
    verdicts = battle["details"]["verdicts"]
    assert [(v["judge"], v["order"]) for v in verdicts] == [("judge", "forward"), ("judge", "backward")]
    assert battle["details"]["resolution"]["status"] == "consistent"
    assert answer["places"][0] == {
        "resource": "EvolJob/evol",
        "output": "dataset",
        "uri": answer["places"][0]["uri"],
        "rowId": answer["places"][0]["rowId"],
    }
    assert answer["details"]["answerer"] == "teacher" and "rewrites" in answer["details"]
    assert evolution["details"]["verdict"] == "kept" and evolution["details"]["teacher"] == "teacher"
    assert evolution["details"]["judge"] == "judge" and evolution["details"]["round"] >= 1
    assert evolution["details"]["operation"]
    assert {p["resource"] for p in selected["places"]} == {"DataSlice/seed-data"}
    assert {p["output"] for p in selected["places"]} == {"dataset", "slice-1"}
    source = selected["source"]
    assert Path(source["uri"].removeprefix("file://")) == seeds and 1 <= source["line"] <= len(SEEDS)
    assert rows(seeds)[source["line"] - 1].get("id", source["rowId"]) == source["rowId"]
    # Forward: the DPO stage's manifest names the pair.
    used = [child["node"] for child in found["usedBy"]]
    assert [(n["step"], n["places"][0]["resource"]) for n in used] == [("train", "TrainStage/dpo")]


def _path_to_source(tree: dict[str, Any]) -> Any:
    """The nodes from `tree` up its first parent at each level."""
    yield tree["node"]
    if tree["parents"]:
        yield from _path_to_source(tree["parents"][0])


def test_an_eliminated_evolution_has_its_verdict_and_no_descendants(pipeline: tuple[Path, Path]) -> None:
    state, _ = pipeline
    index = LineageIndex.scan([state])
    eliminated = [
        n for n in index.nodes.values() if n.step == "evolve" and n.details["verdict"] == "eliminated"
    ]
    for node in eliminated:
        assert node.details["rule"] and not index.descendants(node.id)
        assert {p.output for p in node.places} == {"evolved", "eliminated"}


def test_a_source_lists_every_dataset_and_model_it_fed(pipeline: tuple[Path, Path]) -> None:
    state, seeds = pipeline
    found = LineageIndex.scan([state]).consumers(f"file://{seeds}")
    assert found["rows"] == len(SEEDS)
    outputs = {(d["resource"], d["output"]) for d in found["datasets"]}
    assert {
        ("DataSlice/seed-data", "dataset"),
        ("EvolJob/evol", "dataset"),
        ("AlignRound/align", "preferences"),
    } <= outputs
    assert ("AlignRound/align", "battles") in outputs and ("EvolJob/evol", "evolved") in outputs
    models = {m["resource"]: m for m in found["models"]}
    assert set(models) == {"TrainStage/dpo", "TrainStage/rleif"}
    assert models["TrainStage/dpo"]["rows"] > 0 and models["TrainStage/dpo"]["via"] is None
    # RLEIF never saw a seed row, but it started from the DPO model: it must be retrained too.
    assert (models["TrainStage/rleif"]["rows"], models["TrainStage/rleif"]["via"]) == (0, "TrainStage/dpo")
    other = LineageIndex.scan([state]).consumers(str(state.parent / "toy.jsonl"))
    assert other["rows"] == 1 and [m["resource"] for m in other["models"]] == ["TrainStage/rleif"]


def test_the_cli_prints_the_chain_and_the_consumers(
    pipeline: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, seeds = pipeline
    index = LineageIndex.scan([state])
    pair = next(n for n in index.nodes.values() if n.step == "pair")
    assert main(["lineage", pair.id, "--root", str(state)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{pair.id} pair — AlignRound/align: preferences")
    assert "<- source file://" in text and "-> " in text and "TrainStage/dpo" in text
    assert main(["lineage", pair.places[0].row_id or "", "--root", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["node"]["id"] == pair.id
    assert main(["lineage", "--source", f"file://{seeds}", "--root", f"file://{state}"]) == 0
    text = capsys.readouterr().out
    assert "EvolJob/evol  dataset" in text and "TrainStage/rleif  from the model of TrainStage/dpo" in text
    assert main(["lineage", "nothing-like-this", "--root", str(state)]) == 1
    assert main(["lineage", "--root", str(state)]) == 2

"""Each kind's outputs known from its spec; `posttrain validate` rejects a reference to an unknown one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from posttrain.api.outputs import outputs_of
from posttrain.api.resources import KINDS
from posttrain.cli import main

PARTICIPANT: dict[str, Any] = {"endpoint": {"baseUrl": "http://teacher/v1", "model": "m"}}


def manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "posttrain.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def data_slice(name: str, slices: int) -> dict[str, Any]:
    spec = {"sources": [{"uri": "file:///data/chat.jsonl"}], "data": {"slicing": {"count": slices}}}
    return manifest("DataSlice", name, spec)


def align_round(name: str, datasets: int) -> dict[str, Any]:
    return manifest(
        "AlignRound",
        name,
        {
            "datasets": [
                {"from": {"kind": "DataSlice", "name": "mix", "output": f"slice-{i + 1}"}}
                for i in range(datasets)
            ],
            "student": {"name": "student", **PARTICIPANT},
            "teachers": [{"name": "teacher", **PARTICIPANT}],
            "judges": [{"name": "judge", **PARTICIPANT}],
        },
    )


def dpo_stage(name: str, output: str) -> dict[str, Any]:
    preferences = {"from": {"kind": "AlignRound", "name": "align", "output": output}}
    return manifest(
        "TrainStage", name, {"method": "dpo", "model": {"uri": "file:///m"}, "preferences": preferences}
    )


def test_outputs_follow_the_producing_spec() -> None:
    spec = KINDS["DataSlice"].spec_model.model_validate(data_slice("mix", 3)["spec"])
    assert outputs_of("DataSlice", spec) == ["dataset", "slice-1", "slice-2", "slice-3", "rejects", "report"]
    align = KINDS["AlignRound"].spec_model.model_validate(align_round("align", 2)["spec"])
    assert outputs_of("AlignRound", align) == [
        "sft",
        "preferences",
        "preferences-1",
        "preferences-2",
        "battles",
        "elo",
        "skill-gaps",
    ]
    single = KINDS["AlignRound"].spec_model.model_validate(align_round("align", 1)["spec"])
    assert "preferences-1" not in outputs_of("AlignRound", single)


def test_a_data_slice_with_evaluation_sets_has_them_as_outputs() -> None:
    document = data_slice("mix", 1)
    document["spec"]["data"]["evalSets"] = {"diverse": 8, "hard": 0}
    spec = KINDS["DataSlice"].spec_model.model_validate(document["spec"])
    assert outputs_of("DataSlice", spec) == ["dataset", "slice-1", "rejects", "eval-diverse", "report"]


def validate(tmp_path: Path, documents: list[dict[str, Any]]) -> int:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump_all(documents))
    return main(["validate", str(tmp_path / "pipeline.yaml")])


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("preference", "AlignRound/align has no output 'preference'"),
        ("preferences-4", "AlignRound/align has no output 'preferences-4'"),
    ],
)
def test_validate_rejects_an_unknown_output_listing_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, expected: str
) -> None:
    documents = [data_slice("mix", 3), align_round("align", 3), dpo_stage("dpo-1", output)]
    assert validate(tmp_path, documents) == 1
    err = capsys.readouterr().err
    assert f"TrainStage/dpo-1: spec.preferences: {expected}" in err
    assert "its outputs are sft, preferences, preferences-1, preferences-2, preferences-3, battles" in err


def test_validate_rejects_a_slice_beyond_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = [data_slice("mix", 3), align_round("align", 3)]
    documents[1]["spec"]["datasets"][2]["from"]["output"] = "slice-9"
    assert validate(tmp_path, documents) == 1
    err = capsys.readouterr().err
    assert "AlignRound/align: spec.datasets[2]: DataSlice/mix has no output 'slice-9'" in err
    assert "dataset, slice-1, slice-2, slice-3, rejects, report" in err


def test_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for folder in ("progressive", "quickstart"):
        assert main(["validate", str(root / folder)]) == 0, capsys.readouterr().err

"""`posttrain curriculum render`: the plain-manifest form of a curriculum, and its drift check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from posttrain import cli
from posttrain.api.loading import ManifestError, parse_manifests, parse_objects
from posttrain.files import load_resources, read_documents, render_curricula

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "progressive" / "curriculum.yaml"
RENDERED = ROOT / "examples" / "progressive-rendered" / "chain.yaml"
COMMAND = "posttrain curriculum render examples/progressive/curriculum.yaml"


def test_the_rendered_progressive_example_is_current() -> None:
    """Regenerate with `posttrain curriculum render examples/progressive/curriculum.yaml -o <RENDERED>`."""
    assert RENDERED.read_text() == render_curricula([EXAMPLE], COMMAND)


def test_the_rendered_chain_is_what_loading_the_curriculum_gives(tmp_path: Path) -> None:
    from_curriculum = {r.key: r.wire() for r in load_resources([EXAMPLE])}
    from_rendered = {r.key: r.wire() for r in load_resources([RENDERED])}
    assert from_curriculum == from_rendered
    assert len(from_rendered) == 23
    documents = [d for d in yaml.safe_load_all(RENDERED.read_text()) if d]
    assert all("ownerReferences" not in d["metadata"] for d in documents)
    assert {d["metadata"]["labels"]["posttrain.dev/curriculum"] for d in documents} == {"wizard"}


def test_the_cli_writes_the_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chain.yaml"
    assert cli.main(["curriculum", "render", str(EXAMPLE), "-o", str(out)]) == 0
    assert out.read_text().split("\n", 1)[1] == RENDERED.read_text().split("\n", 1)[1]
    assert cli.main(["curriculum", "render", str(ROOT / "examples" / "quickstart" / "pipeline.yaml")]) == 1
    assert "no Curriculum" in capsys.readouterr().err


def test_parse_objects_refuses_a_curriculum_that_parse_manifests_returns() -> None:
    documents = read_documents([EXAMPLE])
    resources, curricula = parse_manifests(documents)
    assert not resources and [c.metadata.name for c in curricula] == ["wizard"]
    with pytest.raises(ManifestError, match="expand a Curriculum"):
        parse_objects(documents)


def test_a_chain_child_that_clashes_with_a_resource_is_reported(tmp_path: Path) -> None:
    clash = tmp_path / "clash.yaml"
    first = next(d for d in yaml.safe_load_all(RENDERED.read_text()) if d)
    clash.write_text(yaml.safe_dump(first))
    with pytest.raises(ManifestError, match="DataSlice/wizard-data is already defined"):
        load_resources([EXAMPLE, clash])


def test_an_invalid_override_names_the_child_and_field(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["overrides"].append({"stage": 2, "dpo": {"train": {"epochs": -1}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    with pytest.raises(
        ManifestError, match=r"Curriculum/wizard: TrainStage/wizard-s2-dpo: spec\.train\.epochs"
    ):
        load_resources([bad])

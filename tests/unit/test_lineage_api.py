"""The lineage schema: stable content-hash ids, parents or a source, and where a row keeps them."""

from __future__ import annotations

from typing import Any

from posttrain.api.lineage import Lineage, lineage_of, node_id, origin, stamp


def chat(text: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "r1", "messages": [{"role": "user", "content": text}], "meta": meta or {}}


def test_a_row_from_a_file_without_lineage_is_named_by_its_source_line() -> None:
    made_from = origin(chat("Hi"), "file:///data/seed.jsonl", 3)
    assert made_from == {
        "parents": [],
        "source": {"uri": "file:///data/seed.jsonl", "line": 3, "rowId": "r1"},
    }


def test_a_row_with_lineage_is_named_by_its_id() -> None:
    parent = stamp(chat("Hi"), "select", origin(chat("Hi"), "file:///seed.jsonl", 1))
    assert origin(parent, "file:///elsewhere.jsonl", 7) == {"parents": [parent["meta"]["lineage"]["id"]]}


def test_the_id_is_stable_and_changes_with_content_step_and_parents() -> None:
    made_from = {"parents": ["abc"]}
    first = stamp(chat("Hi"), "answer", made_from)["meta"]["lineage"]["id"]
    assert first == stamp(chat("Hi"), "answer", made_from)["meta"]["lineage"]["id"]
    assert first != stamp(chat("Hello"), "answer", made_from)["meta"]["lineage"]["id"]
    assert first != stamp(chat("Hi"), "seed", made_from)["meta"]["lineage"]["id"]
    assert first != stamp(chat("Hi"), "answer", {"parents": ["abd"]})["meta"]["lineage"]["id"]
    # The row's meta (the lineage itself, categories, scores) is not content.
    assert first == stamp(chat("Hi", {"category": "math"}), "answer", made_from)["meta"]["lineage"]["id"]
    assert len(first) == 16 and first == node_id(
        "answer", ["abc"], None, {k: v for k, v in chat("Hi").items() if k != "meta"}
    )


def test_details_are_kept_beside_the_id_and_the_schema_reads_them() -> None:
    row = stamp(chat("Hi"), "evolve", {"parents": ["p"]}, operation="deepen", round=2)
    found = lineage_of(row)
    assert found is not None and found["operation"] == "deepen" and found["round"] == 2
    parsed = Lineage.model_validate(found)
    assert (parsed.step, parsed.parents, parsed.source) == ("evolve", ["p"], None)


def test_a_record_keeps_its_lineage_at_the_top() -> None:
    assert lineage_of({"id": "b", "lineage": {"id": "x1", "step": "battle", "parents": []}}) == {
        "id": "x1",
        "step": "battle",
        "parents": [],
    }
    assert lineage_of({"id": "b", "meta": {"lineage": {"seed": "s"}}}) is None  # no id: not lineage

"""Row lineage: every output row names the rows it was made from and the step that made it.

A row's lineage is an object (`meta.lineage` of a chat, preference, ranking or step row; top-level
`lineage` of a battle or evolution record; a line `{"lineage": ...}` of a training manifest):

    {"id": "<16 hex>", "step": "evolve", "parents": ["<id>", ...],
     "source": {"uri": ..., "line": 3, "rowId": "..."},      # only where a parent has no lineage
     ...the step's details: operation, round, teacher, verdict, judge, ...}

The id is a content hash of (step, parents, source, the row's id and content), so it is stable across
re-runs and two different rows never share one; a row read from a file without lineage (a source, a
hand-made set) is named by `source` instead of a parent. The chain of a row is followed parent by
parent, from any output back to its source rows (`posttrain lineage ROW_ID`), and from a source forward
to every dataset and model made from it (`posttrain lineage --source URI`).

Steps: `select` (DataSlice: read, cleaned, sampled, sliced), `evolve` (EvolJob: one evolution with
its elimination verdict), `answer` (Evol-Answer's rewrites of a kept evolution or a seed), `seed` (a
seed kept with its own answer), `rank` (IRM rankings), `battle` (AlignRound: two answers judged in
both orders), `pair`, `sft`, `revision`, `self-teaching`, `step-labels` (what an AlignRound made from
battles), `train` (a TrainStage's or RewardModel's manifest: one line per row or model it read).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from posttrain.api.base import ApiModel

Step = Literal[
    "select",
    "evolve",
    "answer",
    "seed",
    "rank",
    "battle",
    "pair",
    "sft",
    "revision",
    "self-teaching",
    "step-labels",
    "train",
]
MANIFEST = "lineage.jsonl"
"""The training manifest in a TrainStage's or RewardModel's output folder: the rows (by lineage id)
and models it read, not a copy of them."""
LINEAGE_KEY = "lineage"
"""Where a row keeps its lineage: `meta.lineage`, or `lineage` at the top of a record."""


class Source(ApiModel):
    """A row read from a file that carries no lineage of its own."""

    uri: str
    """The dataset's URI (as the workload read it)."""
    line: int | None = None
    """Line (JSONL), element (JSON array) or row number in the dataset, from 1, where known."""
    row_id: str | None = None
    """The row's own `id`, where it has one."""


class Lineage(ApiModel):
    """The lineage object of one row (its step's details are kept as extra fields)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", use_attribute_docstrings=True
    )

    id: str = Field(min_length=1, max_length=64)
    """Content hash of (step, parents, source, the row's id and content)."""
    step: Step
    """What made the row."""
    parents: list[str] = Field(default_factory=list)
    """Lineage ids of the rows it was made from."""
    source: Source | None = None
    """Where it was read, when it was read from a file without lineage."""
    model: str | None = None
    """For a `train` line naming a model read (base model, reward model): the model's URI."""


def node_id(step: str, parents: Sequence[str], source: Mapping[str, Any] | None, content: Any) -> str:
    """The lineage id of a row: a hash of what made it and what it is (16 hex digits)."""
    document = json.dumps(
        [step, list(parents), source, content], sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.sha256(document.encode()).hexdigest()[:16]


def lineage_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The lineage object a row or record carries (`meta.lineage` or `lineage`), if it has an id."""
    meta = row.get("meta")
    found = meta.get(LINEAGE_KEY) if isinstance(meta, Mapping) else None
    if not isinstance(found, Mapping):
        found = row.get(LINEAGE_KEY)
    if isinstance(found, Mapping) and isinstance(found.get("id"), str):
        return dict(found)
    return None


def origin(row: Mapping[str, Any], uri: str, line: int | None = None) -> dict[str, Any]:
    """How a row made from `row` names it: `{"parents": [its id]}`, or `{"parents": [], "source": ...}`.

    Args:
        row: the row read (its lineage, if any, is used).
        uri: the dataset it was read from.
        line: its line or row number there, from 1, if known.
    """
    found = lineage_of(row)
    if found is not None:
        return {"parents": [found["id"]]}
    # The wire form of `Source`, built directly: this runs once per row of a dataset.
    source: dict[str, Any] = {"uri": uri}
    if line is not None:
        source["line"] = line
    row_id = row.get("id")
    if isinstance(row_id, str):
        source["rowId"] = row_id
    return {"parents": [], "source": source}


def stamp(row: dict[str, Any], step: Step, made_from: Mapping[str, Any], **details: Any) -> dict[str, Any]:
    """Set `meta.lineage` of a row (id computed from its content) and return the row.

    Args:
        row: a row with `meta` (chat, preference, ranking or step row).
        step: what made it.
        made_from: `{"parents": [...]}` and, where a parent has no lineage, `"source"` (see `origin`).
        **details: the step's details, kept beside the id.
    """
    content = {key: value for key, value in row.items() if key != "meta"}
    parents = list(made_from.get("parents", []))
    source = made_from.get("source")
    lineage = {**details, "step": step, "parents": parents}
    if source is not None:
        lineage["source"] = source
    lineage["id"] = node_id(step, parents, source, content)
    row.setdefault("meta", {})[LINEAGE_KEY] = lineage
    return row

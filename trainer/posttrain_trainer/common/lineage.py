"""The training manifest: which rows (by lineage id) and which models a learning workload read.

A TrainStage or RewardModel writes `lineage.jsonl` (`posttrain.api.lineage.MANIFEST`) beside its
model: one line `{"lineage": {"id", "step": "train", "parents": [row id], "input": "dataset"}}` per
row of every dataset it read — trained on, held out for evaluation or set aside as malformed alike:
each shaped the stage's model or its figures — (a row without lineage is named by its `source`
instead), and one line
`{"lineage": {..., "model": URI, "input": "model"}}` per model it started from or was rewarded by.
Not a copy of the data: `posttrain lineage` follows these ids back to the rows, and from a source
forward to the models trained on it.
"""

from __future__ import annotations

import json
from typing import Any

from posttrain.api.common import DataRef
from posttrain.api.lineage import MANIFEST, node_id, origin
from posttrain.api.references import iter_references
from posttrain.api.workload import WorkloadConfig

from posttrain_trainer.common.storage import Workspace, read_lines, write_jsonl


def manifest(config: WorkloadConfig) -> list[dict[str, Any]]:
    """The manifest lines of a learning workload: every row and model its spec reads.

    Args:
        config: the workload config (references resolved to URIs).

    Returns:
        `{"lineage": ...}` lines, in the spec's field order and the datasets' row order.
    """
    lines: list[dict[str, Any]] = []
    for path, ref in iter_references(config.typed_spec()):
        if ref.uri is None:
            continue
        if not isinstance(ref, DataRef):
            lines.append(_line(config.run_id, path, {"parents": []}, model=ref.uri))
            continue
        for number, item in read_lines(ref.uri, ref.file_format):
            row = item if isinstance(item, dict) else _parsed(item)
            if row is not None:
                lines.append(_line(config.run_id, path, origin(row, ref.uri, number)))
    return lines


def write_manifest(config: WorkloadConfig, workspace: Workspace) -> int:
    """Write `lineage.jsonl` into the output folder; returns its line count."""
    lines = manifest(config)
    write_jsonl(workspace.path(MANIFEST), lines)
    return len(lines)


def _line(run: str, path: str, made_from: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    parents = list(made_from.get("parents", []))
    source = made_from.get("source")
    node: dict[str, Any] = {"step": "train", "parents": parents, "input": path}
    if source is not None:
        node["source"] = source
    if model is not None:
        node["model"] = model
    node["id"] = node_id("train", parents, source, {"run": run, "input": path, "model": model})
    return {"lineage": node}


def _parsed(text: str) -> dict[str, Any] | None:
    try:
        row = json.loads(text)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None

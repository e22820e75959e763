"""`posttrain lineage`: follow a row through the artifact tree, or a source to everything made from it.

Every row a workload writes carries its lineage (`posttrain.api.lineage`): an id, the step that made
it and its parents' ids, or the source file and line it was read from. A learning workload writes a
manifest of the rows and models it read (`lineage.jsonl`). This module reads those from run folders
(any folder with a `result.json`, under the roots given: the local runner's state folder by default,
or artifact roots such as a mounted claim), indexes them, and answers two questions:

- the chain of a row (`chain`): its ancestors back to the source rows, and its descendants down to
  the models trained on it;
- what a source fed (`consumers`): every dataset and model made, directly or through other datasets
  and models, from rows read from a source URI — what must be rebuilt when a source turns out to be
  contaminated or unlicensed.

A run folder is named by its resource (`EvolJob/evol`) where the local runner's workload configs
(`workloads/KIND/NAME/RUN-N/config.json`) say which resource wrote it, else by its kind and run id.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.api.lineage import MANIFEST, lineage_of
from posttrain.api.resources import KINDS
from posttrain.api.uri import ArtifactUri

SKIPPED_FILES = frozenset({"journal.jsonl", "rejects.jsonl", "events.jsonl"})
"""JSONL files of a run folder that hold no rows (request journals, malformed inputs)."""
SKIPPED_FOLDERS = frozenset(
    {"model", "checkpoints", "tensorboard", "report", "workloads", "state", "servers"}
)
"""Folders that hold no run folders."""
PLURALS = {info.plural: kind for kind, info in KINDS.items()}
PREVIEW = 72
"""Characters of a row's text shown beside it."""


@dataclass(frozen=True)
class Place:
    """Where a row is: the resource (or run) that wrote it and the output file."""

    resource: str
    """`Kind/name`, or `Kind run <id>` when the writer is not known."""
    output: str
    """The output's name (`dataset`, `preferences-2`, ...; `lineage` for a training manifest)."""
    uri: str
    """The output file's URI."""
    row_id: str | None
    """The row's own `id`."""


@dataclass
class Node:
    """One row's lineage, wherever the row was found."""

    id: str
    step: str
    parents: list[str]
    source: dict[str, Any] | None
    details: dict[str, Any]
    """The step's details (operation, round, teacher, verdict, judge's verdicts, ...)."""
    places: list[Place] = field(default_factory=list)
    preview: str = ""

    def summary(self) -> dict[str, Any]:
        """The node as plain data (what `--json` prints)."""
        places = [
            {"resource": p.resource, "output": p.output, "uri": p.uri, "rowId": p.row_id} for p in self.places
        ]
        out: dict[str, Any] = {"id": self.id, "step": self.step, "places": places, "details": self.details}
        if self.source is not None:
            out["source"] = self.source
        if self.preview:
            out["preview"] = self.preview
        return out


@dataclass
class RunFolder:
    """A run's output folder."""

    path: Path
    resource: str
    outputs: dict[str, str]
    """Output name -> URI, from its result.json."""


class LineageIndex:
    """Every lineage node found under the roots, with the edges both ways."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.children: dict[str, set[str]] = defaultdict(set)
        self.by_row_id: dict[str, set[str]] = defaultdict(set)
        self.runs: list[RunFolder] = []

    @classmethod
    def scan(cls, roots: Iterable[Path]) -> LineageIndex:
        """Index every run folder under the roots (see the module docstring)."""
        index = cls()
        for root in roots:
            writers = _writers(root)
            for folder in _run_folders(root):
                index._add_run(folder, writers)
        return index

    def _add_run(self, folder: Path, writers: dict[Path, str]) -> None:
        result = _read_json(folder / "result.json")
        outputs = {
            name: str(value.get("uri"))
            for name, value in (result.get("outputs") or {}).items()
            if isinstance(value, dict) and value.get("uri")
        }
        kind = PLURALS.get(folder.parent.name, folder.parent.name)
        run = RunFolder(folder, writers.get(folder.resolve(), f"{kind} run {folder.name}"), outputs)
        self.runs.append(run)
        by_file = {ArtifactUri.parse(uri).path.rsplit("/", 1)[-1]: name for name, uri in outputs.items()}
        for file in sorted(folder.glob("*.jsonl")):
            if file.name in SKIPPED_FILES:
                continue
            output = "lineage" if file.name == MANIFEST else by_file.get(file.name, file.stem)
            for row in _rows(file):
                self._add_row(row, Place(run.resource, output, f"file://{file}", _row_id(row)))

    def _add_row(self, row: dict[str, Any], place: Place) -> None:
        lineage = lineage_of(row)
        if lineage is None:
            return
        identifier = str(lineage.pop("id"))
        node = self.nodes.get(identifier)
        if node is None:
            parents = [str(p) for p in lineage.pop("parents", [])]
            source = lineage.pop("source", None)
            step = str(lineage.pop("step", "?"))
            details = {**lineage, **_battle_details(row)}
            node = Node(identifier, step, parents, source if isinstance(source, dict) else None, details)
            node.preview = _preview(row)
            self.nodes[identifier] = node
            for parent in parents:
                self.children[parent].add(identifier)
        if place not in node.places:
            node.places.append(place)
        if place.row_id is not None:
            self.by_row_id[place.row_id].add(identifier)

    # --- questions ------------------------------------------------------------------------------

    def find(self, key: str) -> list[Node]:
        """Nodes by lineage id, else by the rows' own id, else by a lineage id prefix (4+ characters)."""
        if key in self.nodes:
            return [self.nodes[key]]
        if key in self.by_row_id:
            return [self.nodes[i] for i in sorted(self.by_row_id[key])]
        if len(key) >= 4:
            return [node for identifier, node in sorted(self.nodes.items()) if identifier.startswith(key)]
        return []

    def ancestors(self, identifier: str, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The node and its parents, recursively: `{"node", "parents": [...]}` (unknown ids named)."""
        node = self.nodes.get(identifier)
        if node is None:
            return {"node": {"id": identifier, "step": "?", "missing": True}, "parents": []}
        parents = [p for p in node.parents if p not in seen]
        return {
            "node": node.summary(),
            "parents": [self.ancestors(p, seen | {identifier}) for p in parents],
        }

    def descendants(self, identifier: str, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """What was made from the node, recursively: `[{"node", "children": [...]}]`."""
        return [
            {"node": self.nodes[child].summary(), "children": self.descendants(child, seen | {identifier})}
            for child in sorted(self.children.get(identifier, ()))
            if child not in seen and child in self.nodes
        ]

    def chain(self, key: str) -> list[dict[str, Any]]:
        """Per node found for `key`: `{"node", "madeFrom": ancestors' tree, "usedBy": descendants}`."""
        return [
            {
                "node": node.summary(),
                "madeFrom": self.ancestors(node.id)["parents"],
                "usedBy": self.descendants(node.id),
            }
            for node in self.find(key)
        ]

    def consumers(self, source: str) -> dict[str, Any]:
        """Every dataset and model made from rows read from `source` (directly or further down).

        Returns:
            `{"source", "rows": rows read from it, "datasets": [{"resource", "output", "uri", "rows"}],
            "models": [{"resource", "uri", "rows", "via"}]}`; `rows` counts the affected rows in the
            dataset, or the affected rows a model was trained on (0 for a model that only started from,
            or was rewarded by, an affected model: `via` names that model).
        """
        roots = [node for node in self.nodes.values() if _same_source(node.source, source)]
        affected: set[str] = set()
        stack = [node.id for node in roots]
        while stack:
            identifier = stack.pop()
            if identifier in affected:
                continue
            affected.add(identifier)
            stack.extend(self.children.get(identifier, ()))
        datasets: dict[tuple[str, str, str], int] = defaultdict(int)
        trained: dict[str, int] = defaultdict(int)
        for identifier in affected:
            node = self.nodes[identifier]
            for place in node.places:
                if place.output == "lineage":
                    trained[place.resource] += 1
                else:
                    datasets[(place.resource, place.output, place.uri)] += 1
        models = self._models(trained)
        return {
            "source": source,
            "rows": len({n.id for n in roots}),
            "datasets": [
                {"resource": resource, "output": output, "uri": uri, "rows": rows}
                for (resource, output, uri), rows in sorted(datasets.items())
            ],
            "models": models,
        }

    def _models(self, trained: dict[str, int]) -> list[dict[str, Any]]:
        """The models trained on affected rows, then those that started from (or used) one of them."""
        model_of = {run.resource: run.outputs.get("model") for run in self.runs}
        found: dict[str, dict[str, Any]] = {
            resource: {"resource": resource, "uri": model_of.get(resource), "rows": rows, "via": None}
            for resource, rows in trained.items()
        }
        readers = self._model_readers()
        frontier = list(found)
        while frontier:
            resource = frontier.pop()
            uri = found[resource]["uri"]
            for reader in sorted(readers.get(_normal(uri), ())) if uri else ():
                if reader not in found:
                    found[reader] = {
                        "resource": reader,
                        "uri": model_of.get(reader),
                        "rows": 0,
                        "via": resource,
                    }
                    frontier.append(reader)
        return [found[resource] for resource in sorted(found)]

    def _model_readers(self) -> dict[str, set[str]]:
        """Model URI -> the resources whose manifests name it (they started from it or used it)."""
        readers: dict[str, set[str]] = defaultdict(set)
        for node in self.nodes.values():
            model = node.details.get("model")
            if node.step == "train" and isinstance(model, str):
                for place in node.places:
                    readers[_normal(model)].add(place.resource)
        return readers


# --- reading ------------------------------------------------------------------------------------


def _run_folders(root: Path) -> Iterator[Path]:
    """Every folder under `root` with a result.json, not descending into models and checkpoints."""
    for here, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
        if "result.json" in files:
            yield Path(here)


def _writers(root: Path) -> dict[Path, str]:
    """Run folder -> `Kind/name`, from the local runner's workload configs under `root`."""
    writers: dict[Path, str] = {}
    for config in root.glob("workloads/*/*/*/config.json"):
        document = _read_json(config)
        uri = document.get("outputUri")
        if isinstance(uri, str) and document.get("kind") and document.get("name"):
            path = ArtifactUri.parse(uri).local_path(str(root / "pvc"))
            if path is not None:
                writers[path.resolve()] = f"{document['kind']}/{document['name']}"
    return writers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def _row_id(row: dict[str, Any]) -> str | None:
    value = row.get("id")
    return value if isinstance(value, str) else None


def _preview(row: dict[str, Any]) -> str:
    """A short text of the row: its first user message, instruction or prompt."""
    text: Any = row.get("instruction") or row.get("prompt")
    messages = row.get("messages")
    if isinstance(messages, list):
        text = next(
            (m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), text
        )
    if isinstance(text, list):
        text = next((m.get("content") for m in text if isinstance(m, dict) and m.get("role") == "user"), "")
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= PREVIEW else flat[: PREVIEW - 1] + "…"


def _battle_details(row: dict[str, Any]) -> dict[str, Any]:
    """A battle record's verdicts (judge, order, scores) and resolution; {} for other rows."""
    judgements = row.get("judgements")
    if not isinstance(judgements, list):
        return {}
    verdicts = [
        {key: j.get(key) for key in ("judge", "order", "scoreA", "scoreB")}
        for j in judgements
        if isinstance(j, dict)
    ]
    found = row.get("resolution")
    resolution: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "participants": row.get("participants"),
        "verdicts": verdicts,
        "resolution": {key: resolution.get(key) for key in ("status", "winner", "kept")},
    }


def _normal(uri: str) -> str:
    """A URI or path in one spelling: a local file as its absolute path, anything else as given."""
    if "://" not in uri:
        return str(Path(uri).absolute())
    parsed = ArtifactUri.parse(uri)
    if parsed.scheme == "file":
        return str(Path(parsed.path).absolute())
    return uri.rstrip("/")


def _same_source(recorded: dict[str, Any] | None, wanted: str) -> bool:
    """Whether a node's source is the wanted URI (a relative path matches the end of a local one)."""
    if recorded is None or not isinstance(recorded.get("uri"), str):
        return False
    have = _normal(recorded["uri"])
    if have == _normal(wanted):
        return True
    relative = wanted.removeprefix("file://")
    return "://" not in relative and not relative.startswith("/") and have.endswith("/" + relative)


# --- printing -----------------------------------------------------------------------------------


def describe(node: dict[str, Any]) -> str:
    """One line for a node: id, step, where, the step's details and a preview."""
    if node.get("missing"):
        return f"{node['id']} (not found under the roots)"
    places = node.get("places", [])
    where = ""
    if places:
        outputs = ", ".join(dict.fromkeys(p["output"] for p in places))
        row = places[0].get("rowId")
        where = f" — {places[0]['resource']}: {outputs}" + (f" [row {row}]" if row else "")
    details = _format_details(node.get("details", {}))
    preview = f'  "{node["preview"]}"' if node.get("preview") else ""
    return f"{node['id']} {node['step']}{where}{details}{preview}"


def _format_details(details: dict[str, Any]) -> str:
    parts = []
    for key, value in details.items():
        if key == "verdicts":
            shown = [f"{v['judge']} {v['order']} A={v['scoreA']} B={v['scoreB']}" for v in value]
            parts.append("verdicts: " + "; ".join(shown))
        elif key == "resolution":
            parts.append(f"resolution {value.get('status')} winner={value.get('winner')}")
        elif (value is not None and not isinstance(value, (dict, list))) or key in ("participants", "judges"):
            parts.append(f"{key}={value}")
    return ("  " + " ".join(parts)) if parts else ""


def render_chain(chains: list[dict[str, Any]]) -> str:
    """The chains of `chain()` as an indented text tree."""
    lines: list[str] = []
    for found in chains:
        lines.append(describe(found["node"]))
        lines.append("  made from:")
        _render_ancestors(found["madeFrom"], found["node"], 2, lines)
        lines.append("  used by:")
        if not found["usedBy"]:
            lines.append("    (nothing under the roots)")
        _render_descendants(found["usedBy"], 2, lines)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _render_ancestors(
    parents: list[dict[str, Any]], node: dict[str, Any], depth: int, lines: list[str]
) -> None:
    pad = "  " * depth
    source = node.get("source")
    if source:
        line = f" line {source['line']}" if source.get("line") is not None else ""
        row = f" (row {source['rowId']})" if source.get("rowId") else ""
        lines.append(f"{pad}<- source {source['uri']}{line}{row}")
    for parent in parents:
        lines.append(f"{pad}<- {describe(parent['node'])}")
        _render_ancestors(parent["parents"], parent["node"], depth + 1, lines)


def _render_descendants(children: list[dict[str, Any]], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for child in children:
        lines.append(f"{pad}-> {describe(child['node'])}")
        _render_descendants(child["children"], depth + 1, lines)


def render_consumers(found: dict[str, Any]) -> str:
    """The answer of `consumers()` as text."""
    lines = [f"source {found['source']}: {found['rows']} row(s) read from it"]
    lines.append("datasets:" if found["datasets"] else "datasets: none")
    lines += [f"  {d['resource']}  {d['output']}  {d['rows']} row(s)  {d['uri']}" for d in found["datasets"]]
    lines.append("models:" if found["models"] else "models: none")
    for model in found["models"]:
        how = f"trained on {model['rows']} row(s)" if model["rows"] else f"from the model of {model['via']}"
        lines.append(f"  {model['resource']}  {how}  {model['uri'] or ''}".rstrip())
    return "\n".join(lines) + "\n"

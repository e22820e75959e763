"""Find and resolve the references (`from:`) in a spec.

A reference's path (`dataset`, `teachers[0].served.model`, ...) identifies it in status and in the
workload config; resolving replaces each `from` with the `uri` of the referenced output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from posttrain.api.common import DataRef, FromRef, ModelRef
from posttrain.api.resources import KINDS


def iter_references(model: BaseModel, path: str = "") -> Iterator[tuple[str, DataRef | ModelRef]]:
    """Yield (path, reference) for every DataRef/ModelRef in the model, depth first, in field order."""
    for name, field in type(model).model_fields.items():
        alias = field.alias or name
        value = getattr(model, name)
        here = f"{path}.{alias}" if path else alias
        yield from _walk(value, here)


def _walk(value: Any, path: str) -> Iterator[tuple[str, DataRef | ModelRef]]:
    if isinstance(value, (DataRef, ModelRef)):
        yield path, value
    elif isinstance(value, BaseModel):
        yield from iter_references(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


def output_name(ref: FromRef) -> str:
    """The output a reference names, defaulting to the referenced kind's main output."""
    return ref.output or KINDS[ref.kind].main_output


def resolve(spec: BaseModel, lookup: Callable[[str, FromRef], str]) -> dict[str, Any]:
    """The spec as a wire dict with every `from` replaced by `uri: lookup(path, ref)`."""
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path, ref in iter_references(spec):
        if ref.from_ is None:
            continue
        node = _locate(wire, path)
        node.pop("from", None)
        node["uri"] = lookup(path, ref.from_)
    return wire


def _locate(wire: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = wire
    for part in path.replace("]", "").replace("[", ".").split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    assert isinstance(node, dict)
    return node

"""Validate manifests (already parsed YAML documents) into resources, reporting every problem at once.

Each problem names the file, the resource and the field path, so a user can fix all of them in one go;
nothing is applied or run unless every document is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from posttrain.api.resources import API_VERSION, KINDS, Resource


class ManifestError(ValueError):
    """One or more manifests are invalid; `problems` lists each, one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _path(loc: Iterable[int | str], model_aliases: bool = True) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("from" if part == "from_" else str(part))
    return out


def _describe(source: str, where: str, prefix: str, error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        path = _path([p for p in item["loc"] if p not in ("function-after[_check_rules(), ...]",)])
        full = f"{prefix}.{path}" if path else prefix
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{source}: {where}: {full}: {message}")
    return problems


def parse_objects(documents: Iterable[tuple[str, Any]]) -> list[Resource]:
    """Validate (source, document) pairs into resources.

    Documents of other API groups are an error too: the manifests of a posttrain pipeline hold
    posttrain resources only. Duplicate (kind, name) pairs are reported.

    Raises:
        ManifestError: listing every problem found.
    """
    problems: list[str] = []
    resources: list[Resource] = []
    seen: dict[tuple[str, str], str] = {}
    for index, (source, doc) in enumerate(documents):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(f"{source}: document {index + 1}: not a mapping")
            continue
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name", "?")
        where = f"{kind}/{name}"
        if doc.get("apiVersion") != API_VERSION:
            problems.append(
                f"{source}: {where}: apiVersion: must be {API_VERSION}, got {doc.get('apiVersion')!r}"
            )
            continue
        if kind not in KINDS:
            known = ", ".join(KINDS)
            problems.append(f"{source}: {where}: kind: {kind!r} is not a posttrain kind ({known})")
            continue
        try:
            envelope = Resource.model_validate({**doc, "spec": {}})
        except ValidationError as error:
            problems.extend(_describe(source, where, "", error))
            continue
        try:
            spec = KINDS[kind].spec_model.model_validate(doc.get("spec") or {})
        except ValidationError as error:
            problems.extend(_describe(source, where, "spec", error))
            continue
        resource = envelope.model_copy(update={"spec": spec})
        if resource.key in seen:
            problems.append(f"{source}: {where}: duplicate of the resource in {seen[resource.key]}")
            continue
        seen[resource.key] = source
        resources.append(resource)
    if problems:
        raise ManifestError(problems)
    return resources

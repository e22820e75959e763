"""Validate manifests (already parsed YAML documents) into resources, reporting every problem at once.

Each problem names the file, the resource and the field path, so a user can fix all of them in one go;
nothing is applied or run unless every document is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from posttrain.api import curriculum
from posttrain.api.curriculum import Curriculum
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
    """Validate (source, document) pairs of the five kinds into resources.

    A Curriculum is refused here: `parse_manifests` returns it for a driver to expand.

    Raises:
        ManifestError: listing every problem found.
    """
    resources, curricula = parse_manifests(documents)
    if curricula:
        names = ", ".join(f"Curriculum/{c.metadata.name}" for c in curricula)
        raise ManifestError(
            [f"{names}: expand a Curriculum into its chain first (posttrain.files.load_resources)"]
        )
    return resources


def parse_manifests(documents: Iterable[tuple[str, Any]]) -> tuple[list[Resource], list[Curriculum]]:
    """Validate (source, document) pairs into resources of the five kinds and curricula.

    Documents of other API groups are an error too: the manifests of a posttrain pipeline hold
    posttrain resources only. Duplicate (kind, name) pairs are reported.

    Raises:
        ManifestError: listing every problem found.
    """
    problems: list[str] = []
    resources: list[Resource] = []
    curricula: list[Curriculum] = []
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
        if kind == curriculum.KIND:
            found = _parse_curriculum(source, where, doc, problems)
            if found is not None and _first(found.key, source, where, seen, problems):
                curricula.append(found)
            continue
        if kind not in KINDS:
            known = ", ".join([*KINDS, curriculum.KIND])
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
        if _first(resource.key, source, where, seen, problems):
            resources.append(resource)
    if problems:
        raise ManifestError(problems)
    return resources, curricula


def _first(
    key: tuple[str, str], source: str, where: str, seen: dict[tuple[str, str], str], problems: list[str]
) -> bool:
    """True the first time `key` is met; otherwise the duplicate is reported."""
    if key in seen:
        problems.append(f"{source}: {where}: duplicate of the resource in {seen[key]}")
        return False
    seen[key] = source
    return True


def _parse_curriculum(source: str, where: str, doc: dict[str, Any], problems: list[str]) -> Curriculum | None:
    try:
        return Curriculum.model_validate(doc)
    except ValidationError as error:
        problems.extend(_describe(source, where, "", error))
        return None

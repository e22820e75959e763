"""Read manifests from files and folders (YAML, several documents per file)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from posttrain.api.loading import ManifestError, parse_objects
from posttrain.api.resources import Resource


def manifest_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The YAML files named, with folders expanded (sorted, not recursive into hidden folders)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in (".yaml", ".yml")
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            out.append(path)
    return out


def read_documents(paths: Iterable[str | Path]) -> list[tuple[str, Any]]:
    """(source, document) pairs from the files.

    Raises:
        ManifestError: for unreadable files or YAML syntax errors.
    """
    documents: list[tuple[str, Any]] = []
    problems: list[str] = []
    for path in manifest_paths(paths):
        try:
            with path.open() as stream:
                documents.extend((str(path), doc) for doc in yaml.safe_load_all(stream))
        except (OSError, yaml.YAMLError) as error:
            problems.append(f"{path}: {error}")
    if problems:
        raise ManifestError(problems)
    return documents


def load_resources(paths: Iterable[str | Path]) -> list[Resource]:
    """Validated resources from manifest files and folders.

    Raises:
        ManifestError: listing every problem.
    """
    return parse_objects(read_documents(paths))

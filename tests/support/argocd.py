"""Argo CD's health checks of the five kinds (gitops/argocd/), run the way Argo CD runs them.

Argo CD evaluates a resource customization's Lua with gopher-lua, a Lua 5.1: a fresh state per
object, the object as the global `obj`, and a table `{status, message}` as the result. lupa's Lua 5.1
runtime does the same here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lupa import lua51
from posttrain.api.resources import GROUP

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "gitops" / "argocd"
HEALTH_TESTS = ARGOCD / "health_test.yaml"


def health_scripts() -> dict[str, str]:
    """Kind -> Lua script, as the Kustomize component puts them into argocd-cm."""
    component = yaml.safe_load((ARGOCD / "kustomization.yaml").read_text())
    generator = next(g for g in component["configMapGenerator"] if g["name"] == "argocd-cm")
    assert generator["behavior"] == "merge"
    prefix = f"resource.customizations.health.{GROUP}_"
    scripts = {}
    for entry in generator["files"]:
        key, _, path = entry.partition("=")
        assert key.startswith(prefix), key
        scripts[key[len(prefix) :]] = (ARGOCD / path).read_text()
    return scripts


def assess(obj: dict[str, Any]) -> dict[str, str]:
    """The health Argo CD reports for the object: {status, message}."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(health_scripts()[obj["kind"]])
    assert result is not None, "the script returned nothing"
    return {key: result[key] for key in ("status", "message") if result[key] is not None}


def health_cases() -> list[dict[str, Any]]:
    """The cases of health_test.yaml: {healthStatus: {status, message}, inputPath, kstatus}."""
    tests: list[dict[str, Any]] = yaml.safe_load(HEALTH_TESTS.read_text())["tests"]
    return tests

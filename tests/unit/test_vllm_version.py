"""One vLLM release everywhere.

The teachers' server image is the vLLM that uv.lock pins for the trainer image, in the operator's defaults,
the chart's values and the documentation.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from posttrain.handlers.reconciler import OperatorConfig
from posttrain.manifests.settings import VLLM_IMAGE, VLLM_VERSION, ManifestSettings

ROOT = Path(__file__).resolve().parents[2]


def _locked(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions: set[str] = {p["version"] for p in lock["package"] if p["name"] == name}
    assert len(versions) == 1, versions
    return versions.pop()


def test_the_served_vllm_is_the_locked_vllm() -> None:
    assert _locked("vllm") == VLLM_VERSION
    assert f"vllm/vllm-openai:v{_locked('vllm')}" == VLLM_IMAGE
    assert ManifestSettings().vllm_image == VLLM_IMAGE
    assert OperatorConfig().vllm_image == VLLM_IMAGE
    values = yaml.safe_load((ROOT / "charts" / "posttrain-operator" / "values.yaml").read_text())
    assert values["workloads"]["vllmImage"] == VLLM_IMAGE
    assert f"`{VLLM_IMAGE}`" in (ROOT / "docs" / "helm.md").read_text()

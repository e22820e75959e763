"""Read a workload's config file (YAML or JSON) with the API's models."""

from __future__ import annotations

from pathlib import Path

import yaml
from posttrain.api.workload import WorkloadConfig


def load_config(path: str | Path) -> WorkloadConfig:
    """Validate a workload config file.

    Raises:
        pydantic.ValidationError: naming the field at fault.
    """
    return WorkloadConfig.model_validate(yaml.safe_load(Path(path).read_text()))

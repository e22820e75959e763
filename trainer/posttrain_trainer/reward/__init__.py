"""The reward workload (RewardModel): `posttrain-trainer reward --config FILE`.

Trains one of RLEIF's two reward models on the base model: the IRM (instruction quality, pairwise from
rankings of evolved instruction variants, `irm.py`) or the PRM (per-step correctness, `prm.py`), each a
method of the one learning template (`posttrain_trainer.train.template`). The trained `model` folder is
what a TrainStage of method `rleif` references (`scoring.py` loads it). Checkpoints go to
`checkpoints/`, TensorBoard event files to `tensorboard/`, and a restarted attempt resumes from the
latest checkpoint.

Reference: Luo et al., 2023 (WizardMath, RLEIF).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from posttrain.api.reward import RewardModelSpec, RewardType
from posttrain.api.workload import Result, WorkloadConfig

from posttrain_trainer.reward.base import RewardMethod
from posttrain_trainer.reward.irm import IRM
from posttrain_trainer.reward.prm import PRM
from posttrain_trainer.train.template import run_workload

TYPES: Mapping[RewardType, Callable[[RewardModelSpec], RewardMethod[Any, Any]]] = {"irm": IRM, "prm": PRM}
"""spec.type -> the reward model's hooks."""


def run(config: WorkloadConfig) -> Result:
    """Train the reward model of the spec's type; the main process writes result.json."""
    spec: RewardModelSpec = config.typed_spec()
    return run_workload(config, TYPES[spec.type](spec))

"""The train workload (TrainStage): `posttrain-trainer train --config FILE`.

One TrainStage is one step of progressive learning: `sft`, one Stage-DPO slice (`dpo`, starting from
the previous stage's model), or `rleif` (online RL, reward from the IRM and PRM). Each is a method of
the one learning template (`template.py`): it writes the trained `model` folder, `checkpoints/` and
TensorBoard event files (`tensorboard/`) under its output location and resumes from the latest
checkpoint when restarted; under torchrun only the main process writes the result document.

References: the WizardLM-2 announcement; Luo et al., 2023 (WizardMath, RLEIF).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from posttrain.api.train import TrainMethod, TrainStageSpec
from posttrain.api.workload import Result, WorkloadConfig

from posttrain_trainer.train.dpo import DPO
from posttrain_trainer.train.rleif import RLEIF
from posttrain_trainer.train.sft import SFT
from posttrain_trainer.train.stage import StageMethod
from posttrain_trainer.train.template import run_workload

METHODS: Mapping[TrainMethod, Callable[[TrainStageSpec], StageMethod[Any, Any]]] = {
    "sft": SFT,
    "dpo": DPO,
    "rleif": RLEIF,
}
"""spec.method -> the method's hooks."""


def run(config: WorkloadConfig) -> Result:
    """Run the stage's method; the main process writes result.json with the `model` output."""
    spec: TrainStageSpec = config.typed_spec()
    return run_workload(config, METHODS[spec.method](spec))

"""The reward workload (RewardModel): `posttrain-trainer reward --config FILE`.

Trains one of RLEIF's two reward models on the base model: the IRM (instruction quality, pairwise from
rankings of evolved instruction variants, `irm.py`) or the PRM (per-step correctness, `prm.py`). The
trained `model` folder is what a TrainStage of method `rleif` references (`scoring.py` loads it).
Checkpoints go to `checkpoints/` and a restarted attempt resumes from the latest.

Reference: Luo et al., 2023 (WizardMath, RLEIF).
"""

from __future__ import annotations

import importlib
import math

from posttrain.api.reward import RewardModelSpec
from posttrain.api.workload import Result, WorkloadConfig

from posttrain_trainer.common.report import Reporter, output
from posttrain_trainer.common.storage import Workspace
from posttrain_trainer.train.common import MODEL, distributed_env


def run(config: WorkloadConfig) -> Result:
    """Train the reward model of the spec's type; the main process writes result.json."""
    spec: RewardModelSpec = config.typed_spec()
    workspace = Workspace(config.output_uri)
    dist = distributed_env()
    reporter = Reporter(workspace) if dist.is_main else None
    trainer = importlib.import_module(f"posttrain_trainer.reward.{spec.type}")
    measured: dict[str, float] = trainer.run(spec, workspace, reporter)
    # NaN (a metric with nothing to measure) is not JSON the API server accepts in status.
    metrics = {name: value for name, value in measured.items() if math.isfinite(value)}
    if reporter is None:
        return Result(metrics=metrics)
    return reporter.finish({MODEL: output(workspace, MODEL, format="hf-model")}, metrics)

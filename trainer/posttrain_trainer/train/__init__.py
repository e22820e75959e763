"""The train workload (TrainStage): `posttrain-trainer train --config FILE`.

One TrainStage is one step of progressive learning: `sft`, one Stage-DPO slice (`dpo`, starting from
the previous stage's model), or `rleif` (online RL, reward from the IRM and PRM). Each writes the
trained `model` folder and `checkpoints/` under its output location and resumes from the latest
checkpoint when restarted; under torchrun only the main process writes the result document.

References: the WizardLM-2 announcement; Luo et al., 2023 (WizardMath, RLEIF).
"""

from __future__ import annotations

import importlib
import math

from posttrain.api.train import TrainStageSpec
from posttrain.api.workload import Result, WorkloadConfig

from posttrain_trainer.common.report import Reporter, output
from posttrain_trainer.common.storage import Workspace
from posttrain_trainer.train.common import MODEL, distributed_env

METHODS = {"sft": "sft", "dpo": "dpo", "rleif": "rleif"}
"""spec.method -> module of this package that runs it."""


def run(config: WorkloadConfig) -> Result:
    """Run the stage's method; the main process writes result.json with the `model` output."""
    spec: TrainStageSpec = config.typed_spec()
    workspace = Workspace(config.output_uri)
    dist = distributed_env()
    reporter = Reporter(workspace) if dist.is_main else None
    method = importlib.import_module(f"posttrain_trainer.train.{METHODS[spec.method]}")
    measured: dict[str, float] = method.run(spec, workspace, reporter)
    # NaN (a metric with nothing to measure) is not JSON the API server accepts in status.
    metrics = {name: value for name, value in measured.items() if math.isfinite(value)}
    if reporter is None:
        return Result(metrics=metrics)
    return reporter.finish({MODEL: output(workspace, MODEL, format="hf-model")}, metrics)

"""Watching training: TensorBoard event files always, Weights & Biases and MLflow when the spec asks.

Every learning workload writes TensorBoard event files to `<output>/tensorboard/`: the Trainer's logs
(loss, learning rate, gradient norm, DPO's rewards, RLEIF's reward and KL, under `train/`) through
transformers' TensorBoardCallback, and the held-out measurements before and after training (under
`heldout/`, at step 0 and at the last step). `tensorboard --logdir` on the artifact folder shows them.

`spec.tracking` maps to the Trainer's `report_to` and to the variables the W&B and MLflow clients read
(WANDB_PROJECT, WANDB_ENTITY, MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME). Keys and tokens are never
in the spec: the Job sets WANDB_API_KEY / MLFLOW_TRACKING_TOKEN from the Secret references.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from posttrain.api.tracking import Tracking

from posttrain_trainer.common.failures import InvalidInput
from posttrain_trainer.train import common

TENSORBOARD = "tensorboard"
"""Folder of the TensorBoard event files inside the output folder."""
HELD_OUT_TAG = "heldout"
"""TensorBoard tag prefix of the held-out measurements."""


def report_to(tracking: Tracking | None) -> list[str]:
    """The Trainer's `report_to` integrations for a spec's `tracking` (TensorBoard is added apart)."""
    if tracking is None:
        return []
    return [name for name, on in (("wandb", tracking.wandb), ("mlflow", tracking.mlflow)) if on is not None]


def tracking_env(tracking: Tracking | None) -> dict[str, str]:
    """The variables the W&B and MLflow clients read, from the spec.

    Never a key: that comes from the Secret reference in the pod's environment.
    """
    env: dict[str, str] = {}
    if tracking is not None and tracking.wandb is not None:
        env["WANDB_PROJECT"] = tracking.wandb.project
        if tracking.wandb.entity:
            env["WANDB_ENTITY"] = tracking.wandb.entity
    if tracking is not None and tracking.mlflow is not None:
        env["MLFLOW_TRACKING_URI"] = tracking.mlflow.tracking_uri
        if tracking.mlflow.experiment:
            env["MLFLOW_EXPERIMENT_NAME"] = tracking.mlflow.experiment
    return env


def check_installed(tracking: Tracking | None, installed: Callable[[str], bool] | None = None) -> None:
    """Fail before any work when a tracker is asked for whose client package is missing.

    `installed` tells whether a module can be imported; by default, it is looked up in this environment.

    Raises:
        InvalidInput: naming the spec field and the package.
    """
    available = installed or common.installed
    for name in report_to(tracking):
        if not available(name):
            raise InvalidInput(
                f"spec.tracking.{name} is set but the `{name}` package is not installed in the trainer "
                f"image; install it (pip install {name}) or remove spec.tracking.{name}"
            )


def start_tracking(tracking: Tracking | None) -> None:
    """Check the trackers' packages and export their settings to this process's environment.

    The W&B and MLflow callbacks of transformers read them there.
    """
    check_installed(tracking)
    os.environ.update(tracking_env(tracking))


def tensorboard_callback(folder: Path) -> Any:
    """The TensorBoardCallback of transformers, writing to `folder` (the main process writes; others skip)."""
    from transformers.integrations.integration_utils import TensorBoardCallback

    callback = TensorBoardCallback()
    # The callback's folder is otherwise a fresh `runs/<time>` under the checkpoints, or a
    # process-wide environment variable: set it on the instance so that it is this run's output.
    callback.logging_dir = str(folder)
    return callback


class EventLog:
    """Scalars written to TensorBoard event files beside the Trainer's own (the held-out measurements)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writer: Any = None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write `heldout/<name>` for each value at `step`, and flush."""
        if not values:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder))
        for name, value in values.items():
            self._writer.add_scalar(f"{HELD_OUT_TAG}/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        """Close the event file (if any was written)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

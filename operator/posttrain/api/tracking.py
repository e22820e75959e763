"""Experiment tracking of the learning workloads (TrainStage, RewardModel): Weights & Biases and MLflow.

Every learning workload writes TensorBoard event files into its output folder whatever this says
(`tensorboard --logdir` on the artifact folder). `tracking` adds the hosted trackers users already run.
Only names and addresses are stored here; the API key or token is a Secret reference that reaches the
pod as an environment variable (`valueFrom.secretKeyRef`), never the spec, a ConfigMap or the status.
"""

from __future__ import annotations

from pydantic import Field

from posttrain.api.base import ApiModel
from posttrain.api.common import SecretKeyRef

WANDB_API_KEY_ENV = "WANDB_API_KEY"
"""The variable the W&B client reads its API key from (set from `wandb.apiKeySecretRef`)."""
MLFLOW_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
"""The variable the MLflow client reads its bearer token from (set from `mlflow.tokenSecretRef`)."""


class WandbTracking(ApiModel):
    """Report the run to Weights & Biases (the trainer image must have the `wandb` package)."""

    project: str = Field(min_length=1, max_length=128)
    """W&B project (WANDB_PROJECT)."""
    entity: str | None = Field(default=None, min_length=1, max_length=128)
    """W&B team or user (WANDB_ENTITY); the key's default entity when unset."""
    api_key_secret_ref: SecretKeyRef | None = None
    """Secret key holding the API key, passed to the pod as WANDB_API_KEY; unset for a W&B server that
    needs none, or where the pod's environment provides it."""


class MlflowTracking(ApiModel):
    """Report the run to an MLflow tracking server (the trainer image must have the `mlflow` package)."""

    tracking_uri: str = Field(min_length=1, max_length=2048)
    """Address of the tracking server (MLFLOW_TRACKING_URI), e.g. `http://mlflow.mlflow:5000`."""
    experiment: str | None = Field(default=None, min_length=1, max_length=256)
    """Experiment name (MLFLOW_EXPERIMENT_NAME); MLflow's default experiment when unset."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a bearer token, passed to the pod as MLFLOW_TRACKING_TOKEN."""


class Tracking(ApiModel):
    """Where else the training curves go besides the TensorBoard event files in the output folder."""

    wandb: WandbTracking | None = None
    """Weights & Biases."""
    mlflow: MlflowTracking | None = None
    """MLflow."""

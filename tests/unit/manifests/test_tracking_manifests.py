"""Experiment tracking in the Job: W&B and MLflow credentials reach the pod only by Secret reference."""

from __future__ import annotations

import json
from typing import Any

from posttrain.api.resources import Resource
from posttrain.manifests import workload_objects

from tests.unit.manifests.manifest_builders import SETTINGS, by_kind, env_of, make, start_workload

TRACKING = {
    "wandb": {"project": "wizard", "entity": "lab", "apiKeySecretRef": {"name": "wandb", "key": "api-key"}},
    "mlflow": {
        "trackingUri": "http://mlflow.mlflow:5000",
        "experiment": "stage-dpo",
        "tokenSecretRef": {"name": "mlflow", "key": "token"},
    },
}


def objects_of(resource: Resource) -> list[dict[str, Any]]:
    return workload_objects(resource, start_workload(resource, SETTINGS), SETTINGS)


def job_env(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return env_of(by_kind(objects, "Job")["spec"]["template"]["spec"]["containers"][0])


SPECS = {
    "TrainStage": {"method": "sft", "model": {"uri": "pvc://models/base"}},
    "RewardModel": {"type": "irm", "baseModel": {"uri": "pvc://models/base"}},
}


def learning(kind: str, **extra: Any) -> Resource:
    """A TrainStage or RewardModel reading and writing on claims, with `extra` spec fields."""
    spec = {
        **SPECS[kind],
        "dataset": {"uri": "pvc://datasets/rows.jsonl"},
        "artifacts": {"uri": "pvc://out/x"},
    }
    return make(kind, kind.lower(), {**spec, **extra})


def test_tracking_keys_are_secret_references_in_the_job() -> None:
    for resource in (learning("TrainStage", tracking=TRACKING), learning("RewardModel", tracking=TRACKING)):
        env = job_env(objects_of(resource))
        assert env["WANDB_API_KEY"] == {
            "name": "WANDB_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
        }
        assert env["MLFLOW_TRACKING_TOKEN"] == {
            "name": "MLFLOW_TRACKING_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}},
        }


def test_the_configmap_holds_the_tracking_settings_and_only_references_to_keys() -> None:
    objects = objects_of(learning("TrainStage", tracking=TRACKING))
    config = json.dumps(by_kind(objects, "ConfigMap")["data"])
    assert "http://mlflow.mlflow:5000" in config and "wizard" in config
    assert "apiKeySecretRef" in config  # the reference (Secret name and key), never a value
    assert not [
        name for name in job_env(objects) if name.startswith(("WANDB_PROJECT", "MLFLOW_TRACKING_URI"))
    ]


def test_no_tracking_variables_without_tracking_or_without_secret_references() -> None:
    assert not [n for n in job_env(objects_of(learning("TrainStage"))) if n.startswith(("WANDB_", "MLFLOW_"))]
    keyless = {"wandb": {"project": "wizard"}, "mlflow": {"trackingUri": "http://mlflow:5000"}}
    assert not [
        n
        for n in job_env(objects_of(learning("RewardModel", tracking=keyless)))
        if n.startswith(("WANDB_", "MLFLOW_"))
    ]

"""The learning template and what every method gets from it.

Its typed registries, the TensorBoard event files every method writes, and experiment tracking (W&B, MLflow)
from the spec.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from posttrain.api.metrics import Reward, Train, unknown
from posttrain.api.resources import Workload
from posttrain.api.reward import RewardType
from posttrain.api.tracking import Tracking
from posttrain.api.train import TrainMethod, TrainStageSpec
from posttrain.api.workload import INVALID_INPUT_EXIT_CODE, INVALID_INPUT_REASON, Result
from posttrain_trainer import cli, reward, train
from posttrain_trainer.common.failures import InvalidInput
from posttrain_trainer.train import common, tracking
from posttrain_trainer.train.stage import schedule

from tests.support.learning_toys import (
    answer_pairs,
    arithmetic_chats,
    reward_spec,
    run_cli,
    single_thread,
    step_labels,
    write_config,
    write_jsonl,
)

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

TRACKING = {
    "wandb": {"project": "wizard", "entity": "lab", "apiKeySecretRef": {"name": "wandb", "key": "api-key"}},
    "mlflow": {"trackingUri": "http://mlflow:5000", "experiment": "stage-dpo"},
}
TINY = {
    "learningRate": 3e-3,
    "batchSize": 8,
    "microBatchSize": 8,
    "maxLength": 256,
    "checkpointSteps": 1000,
    "maxSteps": 3,
}


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `folder`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def near(*points: tuple[int, float]) -> object:
    """What ``scalars`` gives for ``points``: the steps exactly, the values within ``pytest.approx``."""
    return [(step, pytest.approx(value)) for step, value in points]


def test_every_method_of_the_specs_is_registered() -> None:
    assert set(train.METHODS) == set(get_args(TrainMethod))
    assert set(reward.TYPES) == set(get_args(RewardType))
    assert set(cli.WORKLOADS) == set(get_args(Workload))


def test_tracking_maps_to_report_to_and_the_clients_environment() -> None:
    settings = Tracking.model_validate(TRACKING)
    assert tracking.report_to(settings) == ["wandb", "mlflow"]
    assert tracking.tracking_env(settings) == {
        "WANDB_PROJECT": "wizard",
        "WANDB_ENTITY": "lab",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_EXPERIMENT_NAME": "stage-dpo",
    }
    assert tracking.report_to(None) == [] and tracking.tracking_env(None) == {}
    only_mlflow = Tracking.model_validate({"mlflow": {"trackingUri": "file:///tmp/mlruns"}})
    assert tracking.report_to(only_mlflow) == ["mlflow"]
    assert tracking.tracking_env(only_mlflow) == {"MLFLOW_TRACKING_URI": "file:///tmp/mlruns"}
    # No key or token ever comes from the spec: the pod's environment has it from the Secret.
    assert not [k for k in tracking.tracking_env(settings) if "KEY" in k or "TOKEN" in k]


def test_the_trainer_reports_to_the_trackers_of_the_spec(tmp_path: Path) -> None:
    spec = TrainStageSpec.model_validate(
        {
            "method": "sft",
            "model": {"uri": "file:///m"},
            "dataset": {"uri": "file:///d"},
            "tracking": TRACKING,
        }
    )
    arguments = common.training_arguments(
        schedule(spec), tmp_path, common.Hardware(), common.DistributedEnv()
    )
    assert arguments["report_to"] == ["wandb", "mlflow"]
    plain = spec.model_copy(update={"tracking": None})
    assert (
        common.training_arguments(schedule(plain), tmp_path, common.Hardware(), common.DistributedEnv())[
            "report_to"
        ]
        == "none"
    )


def test_a_tracker_whose_package_is_missing_is_invalid_input_naming_the_field() -> None:
    settings = Tracking.model_validate(TRACKING)
    with pytest.raises(InvalidInput, match=r"spec\.tracking\.wandb .*`wandb` package"):
        tracking.check_installed(settings, installed=lambda name: name != "wandb")
    with pytest.raises(InvalidInput, match=r"spec\.tracking\.mlflow"):
        tracking.check_installed(settings, installed=lambda name: name != "mlflow")
    tracking.check_installed(settings, installed=lambda name: True)
    tracking.check_installed(None, installed=lambda name: False)


def test_a_stage_asking_for_a_missing_tracker_fails_before_training(
    tiny_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "installed", lambda name: False)
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("POSTTRAIN_TERMINATION_LOG", str(termination))
    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    spec = {
        "method": "sft",
        "model": {"uri": f"file://{tiny_teacher}"},
        "dataset": {"uri": data},
        "train": TINY,
        "tracking": {"wandb": {"project": "wizard"}},
    }
    output = tmp_path / "out"
    config = write_config(tmp_path, "train", "TrainStage", spec, output)
    assert cli.main(["train", "--config", str(config)]) == INVALID_INPUT_EXIT_CODE  # not retried
    document = json.loads(termination.read_text())
    assert document["reason"] == INVALID_INPUT_REASON
    assert "spec.tracking.wandb is set but the `wandb` package is not installed" in document["error"]
    assert not (output / "checkpoints").exists()


def test_sft_writes_the_training_curves_and_held_out_measurements_as_event_files(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    spec = {
        "method": "sft",
        "model": {"uri": f"file://{tiny_teacher}"},
        "dataset": {"uri": data},
        "train": {**TINY, "evaluation": {"maxNewTokens": 4, "fraction": 0.2}},
    }
    output = tmp_path / "sft"
    metrics = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, output))["metrics"]

    logged = scalars(output / "tensorboard")
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3]
    assert [step for step, _ in logged["train/learning_rate"]] == [1, 2, 3]
    assert logged["heldout/eval.exactMatch"] == near(
        (0, metrics["eval.exactMatch.start"]),
        (3, metrics["eval.exactMatch"]),
    )
    assert not (output / "checkpoints" / "runs").exists()  # not the Trainer's default folder
    assert unknown(Train.ALL, metrics) == []  # every name written is in the catalogue


def test_dpo_writes_its_rewards_as_event_files(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", answer_pairs(32))
    spec = {
        "method": "dpo",
        "model": {"uri": f"file://{tiny_teacher}"},
        "preferences": {"uri": data},
        "train": {**TINY, "evaluation": {"fraction": 0.25}, "dpo": {"precomputeRefLogProbs": True}},
    }
    output = tmp_path / "dpo"
    metrics = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, output))["metrics"]

    logged = scalars(output / "tensorboard")
    assert {"train/loss", "train/rewards/margins", "train/rewards/accuracies"} <= set(logged)
    assert logged["heldout/eval.preferenceAccuracy"][-1:] == near((3, metrics["eval.preferenceAccuracy"]))
    assert logged["heldout/eval.rewardMargin"] == near((3, metrics["eval.rewardMargin"]))
    assert unknown(Train.ALL, metrics) == []


def test_a_reward_model_and_rleif_on_it_write_event_files(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "steps.jsonl", step_labels())
    output = tmp_path / "prm"
    spec: dict[str, Any] = reward_spec("prm", tiny_teacher, data, steps=3)
    metrics = run_cli("reward", write_config(tmp_path, "reward", "RewardModel", spec, output))["metrics"]

    logged = scalars(output / "tensorboard")
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3]
    assert logged["heldout/eval.accuracy"] == near(
        (0, metrics["eval.accuracy.start"]),
        (3, metrics["eval.accuracy"]),
    )
    assert logged["heldout/eval.loss"][:1] == near((0, metrics["eval.loss.start"]))
    assert unknown(Reward.ALL, metrics) == []

    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{**r, "messages": r["messages"][:1]} for r in arithmetic_chats()]
    )
    rleif = {
        "method": "rleif",
        "model": {"uri": f"file://{tiny_teacher}"},
        "dataset": {"uri": prompts},
        "rewardModels": [{"role": "prm", "model": {"uri": f"file://{output / 'model'}"}}],
        "train": {
            **TINY,
            "maxSteps": 2,
            "rleif": {"numGenerations": 4, "maxNewTokens": 8, "klCoef": 0.1, "truncated": "as-is"},
        },
    }
    output = tmp_path / "rleif"
    metrics = run_cli("train", write_config(tmp_path, "train", "TrainStage", rleif, output))["metrics"]

    logged = scalars(output / "tensorboard")
    assert [step for step, _ in logged["train/reward"]] == [1, 2]
    assert [step for step, _ in logged["train/reward.prm"]] == [1, 2]
    assert logged["train/kl"][-1:] == near((2, metrics["kl"]))
    assert "train/learning_rate" in logged
    assert unknown(Train.ALL, metrics) == []


class Recorder:
    """A stdout that keeps every write call apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_the_result_line_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes under torchrun share stdout; unbuffered, a line written in pieces interleaves."""
    result = Result(metrics={"steps": 4.0})
    monkeypatch.setitem(cli.WORKLOADS, "train", lambda: lambda config: result)
    config = write_config(
        tmp_path, "train", "TrainStage", {"method": "sft", "model": {"uri": "file:///m"}}, tmp_path
    )
    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    assert cli.main(["train", "--config", str(config)]) == 0
    lines = [w for w in recorder.writes if w.startswith("{")]
    assert lines == [json.dumps(result.wire(), sort_keys=True) + "\n"]

"""PRM end to end through the CLI.

Per-step labels, held-out step accuracy and loss, a start that depends on the spec's seed only, and the
documented input format (labels on the end of each step's separator).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from posttrain_trainer.common.chat import RowError
from posttrain_trainer.reward.prm import StepLabelCollator, solution, step_accuracy, step_loss
from posttrain_trainer.reward.scoring import RewardMetadata, StepScorer, step_features
from posttrain_trainer.train.common import load_tokenizer

from tests.support.learning_toys import (
    reward_spec,
    run_cli,
    single_thread,
    step_labels,
    toy_reward_model,
    write_config,
    write_jsonl,
)

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def test_step_rows() -> None:
    row = {"id": "s", "prompt": "What is 2+2?", "steps": ["2+2=4", "So 4."], "labels": [1, 1]}
    assert solution(row) == ("What is 2+2?", ["2+2=4", "So 4."], [1, 1])
    chat = {**row, "prompt": [{"role": "user", "content": "What is 2+2?"}]}
    assert solution(chat)[0] == "What is 2+2?"
    for broken in (
        {**row, "labels": [1]},
        {**row, "labels": [1, 2]},
        {**row, "labels": [1.0, 0.0]},
        {**row, "steps": []},
        {**row, "prompt": ""},
    ):
        with pytest.raises(RowError):
            solution(broken)


def test_labels_sit_on_the_end_of_each_separator(tiny_teacher: Path) -> None:
    tokenizer = load_tokenizer(tiny_teacher)
    features = step_features(tokenizer, "What is 2+2?", ["2+2=4", "So 5."], "\n", 256, labels=[1, 0])
    assert len(features.positions) == 2
    assert [features.labels[p] for p in features.positions] == [1, 0]
    assert sum(label != -100 for label in features.labels) == 2
    assert all(tokenizer.decode([features.input_ids[p]]) == "\n" for p in features.positions)
    text = tokenizer.decode(features.input_ids)
    assert text.endswith("ASSISTANT: 2+2=4\nSo 5.\n")
    # Scoring features are the same tokens without labels.
    scoring = step_features(tokenizer, "What is 2+2?", ["2+2=4", "So 5."], "\n", 256)
    assert (
        scoring.input_ids == features.input_ids
        and scoring.positions == features.positions
        and scoring.labels == []
    )
    # Steps that do not fit are left out, whole.
    short = step_features(tokenizer, "What is 2+2?", ["2+2=4"] * 50, "\n", 80, labels=[1] * 50)
    assert len(short.input_ids) <= 80 and 0 < len(short.positions) < 50


def test_collator_pads_ids_and_ignores_padding_in_the_loss() -> None:
    batch = StepLabelCollator(pad_token_id=3)(
        [{"input_ids": [5, 6, 7], "labels": [-100, -100, 1]}, {"input_ids": [5], "labels": [0]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 3, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 1], [0, -100, -100]]


def test_step_accuracy() -> None:
    assert step_accuracy([[0.9, 0.2], [0.6]], [[1, 0], [0]]) == pytest.approx(2 / 3)
    assert step_accuracy([[0.9]], [[1, 0]]) == 1.0  # a step cut by maxLength has no score
    assert math.isnan(step_accuracy([], []))


def test_step_loss() -> None:
    assert step_loss([[0.5, 0.5]], [[1, 0]]) == pytest.approx(math.log(2))
    assert step_loss([[0.9], [0.2]], [[1], [0]]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert step_loss([[0.9]], [[1, 0]]) == pytest.approx(-math.log(0.9))  # a cut step has no score
    assert step_loss([[0.0]], [[1]]) == pytest.approx(-math.log(1e-12))  # saturated, yet finite
    assert math.isnan(step_loss([], []))


def test_the_start_depends_on_the_spec_seed_only(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "steps.jsonl", step_labels(count=24))

    def start(process_seed: int, name: str) -> tuple[float, float]:
        import torch

        torch.manual_seed(process_seed)  # each pod is a new process, and torch seeds itself from the OS
        spec = reward_spec("prm", tiny_teacher, data, steps=1)
        metrics = run_cli("reward", write_config(tmp_path, "reward", "RewardModel", spec, tmp_path / name))[
            "metrics"
        ]
        return metrics["eval.accuracy.start"], metrics["eval.loss.start"]

    assert start(1, "first") == start(2, "second")  # the new head is drawn from `reward.seed`


def test_prm_learns_step_labels(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, result = toy_reward_model("prm", tmp_path_factory.getbasetemp() / "learning-toys", tiny_teacher)
    metrics = result["metrics"]
    assert metrics["eval.accuracy"] >= 0.85
    assert metrics["eval.accuracy"] > metrics["eval.accuracy.start"] + 0.2
    assert metrics["eval.loss"] < metrics["eval.loss.start"] / 2
    assert metrics["labelledSteps"] == 96 and metrics["steps"] == 40
    assert RewardMetadata.read(folder).step_separator == "\n"

    good, bad = StepScorer(folder).score(
        [("What is 3+5?", ["The answer is 8."]), ("What is 3+5?", ["qZ! xw% pp"])]
    )
    assert good[0] > 0.5 > bad[0]

"""IRM end to end through the CLI.

Pairwise accuracy and loss on held-out rankings of instruction variants, a start that depends on the spec's
seed only, and the trained model as RLEIF's scorer loads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from posttrain_trainer.common.chat import RowError
from posttrain_trainer.reward.irm import pairwise_accuracy, pairwise_loss, ranking, ranking_pairs
from posttrain_trainer.reward.scoring import InstructionScorer, RewardMetadata

from tests.support.learning_toys import (
    instruction_rankings,
    reward_spec,
    run_cli,
    single_thread,
    toy_reward_model,
    write_config,
    write_jsonl,
)

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def test_rankings_become_every_ordered_pair() -> None:
    assert ranking_pairs(["best", "good", "poor"]) == [("best", "good"), ("best", "poor"), ("good", "poor")]
    assert ranking_pairs(["same", "same", "worse"]) == [("same", "worse"), ("same", "worse")]
    assert len(ranking_pairs([str(i) for i in range(5)])) == 10
    assert ranking({"instructions": ["a", "b"]}) == ["a", "b"]
    for broken in ({"instructions": ["only one"]}, {"instructions": ["a", ""]}, {"instructions": "a"}, {}):
        with pytest.raises(RowError):
            ranking(broken)


def test_pairwise_accuracy() -> None:
    assert pairwise_accuracy([2.0, 1.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx(1 / 3)
    assert math.isnan(pairwise_accuracy([], []))


def test_pairwise_loss() -> None:
    assert pairwise_loss([0.0], [0.0]) == pytest.approx(math.log(2))  # no preference yet
    assert pairwise_loss([3.0, 1.0], [1.0, 3.0]) == pytest.approx(
        (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2
    )
    # Margins far beyond exp's range neither overflow nor vanish into 0 for a wrong pair.
    assert pairwise_loss([1000.0], [0.0]) == pytest.approx(0.0)
    assert pairwise_loss([0.0], [1000.0]) == pytest.approx(1000.0)
    assert math.isnan(pairwise_loss([], []))


def test_the_start_depends_on_the_spec_seed_only(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "rankings.jsonl", instruction_rankings())

    def start(process_seed: int, name: str) -> tuple[float, float]:
        import torch

        torch.manual_seed(process_seed)  # each pod is a new process, and torch seeds itself from the OS
        spec = reward_spec("irm", tiny_teacher, data, steps=1)
        metrics = run_cli("reward", write_config(tmp_path, "reward", "RewardModel", spec, tmp_path / name))[
            "metrics"
        ]
        return metrics["eval.accuracy.start"], metrics["eval.loss.start"]

    first, second = start(1, "first"), start(2, "second")
    assert first == second  # the new score head is drawn from `reward.seed`, not from the process
    # An untrained head has margins near 0: a loss near log 2 that training can lower.
    assert 0.5 < first[1] < 1.0


def test_irm_learns_the_rankings(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, result = toy_reward_model("irm", tmp_path_factory.getbasetemp() / "learning-toys", tiny_teacher)
    metrics = result["metrics"]
    assert metrics["eval.accuracy"] > 0.9
    assert metrics["eval.accuracy"] > metrics["eval.accuracy.start"]
    assert metrics["eval.loss"] < metrics["eval.loss.start"] / 2
    assert metrics["pairs"] == 27 * 3 and metrics["steps"] == 30
    assert result["outputs"]["model"]["uri"].endswith("/irm/model")
    assert RewardMetadata.read(folder).type == "irm"
    assert len(json.loads((folder / "config.json").read_text())["id2label"]) == 1  # one score

    scorer = InstructionScorer(folder)
    detailed, plain, keyword = scorer.score(
        [
            "Write a riddle about the moon. Explain each step in detail and give one example.",
            "Write a riddle about the moon.",
            "moon",
        ]
    )
    # The most complete instruction scores highest (the toy rankings put it first).
    assert 0.0 < max(keyword, plain) < detailed < 1.0

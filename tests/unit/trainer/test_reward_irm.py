"""IRM end to end through the CLI: pairwise accuracy on held-out rankings of instruction variants, and
the trained model as RLEIF's scorer loads it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from posttrain_trainer.common.chat import RowError
from posttrain_trainer.reward.irm import pairwise_accuracy, ranking, ranking_pairs
from posttrain_trainer.reward.scoring import InstructionScorer, RewardMetadata

from tests.support.learning_toys import single_thread, toy_reward_model

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


def test_irm_learns_the_rankings(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, result = toy_reward_model("irm", tmp_path_factory.getbasetemp() / "learning-toys", tiny_teacher)
    metrics = result["metrics"]
    assert metrics["accuracy"] > 0.9
    assert metrics["accuracy"] > metrics["accuracy.start"]
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

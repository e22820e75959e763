"""RLEIF's reward from the reward models' scores: step split rule, step aggregation, combination."""

from __future__ import annotations

from pathlib import Path

import pytest
from posttrain_trainer.reward.scoring import (
    REWARD_FILE,
    RewardMetadata,
    aggregate_steps,
    combine,
    split_steps,
)


def test_split_steps() -> None:
    assert split_steps("Step 1: add.\n\n Step 2: done. \n", "\n") == ["Step 1: add.", "Step 2: done."]
    assert split_steps("a;; b ;c", ";") == ["a", "b", "c"]
    assert split_steps("one step only", "\n") == ["one step only"]
    assert split_steps("  \n ", "\n") == []
    assert split_steps("no separator", "") == ["no separator"]


@pytest.mark.parametrize(
    ("how", "expected"), [("min", 0.2), ("mean", 1.9 / 3), ("last", 0.8), ("product", 0.9 * 0.2 * 0.8)]
)
def test_step_aggregates(how: str, expected: float) -> None:
    assert aggregate_steps([0.9, 0.2, 0.8], how) == pytest.approx(expected)
    assert aggregate_steps([], how) == 0.0


def test_combination_is_the_product_by_default_or_a_sum() -> None:
    assert combine(0.5, 0.8, "product") == pytest.approx(0.4)
    assert combine(0.5, 0.8, "sum") == pytest.approx(1.3)
    assert combine(None, 0.8, "product") == 0.8
    assert combine(0.5, None, "sum") == 0.5
    with pytest.raises(ValueError):
        combine(None, None, "product")
    with pytest.raises(ValueError):
        combine(0.5, 0.5, "max")
    with pytest.raises(ValueError):
        aggregate_steps([0.5], "median")


def test_metadata_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a RewardModel output"):
        RewardMetadata.read(tmp_path)
    (tmp_path / REWARD_FILE).write_text(RewardMetadata("prm", "\n\n", 512).to_json())
    assert RewardMetadata.read(tmp_path) == RewardMetadata("prm", "\n\n", 512)


def test_the_geometric_mean_does_not_punish_length() -> None:
    from posttrain_trainer.reward.scoring import aggregate_steps

    short = [0.9, 0.9]
    long = [0.9] * 12
    assert aggregate_steps(short, "geomean") == pytest.approx(aggregate_steps(long, "geomean"))
    assert aggregate_steps(long, "product") < aggregate_steps(short, "product")  # what geomean avoids
    assert aggregate_steps([0.9, 0.05, 0.9], "geomean") < 0.4  # one wrong step still weighs heavily


def test_steps_beyond_the_cap_are_merged_into_the_last() -> None:
    from posttrain_trainer.reward.scoring import cap_steps

    steps = [f"s{i}" for i in range(1, 6)]
    assert cap_steps(steps, 3, "\n") == ["s1", "s2", "s3\ns4\ns5"]
    assert cap_steps(steps, 5, "\n") == steps

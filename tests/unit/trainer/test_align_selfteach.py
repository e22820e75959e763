"""Self-teaching: rankings, their combination and the pairs and rows they give.

Ranking resolution with the reversed order, Borda combination, the (best, worst) pair; step-label rows.
"""

from __future__ import annotations

import pytest
from posttrain_trainer.align.selfteach import (
    RankResolution,
    borda,
    combine_rankings,
    distinct,
    resolve_rankings,
    self_teaching_pair,
    verified_ranking,
)
from posttrain_trainer.align.steplabels import problem_text, step_row, steps_to_label


def test_distinct_drops_empty_and_repeated_candidates() -> None:
    assert distinct(["a b", "a  b ", "", "c", "  "]) == ["a b", "c"]


def test_reversed_ranking_is_mapped_back_before_comparing() -> None:
    # Candidates 0,1,2; forward ranks 2 > 0 > 1. Shown reversed ([2],[1],[0]) the same judgement
    # reads [1] > [3] > [2], i.e. reversed indices 0 > 2 > 1.
    r = resolve_rankings([2, 0, 1], [0, 2, 1], 3)
    assert r == RankResolution("consistent", [2, 0, 1])


def test_position_biased_rankings_are_inconsistent() -> None:
    # The judge always puts the first shown answer first.
    forward, backward = [0, 1, 2], [0, 1, 2]
    assert resolve_rankings(forward, backward, 3, "tie") == RankResolution("inconsistent")
    assert resolve_rankings(forward, backward, 3, "drop").order is None
    # average: Borda of [0,1,2] and [2,1,0] ties every candidate: no preference, no order.
    assert resolve_rankings(forward, backward, 3, "average") == RankResolution("inconsistent")
    # A partial disagreement still orders them: forward 0>1>2, backward (mapped back) 0>2>1.
    assert resolve_rankings([0, 1, 2], [2, 0, 1], 3, "average") == RankResolution("inconsistent", [0, 1, 2])


def test_unreadable_ranking_gives_no_order() -> None:
    assert resolve_rankings(None, [0, 1], 2) == RankResolution("unparsed")


def test_borda_and_several_judges() -> None:
    assert borda([[1, 0, 2], [1, 2, 0]], 3) == [1, 0, 2]
    assert borda([[0, 1], [1, 0]], 2) is None
    first = RankResolution("consistent", [1, 0, 2])
    second = RankResolution("consistent", [1, 2, 0])
    assert combine_rankings([first, second], 3) == RankResolution("consistent", [1, 0, 2])
    assert combine_rankings([first, RankResolution("unparsed")], 3) == first
    assert combine_rankings([RankResolution("unparsed"), RankResolution("unparsed")], 3).status == "unparsed"
    assert (
        combine_rankings([RankResolution("inconsistent"), RankResolution("unparsed")], 3).status == "dropped"
    )


def test_pair_is_best_against_worst() -> None:
    prompt = [{"role": "user", "content": "q"}]
    row = self_teaching_pair("d1/r/t1/self", prompt, ["a", "b", "c"], [1, 2, 0], {"dataset": 0})
    assert row is not None
    assert (row["chosen"], row["rejected"]) == ("b", "a")
    assert row["meta"] == {"dataset": 0, "source": "self-teaching", "chosenRank": 1, "rejectedRank": 3}
    assert self_teaching_pair("x", prompt, ["a", "b"], None, {}) is None


def test_step_rows() -> None:
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    steps = steps_to_label("First, 2 + 3.\nThat is 5.", max_steps=8)
    row = step_row("d1/r/t1/steps", prompt, steps, [1, 1])
    assert row == {
        "id": "d1/r/t1/steps",
        "prompt": "What is 2 + 3?",
        "steps": ["First, 2 + 3.", "That is 5."],
        "labels": [1, 1],
    }
    assert steps_to_label("One line only.", 8) == []
    with pytest.raises(ValueError):
        step_row("x", prompt, steps, [1])
    multi = [*prompt, {"role": "assistant", "content": "5"}, {"role": "user", "content": "Times 2?"}]
    assert problem_text(multi).endswith("USER: Times 2?")


def test_a_verifier_ranks_right_answers_first_and_makes_no_order_from_ties() -> None:
    assert verified_ranking([1.0, 10.0, 1.0, 10.0]) == RankResolution("consistent", [1, 3, 0, 2])
    assert verified_ranking([1.0, 1.0, 1.0]) == RankResolution("consistent")  # all wrong: no pair
    assert verified_ranking([10.0, None]) == RankResolution("unparsed")

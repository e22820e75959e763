"""Position-swap resolution, unreadable verdicts, several judges and their agreement."""

from __future__ import annotations

import pytest
from posttrain_trainer.align.judge import Resolution, combine_judges, judge_agreement, resolve_swap
from posttrain_trainer.align.prompts import Verdict


def v(a: float, b: float) -> Verdict:
    return Verdict(a, b, "")


def test_consistent_orders_average_each_answers_two_scores() -> None:
    # forward: X shown as A got 8, Y 4; backward: Y shown as A got 5, X 7.
    r = resolve_swap(v(8, 4), v(5, 7))
    assert r == Resolution("consistent", 7.5, 4.5, 1.0)
    assert r.gap == 3.0 and r.kept


def test_consistent_ties_are_ties() -> None:
    assert resolve_swap(v(6, 6), v(5, 5)) == Resolution("consistent", 5.5, 5.5, 0.5)


def test_a_judge_that_always_prefers_position_a_is_inconsistent() -> None:
    forward, backward = v(9, 3), v(9, 3)  # X wins shown first, Y wins shown first
    assert resolve_swap(forward, backward, "tie") == Resolution("inconsistent", 6.0, 6.0, 0.5)
    assert resolve_swap(forward, backward, "drop") == Resolution("inconsistent")
    assert not resolve_swap(forward, backward, "drop").kept


def test_average_rule_keeps_the_winner_of_the_means() -> None:
    # X: 9 (forward) and 5 (backward) -> 7; Y: 3 and 6 -> 4.5; the orders disagree, X still ahead.
    r = resolve_swap(v(9, 3), v(6, 5), "average")
    assert r == Resolution("inconsistent", 7.0, 4.5, 1.0)
    assert resolve_swap(v(7, 5), v(7, 5), "average") == Resolution("inconsistent", 6.0, 6.0, 0.5)


def test_a_win_against_a_tie_is_inconsistent() -> None:
    assert resolve_swap(v(8, 5), v(6, 6)).status == "inconsistent"


@pytest.mark.parametrize("pair", [(None, v(1, 2)), (v(1, 2), None), (None, None)])
def test_an_unreadable_order_leaves_the_battle_out(pair: tuple[Verdict | None, Verdict | None]) -> None:
    r = resolve_swap(*pair)
    assert r == Resolution("unparsed") and not r.kept and r.gap == 0.0


def test_several_judges_average_the_kept_resolutions() -> None:
    first = Resolution("consistent", 8.0, 4.0, 1.0)
    second = Resolution("consistent", 5.0, 7.0, 0.0)
    third = Resolution("unparsed")
    assert combine_judges([first, second, third]) == Resolution("consistent", 6.5, 5.5, 1.0)
    assert combine_judges([first, Resolution("inconsistent", 5.0, 5.0, 0.5)]).status == "inconsistent"


def test_several_judges_none_kept() -> None:
    assert combine_judges([Resolution("unparsed"), Resolution("unparsed")]).status == "unparsed"
    assert combine_judges([Resolution("unparsed"), Resolution("inconsistent")]).status == "dropped"
    assert combine_judges([Resolution("inconsistent")]) == Resolution("inconsistent")


def test_agreement_counts_pairs_of_judges_that_both_kept_the_battle() -> None:
    outcomes: list[list[float | None]] = [
        [1.0, 1.0],  # agree
        [1.0, 0.0],  # disagree
        [0.5, None],  # not counted
        [0.0, 0.0, 1.0],  # three judges: 1 of 3 pairs agree
    ]
    assert judge_agreement(outcomes) == pytest.approx(2 / 5)
    assert judge_agreement([[1.0], [None, 1.0]]) is None

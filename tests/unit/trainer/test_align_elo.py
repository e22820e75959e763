"""Arena Elo by Bradley–Terry: hand-computed ratings, ties, the reference anchor, bootstrap intervals."""

from __future__ import annotations

import math

import pytest
from posttrain_trainer.align.elo import elo_table, fit_bradley_terry


def games(x: str, y: str, wins: int, losses: int, ties: int = 0) -> list[tuple[str, str, float]]:
    return [(x, y, 1.0)] * wins + [(x, y, 0.0)] * losses + [(x, y, 0.5)] * ties


def test_two_players_three_wins_to_one_is_400_log10_3_apart() -> None:
    # P(a beats b) = 3/4 -> 10 ** (diff / 400) = 3 -> diff = 400 * log10(3) = 190.85
    table = elo_table(games("a", "b", 3, 1), ["a", "b"], reference="b", regularization=0.0, bootstrap=0)
    assert table.rating_of("b") == 1100.0
    assert table.rating_of("a") == pytest.approx(1100 + 400 * math.log10(3), abs=1e-6)
    assert table.rating_of("a") == pytest.approx(1290.85, abs=0.01)


def test_a_tie_counts_half_a_win_for_each_side() -> None:
    # one win and two ties: a scores 2 of 3 -> odds 2 -> diff = 400 * log10(2) = 120.41
    table = elo_table(games("a", "b", 1, 0, 2), ["a", "b"], reference="a", regularization=0.0, bootstrap=0)
    assert table.rating_of("b") == pytest.approx(1100 - 120.41, abs=0.01)
    row = next(r for r in table.ratings if r.name == "b")
    assert (row.battles, row.wins, row.losses, row.ties) == (3, 0, 1, 2)


def test_three_players_consistent_with_the_model_are_fitted_exactly() -> None:
    # a beats b 3:1, b beats c 3:1, a beats c 9:1 -- exactly what Bradley–Terry predicts for
    # strengths ln3 apart (3 * 3 = 9), so the fit is a = +190.85, c = -190.85 around b.
    data = games("a", "b", 3, 1) + games("b", "c", 3, 1) + games("a", "c", 9, 1)
    table = elo_table(
        data, ["a", "b", "c"], reference="b", reference_elo=1000, regularization=0.0, bootstrap=0
    )
    assert table.rating_of("a") == pytest.approx(1190.85, abs=0.01)
    assert table.rating_of("c") == pytest.approx(809.15, abs=0.01)
    assert [r.name for r in table.ratings] == ["a", "b", "c"]


def test_strengths_do_not_depend_on_which_side_a_game_is_written() -> None:
    forward = fit_bradley_terry(games("a", "b", 3, 1), ["a", "b"], 0.0)
    backward = fit_bradley_terry(games("b", "a", 1, 3), ["a", "b"], 0.0)
    assert forward["a"] - forward["b"] == pytest.approx(backward["a"] - backward["b"])


def test_a_perfect_record_stays_finite_with_the_prior_and_grows_as_it_weakens() -> None:
    data = games("a", "b", 5, 0)
    strong = fit_bradley_terry(data, ["a", "b"], regularization=0.1)
    weak = fit_bradley_terry(data, ["a", "b"], regularization=0.01)
    assert 0 < strong["a"] - strong["b"] < weak["a"] - weak["b"] < 50
    # The penalised optimum: 5 * (1 - sigmoid(2 t)) = 0.1 * t with t = theta_a = -theta_b.
    t = strong["a"]
    assert 5 * (1 - 1 / (1 + math.exp(-2 * t))) == pytest.approx(0.1 * t, abs=1e-6)


def test_bootstrap_intervals_contain_the_rating_and_are_reproducible() -> None:
    data = games("a", "b", 6, 4, 2) + games("b", "c", 5, 3)
    first = elo_table(data, ["a", "b", "c"], reference="b", bootstrap=50, seed=3)
    again = elo_table(data, ["a", "b", "c"], reference="b", bootstrap=50, seed=3)
    assert first.wire() == again.wire()
    for row in first.ratings:
        assert row.ci_low <= row.rating + 1e-6 and row.rating - 1e-6 <= row.ci_high
    reference = next(r for r in first.ratings if r.name == "b")
    assert reference.ci_low == reference.ci_high == 1100.0
    assert any(r.ci_high - r.ci_low > 1 for r in first.ratings if r.name != "b")


def test_no_games_gives_everyone_the_reference_rating() -> None:
    table = elo_table([], ["s", "t"], reference="t", bootstrap=10)
    assert [r.rating for r in table.ratings] == [1100.0, 1100.0]
    assert all(r.battles == 0 for r in table.ratings)
    document = table.wire()
    assert document["reference"] == "t" and document["bootstrap"] == 10
    assert set(document["ratings"][0]) == {
        "name",
        "rating",
        "median",
        "ciLow",
        "ciHigh",
        "battles",
        "wins",
        "losses",
        "ties",
    }


def test_unknown_reference_is_rejected() -> None:
    with pytest.raises(ValueError, match="reference"):
        elo_table([], ["s"], reference="x")


def test_the_reported_rating_is_the_bootstrap_median_inside_its_interval() -> None:
    games = [("a", "b", 1.0)] * 6 + [("b", "a", 1.0)] * 3 + [("a", "c", 1.0)] * 5 + [("c", "b", 0.5)] * 4
    table = elo_table(games, ["a", "b", "c"], reference="b", bootstrap=200, seed=1)
    for row in table.ratings:
        assert row.ci_low <= row.median <= row.ci_high
    a = next(r for r in table.ratings if r.name == "a")
    assert a.median != a.rating  # the bootstrap median, not the single fit
    assert table.wire()["ratings"][0]["median"] == round(table.ratings[0].median, 2)

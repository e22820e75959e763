"""The report's check that the student's arena Elo rises from one AlignRound to the next."""

from __future__ import annotations

from posttrain.local.report import BarChart, Check, Section
from posttrain.local.report.rounds import elo_across_rounds


def round_(name: str, elo: tuple[str, float] | None) -> Section:
    return Section("AlignRound", name, "Succeeded", elo=elo)


def figures(check: Check) -> tuple[str, float, float, bool]:
    return check.metric, check.before, check.after, check.ok


def test_each_later_round_on_the_same_reference_checks_that_the_students_elo_rose() -> None:
    base = round_("arena-base", ("teacher", 600.0))
    training = Section("TrainStage", "sft", "Succeeded")
    sft = round_("align", ("teacher", 700.0))
    other = round_("other", ("judge-b", 900.0))
    final = round_("arena-final", ("teacher", 690.0))
    unrated = round_("unrated", None)
    elo_across_rounds([base, training, sft, other, final, unrated])

    assert base.checks == [] and other.checks == [] and unrated.checks == []
    assert [figures(c) for c in sft.checks] == [
        ("student Elo vs teacher (since AlignRound/arena-base)", 600.0, 700.0, True)
    ]
    assert [figures(c) for c in final.checks] == [
        ("student Elo vs teacher (since AlignRound/align)", 700.0, 690.0, False)
    ]
    # The last round on the reference shows every round's rating; a lone reference gets no chart.
    (chart,) = final.charts
    assert isinstance(chart, BarChart)
    assert chart.categories == ["AlignRound/arena-base", "AlignRound/align", "AlignRound/arena-final"]
    assert chart.series == {"Elo": [600.0, 700.0, 690.0]}
    assert sft.charts == [] and other.charts == []

"""The student's arena Elo across the run's AlignRounds: does it rise from round to round?

Ratings compare across rounds when the rounds share the reference participant (fixed at its
`referenceElo`); the pipeline should also give them the same `evalSet` and judges. Each round after
the first on a reference gets a check (the student's Elo since the previous round on that
reference should rise), and the last such round a chart of the student's Elo in every round.
"""

from __future__ import annotations

from posttrain.local.report.model import BarChart, Check, Section

ELO_CHECK = "student Elo vs {reference} (since {previous})"
"""The metric name of the check, filled in with the reference participant and the previous round."""


def elo_across_rounds(sections: list[Section]) -> None:
    """Add the round-to-round Elo checks and the across-rounds chart to the AlignRound sections.

    Args:
        sections: the run's sections in pipeline order (an AlignRound's `elo` filled in).
    """
    rounds: dict[str, list[tuple[Section, float]]] = {}
    for section in sections:
        if section.elo is None:
            continue
        reference, elo = section.elo
        earlier = rounds.setdefault(reference, [])
        if earlier:
            previous, before = earlier[-1]
            metric = ELO_CHECK.format(reference=reference, previous=previous.label)
            section.checks.append(Check(metric, before, elo, "up"))
        earlier.append((section, elo))
    for reference, seen in rounds.items():
        if len(seen) > 1:
            last = seen[-1][0]
            last.charts.append(
                BarChart(
                    f"student Elo vs {reference} across rounds (same reference)",
                    [s.label for s, _ in seen],
                    {"Elo": [elo for _, elo in seen]},
                    "Elo",
                )
            )

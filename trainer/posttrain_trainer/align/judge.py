"""Resolving judged battles: the position swap, unreadable verdicts, several judges and their agreement.

Every battle between two answers X and Y is judged twice by each judge: once with X shown first
(`forward`) and once with Y shown first (`backward`), because judges favour a position. The two
verdicts are resolved by these rules (Arena Learning plays both orders; the rules are ours):

- Both verdicts readable and naming the same winner (or both a tie): **consistent**. Each answer's
  score is the mean of its two scores.
- Both readable but naming different winners (a win against a tie also counts): **inconsistent**,
  resolved by the `judging.inconsistency` setting: `tie` (default) — the battle is a tie and both
  answers get the mean of all four scores, so its score gap is 0; `average` — each answer gets the
  mean of its two scores and the winner follows from those means; `drop` — the battle is left out.
- One or both verdicts unreadable (no scores in 1-10 could be parsed): **unparsed**. The battle is left
  out of win rates, pairs, SFT targets and Elo; it stays in the battle log. Using the single readable
  order would bring back the position bias the swap exists to remove.

With several judges, each judge's battle is resolved as above; the battle's scores are the means over
the judges whose resolution was kept, and the winner follows from them. Judge agreement is the share
of (battle, pair of judges) where both judges kept the battle and named the same outcome.

Two answers that are the same text (ignoring whitespace) are not sent to the judges: the battle is an
**identical** tie, with no scores (so no pair and no SFT target), counted as a tie in win rates and Elo.

Inputs: parsed verdicts (`prompts.Verdict`, or None for an unreadable reply). Outputs: `Resolution`.
Reference: Luo et al., 2024 (Arena Learning).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal

from posttrain_trainer.align.prompts import Verdict

Status = Literal["consistent", "inconsistent", "unparsed", "dropped", "identical"]
InconsistencyRule = Literal["tie", "average", "drop"]


@dataclass(frozen=True)
class Resolution:
    """The outcome of one battle between X and Y.

    Attributes:
        status: `consistent`, `inconsistent`, `unparsed`, `dropped` (several judges, none kept) or
            `identical` (the same answer twice: a tie without judging).
        score_x: X's resolved score (None when the battle is left out).
        score_y: Y's resolved score (None when the battle is left out).
        outcome: 1.0 when X wins, 0.0 when Y wins, 0.5 for a tie; None when the battle is left out.
    """

    status: Status
    score_x: float | None = None
    score_y: float | None = None
    outcome: float | None = None

    @property
    def kept(self) -> bool:
        """True when the battle counts (win rates, pairs, SFT targets, Elo)."""
        return self.outcome is not None

    @property
    def gap(self) -> float:
        """X's score minus Y's (0 when left out)."""
        if self.score_x is None or self.score_y is None:
            return 0.0
        return self.score_x - self.score_y


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _outcome(score_x: float, score_y: float) -> float:
    return {1: 1.0, -1: 0.0, 0: 0.5}[_sign(score_x - score_y)]


def resolve_swap(
    forward: Verdict | None, backward: Verdict | None, rule: InconsistencyRule = "tie"
) -> Resolution:
    """Resolve one judge's two verdicts on a battle between X and Y.

    Args:
        forward: the verdict with X shown as A and Y as B.
        backward: the verdict with Y shown as A and X as B.
        rule: what an inconsistent pair becomes: `tie`, `average` or `drop`.

    Returns:
        The resolution (see the module docstring for the rules).
    """
    if forward is None or backward is None:
        return Resolution(status="unparsed")
    x_scores = (forward.score_a, backward.score_b)
    y_scores = (forward.score_b, backward.score_a)
    score_x = sum(x_scores) / 2
    score_y = sum(y_scores) / 2
    if _sign(x_scores[0] - y_scores[0]) == _sign(x_scores[1] - y_scores[1]):
        return Resolution("consistent", score_x, score_y, _outcome(score_x, score_y))
    if rule == "tie":
        middle = (score_x + score_y) / 2
        return Resolution("inconsistent", middle, middle, 0.5)
    if rule == "average":
        return Resolution("inconsistent", score_x, score_y, _outcome(score_x, score_y))
    return Resolution("inconsistent")


def combine_judges(resolutions: list[Resolution]) -> Resolution:
    """One battle's resolution from several judges' (each already swap-resolved).

    Args:
        resolutions: one per judge.

    Returns:
        The mean scores of the kept resolutions and the winner they imply. With one judge, its own
        resolution; with several and none kept, `unparsed` when every judge's verdicts were unreadable,
        else `dropped`. The status is
        `inconsistent` when any kept judge was inconsistent, else `consistent`.
    """
    kept = [r for r in resolutions if r.kept and r.score_x is not None and r.score_y is not None]
    if not kept:
        if len(resolutions) == 1:
            return resolutions[0]
        if all(r.status == "unparsed" for r in resolutions):
            return Resolution("unparsed")
        return Resolution("dropped")
    if len(kept) == 1:
        return kept[0]
    score_x = sum(r.score_x for r in kept if r.score_x is not None) / len(kept)
    score_y = sum(r.score_y for r in kept if r.score_y is not None) / len(kept)
    status: Status = "inconsistent" if any(r.status == "inconsistent" for r in kept) else "consistent"
    return Resolution(status, score_x, score_y, _outcome(score_x, score_y))


def judge_agreement(outcomes: list[list[float | None]]) -> float | None:
    """How often judges agree: the share of (battle, pair of judges) with the same outcome.

    Args:
        outcomes: per battle, each judge's outcome (1, 0, 0.5, or None when that judge's resolution
            was not kept); pairs with a None are not counted.

    Returns:
        The agreement in [0, 1], or None when no pair of judges both kept a battle.
    """
    agree = total = 0
    for battle in outcomes:
        for left, right in combinations(battle, 2):
            if left is None or right is None:
                continue
            total += 1
            agree += left == right
    return agree / total if total else None

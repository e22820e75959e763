"""Self-teaching: the student's own candidates, ranked by the judge, become preference pairs.

For each instruction the student samples N candidates (at `selfTeaching.temperature`). Duplicates are
removed (fewer than two distinct candidates: no pair). Each judge ranks the candidates twice, in the
sampled order and in reverse, for the same reason battles are played twice. The two rankings are
combined by Borda count (a candidate's points are its positions summed; lower is better; ties keep
the sampled order):

- both rankings readable and agreeing on the best and on the worst candidate: **consistent**;
- both readable but disagreeing on the best or the worst: **inconsistent**, resolved by
  `judging.inconsistency` — `average` uses the Borda order (no pair when it ties the best and
  the worst), `tie` and `drop` give no pair (a tie has no chosen answer);
- either unreadable: **unparsed**, no pair.

With several judges, the kept rankings are combined by Borda count again. The pair is (best, worst):
the clearest preference the ranking gives, and one pair per instruction keeps the instructions
balanced.

Inputs: candidate lists and parsed rankings (`prompts.parse_ranking`). Outputs: preference rows.
Reference: the WizardLM-2 announcement (self-teaching: preference data from the model itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from posttrain_trainer.align.judge import InconsistencyRule
from posttrain_trainer.common.chat import Message


def distinct(candidates: list[str]) -> list[str]:
    """Candidates without empty or repeated answers (whitespace-insensitive), in their first order."""
    seen: set[str] = set()
    out = []
    for candidate in candidates:
        key = " ".join(candidate.split())
        if key and key not in seen:
            seen.add(key)
            out.append(candidate)
    return out


def borda_points(rankings: list[list[int]], count: int) -> list[int]:
    """Each candidate's summed positions over the rankings (0-based indices, best first)."""
    points = [0] * count
    for ranking in rankings:
        for position, candidate in enumerate(ranking):
            points[candidate] += position
    return points


def borda(rankings: list[list[int]], count: int) -> list[int] | None:
    """Combine rankings into one order by summed positions (lower is better).

    Ties keep the sampled order. None when the best and the worst candidate have equal points (no preference
    at all).
    """
    points = borda_points(rankings, count)
    order = sorted(range(count), key=lambda c: (points[c], c))
    return order if points[order[0]] < points[order[-1]] else None


@dataclass(frozen=True)
class RankResolution:
    """One instruction's resolved ranking."""

    status: str
    """`consistent`, `inconsistent`, `unparsed` or `dropped`."""
    order: list[int] | None = None
    """Candidate indices best first, or None when no pair is made."""


def resolve_rankings(
    forward: list[int] | None, backward: list[int] | None, count: int, rule: InconsistencyRule = "tie"
) -> RankResolution:
    """Resolve one judge's two rankings.

    Args:
        forward: the ranking of the candidates shown in their sampled order (indices best first).
        backward: the ranking of the candidates shown in reverse order (indices into that reversed
            list, best first).
        count: the number of candidates.
        rule: the inconsistency rule (see the module docstring).

    Returns:
        The resolution.
    """
    if forward is None or backward is None:
        return RankResolution("unparsed")
    unreversed = [count - 1 - i for i in backward]
    if forward[0] == unreversed[0] and forward[-1] == unreversed[-1]:
        return RankResolution("consistent", borda([forward, unreversed], count))
    if rule == "average":
        return RankResolution("inconsistent", borda([forward, unreversed], count))
    return RankResolution("inconsistent")


def verified_ranking(scores: Sequence[float | None]) -> RankResolution:
    """A verifier's resolution of the candidates' scores (it checks each answer alone, in either order).

    Higher scores (right answers) first, ties in the sampled order; no order, so no pair, when every
    candidate scores the same (all right or all wrong: nothing to prefer); `unparsed` when an answer
    cannot be checked. Asking it for two orders, as a model judge, would call its ties inconsistent.
    """
    if any(score is None for score in scores):
        return RankResolution("unparsed")
    known = [float(score or 0.0) for score in scores]
    if len(set(known)) < 2:
        return RankResolution("consistent")
    return RankResolution("consistent", sorted(range(len(known)), key=lambda i: (-known[i], i)))


def combine_rankings(resolutions: list[RankResolution], count: int) -> RankResolution:
    """One instruction's order from several judges' resolutions."""
    kept = [r for r in resolutions if r.order is not None]
    if not kept:
        if len(resolutions) == 1:
            return resolutions[0]
        if all(r.status == "unparsed" for r in resolutions):
            return RankResolution("unparsed")
        return RankResolution("dropped")
    if len(kept) == 1:
        return kept[0]
    status = "inconsistent" if any(r.status == "inconsistent" for r in kept) else "consistent"
    order = borda([r.order for r in kept if r.order is not None], count)
    return RankResolution(status if order is not None else "dropped", order)


def self_teaching_pair(
    identifier: str,
    prompt: list[Message],
    candidates: list[str],
    order: list[int] | None,
    meta: dict[str, Any],
) -> dict[str, Any] | None:
    """The (best, worst) preference row of a resolved ranking, or None without one.

    Args:
        identifier: the row id.
        prompt: the conversation the candidates answer.
        candidates: the distinct candidates, in sampled order.
        order: the resolved order (indices best first), or None.
        meta: extra metadata (category, dataset, ...).

    Returns:
        `{"id", "prompt", "chosen", "rejected", "meta"}` or None.
    """
    if order is None or len(order) < 2 or len(candidates) < 2:
        return None
    best, worst = order[0], order[-1]
    return {
        "id": identifier,
        "prompt": prompt,
        "chosen": candidates[best],
        "rejected": candidates[worst],
        "meta": {**meta, "source": "self-teaching", "chosenRank": 1, "rejectedRank": len(order)},
    }

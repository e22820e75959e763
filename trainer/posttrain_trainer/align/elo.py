"""Arena Elo: Bradley–Terry ratings fitted by logistic regression, with bootstrap confidence intervals.

The Bradley–Terry model says participant i beats j with probability
`1 / (1 + 10 ** ((R_j - R_i) / 400))`. The ratings are the maximum-likelihood fit over all kept
battles (a tie counts as half a win for each side, i.e. a target of 0.5), found by Newton's method on
the log-likelihood in natural units `theta = R * ln(10) / 400`. A small L2 penalty on theta (a wide
Gaussian prior) keeps the ratings finite when one participant won every battle, which is common on
small evaluation sets; `regularization=0` gives the plain maximum-likelihood fit. Ratings are shifted so
that the reference participant has exactly `reference_elo` (Arena Learning fixed a reference model at
1100).

Confidence intervals: the battles are resampled with replacement `bootstrap` times, the model is
refitted on each sample, and the 2.5th and 97.5th percentiles of each rating form its 95% interval;
their median is the reported rating (`median`, the round's `elo.<participant>` metric, as Arena
Learning reports it). `rating` is the fit on all battles. Ratings compare across rounds only when
they were measured on the same evaluation set: the table names it (`evalSet`).

Inputs: games `(x, y, outcome)` with outcome 1 (x won), 0 (y won) or 0.5 (tie). Outputs: an `EloTable`.
References: Bradley & Terry, 1952; Luo et al., 2024 (Arena Learning: BT Elo, 100 bootstrap samples,
reference at 1100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Game = tuple[str, str, float]
SCALE = 400.0 / math.log(10.0)
"""Elo points per natural-log unit of odds."""


def fit_bradley_terry(
    games: Sequence[Game], players: Sequence[str], regularization: float = 1e-2, iterations: int = 100
) -> dict[str, float]:
    """Bradley–Terry strengths (natural-log odds units, centred on the mean) by Newton's method.

    Args:
        games: (x, y, outcome) with outcome 1.0 when x won, 0.0 when y won, 0.5 for a tie.
        players: every participant, including any without games (they stay at the centre).
        regularization: L2 penalty on the strengths; 0 for the plain maximum-likelihood fit.
        iterations: at most this many Newton steps.

    Returns:
        Player -> strength theta; differences are what matter (theta_i - theta_j = log-odds of i
        beating j).
    """
    index = {name: i for i, name in enumerate(players)}
    x, y, target = _arrays(games, index)
    theta = _fit(x, y, target, len(players), regularization, iterations)
    return {name: float(theta[i]) for name, i in index.items()}


def _arrays(games: Sequence[Game], index: dict[str, int]) -> tuple[Any, Any, Any]:
    x = np.array([index[g[0]] for g in games], dtype=np.int64)
    y = np.array([index[g[1]] for g in games], dtype=np.int64)
    target = np.array([float(g[2]) for g in games], dtype=np.float64)
    return x, y, target


def _fit(x: Any, y: Any, target: Any, n: int, regularization: float, iterations: int = 100) -> Any:
    """Newton's method on games given as index arrays; returns the centred strengths."""
    theta = np.zeros(n)
    if n == 0 or len(x) == 0:
        return theta
    # The likelihood depends only on each ordered pair's number of games and summed outcome, so the
    # iterations cost O(pairs) however many battles were played.
    pair = x * n + y
    counts = np.bincount(pair, minlength=n * n)
    sums = np.bincount(pair, weights=target, minlength=n * n)
    played = np.nonzero(counts)[0]
    count = counts[played].astype(np.float64)
    score = sums[played]
    first, second = played // n, played % n
    eye = np.eye(n)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(theta[first] - theta[second])))
        residual = count * p - score
        gradient = np.bincount(first, residual, n) - np.bincount(second, residual, n) + regularization * theta
        weight = count * p * (1.0 - p)
        hessian = regularization * eye
        np.add.at(hessian, (first, first), weight)
        np.add.at(hessian, (second, second), weight)
        np.add.at(hessian, (first, second), -weight)
        np.add.at(hessian, (second, first), -weight)
        if regularization > 0:
            step = np.linalg.solve(hessian, gradient)
        else:
            # Without a penalty the Hessian is singular (adding a constant to every strength changes
            # nothing); the pseudo-inverse takes the minimum-norm step, which keeps the mean at zero.
            step = np.linalg.pinv(hessian) @ gradient
        theta = theta - step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return theta - theta.mean()


@dataclass
class Rating:
    """One participant's row of the Elo table."""

    name: str
    rating: float
    ci_low: float
    ci_high: float
    median: float = 0.0
    """Median of the bootstrap ratings (the fit on all battles without bootstrap samples)."""
    battles: int = 0
    wins: float = 0.0
    losses: float = 0.0
    ties: float = 0.0

    def wire(self) -> dict[str, Any]:
        """The JSON form (camelCase, rounded)."""
        return {
            "name": self.name,
            "rating": round(self.rating, 2),
            "median": round(self.median, 2),
            "ciLow": round(self.ci_low, 2),
            "ciHigh": round(self.ci_high, 2),
            "battles": self.battles,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
        }


@dataclass
class EloTable:
    """Ratings of all participants, best first."""

    reference: str
    reference_elo: float
    bootstrap: int
    ratings: list[Rating] = field(default_factory=list)
    eval_set: dict[str, Any] | None = None
    """The evaluation prompts the battles were on: `{"uri", "prompts"}` (`uri` None for a random
    hold-out of the training data, which differs from round to round)."""

    def rating_of(self, name: str) -> float:
        """The rating of one participant."""
        return next(r.rating for r in self.ratings if r.name == name)

    def wire(self) -> dict[str, Any]:
        """The JSON document written to the `elo` output."""
        return {
            "model": "bradley-terry",
            "reference": self.reference,
            "referenceElo": self.reference_elo,
            "bootstrap": self.bootstrap,
            "confidence": 0.95,
            "ratings": [r.wire() for r in self.ratings],
            "evalSet": self.eval_set,
        }


def _anchored(strengths: dict[str, float], reference: str, reference_elo: float) -> dict[str, float]:
    base = strengths[reference]
    return {name: reference_elo + SCALE * (value - base) for name, value in strengths.items()}


def elo_table(
    games: Sequence[Game],
    players: Sequence[str],
    reference: str,
    reference_elo: float = 1100.0,
    bootstrap: int = 100,
    seed: int = 0,
    regularization: float = 1e-2,
) -> EloTable:
    """Elo ratings with bootstrap 95% confidence intervals.

    Args:
        games: kept battles as (x, y, outcome).
        players: every participant (those without games get the reference's rating and a note of 0
            battles).
        reference: the participant fixed at `reference_elo`.
        reference_elo: its rating.
        bootstrap: resamples for the intervals.
        seed: the resampling seed (the same seed gives the same table).
        regularization: L2 penalty of the fit (see the module docstring).

    Returns:
        The table, best rating first.
    """
    if reference not in players:
        raise ValueError(f"reference {reference!r} is not a participant")
    index = {name: i for i, name in enumerate(players)}
    x, y, target = _arrays(games, index)
    n = len(players)

    def anchored(theta: Any) -> dict[str, float]:
        return _anchored({name: float(theta[i]) for name, i in index.items()}, reference, reference_elo)

    ratings = anchored(_fit(x, y, target, n, regularization))
    samples: dict[str, list[float]] = {name: [] for name in players}
    rng = np.random.default_rng(seed)
    if games:
        for _ in range(bootstrap):
            picks = rng.integers(0, len(games), len(games))
            fitted = anchored(_fit(x[picks], y[picks], target[picks], n, regularization))
            for name, value in fitted.items():
                samples[name].append(value)
    table = EloTable(reference=reference, reference_elo=reference_elo, bootstrap=bootstrap)
    for name in players:
        values = samples[name] or [ratings[name]]
        low, median, high = np.percentile(values, [2.5, 50.0, 97.5])
        row = Rating(
            name=name, rating=ratings[name], ci_low=float(low), ci_high=float(high), median=float(median)
        )
        for x, y, outcome in games:
            if name not in (x, y):
                continue
            row.battles += 1
            mine = outcome if name == x else 1.0 - outcome
            if mine == 0.5:
                row.ties += 1
            elif mine > 0.5:
                row.wins += 1
            else:
                row.losses += 1
        table.ratings.append(row)
    table.ratings.sort(key=lambda r: (-r.rating, r.name))
    return table

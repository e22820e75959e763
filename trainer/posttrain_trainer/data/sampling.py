"""Weighted sampling: resample the cleaned rows to target shares of attribute values.

The seed's "Weighted Sampling": the best training mix is not the natural distribution of chat data, so
the user sets weights of attribute values (found by experiment) and the data is resampled to them.

Inputs: each targeted attribute's value per row (`Categorical`), the target weights, a total and a
seed. Output: the chosen rows (with repeats when replacement is allowed) and the target and achieved
shares of every targeted value.

Several attributes combine as a product: the target share of a cell (one value per attribute) is the
product of its values' normalised weights. Rows whose value has no weight are dropped. The cells get
whole-row counts by capped proportional allocation (water-filling): each cell gets total x share,
except that without replacement a cell never gets more rows than it has — its shortfall is spread
over the other cells in proportion to their shares — and a cell with no rows at all cannot be
sampled. Fractions are rounded by largest remainder. Rows are then drawn uniformly inside each cell
(a generator seeded from `seed`, cells in a fixed order), so the same seed gives the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posttrain_trainer.data.attributes import Categorical
from posttrain_trainer.data.errors import DataError


@dataclass
class Target:
    """Target weights over the values of one attribute."""

    attribute: str
    values: Categorical
    weights: dict[str, float]


@dataclass
class SampleResult:
    """The chosen rows (indices into the candidates, ascending; repeats adjacent) and the shares."""

    rows: np.ndarray
    repeat: np.ndarray
    """0 for a row's first copy, 1, 2, ... for repeats (with replacement)."""
    dropped: int = 0
    """Candidates whose value of a targeted attribute has no weight."""
    target_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    achieved_shares: dict[str, dict[str, float]] = field(default_factory=dict)


def allocate(shares: np.ndarray, available: np.ndarray, total: int, replacement: bool) -> np.ndarray:
    """Whole counts per cell, proportional to `shares`, summing to `total`.

    The sum is every available row when there are fewer. Each count is capped at `available` unless
    `replacement`; cells with no rows or no share get none.
    """
    usable = (shares > 0) & (available > 0)
    counts = np.zeros(len(shares), dtype=np.int64)
    if not usable.any() or total <= 0:
        return counts
    weights = np.where(usable, shares, 0.0)
    weights = weights / weights.sum()
    capacity = np.where(usable, np.inf if replacement else available, 0.0)
    total = int(min(total, capacity.sum()))
    # Water-filling: cap the cells whose proportional share exceeds their rows, then re-spread.
    quota = np.zeros(len(shares))
    free = usable.copy()
    remaining = float(total)
    while free.any():
        mass = weights[free].sum()
        proportional = np.zeros(len(shares))
        proportional[free] = remaining * weights[free] / mass if mass > 0 else remaining / free.sum()
        over = free & (proportional > capacity)
        if not over.any():
            quota[free] = proportional[free]
            break
        quota[over] = capacity[over]
        remaining -= capacity[over].sum()
        free &= ~over
    allotted: np.ndarray = np.minimum(np.floor(quota + 1e-9), capacity).astype(np.int64)
    # Largest remainders first (ties to the earlier cell), never past a cell's capacity.
    while allotted.sum() < total:
        room = np.flatnonzero(usable & (allotted < capacity))
        order = room[np.lexsort((room, -(quota[room] - allotted[room])))]
        allotted[order[: total - int(allotted.sum())]] += 1
    return allotted


def sample(
    candidates: int,
    targets: list[Target],
    total: int | None,
    replacement: bool,
    seed: int,
) -> SampleResult:
    """Choose rows among `candidates` to match the targets (see the module docstring).

    Raises:
        DataError: no candidate has a weighted value of every targeted attribute.
    """
    rng = np.random.default_rng([seed, 0x5A3])
    eligible = np.ones(candidates, dtype=bool)
    cell = np.zeros(candidates, dtype=np.int64)
    cell_shares = np.ones(1)
    normalised: dict[str, dict[str, float]] = {}
    for target in targets:
        labels = target.values.labels
        positive = {k: v for k, v in target.weights.items() if v > 0}
        scale = sum(positive.values())
        weights = np.array([positive.get(label, 0.0) / scale for label in labels])
        normalised[target.attribute] = {k: v / scale for k, v in positive.items()}
        eligible &= weights[target.values.codes] > 0
        # Cells are the product of the targeted values, numbered in label order.
        cell = cell * len(labels) + target.values.codes
        cell_shares = np.outer(cell_shares, weights).ravel()
    dropped = int((~eligible).sum())
    rows = np.flatnonzero(eligible)
    if targets and not len(rows):
        raise DataError("no row has a weighted value of every targeted attribute; check `sampling.targets`")
    available = np.bincount(cell[rows], minlength=len(cell_shares))
    if not len(rows):
        return SampleResult(
            rows=rows, repeat=np.zeros(0, np.int64), dropped=dropped, target_shares=normalised
        )
    if total is None:
        # The largest total that every cell with rows can serve at its share without repeats.
        usable = (available > 0) & (cell_shares > 0)
        total = int(np.floor(np.min(available[usable] / (cell_shares[usable] / cell_shares[usable].sum()))))
        total = min(total, int(available[usable].sum()))
    counts = allocate(cell_shares, available, total, replacement)

    chosen: list[np.ndarray] = []
    repeats: list[np.ndarray] = []
    by_cell = np.argsort(cell[rows], kind="stable")
    bounds = np.concatenate([[0], np.cumsum(available)])
    for index in np.flatnonzero(counts):
        members = rows[by_cell[bounds[index] : bounds[index + 1]]]
        whole, part = divmod(int(counts[index]), len(members))
        picked = [np.repeat(members, whole)] if whole else []
        if part:
            picked.append(np.sort(rng.choice(members, size=part, replace=False)))
        chosen.append(np.concatenate(picked))
    selected = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    if len(selected):
        first = np.ones(len(selected), dtype=bool)
        first[1:] = selected[1:] != selected[:-1]
        start = np.maximum.accumulate(np.where(first, np.arange(len(selected)), 0))
        repeats.append(np.arange(len(selected)) - start)
    result = SampleResult(
        rows=selected,
        repeat=np.concatenate(repeats) if repeats else np.empty(0, np.int64),
        dropped=dropped,
        target_shares=normalised,
    )
    for target in targets:
        picked_codes = target.values.codes[selected]
        counted = np.bincount(picked_codes, minlength=len(target.values.labels))
        size = max(len(selected), 1)
        result.achieved_shares[target.attribute] = {
            label: float(counted[i]) / size
            for i, label in enumerate(target.values.labels)
            if counted[i] or label in normalised[target.attribute]
        }
    return result

"""Progressive slices: cut the sampled dataset into K disjoint slices that together cover it.

Progressive learning trains stage by stage, each stage on its own slice (through Evol Lab, AI Align
AI, SFT, Stage-DPO and RLEIF), so each slice is an output that a downstream resource names
(`output: slice-2`).

Inputs: the number of rows, the strategy, the rows' difficulty scores or attribute values, a seed.
Output: K arrays of row positions; each ascending, so every slice keeps the dataset's order.

- random: a seeded permutation cut into K shards whose sizes differ by at most one.
- difficulty: rows ordered by difficulty score (ties in dataset order) cut into K such shards, so
  slice 1 is the easiest: a curriculum.
- attribute: whole groups of the attribute's values in the attribute's order, K contiguous runs of
  groups whose sizes come closest to N/K each; needs at least K distinct values.
"""

from __future__ import annotations

import numpy as np

from posttrain_trainer.data.attributes import Categorical
from posttrain_trainer.data.errors import DataError


def _shards(order: np.ndarray, count: int) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(order, count)]


def random_slices(n: int, count: int, seed: int) -> list[np.ndarray]:
    """K shards of a seeded permutation."""
    order = np.random.default_rng([seed, 0x511CE]).permutation(n)
    return _shards(order, count)


def difficulty_slices(scores: np.ndarray, count: int) -> list[np.ndarray]:
    """K shards by ascending score."""
    return _shards(np.argsort(scores, kind="stable"), count)


def attribute_slices(values: Categorical, count: int, attribute: str) -> list[np.ndarray]:
    """K runs of whole value groups, in label order, as equal in size as the groups allow.

    Raises:
        DataError: fewer distinct values than slices.
    """
    sizes = np.bincount(values.codes, minlength=len(values.labels))
    present = np.flatnonzero(sizes)
    if len(present) < count:
        found = ", ".join(values.labels[i] for i in present) or "none"
        raise DataError(
            f"slicing by {attribute} into {count} slices needs at least {count} distinct values; "
            f"the data has {len(present)} ({found})"
        )
    ends = np.cumsum(sizes[present])
    total = int(ends[-1])
    cuts: list[int] = []
    previous = -1
    for k in range(1, count):
        # Cut after a group; leave at least one group for each later slice.
        low, high = previous + 1, len(present) - (count - k) - 1
        candidates = np.arange(low, high + 1)
        best = candidates[np.argmin(np.abs(ends[candidates] - total * k / count))]
        cuts.append(int(best))
        previous = int(best)
    group_slice = np.zeros(len(values.labels), dtype=np.int64)
    bounds = [-1, *cuts, len(present) - 1]
    for index in range(count):
        group_slice[present[bounds[index] + 1 : bounds[index + 1] + 1]] = index
    assignment = group_slice[values.codes]
    return [np.flatnonzero(assignment == index) for index in range(count)]


def cut(
    n: int,
    count: int,
    strategy: str,
    seed: int,
    difficulty: np.ndarray,
    values: Categorical | None = None,
    attribute: str = "",
) -> list[np.ndarray]:
    """The K slices of n rows by the strategy (see the module docstring)."""
    if count == 1:
        return [np.arange(n, dtype=np.int64)]
    if strategy == "random":
        return random_slices(n, count, seed)
    if strategy == "difficulty":
        return difficulty_slices(difficulty, count)
    if values is None:
        raise ValueError("the attribute strategy needs the attribute's values")
    return attribute_slices(values, count, attribute)

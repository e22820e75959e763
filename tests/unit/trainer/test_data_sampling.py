"""Weighted sampling to target shares, and progressive slices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain_trainer.data.attributes import Categorical
from posttrain_trainer.data.errors import DataError
from posttrain_trainer.data.sampling import Target, allocate, sample
from posttrain_trainer.data.slicing import cut

CATEGORIES = ["coding", "math", "writing", "general"]


def natural(n: int, seed: int = 0) -> tuple[Categorical, Categorical]:
    """Categories skewed to `general`, difficulty buckets skewed to `low`."""
    rng = np.random.default_rng(seed)
    category = Categorical(rng.choice(4, n, p=[0.1, 0.1, 0.2, 0.6]), CATEGORIES)
    difficulty = Categorical(rng.choice(3, n, p=[0.6, 0.3, 0.1]), ["low", "medium", "high"])
    return category, difficulty


def test_sampling_hits_the_targets() -> None:
    category, _ = natural(20_000)
    weights = {"coding": 0.3, "math": 0.2, "writing": 0.2, "general": 0.3}
    result = sample(20_000, [Target("category", category, weights)], 5000, False, seed=1)
    assert len(result.rows) == 5000
    assert len(np.unique(result.rows)) == 5000
    for value, share in weights.items():
        assert result.achieved_shares["category"][value] == pytest.approx(share, abs=1 / 5000)
    assert result.target_shares["category"] == weights


def test_several_attributes_combine_as_a_product() -> None:
    category, difficulty = natural(30_000, seed=2)
    targets = [
        Target("category", category, {"coding": 1, "math": 1}),
        Target("difficulty", difficulty, {"low": 1, "medium": 2, "high": 1}),
    ]
    result = sample(30_000, targets, 1200, False, seed=3)
    assert len(result.rows) == 1200
    assert result.achieved_shares["category"] == pytest.approx({"coding": 0.5, "math": 0.5}, abs=0.002)
    assert result.achieved_shares["difficulty"] == pytest.approx(
        {"low": 0.25, "medium": 0.5, "high": 0.25}, abs=0.002
    )
    picked_category = category.codes[result.rows]
    assert set(picked_category.tolist()) <= {0, 1}
    assert result.dropped == int(np.isin(category.codes, [2, 3]).sum())


def test_the_same_seed_gives_the_same_rows() -> None:
    category, _ = natural(5000)
    target = [Target("category", category, {"coding": 0.5, "general": 0.5})]
    first = sample(5000, target, 800, False, seed=7)
    again = sample(5000, target, 800, False, seed=7)
    other = sample(5000, target, 800, False, seed=8)
    assert np.array_equal(first.rows, again.rows)
    assert not np.array_equal(first.rows, other.rows)


def test_without_a_total_the_largest_sample_without_repeats() -> None:
    category, _ = natural(10_000)
    coding = int((category.codes == 0).sum())
    result = sample(10_000, [Target("category", category, {"coding": 0.5, "general": 0.5})], None, False, 0)
    assert len(result.rows) == 2 * coding
    assert len(np.unique(result.rows)) == len(result.rows)


def test_a_short_value_is_taken_whole_and_the_rest_keeps_the_total() -> None:
    category, _ = natural(2000)
    coding = int((category.codes == 0).sum())
    result = sample(2000, [Target("category", category, {"coding": 0.5, "general": 0.5})], 1000, False, 0)
    assert len(result.rows) == 1000
    assert int((category.codes[result.rows] == 0).sum()) == coding


def test_replacement_repeats_rows_to_reach_the_targets() -> None:
    category, _ = natural(2000)
    result = sample(2000, [Target("category", category, {"coding": 0.5, "general": 0.5})], 3000, True, 0)
    assert len(result.rows) == 3000
    assert result.achieved_shares["category"]["coding"] == pytest.approx(0.5)
    assert result.repeat.max() >= 1
    # Every copy of a row is numbered: 0 for the first, then 1, 2, ...
    for row in np.unique(result.rows[result.repeat > 0])[:20]:
        assert sorted(result.repeat[result.rows == row].tolist()) == list(range((result.rows == row).sum()))


def test_without_targets_the_sample_is_uniform() -> None:
    everything = sample(100, [], None, False, 0)
    assert everything.rows.tolist() == list(range(100))
    some = sample(100, [], 10, False, 0)
    assert len(some.rows) == 10


def test_weights_no_row_has_fail_clearly() -> None:
    category = Categorical(np.zeros(10, dtype=np.int64), CATEGORIES)
    with pytest.raises(DataError, match="targets"):
        sample(10, [Target("category", category, {"math": 1.0})], None, False, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 50)), min_size=1, max_size=8),
    st.integers(0, 300),
    st.booleans(),
)
def test_allocation_is_capped_and_sums_to_the_total(
    cells: list[tuple[float, int]], total: int, replacement: bool
) -> None:
    shares = np.array([s for s, _ in cells])
    available = np.array([a for _, a in cells])
    counts = allocate(shares, available, total, replacement)
    usable = (shares > 0) & (available > 0)
    assert (counts[~usable] == 0).all()
    if not usable.any():
        assert counts.sum() == 0
        return
    expected = total if replacement else min(total, int(available[usable].sum()))
    assert counts.sum() == expected
    if not replacement:
        assert (counts <= available).all()


@pytest.mark.parametrize("strategy", ["random", "difficulty", "attribute"])
@pytest.mark.parametrize("count", [1, 3, 4])
def test_slices_are_disjoint_and_cover_the_dataset(strategy: str, count: int) -> None:
    n = 1001
    rng = np.random.default_rng(0)
    values = Categorical(rng.choice(5, n), ["a", "b", "c", "d", "e"])
    difficulty = rng.uniform(1, 10, n)
    slices = cut(n, count, strategy, 0, difficulty, values, "category")
    assert len(slices) == count
    joined = np.concatenate(slices)
    assert sorted(joined.tolist()) == list(range(n))
    for part in slices:
        assert (np.diff(part) > 0).all()  # each slice keeps the dataset's order
    if strategy != "attribute":
        assert max(len(p) for p in slices) - min(len(p) for p in slices) <= 1
    if strategy == "difficulty":
        for easier, harder in itertools.pairwise(slices):
            assert difficulty[easier].max() <= difficulty[harder].min()
    if strategy == "attribute":
        groups = [set(values.codes[p].tolist()) for p in slices]
        for first, second in itertools.pairwise(groups):
            assert first.isdisjoint(second)
            assert max(first) < min(second)


def test_random_slices_depend_on_the_seed() -> None:
    assert not np.array_equal(
        cut(100, 2, "random", 1, np.zeros(100))[0], cut(100, 2, "random", 2, np.zeros(100))[0]
    )
    assert np.array_equal(
        cut(100, 2, "random", 1, np.zeros(100))[0], cut(100, 2, "random", 1, np.zeros(100))[0]
    )


def test_slicing_by_an_attribute_needs_enough_values() -> None:
    values = Categorical(np.array([0, 0, 1, 1]), ["math", "coding", "general"])
    with pytest.raises(DataError, match="at least 3 distinct values; the data has 2 \\(math, coding\\)"):
        cut(4, 3, "attribute", 0, np.zeros(4), values, "category")

"""Exact and near-duplicate removal (MinHash LSH)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from posttrain_trainer.data import dedup
from posttrain_trainer.data.dedup import (
    MinHasher,
    choose_bands,
    cluster_firsts,
    exact_duplicate_texts,
    exact_duplicates,
    near_duplicates,
    similarity,
)
from posttrain_trainer.data.text import ngrams, sequence_keys, words

VOCABULARY = [f"w{i}" for i in range(5000)]


def test_exact_duplicates_keep_the_first_occurrence() -> None:
    texts = ["Sort a list.", "sort a LIST", "Reverse a string", "sort   a list!", "reverse a string."]
    duplicate = exact_duplicates(sequence_keys(words(pa.array(texts))))
    assert duplicate.tolist() == [False, True, False, True, True]


def test_exact_duplicate_texts_match_the_full_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    pool = [" ".join(rng.choice(VOCABULARY[:50]) for _ in range(rng.randint(1, 6))) for _ in range(300)]
    texts = [rng.choice(pool) for _ in range(2000)]
    tokens = words(pa.array(texts))
    expected = exact_duplicates(sequence_keys(tokens)).tolist()
    assert exact_duplicate_texts(tokens).tolist() == expected
    # Every first half colliding: the whole keys still decide.
    monkeypatch.setattr(
        dedup,
        "sequence_keys",
        lambda t, columns=2: np.zeros((len(t), 1), np.uint64) if columns == 1 else sequence_keys(t, columns),
    )
    assert exact_duplicate_texts(tokens).tolist() == expected


def shingle_sets(texts: list[str], size: int) -> list[set[tuple[str, ...]]]:
    out = []
    for text in texts:
        tokens = text.split()
        out.append({tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)})
    return out


def test_minhash_estimates_the_jaccard_similarity() -> None:
    rng = random.Random(3)
    base = [rng.choice(VOCABULARY) for _ in range(300)]
    texts = []
    for changed in (0, 10, 40, 100, 300):
        variant = list(base)
        for position in rng.sample(range(len(base)), changed):
            variant[position] = rng.choice(VOCABULARY)
        texts.append(" ".join(variant))
    shingles = ngrams(words(pa.array(texts)), 3)
    signatures, present = MinHasher(256, seed=1).signatures(shingles)
    assert present.all()
    sets = shingle_sets(texts, 3)
    for other in range(1, len(texts)):
        truth = len(sets[0] & sets[other]) / len(sets[0] | sets[other])
        estimate = similarity(signatures, np.array([[0, other]]))[0]
        assert abs(estimate - truth) < 0.08, (other, truth, estimate)


def test_minhash_is_deterministic_for_a_seed() -> None:
    shingles = ngrams(words(pa.array(["a b c d e f g", "h i j k"])), 2)
    first, _ = MinHasher(64, seed=5).signatures(shingles)
    again, _ = MinHasher(64, seed=5).signatures(shingles)
    other, _ = MinHasher(64, seed=6).signatures(shingles)
    assert (first == again).all()
    assert not (first == other).all()


def test_texts_without_words_have_no_signature() -> None:
    shingles = ngrams(words(pa.array(["...", "a b c"])), 2)
    _, present = MinHasher(16).signatures(shingles)
    assert present.tolist() == [False, True]


@pytest.mark.parametrize(("threshold", "num_perm"), [(0.5, 128), (0.7, 128), (0.8, 128), (0.9, 256)])
def test_bands_put_the_s_curve_at_the_threshold(threshold: float, num_perm: int) -> None:
    bands, rows = choose_bands(threshold, num_perm)
    assert bands * rows <= num_perm

    def candidate(s: float) -> float:
        return float(1 - (1 - s**rows) ** bands)

    assert candidate(min(threshold + 0.15, 1.0)) > 0.9
    assert candidate(threshold - 0.3) < 0.1


def test_clusters_keep_their_first_row() -> None:
    firsts = cluster_firsts(6, np.array([[0, 2], [2, 4], [1, 5]]))
    assert firsts.tolist() == [0, 1, 0, 3, 0, 1]


def test_near_duplicates_are_found_at_the_threshold() -> None:
    rng = random.Random(7)
    texts, expected = [], []
    for _ in range(60):
        base = [rng.choice(VOCABULARY) for _ in range(120)]
        texts.append(" ".join(base))
        expected.append(False)
        # Two substitutions replace 10 of 116 five-word shingles: Jaccard 106/126 = 0.84.
        near = list(base)
        for position in (30, 90):
            near[position] = rng.choice(VOCABULARY)
        texts.append(" ".join(near))
        expected.append(True)
        # Twenty scattered substitutions leave a Jaccard near 0.3: a different text.
        far = list(base)
        for position in rng.sample(range(len(base)), 20):
            far[position] = rng.choice(VOCABULARY)
        texts.append(" ".join(far))
        expected.append(False)
    order = list(range(len(texts)))
    shingles = ngrams(words(pa.array([texts[i] for i in order])), 5)
    duplicate, pairs = near_duplicates(shingles, threshold=0.7, num_perm=128, seed=0)
    assert duplicate.tolist() == expected
    assert all(pair[0] < pair[1] for pair in pairs.tolist())
    sets = shingle_sets(texts, 5)
    for first, second in pairs.tolist():
        truth = len(sets[first] & sets[second]) / len(sets[first] | sets[second])
        assert truth > 0.6


def test_a_stricter_threshold_keeps_the_near_copies() -> None:
    base = " ".join(f"w{i}" for i in range(100))
    near = base.replace("w50", "changed")
    shingles = ngrams(words(pa.array([base, near])), 5)
    loose, _ = near_duplicates(shingles, threshold=0.8, num_perm=128)
    strict, _ = near_duplicates(shingles, threshold=0.99, num_perm=128)
    assert loose.tolist() == [False, True]
    assert strict.tolist() == [False, False]

"""Duplicate removal: exact duplicates of the normalised text, and near-duplicates by MinHash LSH.

Inputs: the word hashes of each row's text (`text.words`: lower case, ASCII punctuation and spacing
ignored). Outputs: a flag per row, True for a duplicate of an earlier row; the first occurrence
(in source and line order) is always the one kept.

- Exact: rows with the same normalised word sequence (a 128-bit key of it).
- Near: MinHash signatures over word n-gram shingles (`num_perm` hash functions), LSH banding to find
  candidate pairs, and each candidate pair verified by its estimated Jaccard similarity (the share of
  equal signature entries) against the threshold. Verified pairs join clusters; each cluster keeps
  its first row. The bands x rows split minimises the false-positive and false-negative areas of the
  banding's S-curve around the threshold, weighted 1:9 since candidates are verified anyway.
- Hash functions: h_i(x) = (a_i * x + b_i) mod 2^64 >> 32 on 32-bit shingle keys with random 64-bit
  a_i (odd) and b_i from the seed — Dietzfelbinger's multiply-add-shift family, strongly universal,
  and cheap enough to evaluate for every shingle and every permutation in vectorised numpy.

References: Broder, "On the resemblance and containment of documents" (1997); Leskovec, Rajaraman
and Ullman, "Mining of Massive Datasets", ch. 3 (banding); Dietzfelbinger, "Universal hashing and
k-wise independent random variables via integer arithmetic without primes" (1996); Luo et al. 2024,
"Arena Learning" (MinHash LSH dedup of training data).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from posttrain_trainer.data.text import Hashes, mix64, sequence_keys

EMPTY = np.uint32(0xFFFFFFFF)
# Shingles per block of the signature computation: the working buffer stays in cache.
BLOCK_SHINGLES = 1 << 17
# Candidate pairs verified per step (each compares two signature rows).
VERIFY_BLOCK = 1 << 16


def exact_duplicates(keys: np.ndarray) -> np.ndarray:
    """True for each row whose key (a row of `keys`, rows x 2 uint64) appeared on an earlier row."""
    if not len(keys):
        return np.zeros(0, dtype=bool)
    # lexsort is stable: equal keys stay in row order, so each run starts with its first occurrence.
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    ordered = keys[order]
    repeats = np.zeros(len(order), dtype=bool)
    repeats[1:] = (ordered[1:] == ordered[:-1]).all(axis=1)
    duplicate = np.zeros(len(keys), dtype=bool)
    duplicate[order[repeats]] = True
    return duplicate


def exact_duplicate_texts(tokens: Hashes) -> np.ndarray:
    """True for each text whose normalised word sequence appeared in an earlier text.

    The same answer as `exact_duplicates(sequence_keys(tokens))` for less work: every text gets the
    first 64-bit half of its key, and only texts whose half repeats get the whole 128-bit key.
    """
    half = sequence_keys(tokens, columns=1)[:, 0]
    order = np.argsort(half, kind="stable")
    ordered = half[order]
    repeated = np.zeros(len(order), dtype=bool)
    same = ordered[1:] == ordered[:-1]
    repeated[1:] |= same
    repeated[:-1] |= same
    candidates = np.sort(order[repeated])
    duplicate = np.zeros(len(half), dtype=bool)
    if len(candidates):
        duplicate[candidates] = exact_duplicates(sequence_keys(tokens.select(candidates)))
    return duplicate


FALSE_POSITIVE_WEIGHT = 0.1
"""Weight of the false-positive area when choosing bands (false negatives weigh the rest): every
candidate pair is verified against the threshold, so a false positive costs one comparison while a
false negative keeps a duplicate."""


def choose_bands(threshold: float, num_perm: int, grid: int = 512) -> tuple[int, int]:
    """(bands, rows per band) with bands x rows <= num_perm, best for the threshold.

    Best minimises the weighted sum of the candidate probability's false-positive area below the threshold and
    false-negative area above it.
    """
    best: tuple[float, int, int] | None = None
    s = np.linspace(0.0, 1.0, grid)
    below, above = s < threshold, s >= threshold
    step = s[1] - s[0]
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            candidate = 1.0 - (1.0 - s**rows) ** bands
            error = (
                FALSE_POSITIVE_WEIGHT * candidate[below].sum()
                + (1.0 - FALSE_POSITIVE_WEIGHT) * (1.0 - candidate[above]).sum()
            ) * step
            if best is None or error < best[0]:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


class MinHasher:
    """MinHash signatures with `num_perm` multiply-add-shift hash functions drawn from `seed`."""

    def __init__(self, num_perm: int, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 0x5EED])
        self.num_perm = num_perm
        self.a = rng.integers(
            0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True
        ) | np.uint64(1)
        self.b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)

    def signatures(self, shingles: Hashes) -> tuple[np.ndarray, np.ndarray]:
        """(signatures: texts x num_perm uint32, has_shingles: bool per text).

        A text without shingles gets an all-ones signature and `has_shingles` False.
        """
        counts = shingles.counts()
        n = len(counts)
        signatures = np.full((n, self.num_perm), EMPTY, dtype=np.uint32)
        present = counts > 0
        texts = np.flatnonzero(present)
        if not len(texts):
            return signatures, present
        # The top 32 bits of the mixed shingle hash are the key: the family is universal on w-bit
        # keys with 2w-bit arithmetic.
        keys = shingles.values >> np.uint64(32)
        starts = shingles.offsets[:-1][texts]
        ends = shingles.offsets[1:][texts]
        size = min(len(keys), BLOCK_SHINGLES) + int(counts.max())

        def fill(permutations: range) -> None:
            buffer = np.empty(size, dtype=np.uint64)
            first = 0
            while first < len(texts):
                last = int(np.searchsorted(ends, starts[first] + BLOCK_SHINGLES, side="right"))
                last = min(max(last, first + 1), len(texts))
                low, high = int(starts[first]), int(ends[last - 1])
                block = keys[low:high]
                work = buffer[: high - low]
                local = starts[first:last] - low
                rows = texts[first:last]
                for p in permutations:
                    np.multiply(block, self.a[p], out=work)
                    np.add(work, self.b[p], out=work)
                    # The shift is monotonic: the minimum's top half is the top halves' minimum.
                    signatures[rows, p] = np.minimum.reduceat(work, local) >> np.uint64(32)
                first = last

        # numpy releases the GIL in these loops: each thread takes half of the permutations.
        half = self.num_perm // 2
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = [pool.submit(fill, range(0, half)), pool.submit(fill, range(half, self.num_perm))]
            for future in done:
                future.result()
        return signatures, present


def _band_keys(band: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of a band (rows x r uint32)."""
    key = np.zeros(len(band), dtype=np.uint64)
    for column in range(band.shape[1]):
        key = mix64(key ^ band[:, column].astype(np.uint64))
    return key


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """The LSH bucket of each signature in each band: bands x texts uint64 (a band's keys contiguous)."""
    keys = np.empty((bands, len(signatures)), dtype=np.uint64)
    for band in range(bands):
        keys[band] = _band_keys(signatures[:, band * rows : (band + 1) * rows])
    return keys


def pairs_sharing_a_key(bands: Iterable[np.ndarray], count: int) -> np.ndarray:
    """(first, other) index pairs with the same key in one of the bands (each: a key per text), first < other.

    `first` is the bucket's earliest row. Linking each row to its bucket's first row keeps the pair count
    linear in the rows, whatever a bucket's size.
    """
    pairs = []
    positions = np.arange(count, dtype=np.int64)
    for keys in bands:
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        opens = np.ones(len(order), dtype=bool)
        opens[1:] = sorted_keys[1:] != sorted_keys[:-1]
        group_start = np.maximum.accumulate(np.where(opens, positions, 0))
        members = ~opens
        if members.any():
            pairs.append(np.stack([order[group_start[members]], order[members]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    joined = np.concatenate(pairs)
    encoded = np.unique(joined[:, 0] * count + joined[:, 1])
    return np.stack([encoded // count, encoded % count], axis=1)


def similarity(signatures: np.ndarray | SignatureFile, pairs: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of each pair: the share of equal signature entries."""
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), VERIFY_BLOCK):
        chunk = pairs[start : start + VERIFY_BLOCK]
        out[start : start + len(chunk)] = (signatures[chunk[:, 0]] == signatures[chunk[:, 1]]).mean(axis=1)
    return out


def cluster_firsts(n: int, pairs: np.ndarray) -> np.ndarray:
    """The smallest row index of each row's connected cluster (pairs are edges)."""
    label = np.arange(n, dtype=np.int64)
    if not len(pairs):
        return label
    left, right = pairs[:, 0], pairs[:, 1]
    while True:
        updated = label.copy()
        np.minimum.at(updated, right, label[left])
        np.minimum.at(updated, left, label[right])
        updated = updated[updated]  # jump to the label's label: halves the remaining path
        if np.array_equal(updated, label):
            return label
        label = updated


def near_duplicates(
    shingles: Hashes, threshold: float, num_perm: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate flag per text, verified pairs) for near-duplicates at `threshold` or above."""
    signatures, present = MinHasher(num_perm, seed).signatures(shingles)
    bands, rows = choose_bands(threshold, num_perm)
    texts = np.flatnonzero(present)
    keys = band_keys(signatures, bands, rows)
    return _duplicates(signatures, (band[texts] for band in keys), present, threshold)


def _duplicates(
    signatures: np.ndarray | SignatureFile, bands: Iterable[np.ndarray], present: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate flags and verified pairs of texts, given their signatures and band keys.

    `bands` gives each band's keys of the present texts, one band at a time; `signatures` may be a
    `SignatureFile`: only the rows of candidate pairs are read.
    """
    texts = np.flatnonzero(present)
    pairs = pairs_sharing_a_key(bands, len(texts))
    verified = pairs[similarity(signatures, texts[pairs]) >= threshold]
    firsts = cluster_firsts(len(texts), verified)
    duplicate = np.zeros(len(present), dtype=bool)
    duplicate[texts] = firsts != np.arange(len(texts))
    return duplicate, texts[verified]


class SignatureStore:
    """Near-dedup a block of texts at a time: band keys in memory, the signatures in a file.

    Each text costs 8 bytes per band in memory (bands x texts per block) (`bands` of `choose_bands`: 14 at threshold 0.8 and 128
    permutations) and 4 bytes per permutation on disk; `near_duplicates` over any subset of the texts
    added gives the same answer as over that subset's shingles at once.
    """

    def __init__(self, folder: Path, threshold: float, num_perm: int, seed: int = 0) -> None:
        self.hasher = MinHasher(num_perm, seed)
        self.threshold = threshold
        self.bands, self.rows = choose_bands(threshold, num_perm)
        self.path = folder / "minhash-signatures.u32"
        self._file = self.path.open("wb")
        self._keys: list[np.ndarray] = []
        self._present: list[np.ndarray] = []

    def add(self, shingles: Hashes) -> None:
        """Hash the next texts (their shingles)."""
        self.append(*self.hasher.signatures(shingles))

    def append(self, signatures: np.ndarray, present: np.ndarray) -> None:
        """Keep the next texts' signatures (as `self.hasher.signatures` gives them)."""
        self._file.write(signatures.tobytes())
        self._keys.append(band_keys(signatures, self.bands, self.rows))
        self._present.append(present)

    def near_duplicates(self, texts: np.ndarray) -> np.ndarray:
        """True for each of the given texts (ascending indices in the order added) that near-duplicates an earlier one."""
        self._file.close()
        present = np.concatenate(self._present) if self._present else np.zeros(0, bool)
        chosen = np.zeros(len(present), dtype=bool)
        chosen[texts] = present[texts]
        if not chosen.any():
            return np.zeros(len(texts), dtype=bool)
        signatures = SignatureFile(self.path, self.hasher.num_perm)
        rows = np.flatnonzero(chosen)
        # One band's keys at a time: 16 bytes a text besides the 8 per band that are kept.
        bands = (np.concatenate([keys[band] for keys in self._keys])[rows] for band in range(self.bands))
        duplicate, _ = _duplicates(signatures, bands, chosen, self.threshold)
        flags: np.ndarray = duplicate[texts]
        return flags


class SignatureFile:
    """Rows of a texts x permutations uint32 matrix in a file, read on demand.

    Reading (rather than mapping the file) keeps the address space small: a memory map of 10M rows'
    signatures alone would take 5 GB of it, which an address-space limit counts in full.
    """

    def __init__(self, path: Path, num_perm: int) -> None:
        self.path = path
        self.num_perm = num_perm

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), self.num_perm), dtype=np.uint32)
        width = 4 * self.num_perm
        with self.path.open("rb", buffering=0) as stream:
            descriptor = stream.fileno()
            for position, row in enumerate(unique.tolist()):
                data = os.pread(descriptor, width, row * width)
                if len(data) != width:
                    raise EOFError(f"{self.path}: no signature for text {row}")
                out[position] = np.frombuffer(data, dtype=np.uint32)
        rows_out: np.ndarray = out[inverse]
        return rows_out

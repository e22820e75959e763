"""Columnar text primitives of the data workload: normalisation, word counts, word and n-gram hashes.

Every function takes a whole Arrow string column and works on its bytes with numpy, so the cost is a
few vectorised passes over the data instead of Python code per row.

- `normalise`: lower case (Unicode), and every ASCII character that is not a letter or digit becomes a
  space, so case, punctuation and spacing do not tell two texts apart.
- `words`: the maximal runs of non-space bytes of the normalised text, each hashed to 64 bits from its
  bytes alone (8-byte chunks absorbed with the SplitMix64 mixer), so a word hashes the same in any
  corpus: the benchmark prompts of decontamination and the rows meet on equal terms.
- `ngrams`: the hash of each run of n consecutive words inside one text; a text with fewer words can
  count as one run (MinHash shingles, whole short benchmark prompts). The hash of a whole k-word text
  equals the hash of the same k words as a k-gram of a longer text.

Inputs are Arrow string arrays (any chunking); outputs are numpy arrays with per-text offsets.
Non-ASCII punctuation and whitespace stay inside words, and text without spaces (Chinese, Japanese)
is one word per run: a documented simplification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SPACE = 32
# Bytes per block of texts: the temporaries (up to ~32 bytes per text byte when hashing) stay small.
BLOCK_BYTES = 1 << 20

_GRAM_BASE = np.uint64(0x9E3779B97F4A7C15)  # the golden-ratio constant
_LENGTH_SALT = 0xD6E8FEB86659FD93
_SECOND_BASE = np.uint64(0xC2B2AE3D27D4EB4F)


def _ascii_table() -> np.ndarray:
    """Byte -> byte after normalisation: ASCII letters and digits kept, other ASCII bytes -> space."""
    table = np.arange(256, dtype=np.uint8)
    for byte in range(128):
        if not chr(byte).isalnum():
            table[byte] = SPACE
    return table


_NORMALISE = _ascii_table()
# The same table for byte pairs (128 KiB, fits in cache): half as many lookups over the text.
_PAIRS = np.arange(1 << 16, dtype=np.uint16)
_NORMALISE_PAIRS = (_NORMALISE.astype(np.uint16)[_PAIRS >> 8] << 8) | _NORMALISE.astype(np.uint16)[
    _PAIRS & 255
]
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def large_strings(array: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """One contiguous `large_string` array (64-bit offsets: no 2 GiB limit per column)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if array.type != pa.large_string():
        array = array.cast(pa.large_string())
    return array


def string_buffers(array: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of a large_string array: text i is `data[offsets[i]:offsets[i + 1]]`."""
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    return offsets, data


def mix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: spreads every input bit over the whole 64-bit output."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _salts(lengths: np.ndarray) -> np.ndarray:
    """A length-dependent salt, so runs of different lengths never share a hash by construction."""
    return lengths.astype(np.uint64) * np.uint64(_LENGTH_SALT)


def _powers(base: np.uint64, count: int) -> np.ndarray:
    """base^0 ... base^(count-1) modulo 2^64."""
    table = np.full(max(count, 1), base, dtype=np.uint64)
    table[0] = 1
    return np.cumprod(table, dtype=np.uint64)


def segment_sum(values: np.ndarray, offsets: np.ndarray, dtype: Any = None) -> np.ndarray:
    """Sum of each segment `values[offsets[i]:offsets[i + 1]]` (0 for an empty one).

    `offsets` starts at 0 and ends at `len(values)`.
    """
    lengths = np.diff(offsets)
    out = np.zeros(len(lengths), dtype=dtype or values.dtype)
    nonempty = lengths > 0
    if values.size:
        # reduceat over the starts of non-empty segments only: each then ends where the next starts.
        out[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty], dtype=out.dtype)
    return out


def normalise(texts: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """Lower-cased text with every ASCII non-alphanumeric character replaced by a space.

    Only ASCII bytes change, so the UTF-8 stays valid and the offsets stay the same.
    """
    lowered = large_strings(pc.utf8_lower(large_strings(texts)))
    buffers = lowered.buffers()
    _, data = string_buffers(lowered)
    even = data if len(data) % 2 == 0 else np.concatenate([data, np.zeros(1, np.uint8)])
    mapped = pa.py_buffer(_NORMALISE_PAIRS[even.view(np.uint16)].view(np.uint8)[: len(data)])
    return pa.Array.from_buffers(
        pa.large_string(), len(lowered), [buffers[0], buffers[1], mapped], offset=lowered.offset
    )


def _blocks(offsets: np.ndarray, size: int = BLOCK_BYTES) -> list[tuple[int, int]]:
    """Runs of whole texts [first, last) of about `size` bytes (a longer text is a block alone).

    Small temporaries then stay in cache instead of costing a fresh allocation per pass.
    """
    blocks = []
    first, n = 0, len(offsets) - 1
    while first < n:
        last = int(np.searchsorted(offsets, offsets[first] + size, side="right")) - 1
        last = min(max(last, first + 1), n)
        blocks.append((first, last))
        first = last
    return blocks


def word_counts(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Words of each text, separated by ASCII whitespace or control characters (0 for null or blank)."""
    array = large_strings(texts)
    offsets, data = string_buffers(array)
    counts = np.zeros(len(array), dtype=np.int64)
    for first, last in _blocks(offsets):
        start, end = int(offsets[first]), int(offsets[last])
        if end == start:
            continue
        local = offsets[first : last + 1] - start
        blank = data[start:end] <= SPACE
        # A word starts at a non-blank byte that follows a blank one or opens its text.
        opens = np.empty_like(blank)
        opens[0] = True
        opens[1:] = blank[:-1]
        opens[local[:-1][np.diff(local) > 0]] = True
        opens &= ~blank
        counts[first:last] = np.diff(np.searchsorted(np.flatnonzero(opens), local))
    return counts


@dataclass
class Hashes:
    """A sequence of 64-bit hashes per text: text i owns `values[offsets[i]:offsets[i + 1]]`."""

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        """How many hashes each text has."""
        return np.diff(self.offsets)

    def owners(self) -> np.ndarray:
        """The text of each hash."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.counts())

    def select(self, texts: np.ndarray) -> Hashes:
        """The sequences of the given texts, in that order."""
        counts = self.counts()[texts]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        positions = np.repeat(self.offsets[:-1][texts] - offsets[:-1], counts) + np.arange(
            offsets[-1], dtype=np.int64
        )
        return Hashes(self.values[positions], offsets)


_TAIL_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _hash_words(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash of the bytes of each word `data[starts[i]:ends[i]]`.

    Each word is read as little-endian 8-byte chunks (zero-padded) absorbed into a state that starts
    from its length: state = mix64(state ^ chunk). One pass per 8 bytes of the longest word, over
    the words still that long, so short words cost one gather and one mix.
    """
    lengths = (ends - starts).astype(np.int64)
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    # Element i of this view is the 8 bytes from byte i (unaligned loads): one gather per chunk.
    chunks = np.ndarray(shape=(len(data),), dtype="<u8", buffer=padded, strides=(1,))
    chunk = chunks[starts]
    chunk &= _TAIL_MASKS[np.minimum(lengths, 8)]
    state = _salts(lengths)
    state ^= chunk
    state = mix64(state)
    offset = 8
    active = np.flatnonzero(lengths > offset)
    while len(active):
        chunk = chunks[starts[active] + offset]
        chunk &= _TAIL_MASKS[np.minimum(lengths[active] - offset, 8)]
        state[active] = mix64(state[active] ^ chunk)
        offset += 8
        active = active[lengths[active] > offset]
    return state


def words(texts: pa.Array | pa.ChunkedArray) -> Hashes:
    """The hashes of the words of each normalised text."""
    array = normalise(texts)
    offsets, data = string_buffers(array)
    n = len(array)
    counts = np.zeros(n, dtype=np.int64)
    values: list[np.ndarray] = []
    for first, last in _blocks(offsets):
        start, end = int(offsets[first]), int(offsets[last])
        if end == start:
            continue
        block = data[start:end]
        word = block != SPACE
        local = offsets[first : last + 1] - start
        nonempty = np.diff(local) > 0
        opens = np.zeros(len(block), dtype=bool)
        opens[local[:-1][nonempty]] = True
        closes = np.zeros(len(block), dtype=bool)
        closes[local[1:][nonempty] - 1] = True
        previous = np.empty_like(word)
        previous[0] = False
        previous[1:] = word[:-1]
        following = np.empty_like(word)
        following[-1] = False
        following[:-1] = word[1:]
        starts = np.flatnonzero(word & (opens | ~previous))
        ends = np.flatnonzero(word & (closes | ~following)) + 1
        counts[first:last] = np.diff(np.searchsorted(starts, local))
        if len(starts):
            values.append(_hash_words(block, starts, ends))
    out = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return Hashes(np.concatenate(values) if values else np.empty(0, np.uint64), out)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of `range(starts[i], starts[i] + lengths[i])`."""
    total = int(lengths.sum())
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(total, dtype=np.int64)


def ngrams(tokens: Hashes, n: int, whole_if_shorter: bool = True) -> Hashes:
    """The hash of every run of `n` consecutive words within each text.

    A text with 1 to n-1 words gives one hash of all its words when `whole_if_shorter`, none otherwise.
    """
    counts = tokens.counts()
    grams = np.where(counts >= n, counts - n + 1, 0)
    short = (counts > 0) & (counts < n) & whole_if_shorter
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(grams + short, out=offsets[1:])
    values = np.empty(int(offsets[-1]), dtype=np.uint64)
    salt = _salts(np.array([n]))[0]
    long_texts = np.flatnonzero(grams)
    if len(long_texts):
        span = len(tokens.values) - n + 1
        rolling = tokens.values[:span].copy()
        for j in range(1, n):
            rolling *= _GRAM_BASE
            rolling += tokens.values[j : span + j]
        # Only the runs that start and end inside one text: those starting at its first c-n+1 words.
        slots = _ranges(offsets[long_texts], grams[long_texts])
        shift = np.repeat(tokens.offsets[long_texts] - offsets[long_texts], grams[long_texts])
        values[slots] = mix64(rolling[slots + shift] ^ salt)
    if short.any():
        texts = np.flatnonzero(short)
        runs = tokens.select(texts)
        lengths = runs.counts()
        position = np.arange(len(runs.values), dtype=np.int64) - np.repeat(runs.offsets[:-1], lengths)
        exponents = np.repeat(lengths - 1, lengths) - position
        whole = segment_sum(runs.values * _powers(_GRAM_BASE, n)[exponents], runs.offsets)
        values[offsets[texts]] = mix64(whole ^ _salts(lengths))
    return Hashes(values, offsets)


def sequence_keys(tokens: Hashes, columns: int = 2) -> np.ndarray:
    """A 128-bit key per text (two uint64 columns) from its whole word sequence.

    Equal keys mean equal normalised texts, short of a 2^-128 accident.
    """
    counts = tokens.counts()
    position = np.arange(len(tokens.values), dtype=np.int64) - np.repeat(tokens.offsets[:-1], counts)
    longest = int(counts.max()) if len(counts) else 0
    weights = _powers(_GRAM_BASE, longest)[position]
    salt = _salts(counts)
    keys = np.empty((len(tokens), columns), dtype=np.uint64)
    # Word j weighted by base^j (mod 2^64), over the word hashes and over a remix of them.
    keys[:, 0] = mix64(segment_sum(tokens.values * weights, tokens.offsets) ^ salt)
    if columns > 1:
        remixed = mix64(tokens.values ^ _SECOND_BASE)
        keys[:, 1] = mix64(segment_sum(remixed * weights, tokens.offsets) ^ salt)
    return keys


@dataclass
class ByteProfile:
    """What each text holds, from one scan of its bytes: a cheap prefilter before slower regexes."""

    highest: np.ndarray
    """The largest byte (>= 0xE3: may hold CJK characters; < 0x80: ASCII only)."""
    control: np.ndarray
    """Holds a control character other than tab, newline and carriage return."""
    replacement: np.ndarray
    """Holds U+FFFD, the replacement character of a failed decoding."""
    backtick: np.ndarray
    """Holds a backtick (code)."""


def _owners(local: np.ndarray, positions: np.ndarray, first: int) -> np.ndarray:
    """The texts (numbered from `first`) holding the given byte positions of a block."""
    owners: np.ndarray = first + np.searchsorted(local, positions, side="right") - 1
    return owners


def byte_profile(texts: pa.Array | pa.ChunkedArray) -> ByteProfile:
    """Scan every text's bytes once (see `ByteProfile`); empty texts get zeros."""
    array = large_strings(texts)
    offsets, data = string_buffers(array)
    n = len(array)
    profile = ByteProfile(np.zeros(n, np.uint8), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))
    for first, last in _blocks(offsets):
        start, end = int(offsets[first]), int(offsets[last])
        local = offsets[first : last + 1] - start
        nonempty = np.flatnonzero(np.diff(local) > 0)
        if not len(nonempty):
            continue
        block = data[start:end]
        profile.highest[first + nonempty] = np.maximum.reduceat(block, local[:-1][nonempty])
        # UTF-8 continuation and lead bytes are >= 0x80, so a byte < 0x20 is a control character.
        control = np.flatnonzero((block < 32) & (block != 9) & (block != 10) & (block != 13))
        # Marked by index: an array over all texts per block would make the scan quadratic.
        profile.control[_owners(local, control, first)] = True
        lead = np.flatnonzero(block[:-2] == 0xEF)
        lead = lead[(block[lead + 1] == 0xBF) & (block[lead + 2] == 0xBD)]
        profile.replacement[_owners(local, lead, first)] = True
        profile.backtick[_owners(local, np.flatnonzero(block == 0x60), first)] = True
    return profile


def grams_at(values: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """The n-gram hash (as `ngrams` computes it) of the n words from each start position."""
    rolling = values[starts].copy()
    for j in range(1, n):
        rolling *= _GRAM_BASE
        rolling += values[starts + j]
    return mix64(rolling ^ _salts(np.array([n]))[0])


@dataclass
class PhraseTable:
    """Phrases (runs of normalised words) to find in texts by hash.

    One pass over the words finds where a phrase may start (its first word); only there are the phrases of
    each length hashed and looked up. A phrase listed twice keeps its first number.
    """

    by_length: dict[int, tuple[HashSet, np.ndarray, HashSet]]
    """Words per phrase -> (the phrase hashes, the phrase number of each member, the first words)."""
    first_words: HashSet
    """The first words of all phrases."""

    @classmethod
    def build(cls, phrases: list[str]) -> PhraseTable:
        """Index the phrases (numbered in list order; those without words are skipped)."""
        tokens = words(pa.array(phrases, pa.large_string()))
        counts = tokens.counts()
        by_length: dict[int, tuple[HashSet, np.ndarray, HashSet]] = {}
        for length in np.unique(counts[counts > 0]).tolist():
            numbers = np.flatnonzero(counts == length)
            chosen = tokens.select(numbers)
            hashes = chosen.values if length == 1 else ngrams(chosen, length).values
            # Stable sort by hash, then keep the first (lowest-numbered) phrase of each hash.
            order = np.argsort(hashes, kind="stable")
            hashes, numbers = hashes[order], numbers[order]
            first = np.ones(len(hashes), dtype=bool)
            first[1:] = hashes[1:] != hashes[:-1]
            leading = HashSet(chosen.values[chosen.offsets[:-1]])
            by_length[length] = (HashSet(hashes[first]), numbers[first], leading)
        present = counts > 0
        return cls(by_length, HashSet(tokens.values[tokens.offsets[:-1][present]]))

    def hits(self, tokens: Hashes) -> tuple[np.ndarray, np.ndarray]:
        """(text, phrase number) of every occurrence of a phrase in the texts."""
        values = tokens.values
        candidates = np.flatnonzero(self.first_words.contains(values))
        owner = np.searchsorted(tokens.offsets, candidates, side="right") - 1
        ends = tokens.offsets[owner + 1]
        texts: list[np.ndarray] = []
        numbers: list[np.ndarray] = []
        for length, (table, phrase, leading) in self.by_length.items():
            if length == 1:
                index = table.index(values[candidates])
                keep = index >= 0
                texts.append(owner[keep])
                numbers.append(phrase[index[keep]])
                continue
            # A run must start with the phrase's first word and stay inside one text.
            fits = leading.contains(values[candidates]) & (candidates + length <= ends)
            starts = candidates[fits]
            index = table.index(grams_at(values, starts, length))
            keep = index >= 0
            texts.append(owner[fits][keep])
            numbers.append(phrase[index[keep]])
        if not texts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(texts), np.concatenate(numbers)


class HashSet:
    """Lookups of 64-bit hashes in a set.

    A small set is a direct-mapped table indexed by a bit field of the hash, chosen so that no two members
    share a slot (the hashes are uniformly mixed, so a few tries find one): one gather and one comparison per
    value. A large set is binary-searched.
    """

    SMALL = 1 << 14

    def __init__(self, members: np.ndarray) -> None:
        self.members = np.unique(members)
        self.slots: np.ndarray | None = None
        self.positions = np.empty(0, np.int64)
        self.shift = np.uint64(0)
        self.mask = np.uint64(0)
        # Empty slots hold a value that is not a member; looking that value up must find nothing.
        self.vacant = np.uint64(
            np.setdiff1d(np.arange(len(self.members) + 1, dtype=np.uint64), self.members)[0]
        )
        if not 0 < len(self.members) <= self.SMALL:
            return
        bits = max(8, int(np.ceil(np.log2(len(self.members)))) + 4)
        while self.slots is None:
            mask = np.uint64((1 << bits) - 1)
            for shift in range(0, 64 - bits + 1, 4):
                slot = (self.members >> np.uint64(shift)) & mask
                if len(np.unique(slot)) == len(slot):
                    self.slots = np.full(1 << bits, self.vacant, dtype=np.uint64)
                    self.slots[slot] = self.members
                    self.positions = np.full(1 << bits, -1, dtype=np.int64)
                    self.positions[slot] = np.arange(len(self.members))
                    self.shift, self.mask = np.uint64(shift), mask
                    break
            bits += 1

    def index(self, values: np.ndarray) -> np.ndarray:
        """Each value's position in the sorted members, -1 where it is not a member."""
        if not len(self.members):
            return np.full(len(values), -1, dtype=np.int64)
        if self.slots is None:
            index = np.minimum(np.searchsorted(self.members, values), len(self.members) - 1)
            return np.where(self.members[index] == values, index, -1)
        slot = (values >> self.shift) & self.mask
        found = (self.slots[slot] == values) & (values != self.vacant)
        return np.where(found, self.positions[slot], -1)

    def contains(self, values: np.ndarray) -> np.ndarray:
        """True for each value in the set."""
        found: np.ndarray = self.index(values) >= 0
        return found

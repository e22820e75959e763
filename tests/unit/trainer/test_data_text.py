"""Columnar text primitives: normalisation, word counts, word and n-gram hashes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain_trainer.data.text import (
    HashSet,
    PhraseTable,
    byte_profile,
    ngrams,
    normalise,
    sequence_keys,
    word_counts,
    words,
)


def test_normalise_lowers_and_blanks_ascii_punctuation() -> None:
    out = normalise(pa.array(["Hello, World!", "Ünïcode—Dash", None]))
    assert out.to_pylist() == ["hello  world ", "ünïcode—dash", None]


def test_word_counts_split_on_whitespace() -> None:
    texts = ["a  b\tc\nd", "", "   ", "one", None, "trailing  "]
    assert word_counts(pa.array(texts)).tolist() == [4, 0, 0, 1, 0, 1]


def test_a_word_hashes_the_same_in_any_text_and_corpus() -> None:
    first = words(pa.array(["The cat, the HAT.", "x"]))
    second = words(pa.array(["a long preamble so offsets differ", "hat cat"]))
    assert first.counts().tolist() == [4, 1]
    cat, hat = first.values[1], first.values[3]
    assert first.values[0] == first.values[2]  # "the" twice
    assert second.values[-2:].tolist() == [hat, cat]
    assert len(set(first.values.tolist())) == 4


def test_long_words_hash_by_every_byte() -> None:
    base = "abcdefghijklmnopqrstuvwxyz0123456789"
    variants = [base, base + "x", base[:-1] + "y", base[:8], base[:16], base[:9]]
    hashed = words(pa.array([" ".join(variants)])).values
    assert len(set(hashed.tolist())) == len(variants)


def test_ngrams_stay_inside_each_text() -> None:
    tokens = words(pa.array(["a b c d", "e f", "", "g"]))
    grams = ngrams(tokens, 3, whole_if_shorter=False)
    assert grams.counts().tolist() == [2, 0, 0, 0]
    whole = ngrams(tokens, 3)
    assert whole.counts().tolist() == [2, 1, 0, 1]


def test_a_whole_short_text_hashes_like_the_same_run_in_a_longer_text() -> None:
    tokens = words(pa.array(["why is the sky blue", "so tell me why is the sky blue today"]))
    short = ngrams(tokens.select(np.array([0])), 8).values
    inside = ngrams(tokens.select(np.array([1])), 5, whole_if_shorter=False).values
    assert short[0] in set(inside.tolist())


def test_sequence_keys_ignore_case_punctuation_and_spacing() -> None:
    keys = sequence_keys(
        words(pa.array(["Hello,   world!", "hello world", "world hello", "hello world again"]))
    )
    assert (keys[0] == keys[1]).all()
    assert not (keys[1] == keys[2]).all()
    assert not (keys[1] == keys[3]).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab ,.\n\tZé"), max_size=30), max_size=20))
def test_words_match_a_plain_python_split(texts: list[str]) -> None:
    tokens = words(pa.array(texts, pa.large_string()))
    expected = []
    for text in texts:
        cleaned = "".join(c if (not c.isascii() or c.isalnum()) else " " for c in text.lower())
        expected.append(len(cleaned.split(" ")) - cleaned.split(" ").count(""))
    assert tokens.counts().tolist() == expected
    assert word_counts(pa.array(texts)).tolist() == [len(t.split()) for t in texts]


def test_byte_profile_finds_control_replacement_cjk_and_backticks() -> None:
    texts = ["plain text\twith tab\r\n", "bell\x07", "bad \ufffd decode", "中文", "use `code`", "", None]
    profile = byte_profile(pa.array(texts))
    assert profile.control.tolist() == [False, True, False, False, False, False, False]
    assert profile.replacement.tolist() == [False, False, True, False, False, False, False]
    assert profile.backtick.tolist() == [False, False, False, False, True, False, False]
    assert (profile.highest >= 0xE3).tolist() == [False, False, True, True, False, False, False]


@pytest.mark.parametrize("size", [1, 50, HashSet.SMALL + 10])
def test_hash_sets_find_exactly_their_members(size: int) -> None:
    rng = np.random.default_rng(size)
    members = rng.integers(0, 2**63, size, dtype=np.uint64)
    members[0] = 0  # the value an empty slot could be mistaken for
    others = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    values = np.concatenate([members, others, np.array([1, 2, 3], dtype=np.uint64)])
    index = HashSet(members).index(values)
    position = {value: i for i, value in enumerate(np.unique(members).tolist())}
    expected = [position.get(v, -1) for v in values.tolist()]
    assert index.tolist() == expected


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8), min_size=1, max_size=6),
    st.lists(st.lists(st.sampled_from(["a", "b", "c", "x"]), min_size=1, max_size=3), min_size=1, max_size=5),
)
def test_phrase_tables_find_every_occurrence(texts: list[list[str]], phrases: list[list[str]]) -> None:
    table = PhraseTable.build([" ".join(p) for p in phrases])
    rows, numbers = table.hits(words(pa.array([" ".join(t) for t in texts], pa.large_string())))
    found = sorted(zip(rows.tolist(), numbers.tolist(), strict=True))
    expected = []
    for row, tokens in enumerate(texts):
        for number, phrase in enumerate(phrases):
            if phrase in phrases[:number]:
                continue  # a repeated phrase counts for its first number
            for start in range(len(tokens) - len(phrase) + 1):
                if tokens[start : start + len(phrase)] == phrase:
                    expected.append((row, number))
    assert found == sorted(expected)

"""Elimination rules of Evol-Instruct and the failure signals of Auto Evol-Instruct."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from posttrain.api.evol import Elimination
from posttrain_trainer.evol import elimination

ALL_ON = Elimination()


def test_refusal_needs_sorry_and_few_words() -> None:
    assert elimination.is_refusal("Sorry, I can't help with that.")
    assert elimination.is_refusal("I'm SORRY but no.")
    assert not elimination.is_refusal("I cannot help with that.")
    long_answer = "Sorry for the wait. " + "word " * 80
    assert not elimination.is_refusal(long_answer)
    assert elimination.is_refusal(long_answer, max_words=200)


@pytest.mark.parametrize("answer", ["", "   ", "...", "::::::", "and the, of it.", "Yes. OK!"])
def test_stopwords_only(answer: str) -> None:
    assert elimination.is_stopwords_only(answer)


@pytest.mark.parametrize("answer", ["The answer is 7.", "Paris", "def f(): pass", "Été"])
def test_not_stopwords_only(answer: str) -> None:
    assert not elimination.is_stopwords_only(answer)


def test_rules_in_order() -> None:
    check = elimination.check_without_judge
    assert check(ALL_ON, "p", None, None) == "empty"
    # Several rules fail at once: the first in RULES order is recorded.
    assert check(ALL_ON, "p", "Given prompt: p", "Sorry.") == "templateLeak"
    assert check(ALL_ON, "p", "q harder", "Sorry, no.") == "refusal"
    assert check(ALL_ON, "p", "q harder", "... of the") == "stopwordsOnly"
    assert check(ALL_ON, "Do  X.", "do x.", "A real answer here.") == "noInformationGain"
    assert check(ALL_ON, "Do X.", "Do X with Y.", "A real answer here.") is None
    # Without an answer the answer rules are not applied.
    assert check(ALL_ON, "p", "q harder", None) is None
    assert elimination.RULES == ("empty", "templateLeak", "refusal", "stopwordsOnly", "noInformationGain")


def test_rules_can_be_switched_off() -> None:
    off = Elimination(template_leak=False, refusal=False, stopwords_only=False, no_information_gain=False)
    check = elimination.check_without_judge
    assert check(off, "p", "Given prompt: p", "Sorry.") is None
    assert check(off, "p", "p", "...") is None
    assert check(off, "p", None, None) == "empty"  # nothing to keep


@pytest.mark.parametrize(
    ("evolved", "answer", "expected"),
    [
        (None, None, "empty"),
        ("#Final Instruction# x", "ok", "templateLeak"),
        ("Same", "An answer about it.", "noInformationGain"),
        ("Harder task", "Understood. What would you like me to do?", "insufficient"),
        ("Harder task", "Sure! Could you share the data?", "insufficient"),
        ("Harder task", "To answer, please provide the table.", "insufficient"),
        ("Harder task", "Sorry, I can't.", "refusal"),
        ("Harder task", "...", "stopwordsOnly"),
        ("Harder task", "Sure. The result is 42 because the sum is even.", None),
        ("Harder task", None, None),
    ],
)
def test_auto_failure(evolved: str | None, answer: str | None, expected: str | None) -> None:
    assert elimination.auto_failure("same", evolved, answer) == expected


@given(st.text(), st.text(), st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_rules_never_raise(parent: str, original: str, child: str | None, answer: str | None) -> None:
    rule = elimination.check_without_judge(ALL_ON, parent, child, answer)
    assert rule is None or rule in elimination.RULES
    elimination.auto_failure(original, child, answer)

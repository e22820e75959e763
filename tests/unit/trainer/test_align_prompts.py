"""Align prompts and reply parsers: pure text in, text or parsed values out; never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain_trainer.align import prompts
from posttrain_trainer.align.prompts import Verdict

PROMPT = [
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "It is 4."},
    {"role": "user", "content": "And times 3?"},
]


@pytest.mark.parametrize(
    ("reply", "a", "b"),
    [
        ("The first is clearer.\nScores: A=8, B=5", 8, 5),
        ("Assistant A: 8. Assistant B: 5. Explanation: A is more accurate.", 8, 5),
        ("Score A: 7/10\nScore B: 9/10", 7, 9),
        ("A = 6 and B = 6, a tie.", 6, 6),
        ("**A**: 3\n**B**: 10", 3, 10),
        ("8 5\nA is better because it is right.", 8, 5),
        ("Verdict [[7, 2]]", 7, 2),
        ("Scores: 4, 9", 4, 9),
        ("Scores: A=2, B=3\nOn reflection:\nScores: A=9, B=3", 9, 3),
        ("Score A: 7.5, Score B: 6.5", 7.5, 6.5),
    ],
)
def test_verdicts_in_many_shapes_are_read(reply: str, a: float, b: float) -> None:
    verdict = prompts.parse_verdict(reply)
    assert verdict is not None
    assert (verdict.score_a, verdict.score_b) == (a, b)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "Both answers are fine.",
        "Scores: A=8",  # one side only
        "Scores: A=0, B=5",  # outside 1-10
        "Scores: A=11, B=5",
        "A=85, B=5",  # not a score, a number
        "USER: ASSISTANT: 0 1 2 + - * / = ( ) [ ] { }",
        "Add the numbers step by step. The answer is 7.",
    ],
)
def test_unreadable_verdicts_are_none(reply: str) -> None:
    assert prompts.parse_verdict(reply) is None


def test_explanation_is_kept_without_the_score_line() -> None:
    verdict = prompts.parse_verdict("Explanation: B cites the right formula.\nScores: A=4, B=8")
    assert verdict == Verdict(4, 8, "B cites the right formula.")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise_on_arbitrary_text(text: str) -> None:
    verdict = prompts.parse_verdict(text)
    assert verdict is None or (1 <= verdict.score_a <= 10 and 1 <= verdict.score_b <= 10)
    prompts.parse_follow_up(text)
    prompts.parse_suggestions(text)
    prompts.parse_revision(text, "original")
    ranking = prompts.parse_ranking(text, 3)
    assert ranking is None or sorted(ranking) == [0, 1, 2]
    labels = prompts.parse_step_labels(text, 2)
    assert labels is None or (len(labels) == 2 and set(labels) <= {0, 1})
    prompts.split_steps(text)


def test_judge_prompt_shows_history_question_both_answers_and_the_format() -> None:
    messages = prompts.judge_messages(PROMPT, "Twelve.", "It is 13.", ["correctness"])
    assert messages[0]["role"] == "system"
    text = messages[1]["content"]
    assert "USER: What is 2 plus 2?" in text and "ASSISTANT: It is 4." in text
    assert "[User's last message]\nAnd times 3?" in text
    assert text.index("Twelve.") < text.index("It is 13.")
    assert "correctness" in text and "Scores: A=<score>, B=<score>" in text


def test_judge_prompt_without_history_has_no_history_block() -> None:
    text = prompts.judge_messages(PROMPT[:1], "x", "y")[1]["content"]
    assert "Earlier conversation" not in text


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("USER: Can you show it as a table?", "Can you show it as a table?"),
        ('"Why is that?"', "Why is that?"),
        ("What about 5?\nASSISTANT: It is 20.", "What about 5?"),
        ("   ", None),
        ("User:", None),
    ],
)
def test_follow_up_parsing(reply: str, expected: str | None) -> None:
    assert prompts.parse_follow_up(reply) == expected


def test_follow_up_prompt_contains_the_conversation() -> None:
    text = prompts.follow_up_messages(PROMPT[:2])[1]["content"]
    assert "USER: What is 2 plus 2?" in text and "ASSISTANT: It is 4." in text


def test_revision_is_none_when_empty_or_unchanged() -> None:
    assert prompts.parse_revision("Improved answer: It is 12.", "It is 13.") == "It is 12."
    assert prompts.parse_revision("It is 13.", "It is 13.") is None
    assert prompts.parse_revision("", "It is 13.") is None


def test_suggestion_and_revision_prompts_carry_the_answers() -> None:
    text = prompts.suggestion_messages(PROMPT, "It is 13.", "It is 12.")[1]["content"]
    assert "[Student's answer]\nIt is 13." in text and "[A stronger answer, for reference]\nIt is 12." in text
    text = prompts.revision_messages(PROMPT, "It is 13.", "1. Multiply correctly.")[0]["content"]
    assert "It is 13." in text and "1. Multiply correctly." in text and "And times 3?" in text


@pytest.mark.parametrize(
    ("reply", "count", "expected"),
    [
        ("Answer 2 is best.\nRanking: [2] > [3] > [1]", 3, [1, 2, 0]),
        ("Ranking: 1, 2", 2, [0, 1]),
        ("Ranking: [1] > [2]\nRanking: [2] > [1]", 2, [1, 0]),
        ("Ranking: [1] > [1] > [2]", 3, None),  # a repeat, one missing
        ("Ranking: [1] > [2]", 3, None),  # incomplete
        ("Ranking: [1] > [4] > [2]", 3, None),  # out of range
        ("[2] > [1]", 2, None),  # no Ranking line
    ],
)
def test_ranking_parsing(reply: str, count: int, expected: list[int] | None) -> None:
    assert prompts.parse_ranking(reply, count) == expected


def test_ranking_prompt_numbers_candidates_in_order() -> None:
    text = prompts.ranking_messages(PROMPT[:1], ["first", "second"])[1]["content"]
    assert text.index("[Answer 1]\nfirst") < text.index("[Answer 2]\nsecond")
    assert "Ranking: [1] > [2]" in text


@pytest.mark.parametrize(
    ("reply", "count", "expected"),
    [
        ("Step 1: correct\nStep 2: incorrect\nStep 3: correct", 3, [1, 0, 1]),
        ("step 1 - right\nstep 2: wrong", 2, [1, 0]),
        ("Step 1: +\nStep 2: -", 2, [1, 0]),
        ("Step 1: 1\nStep 2: 0", 2, [1, 0]),
        ("Step 1: not correct\nStep 2: Correct", 2, [0, 1]),
        ("Step 1: correct", 2, None),  # a step unlabelled
        ("Step 1: nonsense\nStep 2: correct", 2, None),
        ("Step 1: correct\nStep 2: correct\nStep 9: incorrect", 2, [1, 1]),  # out of range ignored
    ],
)
def test_step_label_parsing(reply: str, count: int, expected: list[int] | None) -> None:
    assert prompts.parse_step_labels(reply, count) == expected


def test_steps_are_lines_and_the_labeler_sees_them_numbered_once() -> None:
    answer = "Step 1: read the numbers.\n\n2 + 2 = 4.\nSo the answer is 4."
    steps = prompts.split_steps(answer)
    assert steps == ["Step 1: read the numbers.", "2 + 2 = 4.", "So the answer is 4."]
    assert prompts.split_steps(answer, max_steps=2) == []
    text = prompts.step_label_messages(PROMPT[:1], steps)[1]["content"]
    assert "Step 1: read the numbers." in text and "Step 1: Step 1" not in text
    assert "Step 3: So the answer is 4." in text

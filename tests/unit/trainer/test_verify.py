"""The verifier participant's checks: final answers, the arithmetic a question states, step labels."""

from __future__ import annotations

import pytest
from posttrain_trainer.common.steps import step_prompt
from posttrain_trainer.common.verify import RIGHT, WRONG, AnswerVerifier, final_number, question_value


@pytest.mark.parametrize(
    ("question", "value"),
    [
        ("What is 3 plus 4?", 7.0),
        ("What is 3 plus 4 plus 5? Show each step.", 12.0),
        ("Compute (2 + 3) times 4 and explain each step.", 20.0),
        ("What is 9 divided by 2?", 4.5),
        ("What is 6 x 7?", 42.0),
        ("What is 10 minus 12?", -2.0),
        (step_prompt("What is 1 plus 1?"), 2.0),  # the step-format instruction's "Step 1:" is no sum
        ("A train travels 60 km in 1.5 hours.", None),
        ("Name a colour.", None),
        ("What is 5 divided by 0?", None),
    ],
)
def test_the_question_value_is_the_arithmetic_it_states(question: str, value: float | None) -> None:
    assert question_value(question) == value


@pytest.mark.parametrize(
    ("answer", "number"),
    [
        ("Step 1: 3 + 4 = 7.\nStep 2: The answer is 7.", 7.0),
        ("The answer is 12, since 5 + 7 = 12 and then 3 more", 12.0),  # the stated answer wins
        ("so it is -2.5", -2.5),
        ("no idea", None),
    ],
)
def test_the_final_number_is_the_stated_answer_else_the_last_number(
    answer: str, number: float | None
) -> None:
    assert final_number(answer) == number


def test_arithmetic_scores_right_wrong_and_uncheckable_answers() -> None:
    verifier = AnswerVerifier("arithmetic")
    assert verifier.score("What is 3 plus 4?", "3 + 4 = 7. The answer is 7.") == RIGHT
    assert verifier.score("What is 3 plus 4?", "The answer is 8.") == WRONG
    assert verifier.score("What is 3 plus 4?", "Sorry, I cannot help.") == WRONG
    assert verifier.score("Name a colour.", "Red") is None


def test_exact_match_compares_with_the_reference_answer() -> None:
    verifier = AnswerVerifier("exactMatch")
    assert verifier.score("How many legs has a spider?", "It has 8.", "Eight: the answer is 8.") == RIGHT
    assert verifier.score("How many legs has a spider?", "6", "The answer is 8.") == WRONG
    assert verifier.score("Capital of France?", "paris.", "Paris") == RIGHT
    assert verifier.score("Capital of France?", "Lyon", "Paris") == WRONG
    assert verifier.score("Capital of France?", "Paris", None) is None


def test_a_step_is_wrong_when_its_equation_is_false_or_its_numbers_made_up() -> None:
    verifier = AnswerVerifier("arithmetic")
    question = "What is 3 plus 4 plus 5?"
    right = ["Step 1: 3 + 4 = 7.", "Step 2: 7 + 5 = 12.", "Step 3: The answer is 12."]
    assert verifier.label_steps(question, right) == [1, 1, 1]
    wrong = ["Step 1: 3 + 4 = 8.", "Step 2: 8 + 5 = 13.", "Step 3: The answer is 13.", "Step 4: Add 9."]
    # 8 + 5 = 13 is true, but 8 is the false result of step 1: a step that builds on it is wrong too,
    # as is the made-up 9.
    assert verifier.label_steps(question, wrong) == [0, 0, 0, 0]
    assert verifier.label_steps(question, ["Step 1: 3 + 4 = 7.", "Step 2: 7 + 5 = 13."]) == [1, 0]
    assert verifier.label_steps(question, ["Let us add the numbers.", "The answer is 12."]) == [1, 1]
    assert verifier.label_steps("Name a colour.", ["Red."]) is None


def test_the_tolerance_decides_when_two_numbers_are_equal() -> None:
    assert AnswerVerifier("arithmetic", tolerance=0.01).score("What is 1 divided by 3?", "0.333") == RIGHT
    assert AnswerVerifier("arithmetic").score("What is 1 divided by 3?", "0.333") == WRONG

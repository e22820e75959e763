"""Evol prompt templates (inputs -> messages) and reply parsers (any text -> value or None)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain_trainer.evol import prompts


@pytest.mark.parametrize("operation", prompts.IN_DEPTH)
def test_in_depth_templates_carry_the_rules(operation: str) -> None:
    instruction = "Sort this list:\n```python\nxs = [3, 1, 2]\n```"
    [message] = prompts.evolve_messages(operation, instruction)
    text = message["content"]
    assert message["role"] == "user"
    assert instruction in text and text.rstrip().endswith(prompts.REWRITTEN_MARK)
    assert "reasonable" in text and "answer it" in text  # answerable by humans
    assert "code, tables, formulas and input data" in text  # non-text parts kept
    assert "10 to 20 words" in text
    assert "original instruction" in text and "rewritten instruction" in text  # words not to repeat
    assert prompts.DEPTH_METHODS[operation] in text


def test_each_in_depth_operation_asks_for_something_different() -> None:
    methods = [prompts.evolve_messages(op, "Say hi.")[0]["content"] for op in prompts.IN_DEPTH]
    assert len(set(methods)) == len(prompts.IN_DEPTH)


def test_complicate_input_has_in_context_examples() -> None:
    text = prompts.evolve_messages("complicateInput", "Say hi.")[0]["content"]
    for before, after in prompts.COMPLICATE_EXAMPLES:
        assert before in text and after in text
    assert text.count(prompts.ORIGINAL_MARK) == len(prompts.COMPLICATE_EXAMPLES) + 1


def test_breadth_template() -> None:
    text = prompts.evolve_messages("breadth", "Write a haiku about rain.")[0]["content"]
    assert "same domain" in text and "rarer" in text and "similar length and difficulty" in text
    assert text.rstrip().endswith(prompts.NEW_MARK)


def test_unknown_operation() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        prompts.evolve_messages("shout", "x")


def test_parse_instruction() -> None:
    assert prompts.parse_instruction('  "Sort the list."  ') == "Sort the list."
    assert prompts.parse_instruction("```\ncode task\n```") == "code task"
    assert prompts.parse_instruction(" \n ") is None
    # Labels are not repaired away: the template-leak rule must see them.
    assert prompts.parse_instruction("#Rewritten Instruction# Do X") == "#Rewritten Instruction# Do X"


def test_copies_template() -> None:
    assert prompts.copies_template("#Rewritten Instruction#: do it")
    assert prompts.copies_template("Given prompt: what is 2+2?")
    assert prompts.copies_template("In the REWRITTEN PROMPT, explain")
    assert not prompts.copies_template("Write a new function that prints a prompt.")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Equal", True),
        ("They are equal.", True),
        ("Different", False),
        ("Not equal: the second adds a constraint", False),
        ("They are not the same.", False),
        ("the same", True),
        (":::::", None),
        ("", None),
    ],
)
def test_parse_equal(reply: str, expected: bool | None) -> None:
    assert prompts.parse_equal(reply) is expected


def test_improve_template_and_parser() -> None:
    text = prompts.improve_messages("Q?", "A.")[0]["content"]
    assert "logic" in text and "correctness" in text and "helpful" in text
    assert prompts.parse_improved("Critique: weak.\nImproved answer: Better.") == "Better."
    assert prompts.parse_improved("improved answer: one\nIMPROVED ANSWER:  two ") == "two"
    assert prompts.parse_improved("Better answer without label") is None
    assert prompts.parse_improved("Improved answer:   ") is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Score: 7", 7.0),
        ("score=8.5 because", 8.5),
        ("I would give it 9 out of 10", 9.0),
        ("Score: 42. Actually 6", 6.0),
        ("step 1.5.2 then 3", 3.0),
        ("no digits", None),
        ("0 and 11", None),
    ],
)
def test_parse_score(reply: str, expected: float | None) -> None:
    assert prompts.parse_score(reply) == expected


def test_rank_template_and_parser() -> None:
    text = prompts.rank_messages(["a", "b", "c"])[0]["content"]
    assert "[1]\na" in text and "[3]\nc" in text
    assert prompts.parse_ranking("Ranking: 2 > 3 > 1", 3) == [1, 2, 0]
    assert prompts.parse_ranking("I think [3] is best. Ranking: 3, 1, 2", 3) == [2, 0, 1]
    assert prompts.parse_ranking("1 > 1 > 2", 2) == [0, 1]
    assert prompts.parse_ranking("Ranking: 2 > 1", 3) is None  # incomplete
    assert prompts.parse_ranking("Ranking: 9 > 8", 2) is None
    assert prompts.parse_ranking("", 2) is None


def test_auto_templates_and_parsers() -> None:
    text = prompts.method_messages(prompts.UNIVERSAL_METHOD, "Sum 2 and 3.")[0]["content"]
    assert prompts.UNIVERSAL_METHOD in text and "Sum 2 and 3." in text and prompts.FINAL_MARK in text
    assert prompts.parse_final("Step 1...\n#Final Instruction#: Sum 2 and 3 twice.") == "Sum 2 and 3 twice."
    assert prompts.parse_final("#final instruction#\nA\n#Final Instruction#\nB") == "B"
    assert prompts.parse_final("no label") is None
    analysis = prompts.analyse_messages("M", [("orig", "evolution", "Understood. please provide")])
    assert "Understood" in analysis[0]["content"] and "please provide" in analysis[0]["content"]
    assert prompts.parse_issues("Problems:\n- too long\n* drops code\n2) asks for input") == [
        "too long",
        "drops code",
        "asks for input",
    ]
    assert prompts.parse_issues("- none") == []
    assert prompts.parse_issues("It is too long.") == ["It is too long."]
    assert prompts.parse_issues("") == []
    optimise = prompts.optimise_messages("M", ["too long"])[0]["content"]
    assert "- too long" in optimise and prompts.METHOD_MARK in optimise
    method = "1. Add a constraint.\n2. Keep the input data unchanged always."
    assert prompts.parse_method(f"Sure.\n{prompts.METHOD_MARK}\n{method}") == method
    assert prompts.parse_method(f"{prompts.METHOD_MARK} short") is None
    assert prompts.parse_method(method) is None


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parsers_never_raise(reply: str) -> None:
    prompts.parse_instruction(reply)
    prompts.parse_equal(reply)
    prompts.parse_improved(reply)
    score = prompts.parse_score(reply)
    assert score is None or 1.0 <= score <= 10.0
    ranking = prompts.parse_ranking(reply, 3)
    assert ranking is None or sorted(ranking) == [0, 1, 2]
    prompts.parse_final(reply)
    prompts.parse_issues(reply)
    prompts.parse_method(reply)
    prompts.copies_template(reply)

"""The chat schema's importers (`common/chat.py`): ShareGPT, Alpaca, OpenAI messages, chat rows."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain_trainer.common.chat import (
    VICUNA_SYSTEM,
    RowError,
    answer,
    detect_format,
    format_vicuna,
    instruction,
    normalize,
    row_id,
)

QUESTION = "What is 3 plus 4?"
REPLY = "It is 7."


def test_sharegpt_maps_roles_and_keeps_the_turn_order() -> None:
    row = normalize(
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": QUESTION},
                {"from": "gpt", "value": REPLY},
                {"from": "Human", "value": "And 5 plus 5?"},
                {"from": "ChatGPT", "value": "10."},
            ]
        }
    )
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert row["messages"][1]["content"] == QUESTION
    assert instruction(row) == QUESTION
    assert answer(row) == REPLY
    assert row["meta"] == {}


def test_alpaca_joins_instruction_and_input_with_a_blank_line() -> None:
    row = normalize({"instruction": "Sum these numbers.", "input": "3, 4", "output": "7"})
    assert row["messages"] == [
        {"role": "user", "content": "Sum these numbers.\n\n3, 4"},
        {"role": "assistant", "content": "7"},
    ]


def test_alpaca_without_input_or_output_is_a_single_user_turn() -> None:
    row = normalize({"instruction": QUESTION, "input": "", "output": ""})
    assert row["messages"] == [{"role": "user", "content": QUESTION}]


def test_openai_messages_and_chat_rows_keep_id_and_meta() -> None:
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": REPLY}]
    openai = normalize({"messages": messages})
    assert openai["messages"] == messages
    assert openai["id"] == row_id(messages)
    chat = normalize({"id": "row-1", "messages": messages, "meta": {"category": "math"}})
    assert chat["id"] == "row-1"
    assert chat["meta"] == {"category": "math"}


def test_the_id_is_stable_and_depends_on_the_content() -> None:
    first = normalize({"instruction": QUESTION, "output": REPLY})
    again = normalize(
        {"conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": REPLY}]}
    )
    other = normalize({"instruction": QUESTION, "output": "Eight."})
    assert first["id"] == again["id"]
    assert first["id"] != other["id"]


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "openai"),
        ({"id": "a", "meta": {}, "messages": [{"role": "user", "content": "x"}]}, "chat"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "x"}, "alpaca"),
        # A null column (an export of mixed formats) does not decide the format.
        ({"messages": None, "conversations": None, "instruction": "x"}, "alpaca"),
        ({"messages": None, "conversations": [{"from": "human", "value": "x"}]}, "sharegpt"),
    ],
)
def test_detect_format(row: dict[str, Any], fmt: str) -> None:
    assert detect_format(row) == fmt


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (["not", "an", "object"], "not a JSON object"),
        ({"unexpected": True, "other": None}, "unknown row format (keys: unexpected)"),
        ({"conversations": "not a list"}, "`conversations` is not a non-empty list"),
        ({"messages": []}, "`messages` is not a non-empty list"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0] has no valid role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content is not a string"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no non-empty user message"),
        ({"messages": [{"role": "user", "content": "  \n"}]}, "no non-empty user message"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "conversations[0] has no valid `from`"),
        ({"instruction": 5}, "`instruction` is not a string"),
        ({"instruction": "x", "input": ["a"]}, "`input` is not a string"),
        ({"instruction": "", "output": "y"}, "no non-empty user message"),
    ],
)
def test_malformed_rows_raise_with_the_reason(row: Any, reason: str) -> None:
    with pytest.raises(RowError) as raised:
        normalize(row)
    assert str(raised.value) == reason


def test_a_fixed_format_rejects_other_shapes() -> None:
    with pytest.raises(RowError, match="conversations"):
        normalize({"messages": [{"role": "user", "content": "x"}]}, "sharegpt")
    with pytest.raises(RowError, match="not a chat format"):
        normalize({"prompt": "x"}, "preference")


def test_vicuna_text_matches_the_announcement() -> None:
    text = format_vicuna(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "I am WizardLM."},
        ]
    )
    assert text == (
        VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello.</s>USER: Who are you? ASSISTANT: I am WizardLM.</s>"
    )


texts = st.text(min_size=1, max_size=20).filter(lambda t: t.strip() != "")
turns = st.lists(st.tuples(texts, texts), min_size=1, max_size=3)


@st.composite
def any_format(draw: st.DrawFn) -> dict[str, Any]:
    pairs = draw(turns)
    kind = draw(st.sampled_from(["sharegpt", "openai", "alpaca"]))
    if kind == "sharegpt":
        conversation = [
            m for q, a in pairs for m in ({"from": "human", "value": q}, {"from": "gpt", "value": a})
        ]
        return {"conversations": conversation}
    if kind == "openai":
        messages = [
            m for q, a in pairs for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
        ]
        return {"messages": messages}
    return {"instruction": pairs[0][0], "output": pairs[0][1]}


@settings(max_examples=60, deadline=None)
@given(any_format())
def test_normalising_a_chat_row_again_changes_nothing(row: dict[str, Any]) -> None:
    once = normalize(row)
    assert normalize(once) == once
    assert detect_format(once) == "chat"

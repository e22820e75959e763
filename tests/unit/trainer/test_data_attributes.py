"""Row attributes: turns, lengths, tokens, language, category, difficulty and quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain.api.data import BucketEdges, CategoryRule
from posttrain_trainer.data.attributes import (
    GENERAL,
    Attributes,
    analyse,
    categorise,
    detect_language,
    keyword_pattern,
)
from posttrain_trainer.data.sources import Corpus, load
from posttrain_trainer.data.text import words

RULES = [
    CategoryRule(name="math", keywords=["plus", "solve", "sum"]),
    CategoryRule(name="coding", keywords=["python", "c++", "unit test"]),
    CategoryRule(name="cooking", keywords=["crème brûlée"]),
]


def corpus_of(tmp_path: Path, rows: list[dict[str, Any]]) -> Corpus:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    corpus, rejects = load([(f"file://{path}", "auto")])
    assert rejects == []
    return corpus


def chat(*turns: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    roles = ["user", "assistant"]
    row: dict[str, Any] = {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}
    if meta is not None:
        row.update(id=f"r{len(turns)}", meta=meta)
    return row


def analysed(tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> Attributes:
    attributes, _ = analyse(corpus_of(tmp_path, rows), RULES, BucketEdges(), **kwargs)
    return attributes


def test_categories_take_the_first_matching_rule_as_whole_words() -> None:
    instructions = pa.array(
        [
            "Solve this in Python",  # math comes first
            "Write a PYTHON script",
            "Write a unit   test in C++",
            "Is pythonic code better?",  # not a whole word
            "Make a crème brûlée",
            "Tell me a story",
        ]
    )
    category = categorise(instructions, RULES)
    assert category.values() == ["math", "coding", "coding", GENERAL, "cooking", GENERAL]
    assert category.labels == ["math", "coding", "cooking", GENERAL]


def test_keyword_patterns_escape_regex_characters() -> None:
    assert keyword_pattern(["c++", "a.b"]).count("\\+") == 2
    assert "\\." in keyword_pattern(["a.b"])


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the capital of France?", "en"),
        ("Compute 6 times 7", "en"),
        ("Quelle est la capitale de la France et pourquoi est-elle célèbre ?", "fr"),
        ("¿Cuál es la capital de España y por qué es famosa?", "es"),
        ("Was ist die Hauptstadt von Deutschland und wie groß ist sie?", "de"),
        ("中国的首都是哪里？", "zh"),
        ("日本の首都はどこですか？", "ja"),
        ("한국의 수도는 어디입니까?", "ko"),
        ("Какая столица России?", "ru"),
        ("1 + 2 = ?", "und"),
    ],
)
def test_language(text: str, language: str) -> None:
    instructions = pa.array([text], pa.large_string())
    assert detect_language(instructions, words(instructions)).values() == [language]


def test_turns_lengths_and_approximate_tokens(tmp_path: Path) -> None:
    rows = [chat("one two three", "four five"), chat("q1", "a1", "q2 words", "a2", "q3"), chat("中文问题")]
    attributes = analysed(tmp_path, rows)
    assert attributes.turns.tolist() == [1, 3, 1]
    assert attributes.chars.tolist() == [13 + 9, 2 + 2 + 8 + 2 + 2, 4]
    # words x 1.3, plus one per CJK character
    assert attributes.tokens.tolist() == [round(5 * 1.3), round(6 * 1.3), round(1.3 + 4)]
    assert attributes.instruction_tokens.tolist() == [round(3 * 1.3), round(1.3), round(1.3 + 4)]
    assert attributes.categorical("turns").values() == ["1", "3", "1"]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models' tokenizer alone (no model weights needed)."""
    from posttrain_trainer.common.tiny import make_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer().save_pretrained(folder)
    return folder


def test_tokens_by_a_tokenizer(tmp_path: Path, tokenizer_folder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    rows = [chat("Write a Python function.", "def f(): pass")]
    attributes = analysed(tmp_path, rows, tokenizer_path=tokenizer_folder)
    expected = sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"])
        for t in ["Write a Python function.", "def f(): pass"]
    )
    assert attributes.tokens.tolist() == [expected]


def test_difficulty_grows_with_constraints_and_reasoning(tmp_path: Path) -> None:
    plain = "What is 3 plus 4?"
    evolved = (
        "Solve 3x + 4 = 19 step by step, explain why each step is valid, and make sure the final answer "
        "includes a check; use at most 120 words and format the result as a table."
    )
    attributes = analysed(tmp_path, [chat(plain), chat(evolved)])
    assert attributes.difficulty[0] < 3.5
    assert attributes.difficulty[1] > 7.0
    assert attributes.categorical("difficulty").values() == ["low", "high"]
    assert not attributes.difficulty_judged.any()


def test_judge_scores_in_meta_win_over_the_heuristic(tmp_path: Path) -> None:
    rows = [
        chat("What is 3 plus 4?", meta={"difficulty": 9, "quality": 2.5}),
        chat("Hi", meta={"difficulty": "hard"}),
    ]
    attributes = analysed(tmp_path, rows)
    assert attributes.difficulty[0] == 9
    assert attributes.quality[0] == 2.5
    assert attributes.difficulty_judged.tolist() == [True, False]
    assert attributes.quality_judged.tolist() == [True, False]


def test_quality_signals(tmp_path: Path) -> None:
    rows = [
        chat(
            "Explain how vaccines train the immune system.",
            "Vaccines expose the body to a harmless piece ...",
        ),
        chat("Explain how to pick a lock.", "I'm sorry, but I cannot help with that."),
        chat("Write a function to add numbers.", "```python\ndef add(a, b):"),
        chat("Hi"),
        chat("Tell me about the \ufffd\ufffd encoding.", "It is broken."),
        chat("Ring the bell please now.", "Ding\x07 done."),
    ]
    attributes = analysed(tmp_path, rows)
    flagged = {name: np.flatnonzero(flags).tolist() for name, flags in attributes.signals.items()}
    assert flagged["refusal"] == [1]
    assert flagged["unclosed_code"] == [2]
    assert flagged["short_instruction"] == [3]
    assert flagged["garbled"] == [4, 5]
    assert attributes.quality[0] == 8.0
    assert attributes.quality[1] < 5.0
    metas = attributes.metas()
    assert metas[1]["quality_signals"] == ["refusal"]
    assert "quality_signals" not in metas[0]
    assert set(metas[0]) >= {"category", "language", "turns", "chars", "tokens", "difficulty", "quality"}


def test_a_classifier_assigns_the_categories(tmp_path: Path, tokenizer_folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        # Taken by the config's untyped **kwargs at run time (the typed signature lists the fields only).
        num_labels=2,  # type: ignore[call-arg]
        id2label={0: "coding", 1: "math"},
        label2id={"coding": 0, "math": 1},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        # Equal logits: every row gets label 0, whatever the keyword rules would say.
        model.score.weight.zero_()
    folder = tmp_path / "classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rows = [chat("What is 3 plus 4?"), chat("Tell me a story about a long journey.")]
    attributes = analysed(tmp_path, rows, classifier_path=folder)
    assert attributes.category.labels == ["coding", "math"]
    assert attributes.category.values() == ["coding", "coding"]


def test_a_keyword_in_two_rules_goes_to_the_first() -> None:
    rules = [CategoryRule(name="a", keywords=["shared"]), CategoryRule(name="b", keywords=["shared", "own"])]
    assert categorise(pa.array(["the shared thing", "my own thing"]), rules).values() == ["a", "b"]


def _reference(instruction: str, rules: list[CategoryRule]) -> str:
    def normalised(text: str) -> list[str]:
        return "".join(c if not c.isascii() or c.isalnum() else " " for c in text.lower()).split()

    tokens = normalised(instruction)
    for rule in rules:
        for keyword in rule.keywords:
            phrase = normalised(keyword)
            if any(tokens[i : i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1)):
                return rule.name
    return GENERAL


vocabulary = ["sum", "python", "unit", "test", "Test", "data", "café", "x"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(vocabulary), min_size=0, max_size=6).map(lambda ws: " ".join(ws) + "?"),
        min_size=1,
        max_size=8,
    )
)
def test_keyword_rules_match_whole_normalised_words(instructions: list[str]) -> None:
    rules = [
        CategoryRule(name="testing", keywords=["unit test"]),
        CategoryRule(name="math", keywords=["sum", "x"]),
        CategoryRule(name="coding", keywords=["python", "test data"]),
        CategoryRule(name="food", keywords=["CAFÉ"]),
    ]
    got = categorise(pa.array(instructions, pa.large_string()), rules).values()
    assert got == [_reference(text, rules) for text in instructions]

"""Verifiers: programs that check answers, for data whose answers can be checked (the `verifier` participant).

A verifier judges an answer by its final answer: the number after the last "answer is" (or "answer:"),
else the last number the answer writes. What it must equal comes from

- `arithmetic`: the arithmetic the question states, evaluated here. Operator words (`plus`, `minus`,
  `times`, `multiplied by`, `divided by`) and symbols (`+ - * / x ×`) between numbers, with
  parentheses, are read as one expression; the longest such expression in the question counts.
- `exactMatch`: the row's reference answer (its own assistant turn): its final number, or, when it
  has none, its whole text (compared ignoring case, spaces and a final full stop).

Scores follow the judges' 1-10 scale: 10 for a right final answer, 1 for a wrong or missing one; a
question the verifier cannot read (no expression, no reference) gets no score (None), which the align
workload treats like an unreadable verdict.

Step labels (process supervision): a step is incorrect when it states a false equation
(`3 + 4 = 8`), states a wrong final answer, or uses a number that is neither in the question nor a
result of the steps before it (a made-up number); otherwise it is correct.

Everything here is pure (no model, no I/O).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from posttrain_trainer.common.steps import STEP_FORMAT

VerifierType = Literal["arithmetic", "exactMatch"]

RIGHT = 10
"""Score of a right final answer."""
WRONG = 1
"""Score of a wrong or missing final answer."""

_NUMBER = r"-?\d+(?:\.\d+)?"
_WORDS = (
    (re.compile(r"\bmultiplied\s+by\b", re.IGNORECASE), "*"),
    (re.compile(r"\bdivided\s+by\b", re.IGNORECASE), "/"),
    (re.compile(r"\btimes\b", re.IGNORECASE), "*"),
    (re.compile(r"\bplus\b", re.IGNORECASE), "+"),
    (re.compile(r"\bminus\b", re.IGNORECASE), "-"),
    (re.compile(r"×"), "*"),
    (re.compile(r"(?<=\d)\s*[xX]\s*(?=\d)"), " * "),
)
_EXPRESSION = re.compile(r"[\d(][\d\s+\-*/().]*[\d)]")
_OPERATOR = re.compile(r"\d\s*\)*\s*[+\-*/]\s*\(*\s*-?\d")
_ANSWER = re.compile(r"answer\s*(?:is|:|=)\s*(" + _NUMBER + ")", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _NUMBER + r"(?![\w])")
_EQUATION = re.compile(r"([\d(][\d\s+\-*/().]*?)\s*=\s*(" + _NUMBER + ")")
_STEP_LABEL = re.compile(r"^\s*step\s*\d+\s*[:.)-]\s*", re.IGNORECASE)
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def symbols(text: str) -> str:
    """The text with operator words written as symbols (`3 plus 4` -> `3 + 4`)."""
    for pattern, symbol in _WORDS:
        text = pattern.sub(f" {symbol} ", text)
    return text


def evaluate(expression: str) -> float | None:
    """The value of an expression of numbers, `+ - * /` and parentheses; None if it is not one."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    return _value(tree.body)


def _value(node: ast.expr) -> float | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _value(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return float(_BINARY[type(node.op)](left, right))
    return None


def question_value(question: str) -> float | None:
    """The value of the arithmetic a question states (its longest expression), or None."""
    text = symbols(question.replace(STEP_FORMAT, " "))
    best: float | None = None
    best_length = 0
    for match in _EXPRESSION.finditer(text):
        candidate = match.group(0).strip().rstrip(".")
        if not _OPERATOR.search(candidate) or len(candidate) <= best_length:
            continue
        value = evaluate(candidate)
        if value is not None:
            best, best_length = value, len(candidate)
    return best


def final_number(answer: str) -> float | None:
    """The answer's final number: after the last "answer is"/"answer:", else its last number."""
    stated = _ANSWER.findall(answer)
    if stated:
        return float(stated[-1])
    numbers = _ANY_NUMBER.findall(answer)
    return float(numbers[-1]) if numbers else None


def same_number(a: float, b: float, tolerance: float) -> bool:
    """True when a and b differ by at most `tolerance` (relative to the larger when above 1)."""
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _normal_text(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


@dataclass(frozen=True)
class Expected:
    """What a right answer states: a number, or (exact match without a number) a text."""

    number: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class AnswerVerifier:
    """Checks answers and steps (see the module docstring).

    Attributes:
        type: `arithmetic` or `exactMatch`.
        tolerance: largest difference of two numbers that still counts as equal.
    """

    type: VerifierType
    tolerance: float = 1e-6

    def expected(self, question: str, reference: str | None) -> Expected | None:
        """What a right answer to `question` states, or None when the verifier cannot tell."""
        if self.type == "arithmetic":
            value = question_value(question)
            return None if value is None else Expected(number=value)
        if reference is None or not reference.strip():
            return None
        number = final_number(reference)
        return Expected(number=number) if number is not None else Expected(text=_normal_text(reference))

    def is_right(self, answer: str, expected: Expected) -> bool:
        """True when the answer states the expected final answer."""
        if expected.number is None:
            return _normal_text(answer) == expected.text
        stated = final_number(answer)
        return stated is not None and same_number(stated, expected.number, self.tolerance)

    def score(self, question: str, answer: str, reference: str | None = None) -> int | None:
        """`RIGHT` or `WRONG` for the answer, None when the question cannot be checked."""
        expected = self.expected(question, reference)
        if expected is None:
            return None
        return RIGHT if self.is_right(answer, expected) else WRONG

    def label_steps(
        self, question: str, steps: Sequence[str], reference: str | None = None
    ) -> list[int] | None:
        """1 (correct) or 0 (incorrect) per step, or None when the question cannot be checked."""
        expected = self.expected(question, reference)
        if expected is None:
            return None
        known = {float(n) for n in _ANY_NUMBER.findall(symbols(question.replace(STEP_FORMAT, " ")))}
        labels = []
        for step in steps:
            text = _STEP_LABEL.sub("", step)
            labels.append(1 if self._step_is_correct(text, expected, known) else 0)
        return labels

    def _step_is_correct(self, step: str, expected: Expected, known: set[float]) -> bool:
        text = symbols(step)
        for left, right in _EQUATION.findall(text):
            value = evaluate(left.strip())
            if value is not None:
                if not same_number(value, float(right), self.tolerance):
                    return False
                known.add(float(right))
        stated = _ANSWER.findall(step)
        if stated and expected.number is not None:
            if not same_number(float(stated[-1]), expected.number, self.tolerance):
                return False
            known.add(expected.number)
        numbers = [float(n) for n in _ANY_NUMBER.findall(text)]
        return all(any(same_number(n, k, self.tolerance) for k in known) for n in numbers)

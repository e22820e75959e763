"""A scripted, cooperative teacher for evol tests: replies to each evol prompt in the expected form.

`reply_for(messages)` looks at the prompt and answers like a well-behaved model would, so the whole
pipeline can run without one. Markers in a seed steer it into each elimination rule (children carry
their parent's text, so the marker stays with the lineage):

- `REFUSE`: answers are refusals ("Sorry, ...", short);
- `SILENT`: answers are only stop words and punctuation;
- `LEAK`: evolutions copy the template's label;
- `SAME`: evolutions return the instruction unchanged;
- `TWIN`: the judge says the evolution equals its parent.

Used in-process (`FakeLLM`, a client for `Caller`) and over HTTP (`FakeOpenAI(responder=...)`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from posttrain_trainer.client import Reply, RequestFailed, Usage

ORIGINAL = "#Original Instruction#\n"


def _original(text: str, end: str) -> str:
    start = text.rfind(ORIGINAL) + len(ORIGINAL)
    return text[start : text.index(end, start)].strip()


def _between(text: str, start: str, end: str) -> str:
    begin = text.index(start) + len(start)
    return text[begin : text.index(end, begin)].strip()


def _easier(text: str) -> str:
    return f"{_original(text, chr(10) * 2 + 'Reply with the rewritten')} Keep it to one short case."


def _rewritten(text: str) -> str:
    original = _original(text, "\n\nReply with the rewritten")
    if "SAME" in original:
        return original
    if "LEAK" in original:
        return f"#Rewritten Instruction# {original} Also justify it."
    return f"{original} Explain each step and give one example."


def _new_instruction(text: str) -> str:
    original = _original(text, "\n\nReply with the new")
    return f"Describe an unusual case related to: {original}"


def _equal_or_different(text: str) -> str:
    return "Equal" if "TWIN" in _between(text, "Second instruction:\n", "\n\nAnswer with") else "Different"


def _improved_answer(text: str) -> str:
    answer = _between(text, "Answer:\n", "\n\nReply in this form")
    return f"Critique: it lacks detail.\nImproved answer: {answer} In addition, here is a worked example."


def _score(text: str) -> str:
    if "Rate the answer" in text:
        answer = _between(text, "Answer:\n", "\n\nReply with one line")
        return f"Score: {min(10, 2 + len(answer) // 40)}"
    return f"Score: {min(10, 1 + len(text.split()) // 30)}"


def _ranking(text: str) -> str:
    items = re.findall(r"\[(\d+)\]\n(.*?)(?=\n\n\[\d+\]\n|\n\nReply with one line)", text, re.S)
    ordered = sorted(items, key=lambda item: -len(item[1]))
    return "Ranking: " + " > ".join(number for number, _ in ordered)


def _method_applied(text: str) -> str:
    original = _between(text, "Instruction:\n", "\n\nWork through the method")
    return f"Step 1: ideas.\nStep 4: done.\n#Final Instruction#\n{original} Use two concrete examples."


def _answer(text: str) -> str:
    if "REFUSE" in text:
        return "Sorry, I cannot help with that."
    if "SILENT" in text:
        return "... and the, of it."
    return f"Here is a detailed answer. First, consider what is asked: {text[:80]}. Then work it out."


_SCRIPT: tuple[tuple[Callable[[str], bool], Callable[[str], str]], ...] = (
    (
        lambda text: text.rstrip().endswith("#Rewritten Instruction#") and "into an easier version" in text,
        _easier,
    ),
    (lambda text: text.rstrip().endswith("#Rewritten Instruction#"), _rewritten),
    (lambda text: text.rstrip().endswith("#New Instruction#"), _new_instruction),
    (lambda text: "Answer with one word: Equal or Different." in text, _equal_or_different),
    (lambda text: "Improved answer: <the complete better answer>" in text, _improved_answer),
    (lambda text: text.endswith("Reply with one line: Score: <1-10>"), _score),
    (lambda text: "Ranking: 2 > 1 > 3" in text, _ranking),
    (lambda text: "Work through the method" in text, _method_applied),
    (
        lambda text: "list every problem you find" in text,
        lambda _: "- some evolutions are only slightly harder\n- one answer asked for more input",
    ),
    (
        lambda text: "#Optimized Method#" in text,
        lambda _: (
            "#Optimized Method#\n1. List constraints that fit the task.\n2. Add exactly one of them.\n"
            "3. Keep all input data.\n4. Check that it can be answered."
        ),
    ),
)
"""(does the prompt ask for this, the reply), in the order tried; anything else gets `_answer`."""


def reply_for(messages: Sequence[dict[str, str]]) -> str:
    """The scripted reply to a chat request."""
    text = messages[-1]["content"]
    for asks, reply in _SCRIPT:
        if asks(text):
            return reply(text)
    return _answer(text)


class FakeLLM:
    """An in-process client: scripted replies, optional failures, counted requests.

    Args:
        responder: messages -> reply text (default `reply_for`).
        fail: messages -> True to make the request fail (as after exhausted retries).
    """

    def __init__(
        self,
        responder: Callable[[Sequence[dict[str, str]]], str] = reply_for,
        fail: Callable[[Sequence[dict[str, str]]], bool] | None = None,
    ) -> None:
        self.responder = responder
        self.fail = fail
        self.requests: Counter[str] = Counter()
        self.log: list[tuple[str, list[dict[str, str]], dict[str, Any]]] = []

    async def chat(self, participant: str, messages: Sequence[dict[str, str]], **sampling: Any) -> Reply:
        self.requests[participant] += 1
        self.log.append((participant, list(messages), sampling))
        if self.fail is not None and self.fail(messages):
            raise RequestFailed(participant, "status-503", 3)
        return Reply(text=self.responder(messages), usage=Usage(10, 5), participant=participant)


def http_responder(request: dict[str, Any]) -> str:
    """`reply_for` for `FakeOpenAI(responder=...)`."""
    return reply_for(request["messages"])

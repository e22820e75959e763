"""Prompts of AI Align AI and the parsers of their replies: pure text in, text (or a parsed value) out.

Every function here is a pure function, so the whole prompt logic is unit-tested without a model:

- the judge (`judge_messages` / `parse_verdict`): given the dialogue history, the last user turn and
  two answers, score each answer 1-10 with an explanation (Arena Learning's judge);
- the user simulator (`follow_up_messages` / `parse_follow_up`): ask the next user turn of a
  simulated chat;
- improvement suggestions (`suggestion_messages` / `parse_suggestions`) and the revision of an answer
  with them (`revision_messages` / `parse_revision`): co-teaching;
- ranking of several candidates (`ranking_messages` / `parse_ranking`): self-teaching;
- step labels (`split_steps`, `step_label_messages` / `parse_step_labels`): process supervision data.

Parsers never raise on arbitrary text: they return None when the reply does not contain what was
asked for, and the caller counts that and applies its documented rule.

References: Luo et al., 2024 (Arena Learning: judge prompt and position swap); the WizardLM-2
announcement (co-teaching: simulated chat, quality judging, improvement suggestions; self-teaching);
Luo et al., 2023 (WizardMath: per-step correctness labels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from posttrain_trainer.common.chat import Message

MAX_EXPLANATION = 2000
"""Characters of a judge's explanation kept in the battle log."""

DEFAULT_CRITERIA = ("coherence", "factual accuracy", "context-awareness", "overall quality")


@dataclass(frozen=True)
class Verdict:
    """A judge's scores of the answer shown first (A) and second (B), with its explanation."""

    score_a: float
    score_b: float
    explanation: str


def transcript(messages: list[Message]) -> str:
    """The conversation as plain text, one `USER:` / `ASSISTANT:` block per turn (system left out)."""
    lines = []
    for message in messages:
        if message["role"] == "user":
            lines.append(f"USER: {message['content']}")
        elif message["role"] == "assistant":
            lines.append(f"ASSISTANT: {message['content']}")
    return "\n\n".join(lines)


def _split_prompt(prompt: list[Message]) -> tuple[list[Message], str]:
    """(history before the last user turn, the last user turn)."""
    for index in range(len(prompt) - 1, -1, -1):
        if prompt[index]["role"] == "user":
            return prompt[:index], prompt[index]["content"]
    return prompt, ""


# --- the judge ------------------------------------------------------------------------------------

JUDGE_SYSTEM = (
    "You are an impartial referee of AI assistants. You read a conversation and two candidate "
    "answers to its last user message, weigh them carefully and score each one."
)


def judge_messages(
    prompt: list[Message],
    answer_a: str,
    answer_b: str,
    criteria: list[str] | tuple[str, ...] = DEFAULT_CRITERIA,
) -> list[Message]:
    """The judge's request: score answers A and B to the last user turn of `prompt`.

    Args:
        prompt: the conversation up to and including the user turn being answered.
        answer_a: the answer shown first.
        answer_b: the answer shown second.
        criteria: what the judge weighs.

    Returns:
        Chat messages for the judge.
    """
    history, question = _split_prompt(prompt)
    weighed = ", ".join(criteria) if criteria else "overall quality"
    parts = []
    if history:
        parts.append("[Earlier conversation]\n" + transcript(history))
    parts.append("[User's last message]\n" + question)
    parts.append("[Answer of Assistant A]\n" + answer_a)
    parts.append("[Answer of Assistant B]\n" + answer_b)
    parts.append(
        "Judge both answers to the user's last message, taking the earlier conversation into account. "
        f"Consider {weighed}. The order in which the answers are shown must not matter, nor their "
        "length for its own sake. First explain your reasoning briefly, then finish with exactly one "
        "line in this form, each score a whole number from 1 (worst) to 10 (best):\n"
        "Scores: A=<score>, B=<score>"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_NUMBER = r"(10(?:\.0+)?|[0-9](?:\.[0-9]+)?)(?![0-9])(?:\s*/\s*10)?"
# `Scores: A=8, B=5`, `A: 8 B: 5`, `Assistant A: 8. Assistant B: 5`, `Score A = 7`, `A gets 6`.
_LABELLED = {
    side: re.compile(
        rf"(?:\b(?:assistant|answer|score(?:\s+of)?|response)\s*)?\b(?-i:{side})\b\**\s*(?:score\s*)?"
        rf"(?:[:=]|\bgets\b|\bscores?\b)\s*\**\s*{_NUMBER}",
        re.IGNORECASE,
    )
    for side in ("A", "B")
}
# `Scores: 8, 5` or `[[8, 5]]` or a first line of two numbers (the MT-Bench pairwise format).
_PAIR_RE = re.compile(
    rf"(?:\bscores?\s*[:=]\s*|\[\[\s*){_NUMBER}\s*(?:,|;|\band\b|\s)\s*{_NUMBER}", re.IGNORECASE
)
_FIRST_LINE_PAIR = re.compile(rf"^\s*{_NUMBER}\s*[, ]\s*{_NUMBER}\s*$")


def _score(text: str) -> float | None:
    value = float(text)
    return value if 1.0 <= value <= 10.0 else None


def parse_verdict(reply: str) -> Verdict | None:
    """The scores in a judge's reply, or None when it holds no readable pair of scores in 1-10.

    Labelled scores (`A=8, B=5`, `Assistant A: 8`) are read first, the last mention of each side
    winning (judges often restate their verdict at the end); then an unlabelled pair after `Scores:`
    or on the first line. A score outside 1-10 makes the verdict unreadable rather than clipped.

    Args:
        reply: the judge's whole reply, any text.

    Returns:
        The verdict, or None.
    """
    if not isinstance(reply, str) or not reply.strip():
        return None
    found: dict[str, tuple[int, str]] = {}
    for side, pattern in _LABELLED.items():
        matches = list(pattern.finditer(reply))
        if matches:
            last = matches[-1]
            found[side] = (last.start(), last.group(1))
    score_a = score_b = None
    if len(found) == 2:
        score_a, score_b = _score(found["A"][1]), _score(found["B"][1])
    else:
        pair = None
        for match in _PAIR_RE.finditer(reply):
            pair = (match.group(1), match.group(2))
        if pair is None:
            first = _FIRST_LINE_PAIR.match(reply.strip().splitlines()[0])
            if first:
                pair = (first.group(1), first.group(2))
        if pair is not None:
            score_a, score_b = _score(pair[0]), _score(pair[1])
    if score_a is None or score_b is None:
        return None
    return Verdict(score_a=score_a, score_b=score_b, explanation=_explanation(reply))


def _explanation(reply: str) -> str:
    """The reasoning part of a judge's reply.

    The text after `Explanation:` if present, else all of it without the score line.
    """
    marker = re.search(r"explanation\s*:", reply, re.IGNORECASE)
    text = reply[marker.end() :] if marker else reply
    text = "\n".join(line for line in text.splitlines() if not line.strip().lower().startswith("scores:"))
    return text.strip()[:MAX_EXPLANATION]


# --- the user simulator ---------------------------------------------------------------------------

SIMULATOR_SYSTEM = (
    "You play the user in a conversation with an AI assistant. You write the user's next message "
    "only, never the assistant's."
)


def follow_up_messages(conversation: list[Message]) -> list[Message]:
    """The user simulator's request: write the next user message of `conversation`.

    Args:
        conversation: the chat so far, ending with an assistant answer.

    Returns:
        Chat messages for the simulator.
    """
    text = (
        "Here is a conversation between a user and an AI assistant:\n\n"
        + transcript(conversation)
        + "\n\nWrite the user's next message: a natural follow-up that builds on the assistant's last "
        "answer, for example asking for more depth, a correction, an example or a related harder "
        "task. Reply with the message itself, without quotes or a `USER:` prefix."
    )
    return [{"role": "system", "content": SIMULATOR_SYSTEM}, {"role": "user", "content": text}]


_SPEAKER = re.compile(r"^\s*(?:\*\*)?(?:user|human)\s*(?:\*\*)?\s*:\s*", re.IGNORECASE)
_ASSISTANT_TURN = re.compile(r"\n\s*(?:assistant|ai|gpt)\s*:", re.IGNORECASE)


def parse_follow_up(reply: str) -> str | None:
    """The follow-up question in a simulator's reply, or None when there is none.

    Strips a leading `USER:` label and surrounding quotes, and cuts anything after the simulator
    starts writing the assistant's turn.
    """
    if not isinstance(reply, str):
        return None
    text = _ASSISTANT_TURN.split(reply, maxsplit=1)[0]
    text = _SPEAKER.sub("", text.strip()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text or None


# --- improvement suggestions and revisions --------------------------------------------------------

TEACHER_SYSTEM = "You are an experienced teacher of AI assistants. You give precise, actionable advice."


def suggestion_messages(prompt: list[Message], student_answer: str, better_answer: str) -> list[Message]:
    """A teacher's request: suggest how the student's answer should be improved.

    Args:
        prompt: the conversation up to the user turn being answered.
        student_answer: the answer that lost.
        better_answer: the teacher's own, better answer (a reference, not to be copied).

    Returns:
        Chat messages for the teacher.
    """
    history, question = _split_prompt(prompt)
    parts = []
    if history:
        parts.append("[Earlier conversation]\n" + transcript(history))
    parts.append("[User's last message]\n" + question)
    parts.append("[Student's answer]\n" + student_answer)
    parts.append("[A stronger answer, for reference]\n" + better_answer)
    parts.append(
        "List the most important improvements the student's answer needs (missing facts, errors, "
        "unclear reasoning, format), as a short numbered list. Do not rewrite the answer yourself."
    )
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_suggestions(reply: str) -> str | None:
    """The suggestions in a teacher's reply, or None when it is empty."""
    if not isinstance(reply, str):
        return None
    text = reply.strip()
    return text or None


def revision_messages(prompt: list[Message], answer: str, suggestions: str) -> list[Message]:
    """The student's request: rewrite its answer following the teacher's suggestions.

    The student sees the conversation as it was, then its answer and the suggestions, so the revised
    answer fits the same prompt and can become an SFT target for it.

    Args:
        prompt: the conversation up to the user turn being answered.
        answer: the student's first answer.
        suggestions: the teacher's suggestions.

    Returns:
        Chat messages for the student.
    """
    history, question = _split_prompt(prompt)
    text = (
        (("[Earlier conversation]\n" + transcript(history) + "\n\n") if history else "")
        + "[User's message]\n"
        + question
        + "\n\n[Your previous answer]\n"
        + answer
        + "\n\n[A teacher's suggestions]\n"
        + suggestions
        + "\n\nWrite an improved answer to the user's message that follows the suggestions. Reply "
        "with the answer only, as if replying to the user directly."
    )
    return [{"role": "user", "content": text}]


_REVISION_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:improved|revised|new)\s+answer\s*(?:\*\*)?\s*:\s*", re.IGNORECASE
)


def parse_revision(reply: str, original: str) -> str | None:
    """The revised answer, or None when it is empty or merely repeats the original."""
    if not isinstance(reply, str):
        return None
    text = _REVISION_LABEL.sub("", reply.strip()).strip()
    if not text or text == original.strip():
        return None
    return text


# --- ranking (self-teaching) ----------------------------------------------------------------------


def ranking_messages(
    prompt: list[Message], candidates: list[str], criteria: list[str] | tuple[str, ...] = DEFAULT_CRITERIA
) -> list[Message]:
    """The judge's request: rank candidate answers from best to worst.

    Args:
        prompt: the conversation up to the user turn being answered.
        candidates: the answers, shown as [1], [2], ... in this order.
        criteria: what the judge weighs.

    Returns:
        Chat messages for the judge.
    """
    history, question = _split_prompt(prompt)
    weighed = ", ".join(criteria) if criteria else "overall quality"
    parts = []
    if history:
        parts.append("[Earlier conversation]\n" + transcript(history))
    parts.append("[User's last message]\n" + question)
    for number, candidate in enumerate(candidates, 1):
        parts.append(f"[Answer {number}]\n{candidate}")
    order = " > ".join(f"[{n}]" for n in range(1, len(candidates) + 1))
    parts.append(
        f"Rank the {len(candidates)} answers from best to worst, considering {weighed}. The order in "
        "which they are shown must not matter. Explain briefly, then finish with one line that names "
        f"every answer once, best first, in this form:\nRanking: {order}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_RANKING_LINE = re.compile(r"ranking\s*:\s*(.+)", re.IGNORECASE)
_RANK_ITEM = re.compile(r"\[?\s*(\d{1,2})\s*\]?")


def parse_ranking(reply: str, count: int) -> list[int] | None:
    """A ranking of `count` candidates as 0-based indices, best first, or None if unreadable.

    The last `Ranking:` line is read; it must name every candidate exactly once.
    """
    if not isinstance(reply, str) or count < 1:
        return None
    lines = _RANKING_LINE.findall(reply)
    if not lines:
        return None
    numbers = [int(n) for n in _RANK_ITEM.findall(lines[-1])]
    if sorted(numbers) != list(range(1, count + 1)):
        return None
    return [n - 1 for n in numbers]


# --- step labels (process supervision) ------------------------------------------------------------

_STEP_PREFIX = re.compile(r"^\s*(?:step\s*\d+\s*[:.)-]|\d+\s*[.)]|[-*•])\s*", re.IGNORECASE)


def split_steps(answer: str, max_steps: int = 32) -> list[str]:
    """The steps of a solution: its non-empty lines (the PRM's step separator is a newline).

    Args:
        answer: the solution text.
        max_steps: at most this many steps are kept; longer solutions return [] (too long to label
            reliably).

    Returns:
        The steps, stripped, in order.
    """
    steps = [line.strip() for line in answer.splitlines() if line.strip()]
    return steps if len(steps) <= max_steps else []


def step_label_messages(prompt: list[Message], steps: list[str]) -> list[Message]:
    """The labeler's request: say for every step of a solution whether it is correct.

    Args:
        prompt: the conversation up to the user turn the solution answers.
        steps: the solution's steps.

    Returns:
        Chat messages for the labeler.
    """
    history, question = _split_prompt(prompt)
    # The solution's own numbering is dropped so the labeler sees each step number once.
    numbered = "\n".join(f"Step {n}: {_STEP_PREFIX.sub('', step)}" for n, step in enumerate(steps, 1))
    text = (
        (("[Earlier conversation]\n" + transcript(history) + "\n\n") if history else "")
        + "[Problem]\n"
        + question
        + "\n\n[Solution, step by step]\n"
        + numbered
        + "\n\nCheck every step. A step is correct when it is true, follows from the problem and the "
        "steps before it, and helps to solve the problem. Reply with one line per step, nothing else, "
        "in this form:\nStep 1: correct\nStep 2: incorrect"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


_STEP_LABEL = re.compile(
    r"step\s*(\d{1,3})\s*[:.)-]?\s*(?:is\s+)?\**\s*"
    r"(not\s+correct|incorrect|correct|wrong|right|yes|no|[+-]|[01])(?![a-z0-9])",
    re.IGNORECASE,
)
_POSITIVE = {"correct", "right", "yes", "+", "1"}


def parse_step_labels(reply: str, count: int) -> list[int] | None:
    """Labels 1 (correct) / 0 (incorrect) for `count` steps, or None unless every step is labelled.

    For a step labelled more than once the last label wins.
    """
    if not isinstance(reply, str) or count < 1:
        return None
    labels: dict[int, int] = {}
    for match in _STEP_LABEL.finditer(reply):
        number = int(match.group(1))
        if 1 <= number <= count:
            labels[number] = 1 if match.group(2).lower() in _POSITIVE else 0
    if len(labels) != count:
        return None
    return [labels[n] for n in range(1, count + 1)]

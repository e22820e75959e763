"""Prompt templates and reply parsers of the evol workload: pure functions, no model calls.

Every builder takes plain inputs and returns chat messages; every parser takes any reply text and
returns a parsed value or None, never raising: a small or badly behaved teacher replies with
anything, and the caller counts what it could not read and applies the documented rule.

Templates (written for this project, carrying the rules of the papers):

- in-depth evolution (`addConstraints`, `deepen`, `concretize`, `increaseReasoning`,
  `complicateInput` with in-context examples): harder but still reasonable and answerable by humans;
  code, tables and given inputs kept; 10 to 20 words added; the scaffold's words are not repeated;
- in-breadth evolution (`breadth`): a new, rarer instruction of the same domain, length and difficulty;
- downward evolution (`downward`, WizardMath): an easier instruction of the same kind, so the
  instruction reward model also sees simpler siblings, and math curricula get easier problems;
- the equality judge (elimination rule 1), the answer critique-and-rewrite of Evol-Answer, the answer
  score, the difficulty score, the instruction ranking (IRM data);
- Auto Evol-Instruct: the universal evolving method, the evolution with a given method, trajectory
  analysis, method optimisation.

References: Xu et al., 2023 (WizardLM: Evol-Instruct); Zeng et al., 2024 (Automatic Instruction
Evolving); the WizardLM-2 announcement (Evol-Answer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from posttrain_trainer.common.chat import Message

IN_DEPTH = ("addConstraints", "deepen", "concretize", "increaseReasoning", "complicateInput")
"""In-depth operations, named like the `operations` weights of the spec."""
IN_BREADTH = ("breadth",)
DOWNWARD = "downward"
"""WizardMath's downward evolution: make the instruction easier."""
UPWARD = IN_DEPTH + IN_BREADTH
"""The operations of Evol-Instruct proper (harder or new instructions)."""
OPERATIONS = (*UPWARD, DOWNWARD)
AUTO = "auto"
"""The operation name of evolutions made with an Auto Evol-Instruct method."""

ORIGINAL_MARK = "#Original Instruction#"
REWRITTEN_MARK = "#Rewritten Instruction#"
NEW_MARK = "#New Instruction#"
FINAL_MARK = "#Final Instruction#"

TEMPLATE_WORDS = (
    "original instruction",
    "rewritten instruction",
    "new instruction#",
    "#new instruction",
    "final instruction#",
    "#final instruction",
    "given prompt",
    "rewritten prompt",
    "created prompt",
)
"""Phrases of the scaffold (ours and the paper's); an evolved instruction containing one copies the
template (elimination rule 4). Matched case-insensitively."""

_DEPTH_RULES = (
    "You are an expert at writing instructions for AI assistants. Rewrite the instruction below into a "
    "more difficult version, so that even strong AI systems have to work harder to handle it well.\n"
    "Rules:\n"
    "- The rewritten instruction must stay reasonable: a person must be able to understand it and answer "
    "it.\n"
    "- Keep every non-text part of the original unchanged: code, tables, formulas and input data.\n"
    "- Add no more than 10 to 20 words to the original.\n"
    "- Do not use the words '{original}' or '{rewritten}' or mention that this is a rewrite.\n"
    "How to make it more difficult: {method}\n"
)

DEPTH_METHODS = {
    "addConstraints": "add one more constraint or requirement the answer has to meet.",
    "deepen": (
        "if the instruction asks about a certain issue, increase the depth and the breadth of the inquiry."
    ),
    "concretize": "replace general concepts with more specific ones.",
    "increaseReasoning": (
        "if the instruction can be solved with a few simple thinking steps, rewrite it so that it "
        "explicitly asks for reasoning over multiple steps."
    ),
    "complicateInput": (
        "add input data the answer must work with, in a format such as a table, code, JSON, XML, SQL, "
        "a formula or a shell command, like in the examples below."
    ),
}

COMPLICATE_EXAMPLES = (
    (
        "Sort a list of words by length.",
        "Sort the words in the Python list below by length, breaking ties alphabetically, and print the "
        'result.\nwords = ["pear", "fig", "banana", "kiwi", "apple"]',
    ),
    (
        "Which city had the most visitors?",
        "Using the table below, which city had the most visitors per resident in 2023?\n"
        "| city | visitors (millions) | residents (millions) |\n| --- | --- | --- |\n"
        "| Lisbon | 8.1 | 0.55 |\n| Vienna | 7.4 | 2.0 |\n| Prague | 7.8 | 1.3 |",
    ),
    (
        "Find the customers who spent the most.",
        "Write a SQL query over `orders(id, customer_id, total, created_at)` that returns the five "
        "customers with the highest total spending in the last 90 days, with their totals.",
    ),
)
"""In-context examples of `complicateInput` (original -> rewritten)."""

_BREADTH_RULES = (
    "You are an expert at writing instructions for AI assistants. Use the instruction below as "
    "inspiration and create a brand-new instruction.\n"
    "Rules:\n"
    "- It must belong to the same domain as the original but be rarer, about a less common topic.\n"
    "- It must have a similar length and difficulty.\n"
    "- It must be reasonable: a person must be able to understand it and answer it.\n"
    "- Do not use the words '{original}' or '{new}' or mention the original.\n"
)


_DOWNWARD_RULES = (
    "You are an expert at writing instructions for AI assistants. Rewrite the instruction below into an "
    "easier version of the same kind of task, for a learner who is not ready for the original.\n"
    "Rules:\n"
    "- Make it easier in one clear way: drop a constraint, ask for fewer steps, use simpler numbers or "
    "a more familiar setting.\n"
    "- It must stay a complete, well-defined task that a person can understand and answer on its own.\n"
    "- Keep the topic and the kind of answer asked for.\n"
    "- Do not use the words '{original}' or '{rewritten}' or mention that this is a rewrite.\n"
)


def evolve_messages(operation: str, instruction: str) -> list[Message]:
    """The request that evolves `instruction` with one of `OPERATIONS`.

    Raises:
        ValueError: an unknown operation.
    """
    if operation in DEPTH_METHODS:
        text = _DEPTH_RULES.format(
            original=ORIGINAL_MARK.strip("#").lower(),
            rewritten=REWRITTEN_MARK.strip("#").lower(),
            method=DEPTH_METHODS[operation],
        )
        if operation == "complicateInput":
            for number, (before, after) in enumerate(COMPLICATE_EXAMPLES, 1):
                text += f"\nExample {number}:\n{ORIGINAL_MARK}\n{before}\n{REWRITTEN_MARK}\n{after}\n"
        text += f"\n{ORIGINAL_MARK}\n{instruction}\n\nReply with the rewritten instruction only.\n{REWRITTEN_MARK}\n"
        return [{"role": "user", "content": text}]
    if operation == "breadth":
        text = _BREADTH_RULES.format(
            original=ORIGINAL_MARK.strip("#").lower(), new=NEW_MARK.strip("#").lower()
        )
        text += f"\n{ORIGINAL_MARK}\n{instruction}\n\nReply with the new instruction only.\n{NEW_MARK}\n"
        return [{"role": "user", "content": text}]
    if operation == DOWNWARD:
        text = _DOWNWARD_RULES.format(
            original=ORIGINAL_MARK.strip("#").lower(), rewritten=REWRITTEN_MARK.strip("#").lower()
        )
        text += f"\n{ORIGINAL_MARK}\n{instruction}\n\nReply with the rewritten instruction only.\n{REWRITTEN_MARK}\n"
        return [{"role": "user", "content": text}]
    raise ValueError(f"unknown operation {operation!r}; known: {', '.join(OPERATIONS)}")


def parse_instruction(reply: str) -> str | None:
    """The instruction in an evolution reply, or None when there is none.

    Whitespace and one pair of enclosing quotes or code fences are removed; nothing else is, so a
    reply that repeats the scaffold's labels is caught by the template-leak rule instead of being
    silently repaired.
    """
    text = reply.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3].strip()
    elif len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text or None


def copies_template(instruction: str) -> bool:
    """True when the instruction contains a scaffold phrase (elimination rule 4)."""
    lowered = instruction.lower()
    return any(word in lowered for word in TEMPLATE_WORDS)


def equal_messages(first: str, second: str) -> list[Message]:
    """Ask whether two instructions are equal (elimination rule 1: no information gain)."""
    text = (
        "Here are two instructions for an AI assistant. Are they equal? They are equal when they have "
        "the same constraints and requirements and the same depth and breadth of inquiry, even if the "
        "wording differs.\n\n"
        f"First instruction:\n{first}\n\nSecond instruction:\n{second}\n\n"
        "Answer with one word: Equal or Different."
    )
    return [{"role": "user", "content": text}]


_EQUAL = re.compile(r"\b(not\s+equal|not\s+the\s+same|different|unequal|equal|same)\b", re.IGNORECASE)


def parse_equal(reply: str) -> bool | None:
    """True for "Equal", False for "Different" (or "not equal"), None when neither is found.

    The first verdict word in the reply counts.
    """
    match = _EQUAL.search(reply)
    if match is None:
        return None
    word = match.group(1).lower()
    return word in ("equal", "same")


def answer_messages(instruction: str) -> list[Message]:
    """Ask for an answer to an instruction (the instruction is the user turn)."""
    return [{"role": "user", "content": instruction}]


IMPROVED_MARK = "Improved answer:"


def improve_messages(instruction: str, answer: str) -> list[Message]:
    """Evol-Answer: critique an answer for logic, correctness and helpfulness, then rewrite it."""
    text = (
        "Review the answer to the instruction below. First write a short critique of its logic, its "
        "correctness and how helpful and friendly it is. Then write a better answer that fixes every "
        "problem you found.\n\n"
        f"Instruction:\n{instruction}\n\nAnswer:\n{answer}\n\n"
        f"Reply in this form:\nCritique: <your critique>\n{IMPROVED_MARK} <the complete better answer>"
    )
    return [{"role": "user", "content": text}]


_IMPROVED = re.compile(r"improved\s+answer\s*:", re.IGNORECASE)


def parse_improved(reply: str) -> str | None:
    """The rewritten answer after the last `Improved answer:` label, or None if there is none."""
    matches = list(_IMPROVED.finditer(reply))
    if not matches:
        return None
    text = reply[matches[-1].end() :].strip()
    return text or None


def score_messages(instruction: str, answer: str) -> list[Message]:
    """Ask for a 1-10 quality score of an answer (Evol-Answer keeps the best)."""
    text = (
        "Rate the answer to the instruction below for correctness, sound logic and helpfulness on a "
        "scale from 1 (useless) to 10 (excellent).\n\n"
        f"Instruction:\n{instruction}\n\nAnswer:\n{answer}\n\n"
        "Reply with one line: Score: <1-10>"
    )
    return [{"role": "user", "content": text}]


def difficulty_messages(instruction: str) -> list[Message]:
    """Ask for a 1-10 difficulty score of an instruction."""
    text = (
        "How difficult is it to answer the instruction below well? Rate it from 1 (trivial) to 10 "
        "(very hard: needs expert knowledge and many reasoning steps).\n\n"
        f"Instruction:\n{instruction}\n\nReply with one line: Score: <1-10>"
    )
    return [{"role": "user", "content": text}]


_SCORE_LABEL = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")


def parse_score(reply: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """A score in [low, high]: the number after `Score:`, else the first number in range, else None."""
    for pattern in (_SCORE_LABEL, _NUMBER):
        for match in pattern.finditer(reply):
            value = float(match.group(1))
            if low <= value <= high:
                return value
    return None


def rank_messages(instructions: Sequence[str]) -> list[Message]:
    """Ask to rank numbered instructions from the best to the worst (IRM training data).

    The criteria are WizardMath's for its instruction reward model: definition, precision and
    integrity. Length and difficulty are explicitly not criteria: the siblings ranked together include
    easier (downward) evolutions, and the reward model must learn quality, not size.
    """
    listing = "\n\n".join(f"[{number}]\n{text}" for number, text in enumerate(instructions, 1))
    text = (
        "Rank the instructions below by their quality as tasks for an AI assistant, on three criteria: "
        "definition (the task is clearly defined), precision (it is exact and unambiguous, with correct "
        "facts and numbers) and integrity (it is complete and self-contained, so it can be answered as "
        "given). Do not prefer an instruction because it is longer or harder; an easy task can be the "
        "best one.\n\n"
        f"{listing}\n\n"
        "Reply with one line, from the best to the worst, for example: Ranking: 2 > 1 > 3"
    )
    return [{"role": "user", "content": text}]


_RANKING_LABEL = re.compile(r"ranking\s*:", re.IGNORECASE)


def parse_ranking(reply: str, count: int) -> list[int] | None:
    """The 0-based order (best first) of `count` ranked items, or None.

    Numbers are read after the last `Ranking:` label (or from the whole reply without one); a ranking
    is valid only when it names every item from 1 to `count` exactly once, in its first `count`
    numbers in range.
    """
    labels = list(_RANKING_LABEL.finditer(reply))
    text = reply[labels[-1].end() :] if labels else reply
    seen: list[int] = []
    for match in re.finditer(r"\d+", text):
        value = int(match.group())
        if 1 <= value <= count and value not in seen:
            seen.append(value)
        if len(seen) == count:
            break
    if sorted(seen) != list(range(1, count + 1)):
        return None
    return [value - 1 for value in seen]


# --- Auto Evol-Instruct ---------------------------------------------------------------------------

UNIVERSAL_METHOD = (
    "Step 1: Read the instruction and list several ways to make it more complex: constraints to add, "
    "concepts to make specific, reasoning steps to ask for, input data to add, questions to deepen. "
    "Do not change the language of the instruction.\n"
    "Step 2: Plan which of these ways to combine so the instruction becomes harder but stays "
    "reasonable and answerable.\n"
    "Step 3: Rewrite the instruction following the plan, adding only 10 to 20 words and keeping code, "
    "tables and input data as they are.\n"
    "Step 4: Review the rewritten instruction, fix anything unreasonable, and write the final version."
)
"""The starting point of Auto Evol-Instruct: a method that works for any instruction."""


def method_messages(method: str, instruction: str) -> list[Message]:
    """Evolve an instruction by following an evolving method (Auto Evol-Instruct)."""
    text = (
        "You rewrite instructions for AI assistants into more complex versions. Follow this method:\n\n"
        f"{method.strip()}\n\n"
        f"Instruction:\n{instruction}\n\n"
        f"Work through the method, then end your reply with the line {FINAL_MARK} followed by the final "
        "rewritten instruction and nothing else."
    )
    return [{"role": "user", "content": text}]


def parse_final(reply: str) -> str | None:
    """The instruction after the last `#Final Instruction#` label, or None if there is none."""
    index = reply.lower().rfind(FINAL_MARK.lower())
    if index < 0:
        return None
    return parse_instruction(reply[index + len(FINAL_MARK) :].lstrip(":").strip())


def analyse_messages(method: str, trajectories: Sequence[tuple[str, str, str]]) -> list[Message]:
    """Ask the optimizer to list the problems of a method from evolution trajectories.

    Args:
        method: the current evolving method.
        trajectories: (original instruction, the evolver's full reply, answer to the evolved
            instruction) per example.
    """
    shown = "\n\n".join(
        f"### Example {number}\nOriginal instruction:\n{original}\n\nEvolution:\n{evolution}\n\n"
        f"Answer to the evolved instruction:\n{answer}"
        for number, (original, evolution, answer) in enumerate(trajectories, 1)
    )
    text = (
        "An evolving method was used to rewrite instructions into more complex versions. Study the "
        "examples and list every problem you find: evolved instructions that are unreasonable or no "
        "harder than the original, that drop code or input data, that change the task, or that make "
        "the assistant only acknowledge ('Understood', 'Sure') or ask for more input ('please "
        "provide') instead of answering.\n\n"
        f"Method:\n{method.strip()}\n\n{shown}\n\n"
        "Reply with one problem per line, each starting with '- '. If there are none, reply: - none"
    )
    return [{"role": "user", "content": text}]


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")


def parse_issues(reply: str) -> list[str]:
    """The problems listed as bullets (`- `, `* `, `1.`); without bullets, the whole reply as one.

    A lone "none" means no problems.
    """
    issues = [m.group(1) for line in reply.splitlines() if (m := _BULLET.match(line))]
    if not issues and reply.strip():
        issues = [reply.strip()]
    return [issue for issue in issues if issue.strip().lower().rstrip(".") != "none"]


METHOD_MARK = "#Optimized Method#"


def optimise_messages(method: str, issues: Sequence[str]) -> list[Message]:
    """Ask the optimizer for an improved evolving method that avoids the listed problems."""
    listed = "\n".join(f"- {issue}" for issue in issues) or "- none found"
    text = (
        "Improve the evolving method below, which rewrites instructions into more complex versions. "
        "These problems were found in its results:\n"
        f"{listed}\n\n"
        f"Method:\n{method.strip()}\n\n"
        "Write an improved method as numbered steps that avoids these problems and still makes "
        "instructions more complex, reasonable and answerable, adding only 10 to 20 words. Reply with "
        f"{METHOD_MARK} on its own line followed by the improved method."
    )
    return [{"role": "user", "content": text}]


def parse_method(reply: str, min_chars: int = 40) -> str | None:
    """The method after the last `#Optimized Method#` label, or None.

    None when the label is missing or the method is shorter than `min_chars` characters (too short to be a
    method).
    """
    index = reply.lower().rfind(METHOD_MARK.lower())
    if index < 0:
        return None
    text = reply[index + len(METHOD_MARK) :].lstrip(":").strip()
    return text if len(text) >= min_chars else None

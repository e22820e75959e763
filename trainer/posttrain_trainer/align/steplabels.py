"""Step labels: training data for the process-supervised reward model (PRM).

The student solves each first-turn instruction in the step format (`common.steps.STEP_FORMAT`, the
format RLEIF asks its policy for); the solution is split into steps (its non-empty lines: the PRM reads
steps separated by newlines), and the labeler (a strong model) says for every step whether it is
correct. A reply that does not label every step is counted as unparsed and gives no row: a partly
labelled solution would teach the PRM that the unlabelled steps are something they may not be.
Solutions of one step are skipped too, they carry no process information.

Row schema (the `steps` rows of `common.chat`):
`{"id", "prompt": "<the problem>", "steps": ["...", ...], "labels": [1 | 0, ...]}`.

Reference: Luo et al., 2023 (WizardMath: PRM labels from a strong model judging each step).
"""

from __future__ import annotations

from typing import Any

from posttrain_trainer.align.prompts import split_steps, transcript
from posttrain_trainer.common.chat import Message

MIN_STEPS = 2
"""Solutions with fewer steps are not labelled."""


def problem_text(prompt: list[Message]) -> str:
    """The PRM's `prompt` field: the last user message, or the transcript for a multi-turn prompt."""
    turns = [m for m in prompt if m["role"] in ("user", "assistant")]
    if len(turns) == 1:
        return turns[0]["content"]
    return transcript(turns)


def steps_to_label(answer: str, max_steps: int) -> list[str]:
    """The steps of a solution worth labelling, or [] (too short, or longer than `max_steps`)."""
    steps = split_steps(answer, max_steps)
    return steps if len(steps) >= MIN_STEPS else []


def step_row(identifier: str, prompt: list[Message], steps: list[str], labels: list[int]) -> dict[str, Any]:
    """A PRM row.

    Raises:
        ValueError: the labels do not match the steps one to one.
    """
    if len(steps) != len(labels) or any(label not in (0, 1) for label in labels):
        raise ValueError("one label of 0 or 1 per step is needed")
    return {"id": identifier, "prompt": problem_text(prompt), "steps": steps, "labels": labels}

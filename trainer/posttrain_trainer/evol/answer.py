"""Evol-Answer: answer an instruction, then critique and rewrite the answer N times; keep the best.

Pass 0 is the plain answer. Each further pass asks the answerer to critique the latest readable
answer for logic, correctness and helpfulness and to rewrite it; a reply without the
`Improved answer:` label is skipped (counted), so the next pass rewrites the last good version. With
at least one rewrite, the judge scores every version 1-10 and the best is kept; ties go to the
earliest version, and a version whose score cannot be read ranks below every scored one.

Inputs: the instruction, its first answer (or None to ask for one), the caller. Outputs: `Answered`.

Reference: the WizardLM-2 announcement (Evol-Answer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from posttrain_trainer.evol import prompts
from posttrain_trainer.evol.caller import Caller


@dataclass
class Answered:
    """The outcome of Evol-Answer for one instruction.

    Attributes:
        answer: the kept answer, None when not even the first answer could be had.
        versions: every readable version, the first answer first.
        scores: the judge's score per version (None: unreadable; empty without rewrites).
        chosen: index of the kept version.
        unparsed_rewrites: rewrites without the label.
        unparsed_scores: scores that could not be read.
    """

    answer: str | None
    versions: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    chosen: int = 0
    unparsed_rewrites: int = 0
    unparsed_scores: int = 0

    def meta(self) -> dict[str, object]:
        """What a dataset row records about how its answer was made."""
        return {"versions": len(self.versions), "scores": self.scores, "chosen": self.chosen}


def best_version(scores: list[float | None]) -> int:
    """Index of the best score; the earliest wins ties; unreadable scores rank last."""
    best = 0
    for index, score in enumerate(scores):
        current = scores[best]
        if score is not None and (current is None or score > current):
            best = index
    return best


async def evol_answer(
    caller: Caller,
    tag: str,
    instruction: str,
    answerer: str,
    judge: str,
    passes: int,
    first: str | None = None,
) -> Answered:
    """Run Evol-Answer for one instruction.

    Args:
        caller: the journaled client.
        tag: unique id of the instruction within the run (journal purposes derive from it).
        instruction: the instruction.
        answerer: who answers and rewrites.
        judge: who scores the versions.
        passes: rewrites after the first answer.
        first: the first answer if already known (it is asked for otherwise).
    """
    if first is None:
        first = await caller.ask(f"answer/{tag}", answerer, prompts.answer_messages(instruction))
    if first is None:
        return Answered(answer=None)
    result = Answered(answer=first, versions=[first])
    if passes <= 0:
        return result
    for number in range(1, passes + 1):
        reply = await caller.ask(
            f"improve/{tag}/p{number}", answerer, prompts.improve_messages(instruction, result.versions[-1])
        )
        if reply is None:
            continue
        improved = prompts.parse_improved(reply)
        if improved is None:
            result.unparsed_rewrites += 1
            continue
        result.versions.append(improved)
    if len(result.versions) == 1:
        return result
    replies = await asyncio.gather(
        *(
            caller.ask(f"score/{tag}/v{index}", judge, prompts.score_messages(instruction, version))
            for index, version in enumerate(result.versions)
        )
    )
    scores = [prompts.parse_score(reply) if reply is not None else None for reply in replies]
    result.unparsed_scores = sum(
        1 for reply, score in zip(replies, scores, strict=True) if reply and score is None
    )
    result.scores = scores
    result.chosen = best_version(scores)
    result.answer = result.versions[result.chosen]
    return result

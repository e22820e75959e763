"""Auto Evol-Instruct: optimise the evolving method itself, then evolve with the chosen method.

1. Start from the universal method (`prompts.UNIVERSAL_METHOD`) and score it: its failure rate on a
   development set (each dev instruction is evolved with the method and the evolution answered;
   `elimination.auto_failure` decides; a request that fails counts as a failure).
2. Each step: the evolver evolves a mini-batch with the current method; the optimizer reads the
   trajectories (original, evolution, answer) and lists the problems; it proposes `candidates`
   improved methods (separate requests with different seeds); each readable, new candidate is scored
   on the development set; the best candidate replaces the current method if its failure rate is
   strictly lower.
3. The chosen method is returned with the trajectory of the optimisation (issues, candidates and
   their failure rates per step): the `method` output.

The development set is drawn first (seeded) and the mini-batches from the other instructions (from
all of them when too few remain).

Inputs: instructions, the settings, the caller. Outputs: `Optimised`.

Reference: Zeng et al., 2024 (Automatic Instruction Evolving for Large Language Models).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from posttrain.api.evol import AutoEvol

from posttrain_trainer.evol import prompts
from posttrain_trainer.evol.caller import Caller
from posttrain_trainer.evol.elimination import auto_failure


@dataclass
class Optimised:
    """The result of the optimisation.

    Attributes:
        method: the chosen evolving method.
        initial_failure_rate: the universal method's failure rate on the development set.
        failure_rate: the chosen method's.
        steps: per step: issues, candidates with failure rates, whether one was adopted.
        unparsed: optimizer replies that held no method.
    """

    method: str
    initial_failure_rate: float
    failure_rate: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    unparsed: int = 0

    def document(self) -> dict[str, Any]:
        """The `method` output."""
        return {
            "method": self.method,
            "initialFailureRate": self.initial_failure_rate,
            "failureRate": self.failure_rate,
            "trajectory": self.steps,
        }


def method_id(method: str) -> str:
    """A short stable id of a method's text (journal purposes use it)."""
    return hashlib.sha256(method.encode()).hexdigest()[:12]


def split_dev(instructions: Sequence[str], dev_size: int, seed: int) -> tuple[list[str], list[str]]:
    """(development set, the rest), drawn with a seeded shuffle."""
    order = list(range(len(instructions)))
    random.Random(f"{seed}:auto-dev").shuffle(order)
    dev = [instructions[i] for i in order[:dev_size]]
    rest = [instructions[i] for i in order[dev_size:]]
    return dev, rest


class AutoEvolver:
    """Runs the optimisation.

    Args:
        caller: the journaled client.
        settings: the `auto` settings.
        evolver: who evolves with the method.
        answerer: who answers evolved instructions.
        optimizer: who analyses and proposes methods.
        seed: the run's seed.
    """

    def __init__(
        self, caller: Caller, settings: AutoEvol, evolver: str, answerer: str, optimizer: str, seed: int
    ) -> None:
        self.caller = caller
        self.settings = settings
        self.evolver = evolver
        self.answerer = answerer
        self.optimizer = optimizer
        self.seed = seed
        self._rates: dict[str, float] = {}

    async def evolve(
        self, method: str, instruction: str, tag: str
    ) -> tuple[str | None, str | None, str | None]:
        """(evolution reply, evolved instruction, its answer) with a method."""
        reply = await self.caller.ask(
            f"auto-evolve/{tag}", self.evolver, prompts.method_messages(method, instruction)
        )
        evolved = prompts.parse_final(reply) if reply is not None else None
        answer = None
        if evolved is not None:
            answer = await self.caller.ask(
                f"auto-answer/{tag}", self.answerer, prompts.answer_messages(evolved)
            )
        return reply, evolved, answer

    async def failure_rate(self, method: str, dev: Sequence[str]) -> float:
        """The share of development instructions the method fails on."""
        key = method_id(method)
        if key not in self._rates:
            outcomes = await asyncio.gather(
                *(self.evolve(method, text, f"dev/{key}/{index}") for index, text in enumerate(dev))
            )
            failures = 0
            for text, (reply, evolved, answer) in zip(dev, outcomes, strict=True):
                if reply is None or auto_failure(text, evolved, answer) is not None:
                    failures += 1
            self._rates[key] = failures / len(dev) if dev else 1.0
        return self._rates[key]

    async def run(self, instructions: Sequence[str]) -> Optimised:
        """Optimise the method on these instructions.

        Raises:
            ValueError: no instructions.
        """
        if not instructions:
            raise ValueError("Auto Evol-Instruct needs at least one instruction")
        dev, rest = split_dev(instructions, self.settings.dev_set_size, self.seed)
        pool = rest or list(instructions)
        method = prompts.UNIVERSAL_METHOD
        rate = await self.failure_rate(method, dev)
        result = Optimised(method=method, initial_failure_rate=rate, failure_rate=rate)
        for step in range(self.settings.steps):
            rng = random.Random(f"{self.seed}:auto-batch:{step}")
            batch = rng.sample(pool, min(self.settings.batch_size, len(pool)))
            current = method_id(method)
            trajectories = await asyncio.gather(
                *(self.evolve(method, text, f"s{step}/{current}/{index}") for index, text in enumerate(batch))
            )
            shown = [
                (text, reply or "", answer or "")
                for text, (reply, _, answer) in zip(batch, trajectories, strict=True)
            ]
            analysis = await self.caller.ask(
                f"auto-analyse/s{step}/{current}", self.optimizer, prompts.analyse_messages(method, shown)
            )
            issues = prompts.parse_issues(analysis or "")
            replies = await asyncio.gather(
                *(
                    self.caller.ask(
                        f"auto-optimise/s{step}/{current}/c{number}",
                        self.optimizer,
                        prompts.optimise_messages(method, issues),
                        seed=self.seed * 1000 + step * 50 + number,
                    )
                    for number in range(self.settings.candidates)
                )
            )
            candidates: list[str] = []
            for reply in replies:
                proposed = prompts.parse_method(reply) if reply is not None else None
                if proposed is None:
                    result.unparsed += 1
                elif proposed not in candidates and proposed != method:
                    candidates.append(proposed)
            rates = await asyncio.gather(*(self.failure_rate(candidate, dev) for candidate in candidates))
            adopted = None
            for index, candidate_rate in enumerate(rates):
                if candidate_rate < rate and (adopted is None or candidate_rate < rates[adopted]):
                    adopted = index
            result.steps.append(
                {
                    "step": step,
                    "method": method,
                    "failureRate": rate,
                    "issues": issues,
                    "candidates": [
                        {"method": candidate, "failureRate": candidate_rate}
                        for candidate, candidate_rate in zip(candidates, rates, strict=True)
                    ],
                    "adopted": adopted,
                }
            )
            if adopted is not None:
                method, rate = candidates[adopted], rates[adopted]
        result.method, result.failure_rate = method, rate
        return result

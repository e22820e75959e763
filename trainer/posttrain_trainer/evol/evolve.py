"""Evol-Instruct rounds: evolve each seed's lineage, eliminate failures, answer, rank and rate.

Per seed (all seeds concurrently; requests bounded by the client), for rounds 1..M:

1. draw an operation by the configured weights — a pure function of (run seed, seed id, round), so a
   resumed run draws the same — or use the Auto Evol-Instruct method when one was chosen;
2. the routed teacher evolves the lineage's current instruction; the reply is parsed;
3. the evolved instruction is answered (unless answers are off, or it is already eliminated);
4. elimination (`elimination.py`): the cheap rules, then the equality judge; an unreadable verdict
   keeps the evolution (counted as `judge.unparsed`);
5. kept: the evolution becomes the lineage's current instruction and gets Evol-Answer's rewrites
   (`answer.py`); eliminated: the parent stays current when `recycleFailed` (it is evolved again next
   round), otherwise the lineage stops; a request that failed after retries: the attempt is `failed`
   and the lineage continues from its parent (the next run asks again).

Then, per seed: the seed's answer (kept from the row, or made with Evol-Answer), its ranking of
sibling evolutions (IRM data, `rank`) and difficulty ratings, when enabled.

Every record carries its lineage (`posttrain.api.lineage`): `{seed, round, operation, teacher, parent}`
with its id, step and parents. An `evolved`/`eliminated` record is the evolution (`evolve`: its verdict,
rule and judge; its parent the previous kept evolution or the seed row); a dataset row is its answer
(`answer`: answerer and rewrites; its parent the evolution) or the seed kept as it was (`seed`); a
ranking row names the seed (`rank`). Outputs are built in seed order, so they do not depend on the
order replies arrived in.

Inputs: seed rows (chat schema), the EvolJob spec, the caller. Outputs: `EvolOutcome`.

References: Xu et al., 2023 (WizardLM: Evol-Instruct); Luo et al., 2023 (WizardMath: the IRM's
ranked sibling evolutions, downward evolution); the WizardLM-2 announcement.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from posttrain.api.evol import EvolJobSpec
from posttrain.api.lineage import node_id, origin, stamp
from posttrain.api.metrics import Evol

from posttrain_trainer.client import Slots
from posttrain_trainer.common.chat import Row, answer, instruction
from posttrain_trainer.evol import prompts
from posttrain_trainer.evol.answer import Answered, evol_answer
from posttrain_trainer.evol.caller import Caller
from posttrain_trainer.evol.elimination import RULES, check_without_judge, normalise

Progress = Callable[[int, int], None]

LINEAGE_WINDOW = 4
"""Lineages open per request slot (see `EvolRun.run`)."""


@dataclass
class Seed:
    """One seed instruction.

    Attributes:
        index: position in the input (routing and output order use it).
        id: the row's id.
        instruction: its first user message.
        answer: its first assistant message, if any.
        category: `meta.category`, or `general`.
        row: the normalised chat row.
        made_from: how the records made from it name it (`posttrain.api.lineage.origin`).
    """

    index: int
    id: str
    instruction: str
    answer: str | None
    category: str
    row: Row
    made_from: dict[str, Any] = field(default_factory=lambda: {"parents": []})

    @classmethod
    def from_row(cls, index: int, row: Row, made_from: dict[str, Any] | None = None) -> Seed:
        """A seed from a normalised chat row (`made_from`: its lineage origin, see `api.lineage.origin`)."""
        category = row["meta"].get("category")
        return cls(
            index=index,
            id=str(row["id"]),
            instruction=instruction(row),
            answer=answer(row) or None,
            category=category if isinstance(category, str) and category else "general",
            row=row,
            made_from=made_from if made_from is not None else origin(row, "", None),
        )


@dataclass
class Attempt:
    """One evolution attempt and its verdict."""

    id: str
    seed: str
    round: int
    operation: str
    teacher: str
    parent: str
    parent_instruction: str
    made_from: dict[str, Any] = field(default_factory=lambda: {"parents": []})
    """The parent's lineage (`{"parents": [id]}`, or the seed's source)."""
    instruction: str | None = None
    answer: str | None = None
    verdict: str = "failed"
    """`kept`, `eliminated` or `failed` (a request failed after retries)."""
    rule: str | None = None
    answered: Answered | None = None
    difficulty: float | None = None

    def lineage(self) -> dict[str, Any]:
        """Where the record comes from."""
        return {
            "seed": self.seed,
            "round": self.round,
            "operation": self.operation,
            "teacher": self.teacher,
            "parent": self.parent,
        }

    def node(self, judge: str) -> dict[str, Any]:
        """The evolution's lineage object (step `evolve`): its parent, how it was made, its verdict."""
        parents = list(self.made_from.get("parents", []))
        source = self.made_from.get("source")
        content = {"id": self.id, "instruction": self.instruction}
        node = {
            **self.lineage(),
            "step": "evolve",
            "parents": parents,
            "verdict": self.verdict,
            "judge": judge,
        }
        if self.rule is not None:
            node["rule"] = self.rule
        if source is not None:
            node["source"] = source
        node["id"] = node_id("evolve", parents, source, content)
        return node

    def record(self, judge: str) -> dict[str, Any]:
        """The row of the `evolved` (and `eliminated`) output (`judge`: who judged elimination)."""
        return {
            "id": self.id,
            "instruction": self.instruction,
            "answer": self.answer,
            "parentInstruction": self.parent_instruction,
            "verdict": self.verdict,
            "rule": self.rule,
            "lineage": self.node(judge),
        }


@dataclass
class Lineage:
    """Everything made from one seed."""

    seed: Seed
    attempts: list[Attempt] = field(default_factory=list)
    seed_answer: Answered | None = None
    seed_difficulty: float | None = None
    ranking: dict[str, Any] | None = None


@dataclass
class EvolOutcome:
    """The rows of every output and the metrics."""

    dataset: list[Row] = field(default_factory=list)
    evolved: list[dict[str, Any]] = field(default_factory=list)
    eliminated: list[dict[str, Any]] = field(default_factory=list)
    rankings: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Tally:
    """What the metrics count over the attempts of a run, beyond the evolver's counters."""

    by_operation: Counter[str] = field(default_factory=Counter)
    """Operation -> attempts judged (kept or eliminated)."""
    kept_by_operation: Counter[str] = field(default_factory=Counter)
    difficulty_by_round: dict[int, list[float]] = field(default_factory=dict)
    """Round -> difficulty of each kept evolution of that round."""
    seed_difficulty: list[float] = field(default_factory=list)

    def difficulty_metrics(self) -> dict[str, float]:
        """Mean difficulty of the seeds, of each round's kept evolutions, and of the last round."""
        metrics: dict[str, float] = {}
        if self.seed_difficulty:
            metrics[Evol.DIFFICULTY_SEEDS] = statistics.fmean(self.seed_difficulty)
        for round_number in sorted(self.difficulty_by_round):
            metrics[Evol.DIFFICULTY_ROUND.of(round_number)] = statistics.fmean(
                self.difficulty_by_round[round_number]
            )
        if self.difficulty_by_round:
            metrics[Evol.DIFFICULTY_FINAL] = metrics[Evol.DIFFICULTY_ROUND.of(max(self.difficulty_by_round))]
        return metrics


def operation_weights(spec: EvolJobSpec) -> dict[str, float]:
    """Operation name (camelCase, as in the spec) -> weight."""
    return {name: float(value) for name, value in spec.evol.operations.wire().items()}


def draw_operation(weights: dict[str, float], run_seed: int, seed_id: str, round_number: int) -> str:
    """The operation for one instruction and round: a weighted draw that depends only on its inputs."""
    names = [name for name in prompts.OPERATIONS if weights.get(name, 0.0) > 0.0]
    if not names:
        raise ValueError("every operation weight is zero")
    rng = random.Random(f"{run_seed}:{seed_id}:{round_number}")
    return rng.choices(names, weights=[weights[name] for name in names])[0]


class Router:
    """Who evolves, answers and judges.

    Args:
        spec: the EvolJob spec.
    """

    def __init__(self, spec: EvolJobSpec) -> None:
        settings = spec.evol
        self.teachers = [teacher.name for teacher in spec.teachers]
        self.evolver = settings.evolver or self.teachers[0]
        self.answerer = settings.answerer
        self.judge = settings.judge or self.teachers[-1]
        self.optimizer = settings.auto.optimizer or self.teachers[0]
        self.routing = settings.routing
        self.categories = dict(settings.category_teachers)

    def teacher_for(self, seed: Seed) -> str:
        """The teacher that evolves this seed's lineage."""
        if self.routing == "round-robin":
            return self.teachers[seed.index % len(self.teachers)]
        if self.routing == "category":
            return self.categories.get(seed.category, self.evolver)
        return self.evolver

    def answerer_for(self, seed: Seed) -> str:
        """The teacher that answers this seed's instructions."""
        return self.answerer or self.teacher_for(seed)


class EvolRun:
    """Runs Evol-Instruct, elimination, Evol-Answer, rankings and difficulty over the seeds.

    Args:
        spec: the EvolJob spec.
        caller: the journaled client.
        method: the Auto Evol-Instruct method to evolve with, or None for the operations.
        progress: called with (lineages done, lineages).
    """

    def __init__(
        self, spec: EvolJobSpec, caller: Caller, method: str | None = None, progress: Progress | None = None
    ) -> None:
        self.spec = spec
        self.settings = spec.evol
        self.caller = caller
        self.method = method
        self.progress = progress or (lambda done, total: None)
        self.router = Router(spec)
        self.weights = operation_weights(spec)
        self.counters: Counter[str] = Counter()
        self._done = 0
        self._total = 0

    # --- one evolution --------------------------------------------------------------------------

    async def _evolve_text(
        self, tag: str, operation: str, teacher: str, parent: str
    ) -> tuple[bool, str | None]:
        """(request succeeded, evolved instruction or None)."""
        if operation == prompts.AUTO:
            assert self.method is not None
            reply = await self.caller.ask(
                f"evolve/{tag}", teacher, prompts.method_messages(self.method, parent)
            )
            return reply is not None, prompts.parse_final(reply) if reply is not None else None
        reply = await self.caller.ask(f"evolve/{tag}", teacher, prompts.evolve_messages(operation, parent))
        return reply is not None, prompts.parse_instruction(reply) if reply is not None else None

    async def attempt(
        self,
        seed: Seed,
        round_number: int,
        parent_id: str,
        parent: str,
        made_from: dict[str, Any] | None = None,
    ) -> Attempt:
        """Evolve `parent` once and judge the result (steps 1-4 of the module docstring)."""
        operation = (
            prompts.AUTO
            if self.method is not None
            else draw_operation(self.weights, self.settings.seed, seed.id, round_number)
        )
        teacher = self.router.teacher_for(seed)
        tag = f"{seed.id}/r{round_number}"
        result = Attempt(
            id=f"{seed.id}.r{round_number}",
            seed=seed.id,
            round=round_number,
            operation=operation,
            teacher=teacher,
            parent=parent_id,
            parent_instruction=parent,
            made_from=made_from if made_from is not None else seed.made_from,
        )
        succeeded, evolved = await self._evolve_text(tag, operation, teacher, parent)
        if not succeeded:
            return result
        result.instruction = evolved
        rules = self.settings.elimination
        rule = check_without_judge(rules, parent, evolved, None)
        if rule is None and self.settings.answer.enabled:
            assert evolved is not None
            first = await self.caller.ask(
                f"answer/{result.id}", self.router.answerer_for(seed), prompts.answer_messages(evolved)
            )
            if first is None:
                return result
            result.answer = first
            rule = check_without_judge(rules, parent, evolved, first)
        if rule is None and rules.no_information_gain:
            assert evolved is not None
            verdict = await self.caller.ask(
                f"judge-equal/{result.id}", self.router.judge, prompts.equal_messages(parent, evolved)
            )
            if verdict is None:
                return result
            equal = prompts.parse_equal(verdict)
            if equal is None:
                self.counters[Evol.JUDGE_UNPARSED] += 1
            elif equal:
                rule = "noInformationGain"
        result.verdict = "kept" if rule is None else "eliminated"
        result.rule = rule
        return result

    # --- one lineage ----------------------------------------------------------------------------

    async def lineage(self, seed: Seed) -> Lineage:
        """Evolve one seed for every round and finish its records."""
        out = Lineage(seed=seed)
        finishing: list[asyncio.Task[None]] = [asyncio.create_task(self._finish_seed(out))]
        parent_id, parent, made_from = seed.id, seed.instruction, seed.made_from
        for round_number in range(1, self.settings.rounds + 1):
            attempt = await self.attempt(seed, round_number, parent_id, parent, made_from)
            out.attempts.append(attempt)
            if attempt.verdict == "kept":
                assert attempt.instruction is not None
                parent_id, parent = attempt.id, attempt.instruction
                made_from = {"parents": [attempt.node(self.router.judge)["id"]]}
                finishing.append(asyncio.create_task(self._finish_attempt(seed, attempt)))
            elif attempt.verdict == "eliminated" and not self.settings.elimination.recycle_failed:
                break
        await asyncio.gather(*finishing)
        if self.settings.rankings.enabled and (
            self.settings.rankings.limit is None or seed.index < self.settings.rankings.limit
        ):
            out.ranking = await self.rank(seed)
        self._done += 1
        self.progress(self._done, self._total)
        return out

    async def _finish_attempt(self, seed: Seed, attempt: Attempt) -> None:
        """Evol-Answer rewrites and the difficulty rating of a kept evolution."""
        assert attempt.instruction is not None
        if self.settings.answer.enabled:
            attempt.answered = await evol_answer(
                self.caller,
                attempt.id,
                attempt.instruction,
                self.router.answerer_for(seed),
                self.router.judge,
                self.settings.answer.passes,
                first=attempt.answer,
            )
            attempt.answer = attempt.answered.answer
        if self.settings.difficulty:
            attempt.difficulty = await self.rate(attempt.id, attempt.instruction)

    async def _finish_seed(self, out: Lineage) -> None:
        """The seed's own answer and difficulty."""
        seed = out.seed
        answers = self.settings.answer
        if seed.answer is not None and answers.keep_seed_answers:
            out.seed_answer = Answered(answer=seed.answer, versions=[seed.answer])
        elif answers.enabled:
            out.seed_answer = await evol_answer(
                self.caller,
                seed.id,
                seed.instruction,
                self.router.answerer_for(seed),
                self.router.judge,
                answers.passes,
            )
        if self.settings.difficulty:
            out.seed_difficulty = await self.rate(seed.id, seed.instruction)

    async def rate(self, tag: str, text: str) -> float | None:
        """The judge's difficulty rating of an instruction, None if unreadable."""
        reply = await self.caller.ask(
            f"difficulty/{tag}", self.router.judge, prompts.difficulty_messages(text)
        )
        if reply is None:
            return None
        score = prompts.parse_score(reply)
        if score is None:
            self.counters[Evol.DIFFICULTY_UNPARSED] += 1
        return score

    # --- rankings (IRM data) --------------------------------------------------------------------

    async def siblings(self, seed: Seed) -> list[tuple[str, str, str, str]]:
        """Distinct sibling evolutions of the seed: (id, text, operation, teacher).

        Sibling i is made by teacher i mod n (`rankings.teachers`, or every teacher); the first
        `rankings.downward` distinct ones are downward evolutions, the others are drawn from the upward
        operation weights (or use the Auto Evol-Instruct method). Missing siblings (failed requests,
        duplicates) are asked again, concurrently, up to twice `variants` requests in all.
        """
        settings = self.settings.rankings
        teachers = settings.teachers or self.router.teachers
        upward = {name: weight for name, weight in self.weights.items() if name != prompts.DOWNWARD}
        if not any(weight > 0.0 for weight in upward.values()):
            upward = dict.fromkeys(prompts.UPWARD, 1.0)
        found: list[tuple[str, str, str, str]] = []
        seen: set[str] = set()
        made = 0
        while len(found) < settings.variants and made < 2 * settings.variants:
            batch = range(made, min(made + settings.variants - len(found), 2 * settings.variants))
            downward_left = settings.downward - sum(1 for s in found if s[2] == prompts.DOWNWARD)
            plans: list[tuple[int, str, str]] = []
            for offset, index in enumerate(batch):
                if offset < downward_left:
                    operation = prompts.DOWNWARD
                elif self.method is not None:
                    operation = prompts.AUTO
                else:
                    operation = draw_operation(upward, self.settings.seed, seed.id, 1000 + index)
                plans.append((index, operation, teachers[index % len(teachers)]))
            made = batch.stop
            replies = await asyncio.gather(
                *(
                    self._evolve_text(f"{seed.id}/s{index}", operation, teacher, seed.instruction)
                    for index, operation, teacher in plans
                )
            )
            for (index, operation, teacher), (_, text) in zip(plans, replies, strict=True):
                key = normalise(text) if text is not None else ""
                if text is not None and key and key not in seen and key != normalise(seed.instruction):
                    seen.add(key)
                    found.append((f"{seed.id}.s{index}", text, operation, teacher))
        return found[: settings.variants]

    async def rank(self, seed: Seed) -> dict[str, Any] | None:
        """A ranking row of the seed's sibling evolutions, or None (too few siblings, unreadable).

        WizardMath's IRM data: several evolutions of one instruction, from different operations and
        teachers and including easier ones, ranked on definition, precision and integrity. Siblings
        share a parent, so the ranking compares quality, not depth (a seed ranked against its own
        descendants would teach that longer and deeper is better).
        """
        variants = await self.siblings(seed)
        if len(variants) < 2:
            self.counters[Evol.RANKINGS_SKIPPED] += 1
            return None
        # Shown in a seeded random order, so the judge's position bias favours no operation or teacher.
        order = list(range(len(variants)))
        random.Random(f"{self.settings.seed}:rank:{seed.id}").shuffle(order)
        shown = [variants[i] for i in order]
        reply = await self.caller.ask(
            f"rank/{seed.id}", self.router.judge, prompts.rank_messages([text for _, text, _, _ in shown])
        )
        ranking = prompts.parse_ranking(reply, len(shown)) if reply is not None else None
        if ranking is None:
            if reply is not None:
                self.counters[Evol.RANKINGS_UNPARSED] += 1
            return None
        ranked = [shown[i] for i in ranking]
        row = {
            "id": seed.id,
            "instructions": [text for _, text, _, _ in ranked],
            "meta": {
                "ranker": self.router.judge,
                "ids": [identifier for identifier, _, _, _ in ranked],
                "operations": [operation for _, _, operation, _ in ranked],
                "teachers": [teacher for _, _, _, teacher in ranked],
                "parent": seed.id,
                "category": seed.category,
            },
        }
        return stamp(row, "rank", seed.made_from, ranker=self.router.judge)

    # --- the whole run --------------------------------------------------------------------------

    async def run(self, seeds: list[Seed]) -> EvolOutcome:
        """Evolve every seed and build the outputs.

        At most `LINEAGE_WINDOW` x concurrency lineages are open at a time: enough to keep every
        request slot busy (a lineage mostly waits on one request at a time), without a coroutine per
        seed of a large dataset waiting in memory.
        """
        self._total = len(seeds)
        window = Slots(max(1, LINEAGE_WINDOW * self.settings.concurrency))

        async def bounded(seed: Seed) -> Lineage:
            async with window:
                return await self.lineage(seed)

        lineages = await asyncio.gather(*(bounded(seed) for seed in seeds))
        return self.outcome(lineages)

    def outcome(self, lineages: list[Lineage]) -> EvolOutcome:
        """Rows and metrics, in seed order."""
        result = EvolOutcome()
        tally = _Tally()
        for out in lineages:
            result.dataset.append(self._seed_row(out))
            if out.seed_difficulty is not None:
                tally.seed_difficulty.append(out.seed_difficulty)
            for attempt in out.attempts:
                self._add_attempt(result, tally, out.seed, attempt)
            self._count_answer(out.seed_answer)
            if out.ranking is not None:
                result.rankings.append(out.ranking)
        result.metrics = self._metrics(len(lineages), result, tally)
        return result

    def _add_attempt(self, result: EvolOutcome, tally: _Tally, seed: Seed, attempt: Attempt) -> None:
        """Log one evolution attempt and count it; a kept one also becomes a dataset row."""
        counters = self.counters
        result.evolved.append(attempt.record(self.router.judge))
        counters[Evol.EVOLUTIONS_BY_TEACHER.of(attempt.teacher)] += 1
        if attempt.verdict == "failed":
            counters["failed"] += 1
            return
        tally.by_operation[attempt.operation] += 1
        if attempt.verdict == "eliminated":
            counters["eliminated"] += 1
            counters[Evol.ELIMINATED_BY_RULE.of(attempt.rule)] += 1
            result.eliminated.append(attempt.record(self.router.judge))
            return
        counters["kept"] += 1
        counters[Evol.KEPT_BY_TEACHER.of(attempt.teacher)] += 1
        tally.kept_by_operation[attempt.operation] += 1
        if attempt.difficulty is not None:
            tally.difficulty_by_round.setdefault(attempt.round, []).append(attempt.difficulty)
        result.dataset.append(self._evolved_row(seed, attempt))
        self._count_answer(attempt.answered)

    def _metrics(self, seeds: int, result: EvolOutcome, tally: _Tally) -> dict[str, float]:
        """The run's metrics from the counters, the outputs and the tally of the attempts."""
        counters = self.counters
        judged = counters["kept"] + counters["eliminated"]
        metrics: dict[str, float] = {
            Evol.SEEDS: float(seeds),
            Evol.ROWS_OUT: float(len(result.dataset)),
            Evol.ATTEMPTS: float(len(result.evolved)),
            Evol.KEPT: float(counters["kept"]),
            Evol.ELIMINATED: float(counters["eliminated"]),
            Evol.FAILED: float(counters["failed"]),
            Evol.YIELD: counters["kept"] / judged if judged else 0.0,
        }
        for rule in RULES:
            metrics[Evol.ELIMINATED_BY_RULE.of(rule)] = float(counters[Evol.ELIMINATED_BY_RULE.of(rule)])
        for operation in sorted(tally.by_operation):
            metrics[Evol.YIELD_BY_OPERATION.of(operation)] = (
                tally.kept_by_operation[operation] / tally.by_operation[operation]
            )
        for name in sorted(counters):
            if name.startswith(("evolutions.", "kept.", "judge.", "answer.", "rankings.", "difficulty.")):
                metrics[name] = float(counters[name])
        if self.settings.rankings.enabled:
            metrics[Evol.ROWS_RANKINGS] = float(len(result.rankings))
        metrics.update(tally.difficulty_metrics())
        return metrics

    def _count_answer(self, answered: Answered | None) -> None:
        if answered is None:
            return
        self.counters[Evol.ANSWER_REWRITES] += len(answered.versions) - 1
        self.counters[Evol.ANSWER_IMPROVED] += int(answered.chosen > 0)
        self.counters[Evol.ANSWER_UNPARSED_REWRITES] += answered.unparsed_rewrites
        self.counters[Evol.ANSWER_UNPARSED_SCORES] += answered.unparsed_scores

    def _seed_row(self, out: Lineage) -> Row:
        seed = out.seed
        meta = dict(seed.row["meta"])
        details: dict[str, Any] = {
            "seed": seed.id,
            "round": 0,
            "operation": None,
            "teacher": None,
            "parent": None,
        }
        meta.pop("lineage", None)
        if out.seed_difficulty is not None:
            meta["difficulty"] = out.seed_difficulty
        answered = out.seed_answer
        kept_original = seed.answer is not None and self.settings.answer.keep_seed_answers
        if kept_original or answered is None or answered.answer is None:
            messages = list(seed.row["messages"])
        else:
            system = [m for m in seed.row["messages"][:1] if m["role"] == "system"]
            messages = [
                *system,
                {"role": "user", "content": seed.instruction},
                {"role": "assistant", "content": answered.answer},
            ]
            meta["answerer"] = self.router.answerer_for(seed)
            meta["evolAnswer"] = answered.meta()
            details.update(
                answerer=meta["answerer"], rewrites=len(answered.versions) - 1, chosen=answered.chosen
            )
            return stamp(
                {"id": seed.id, "messages": messages, "meta": meta}, "answer", seed.made_from, **details
            )
        return stamp({"id": seed.id, "messages": messages, "meta": meta}, "seed", seed.made_from, **details)

    def _evolved_row(self, seed: Seed, attempt: Attempt) -> Row:
        assert attempt.instruction is not None
        messages = [{"role": "user", "content": attempt.instruction}]
        meta: dict[str, Any] = {"category": seed.category}
        details = attempt.lineage()
        if attempt.answer is not None:
            messages.append({"role": "assistant", "content": attempt.answer})
            meta["answerer"] = details["answerer"] = self.router.answerer_for(seed)
        if attempt.answered is not None:
            meta["evolAnswer"] = attempt.answered.meta()
            details.update(rewrites=len(attempt.answered.versions) - 1, chosen=attempt.answered.chosen)
        if attempt.difficulty is not None:
            meta["difficulty"] = attempt.difficulty
        made_from = {"parents": [attempt.node(self.router.judge)["id"]]}
        return stamp({"id": attempt.id, "messages": messages, "meta": meta}, "answer", made_from, **details)

"""One AlignRound: co-teaching battles, suggestions, self-teaching, step labels and the arena.

The flow, per training instruction (all instructions concurrently, requests bounded by the client):

1. Simulated chat. Turn 1 is the instruction. Every participant (the student and each teacher)
   answers the same dialogue; each turn is a battle of the student against each teacher. The next
   user turn is the dataset's own (if the row has more user turns) or is asked by the user simulator
   from the conversation so far, whose assistant turns are the first teacher's answers.
2. Judging: every battle goes to every judge in both orders (`judge` resolves them).
3. Improvement suggestions: for each battle the student lost, the winning teacher lists
   improvements and the student rewrites its answer with them. The rewrite is judged again against
   the teacher's answer (a `revision` battle, both orders, every judge) and becomes an SFT row only
   when it is at most `revisionMargin` points below it: an unjudged rewrite may be no better than the
   answer that lost.
4. Self-teaching (if enabled): the student samples N candidates for turn 1; the judges rank them
   in both orders (`selfteach`); the ranking gives a (best, worst) preference pair. With
   `selfTeaching.sft`, the best candidate battles the reference answer (the row's own answer, else
   the first teacher's; a `self-teaching` battle) and, where it wins, becomes an SFT row: the
   announcement's self-teaching makes SFT data as well as preference data from the model itself.
5. Step labels (if enabled): the student answers turn 1 again with the step-format instruction
   (`common.steps.STEP_FORMAT`, the one RLEIF's prompts carry; not with `stepLabels.stepFormat: false`),
   `stepLabels.samples` times, and the labeler marks each step of those solutions.

Then the arena: on the evaluation prompts every participant answers, and every pair (or the student
against each teacher) battles; Bradley–Terry Elo with bootstrap intervals (`elo`).

Checkpointing: the same journaled caller as the evol workload (`evol.caller.Caller`): every reply is
appended to a journal (`client.Journal`) under a key made of its purpose and a hash of
(participant, messages, sampling). A run started again with the same output
folder replays the journal and sends only what is missing, so it ends with the same battles, none
lost or twice. A request that fails after the client's retries is not journaled (the next attempt
sends it again); its battle or row is left out and counted (`requests.failed`). When more than `maxFailedShare` of
the requests fail the run fails (a retry of the run resumes from the journal).

Inputs: the resolved AlignRound spec and a `Teachers` client. Outputs: see `__init__`.
References: the WizardLM-2 announcement (AI Align AI); Luo et al., 2024 (Arena Learning).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

from posttrain.api.align import AlignRoundSpec
from posttrain.api.lineage import stamp
from posttrain.api.metrics import Align

from posttrain_trainer.align import prompts
from posttrain_trainer.align.battles import (
    Battle,
    Judgement,
    lost_battles,
    preference_rows,
    revision_row,
    sft_rows,
    skill_gaps,
    win_rate,
)
from posttrain_trainer.align.elo import EloTable, elo_table
from posttrain_trainer.align.judge import Resolution
from posttrain_trainer.align.reliability import reliability_metrics
from posttrain_trainer.align.selfteach import (
    RankResolution,
    combine_rankings,
    distinct,
    resolve_rankings,
    self_teaching_pair,
    verified_ranking,
)
from posttrain_trainer.align.steplabels import step_row, steps_to_label
from posttrain_trainer.common.chat import Message
from posttrain_trainer.common.steps import step_prompt
from posttrain_trainer.common.verify import AnswerVerifier
from posttrain_trainer.evol.caller import Caller

Progress = Callable[[int, int, str], None]


@dataclass
class Instruction:
    """One prompt of the round."""

    key: str
    """Unique within the round: `d<dataset>/<row id>` or `eval/<row id>`."""
    source: str
    """The row's id."""
    dataset: int | None
    """0-based input dataset, None for evaluation prompts."""
    category: str
    prompt: list[Message]
    """Messages up to and including the first user turn (a leading system message is kept)."""
    follow_ups: list[str] = field(default_factory=list)
    """The row's own later user turns."""
    reference: str | None = None
    """The row's own answer to the first user turn, if it has one (self-teaching's yardstick)."""
    made_from: dict[str, Any] = field(default_factory=lambda: {"parents": []})
    """The row's lineage origin (`posttrain.api.lineage.origin`): what battles and rows name as parent."""


def reference_answer(row: dict[str, Any]) -> str | None:
    """The chat row's answer to its first user turn, or None."""
    messages = row["messages"]
    first = next(i for i, m in enumerate(messages) if m["role"] == "user")
    following = messages[first + 1 : first + 2]
    if following and following[0]["role"] == "assistant" and following[0]["content"].strip():
        return str(following[0]["content"])
    return None


def split_row(row: dict[str, Any]) -> tuple[list[Message], list[str]]:
    """(prompt up to the first user turn, later user turns) of a chat row."""
    messages = row["messages"]
    first = next(i for i, m in enumerate(messages) if m["role"] == "user")
    system = [m for m in messages[:first] if m["role"] == "system"][:1]
    later = [m["content"] for m in messages[first + 1 :] if m["role"] == "user" and m["content"].strip()]
    return [*system, messages[first]], later


@dataclass
class RoundResult:
    """Everything one round produced (rows are in the documented schemas)."""

    coteaching: list[Battle] = field(default_factory=list)
    arena: list[Battle] = field(default_factory=list)
    checks: list[Battle] = field(default_factory=list)
    """Battles that vet generated SFT rows (`revision`, `self-teaching`); logged, not in win rates."""
    anchors: list[Battle] = field(default_factory=list)
    """Anchor battles with known outcomes (`anchorSet`); logged, only in the reliability measures."""
    sft: list[dict[str, Any]] = field(default_factory=list)
    preferences: list[dict[str, Any]] = field(default_factory=list)
    step_labels: list[dict[str, Any]] = field(default_factory=list)
    skill_gaps: dict[str, Any] = field(default_factory=dict)
    elo: EloTable | None = None
    counters: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Work:
    """What one instruction produced, kept in instruction order for deterministic outputs."""

    battles: list[Battle] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    self_sft: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Battle] = field(default_factory=list)


class AlignRound:
    """Runs one round over the given instructions.

    Args:
        spec: the AlignRound spec.
        caller: the journaled client.
        progress: called with (done, total, unit) as instructions finish.
    """

    def __init__(self, spec: AlignRoundSpec, caller: Caller, progress: Progress | None = None) -> None:
        self.spec = spec
        self.settings = spec.align
        self.caller = caller
        self.progress = progress or (lambda done, total, unit: None)
        self.student = spec.student.name
        self.teachers = [t.name for t in spec.teachers]
        self.judges = [j.name for j in spec.judges]
        self.verifiers = {
            j.name: AnswerVerifier(j.verifier.type, j.verifier.tolerance) for j in spec.judges if j.verifier
        }
        self.families = {p.name: p.model_family() for p in [spec.student, *spec.teachers]}
        self.judge_families = {j.name: j.model_family() for j in spec.judges}
        self.host = self.teachers[0]
        self.simulator = self.settings.co_teaching.user_simulator or self.teachers[0]
        self.labeler = self.settings.step_labels.labeler or self.judges[0]
        self.rule = self.settings.judging.inconsistency
        self.criteria = list(self.settings.judging.criteria)
        self.counters: Counter[str] = Counter()
        self._done = 0
        self._total = 0

    # --- the pieces ------------------------------------------------------------------------------

    async def _answer(self, participant: str, prompt: list[Message], tag: str) -> str | None:
        return _stripped(await self.caller.ask(f"answer/{tag}/{participant}", participant, prompt))

    async def judge(self, battle: Battle) -> Battle:
        """Judge a battle by every judge in both orders and resolve it (identical answers tie unjudged)."""
        if " ".join(battle.answer_x.split()) == " ".join(battle.answer_y.split()):
            battle.resolution = Resolution("identical", outcome=0.5)
            self.counters["identicalAnswers"] += 1
            return battle
        requests = []
        judgements = []
        for judge in self.judges:
            if judge in self.verifiers:
                judgements.extend(self._verify_battle(judge, battle))
                continue
            requests.append((judge, "forward", battle.answer_x, battle.answer_y))
            requests.append((judge, "backward", battle.answer_y, battle.answer_x))
        replies = await asyncio.gather(
            *(
                self.caller.ask(
                    f"judge/{battle.id}/{judge}/{order}",
                    judge,
                    prompts.judge_messages(battle.prompt, first, second, self.criteria),
                )
                for judge, order, first, second in requests
            )
        )
        for (judge, order, _, _), reply in zip(requests, replies, strict=True):
            verdict = None if reply is None else prompts.parse_verdict(reply)
            if reply is not None and verdict is None:
                self.counters["unparsedVerdicts"] += 1
            judgements.append(Judgement(judge, order, reply or "", verdict))
        battle.judge(judgements, self.rule)
        self.counters["inconsistent"] += sum(r.status == "inconsistent" for r in battle.per_judge.values())
        return battle

    def _verify_battle(self, judge: str, battle: Battle) -> list[Judgement]:
        """A verifier's judgements of a battle, in both orders (the same scores, so always consistent)."""
        verifier = self.verifiers[judge]
        question = battle.prompt[-1]["content"]
        x = verifier.score(question, battle.answer_x, battle.reference)
        y = verifier.score(question, battle.answer_y, battle.reference)
        judgements = []
        for order, (a, b) in (("forward", (x, y)), ("backward", (y, x))):
            if a is None or b is None:
                judgements.append(Judgement(judge, order, f"verifier ({verifier.type}): cannot check", None))
                continue
            reply = f"verifier ({verifier.type}): Scores: A={a}, B={b}"
            judgements.append(
                Judgement(judge, order, reply, prompts.Verdict(a, b, "checked by the verifier"))
            )
        return judgements

    def _verify_ranking(self, judge: str, item: Instruction, candidates: list[str]) -> RankResolution:
        """A verifier's resolution of the candidates: right answers first (see `verified_ranking`)."""
        verifier = self.verifiers[judge]
        return verified_ranking(
            [verifier.score(item.prompt[-1]["content"], c, item.reference) for c in candidates]
        )

    async def _suggest(self, battle: Battle) -> tuple[dict[str, Any] | None, Battle | None]:
        teacher = battle.y
        suggestions = await self.caller.ask(
            f"suggest/{battle.id}",
            teacher,
            prompts.suggestion_messages(battle.prompt, battle.answer_x, battle.answer_y),
        )
        parsed = None if suggestions is None else prompts.parse_suggestions(suggestions)
        if parsed is None:
            self.counters["suggestionsMissing"] += 1
            return None, None
        revised = await self.caller.ask(
            f"revise/{battle.id}",
            self.student,
            prompts.revision_messages(battle.prompt, battle.answer_x, parsed),
        )
        text = None if revised is None else prompts.parse_revision(revised, battle.answer_x)
        if text is None:
            self.counters["revisionsMissing"] += 1
            return None, None
        check = replace(
            battle,
            id=f"{battle.id}/revised",
            stage="revision",
            answer_x=text,
            judgements=[],
            per_judge={},
            resolution=Resolution("unparsed"),
            made_from={"parents": [battle.node_id()]},
        )
        await self.judge(check)
        student_score, teacher_score = check.score(self.student), check.score(teacher)
        margin = self.settings.co_teaching.revision_margin
        if student_score is None or teacher_score is None or teacher_score - student_score > margin:
            self.counters["revisionsRejected"] += 1
            return None, check
        row = revision_row(battle, text, teacher, self.student)
        row["meta"].update(revisionScore=student_score, teacherScore=teacher_score, revisionBattle=check.id)
        stamp(row, "revision", {"parents": [battle.node_id(), check.node_id()]}, teacher=teacher)
        return row, check

    async def _self_teach(self, item: Instruction, work: _Work, host_answer: str | None = None) -> None:
        """Self-teaching for one instruction: its preference pair and SFT row go into `work`.

        `host_answer` is the first teacher's turn-1 answer when co-teaching already has it.
        """
        settings = self.settings.self_teaching
        samples = await asyncio.gather(
            *(
                self.caller.ask(
                    f"candidate/{item.key}/{index}",
                    self.student,
                    item.prompt,
                    temperature=settings.temperature,
                    seed=self.settings.seed * 1000 + index,
                )
                for index in range(settings.candidates)
            )
        )
        candidates = distinct([s.strip() for s in samples if s is not None])
        if len(candidates) < 2:
            self.counters["selfTeachingTooFewCandidates"] += 1
            return
        count = len(candidates)
        rankings: dict[str, dict[str, list[int] | None]] = {
            judge: {} for judge in self.judges if judge not in self.verifiers
        }
        requests = [
            (judge, order)
            for judge in self.judges
            if judge not in self.verifiers
            for order in ("forward", "backward")
        ]
        replies = await asyncio.gather(
            *(
                self.caller.ask(
                    f"rank/{item.key}/{judge}/{order}",
                    judge,
                    prompts.ranking_messages(
                        item.prompt, candidates if order == "forward" else candidates[::-1], self.criteria
                    ),
                )
                for judge, order in requests
            )
        )
        for (judge, order), reply in zip(requests, replies, strict=True):
            ranking = None if reply is None else prompts.parse_ranking(reply, count)
            if reply is not None and ranking is None:
                self.counters["unparsedRankings"] += 1
            rankings[judge][order] = ranking
        resolutions = [self._verify_ranking(judge, item, candidates) for judge in self.verifiers] + [
            resolve_rankings(orders.get("forward"), orders.get("backward"), count, self.rule)
            for orders in rankings.values()
        ]
        self.counters["inconsistentRankings"] += sum(r.status == "inconsistent" for r in resolutions)
        resolved = combine_rankings(resolutions, count)
        meta = {"category": item.category, "sourceId": item.source, "turn": 1, "model": self.student}
        if item.dataset is not None:
            meta["dataset"] = item.dataset
        pair = self_teaching_pair(f"{item.key}/t1/self", item.prompt, candidates, resolved.order, meta)
        if pair is not None:
            work.pairs.append(stamp(pair, "self-teaching", item.made_from, judges=self.judges))
        if resolved.order is not None and settings.sft:
            await self._beat_reference(item, candidates[resolved.order[0]], meta, work, host_answer)

    async def _beat_reference(
        self, item: Instruction, best: str, meta: dict[str, Any], work: _Work, host_answer: str | None
    ) -> None:
        """Battle the best candidate against the reference answer; a win becomes an SFT row."""
        name, reference = "reference", item.reference
        if reference is None:
            name = self.host
            reference = host_answer or await self._answer(self.host, item.prompt, f"{item.key}/t1")
        if reference is None:
            return
        battle = self._battle(item, 1, item.prompt, self.student, name, best, reference, "self-teaching")
        battle.id = f"{item.key}/t1/self-vs-{name}"
        await self.judge(battle)
        work.checks.append(battle)
        if battle.outcome_for(self.student) != 1.0:
            return
        work.self_sft.append(
            stamp(
                {
                    "id": f"{item.key}/t1/self-sft",
                    "messages": [*item.prompt, {"role": "assistant", "content": best}],
                    "meta": {
                        **meta,
                        "source": "self-teaching",
                        "reference": name,
                        "score": battle.score(self.student),
                        "referenceScore": battle.score(name),
                        "battle": battle.id,
                    },
                },
                "self-teaching",
                {"parents": [battle.node_id()]},
            )
        )

    async def _label_steps(self, item: Instruction) -> list[dict[str, Any]]:
        """Step-formatted solutions of the student for turn 1, each labelled step by step."""
        settings = self.settings.step_labels
        question = item.prompt[-1]["content"]
        request = [
            *item.prompt[:-1],
            {"role": "user", "content": step_prompt(question) if settings.step_format else question},
        ]
        sampling: dict[str, Any] = {} if settings.samples == 1 else {"temperature": 1.0}
        solutions = await asyncio.gather(
            *(
                self.caller.ask(
                    f"solve/{item.key}/{index}",
                    self.student,
                    request,
                    **sampling,
                    **({"seed": self.settings.seed * 1000 + index} if sampling else {}),
                )
                for index in range(settings.samples)
            )
        )
        rows = await asyncio.gather(
            *(
                self._label_solution(item, index, solution)
                for index, solution in enumerate(distinct([s.strip() for s in solutions if s is not None]))
            )
        )
        return [row for row in rows if row is not None]

    async def _label_solution(self, item: Instruction, index: int, solution: str) -> dict[str, Any] | None:
        steps = steps_to_label(solution, self.settings.step_labels.max_steps)
        if not steps:
            self.counters["stepLabelsSkipped"] += 1
            return None
        labels: list[int] | None
        if self.labeler in self.verifiers:
            verifier = self.verifiers[self.labeler]
            labels = verifier.label_steps(item.prompt[-1]["content"], steps, item.reference)
        else:
            reply = await self.caller.ask(
                f"steps/{item.key}/{index}", self.labeler, prompts.step_label_messages(item.prompt, steps)
            )
            labels = None if reply is None else prompts.parse_step_labels(reply, len(steps))
        if labels is None:
            self.counters["unparsedStepLabels"] += 1
            return None
        suffix = "" if index == 0 else f"-{index + 1}"
        row = step_row(f"{item.key}/t1/steps{suffix}", item.prompt, steps, labels)
        return stamp(row, "step-labels", item.made_from, labeler=self.labeler)

    # --- per instruction --------------------------------------------------------------------------

    def _battle(
        self,
        item: Instruction,
        turn: int,
        prompt: list[Message],
        x: str,
        y: str,
        ax: str,
        ay: str,
        stage: str,
    ) -> Battle:
        return Battle(
            id=f"{item.key}/t{turn}/{x}-vs-{y}",
            stage=stage,
            prompt=prompt,
            x=x,
            y=y,
            answer_x=ax,
            answer_y=ay,
            source=item.source,
            dataset=item.dataset,
            turn=turn,
            category=item.category,
            reference=item.reference if turn == 1 else None,
            families={side: self.families[side] for side in (x, y) if side in self.families},
            made_from=item.made_from,
        )

    async def _coteach(self, item: Instruction) -> _Work:
        work = _Work()
        settings = self.settings.co_teaching
        participants = [self.student, *self.teachers]
        prompt = list(item.prompt)
        judging: list[asyncio.Task[tuple[list[dict[str, Any]], list[Battle]]]] = []
        labelling: asyncio.Task[list[dict[str, Any]]] | None = None
        if self.settings.step_labels.enabled:
            labelling = asyncio.ensure_future(self._label_steps(item))
        first_host_answer: str | None = None
        for turn in range(1, settings.turns + 1):
            answers = await asyncio.gather(
                *(self._answer(p, prompt, f"{item.key}/t{turn}") for p in participants)
            )
            by_name = dict(zip(participants, answers, strict=True))
            student_answer = by_name[self.student]
            if student_answer is not None:
                battles = [
                    self._battle(item, turn, prompt, self.student, t, student_answer, a, "co-teaching")
                    for t, a in by_name.items()
                    if t != self.student and a is not None
                ]
                work.battles.extend(battles)
                # Judging runs while the chat goes on: the next turn does not depend on it.
                judging.append(asyncio.ensure_future(self._judge_and_suggest(battles)))
            host_answer = by_name[self.host]
            if turn == 1:
                first_host_answer = host_answer
            if turn == settings.turns or host_answer is None:
                break
            if turn - 1 < len(item.follow_ups):
                question: str | None = item.follow_ups[turn - 1]
            else:
                reply = await self.caller.ask(
                    f"follow-up/{item.key}/t{turn}",
                    self.simulator,
                    prompts.follow_up_messages([*prompt, {"role": "assistant", "content": host_answer}]),
                )
                question = None if reply is None else prompts.parse_follow_up(reply)
            if question is None:
                self.counters["followUpsMissing"] += 1
                break
            prompt = [
                *prompt,
                {"role": "assistant", "content": host_answer},
                {"role": "user", "content": question},
            ]
        if self.settings.self_teaching.enabled:
            await self._self_teach(item, work, first_host_answer)
        for revisions, checks in await asyncio.gather(*judging):
            work.revisions.extend(revisions)
            work.checks.extend(checks)
        if labelling is not None:
            work.steps.extend(await labelling)
        return work

    async def _judge_and_suggest(self, battles: list[Battle]) -> tuple[list[dict[str, Any]], list[Battle]]:
        """Judge one turn's battles; the judged revisions of the lost ones (kept rows, their battles)."""
        await asyncio.gather(*(self.judge(b) for b in battles))
        if not self.settings.co_teaching.suggestions:
            return [], []
        revisions = await asyncio.gather(*(self._suggest(b) for b in lost_battles(battles, self.student)))
        return [r for r, _ in revisions if r is not None], [c for _, c in revisions if c is not None]

    async def _arena(self, item: Instruction) -> list[Battle]:
        participants = [self.student, *self.teachers]
        answers = await asyncio.gather(
            *(self._answer(p, item.prompt, f"{item.key}/t1") for p in participants)
        )
        by_name = dict(zip(participants, answers, strict=True))
        if self.settings.arena.all_pairs:
            pairs = list(combinations(participants, 2))
        else:
            pairs = [(self.student, t) for t in self.teachers]
        battles = []
        for x, y in pairs:
            ax, ay = by_name[x], by_name[y]
            if ax is None or ay is None:
                continue
            battles.append(self._battle(item, 1, item.prompt, x, y, ax, ay, "arena"))
        await asyncio.gather(*(self.judge(b) for b in battles))
        return battles

    async def _tracked(self, coroutine: Any) -> Any:
        result = await coroutine
        self._done += 1
        self.progress(self._done, self._total, "instructions")
        return result

    # --- the round --------------------------------------------------------------------------------

    async def run(
        self, training: list[Instruction], evaluation: list[Instruction], anchors: list[Battle] | None = None
    ) -> RoundResult:
        """Run co-teaching (and self-teaching, step labels) on `training`, the arena on `evaluation`.

        `anchors` (battles with a known outcome) are judged like the others, for the reliability
        measures only.

        Returns:
            The round's rows, battles, tables and metrics.
        """
        self._total = len(training) + (len(evaluation) if self.settings.arena.enabled else 0)
        coteach = self.settings.co_teaching.enabled
        works = await asyncio.gather(
            *(self._tracked(self._coteach(item) if coteach else self._only_extras(item)) for item in training)
        )
        arena: list[list[Battle]] = []
        if self.settings.arena.enabled:
            arena = await asyncio.gather(*(self._tracked(self._arena(item)) for item in evaluation))
        judged_anchors = list(await asyncio.gather(*(self.judge(b) for b in anchors or [])))
        return self._collect(training, works, [b for group in arena for b in group], judged_anchors)

    async def _only_extras(self, item: Instruction) -> _Work:
        """Without co-teaching: self-teaching and step labels only."""
        work = _Work()
        if self.settings.step_labels.enabled:
            work.steps.extend(await self._label_steps(item))
        if self.settings.self_teaching.enabled:
            await self._self_teach(item, work)
        return work

    def _collect(
        self, training: list[Instruction], works: list[_Work], arena: list[Battle], anchors: list[Battle]
    ) -> RoundResult:
        settings = self.settings
        result = RoundResult(arena=arena, anchors=anchors, counters=self.counters)
        result.coteaching = [b for w in works for b in w.battles]
        result.sft = sft_rows(result.coteaching, self.student, settings.co_teaching.sft_margin)
        result.sft += [r for w in works for r in w.revisions]
        result.sft += [r for w in works for r in w.self_sft]
        result.checks = [b for w in works for b in w.checks]
        result.preferences = preference_rows(result.coteaching, settings.co_teaching.preference_margin)
        result.preferences += [p for w in works for p in w.pairs]
        result.step_labels = [s for w in works for s in w.steps]
        categories = sorted({item.category for item in training})
        result.skill_gaps = skill_gaps(result.coteaching, self.student, categories)
        players = [self.student, *self.teachers]
        if settings.arena.enabled:
            games = [(b.x, b.y, b.resolution.outcome) for b in arena if b.resolution.outcome is not None]
            result.elo = elo_table(
                games,
                players,
                reference=settings.arena.reference or self.teachers[0],
                reference_elo=settings.arena.reference_elo,
                bootstrap=settings.arena.bootstrap,
                seed=settings.seed,
            )
            held = self.spec.eval_set
            result.elo.eval_set = {
                "uri": held.uri if held else None,
                "prompts": len({b.source for b in arena}),
            }
        result.metrics = self._metrics(result)
        return result

    def _metrics(self, result: RoundResult) -> dict[str, float]:
        battles = result.coteaching + result.arena
        metrics: dict[str, float] = {
            Align.BATTLES: len(battles),
            Align.BATTLES_CO_TEACHING: len(result.coteaching),
            Align.BATTLES_ARENA: len(result.arena),
            Align.BATTLES_KEPT: sum(b.resolution.kept for b in battles),
            Align.BATTLES_INCONSISTENT: self.counters["inconsistent"],
            Align.VERDICTS_UNPARSED: self.counters["unparsedVerdicts"],
            Align.BATTLES_IDENTICAL_ANSWERS: self.counters["identicalAnswers"],
            Align.ROWS_SFT: len(result.sft),
            Align.ROWS_SFT_REVISED: sum(r["meta"].get("source") == "suggestions" for r in result.sft),
            Align.ROWS_PREFERENCES: len(result.preferences),
            Align.ROWS_SELF_TEACHING: sum(
                p["meta"].get("source") == "self-teaching" for p in result.preferences
            ),
            Align.ROWS_SFT_SELF_TEACHING: sum(r["meta"].get("source") == "self-teaching" for r in result.sft),
            Align.REVISIONS_REJECTED: self.counters["revisionsRejected"],
            Align.REQUESTS_FAILED: self.caller.failed,
            Align.REQUESTS_SENT: self.caller.sent,
            Align.REQUESTS_REPLAYED: self.caller.replayed,
        }
        if self.settings.step_labels.enabled:
            metrics[Align.ROWS_STEP_LABELS] = len(result.step_labels)
        rate = win_rate(result.coteaching, self.student)
        if rate is None:
            rate = win_rate(result.arena, self.student)
        if rate is not None:
            metrics[Align.STUDENT_WIN_RATE] = rate
        metrics.update(reliability_metrics(battles + result.checks, result.anchors, self.judge_families))
        if result.elo is not None:
            for row in result.elo.ratings:
                metrics[Align.ELO.of(row.name)] = round(row.median, 2)
                metrics[Align.ELO_LOW.of(row.name)] = round(row.ci_low, 2)
                metrics[Align.ELO_HIGH.of(row.name)] = round(row.ci_high, 2)
        return metrics


def _stripped(answer: str | None) -> str | None:
    """An answer without surrounding whitespace.

    Servers often return the space a tokenizer merged into the first token (` Step 1: ...`); SFT rows
    and preference pairs must not learn it.
    """
    return None if answer is None else answer.strip()


def hold_out(
    instructions: list[Instruction], size: int, seed: int
) -> tuple[list[Instruction], list[Instruction]]:
    """(training, evaluation): `size` instructions at random, at most a quarter, held out for the arena.

    With fewer than two instructions nothing is held out.
    """
    count = min(size, len(instructions) // 4)
    if len(instructions) >= 2:
        count = max(count, 1)
    picked = set(random.Random(seed).sample(range(len(instructions)), count)) if count else set()
    training = [item for i, item in enumerate(instructions) if i not in picked]
    evaluation = [item for i, item in enumerate(instructions) if i in picked]
    for item in evaluation:
        item.key = "eval/" + item.key
        item.dataset = None
    return training, evaluation

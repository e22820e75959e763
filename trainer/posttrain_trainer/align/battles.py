"""Battles and what co-teaching makes of them: SFT targets, preference pairs, the skill-gap table.

A battle is two participants' answers to the same prompt (the dialogue so far, ending with a user
turn), judged by every judge in both orders (see `judge`). Co-teaching battles put the student (X)
against each teacher (Y) on the round's instructions; arena battles put every pair of participants
against each other on the evaluation prompts.

From the kept co-teaching battles (Arena Learning's data selection, with its margins):

- **SFT targets**: where the student loses by *more than* `sftMargin` judge points, the winning
  answer becomes the target for that prompt (with several winning teachers, the one with the largest
  gap; on equal gaps the teacher listed first);
- **preference pairs**: every battle whose score gap is *at least* `preferenceMargin` (and not zero)
  gives (prompt, chosen = the winner's answer, rejected = the loser's), whoever won;
- **skill gaps**: the student's win rate per category (a win counts 1, a tie 1/2), and target weights
  for a later DataSlice that favour the categories where the student is weakest:
  weight ∝ (1 - win rate) + 0.05, so no category drops to zero.

Outputs are rows in the documented chat and preference schemas (`common.chat`).
Reference: Luo et al., 2024 (Arena Learning: SFT margin K, DPO pairs from win/loss battles).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from posttrain.api.lineage import node_id, stamp

from posttrain_trainer.align.judge import InconsistencyRule, Resolution, combine_judges, resolve_swap
from posttrain_trainer.align.prompts import Verdict
from posttrain_trainer.common.chat import Message

WEIGHT_FLOOR = 0.05
"""Added to every category's weakness so a category the student always wins keeps some data."""


@dataclass
class Judgement:
    """One judge's reply for one order of a battle."""

    judge: str
    order: str
    """`forward` (X shown as A) or `backward` (Y shown as A)."""
    reply: str
    verdict: Verdict | None

    def record(self) -> dict[str, Any]:
        """The battle-log form."""
        return {
            "judge": self.judge,
            "order": self.order,
            "parsed": self.verdict is not None,
            "scoreA": None if self.verdict is None else self.verdict.score_a,
            "scoreB": None if self.verdict is None else self.verdict.score_b,
            "explanation": self.verdict.explanation if self.verdict else self.reply[:2000],
        }


@dataclass
class Battle:
    """Two answers to one prompt and their judgement."""

    id: str
    stage: str
    """`co-teaching`, `arena`, or a check of a generated SFT row (`revision`, `self-teaching`)."""
    prompt: list[Message]
    x: str
    y: str
    answer_x: str
    answer_y: str
    source: str = ""
    """Id of the instruction row the prompt comes from."""
    dataset: int | None = None
    """0-based index of the input dataset (None for the evaluation set)."""
    turn: int = 1
    category: str = "general"
    reference: str | None = None
    """The row's own answer to the prompt's last user turn, if it has one (what a verifier judge
    compares with)."""
    families: dict[str, str] = field(default_factory=dict)
    """Side (X's or Y's name) -> its model family, for the judges' self-preference."""
    known: float | None = None
    """An anchor battle's known outcome for X (1 X wins, 0 Y wins, 1/2 a tie); None otherwise."""
    made_from: dict[str, Any] = field(default_factory=lambda: {"parents": []})
    """The lineage of what the prompt comes from (`posttrain.api.lineage.origin`): the instruction row,
    the battle a revision check re-judges, or the anchor row."""
    judgements: list[Judgement] = field(default_factory=list)
    per_judge: dict[str, Resolution] = field(default_factory=dict)
    resolution: Resolution = field(default_factory=lambda: Resolution("unparsed"))

    def judge(self, judgements: list[Judgement], rule: InconsistencyRule) -> None:
        """Resolve the battle from its judgements (both orders of every judge)."""
        self.judgements = judgements
        by_judge: dict[str, dict[str, Verdict | None]] = defaultdict(dict)
        for judgement in judgements:
            by_judge[judgement.judge][judgement.order] = judgement.verdict
        self.per_judge = {
            name: resolve_swap(orders.get("forward"), orders.get("backward"), rule)
            for name, orders in by_judge.items()
        }
        self.resolution = combine_judges(list(self.per_judge.values()))

    def score(self, name: str) -> float | None:
        """The resolved score of one side."""
        return self.resolution.score_x if name == self.x else self.resolution.score_y

    def answer(self, name: str) -> str:
        """The answer of one side."""
        return self.answer_x if name == self.x else self.answer_y

    def outcome_for(self, name: str) -> float | None:
        """1 if `name` won, 0 if it lost, 0.5 for a tie, None when the battle is left out."""
        outcome = self.resolution.outcome
        if outcome is None:
            return None
        return outcome if name == self.x else 1.0 - outcome

    def lineage(self) -> dict[str, Any]:
        """The battle's lineage object (step `battle`; its id hashes the prompt and both answers)."""
        parents = list(self.made_from.get("parents", []))
        source = self.made_from.get("source")
        content = {
            "id": self.id,
            "prompt": self.prompt,
            "answers": [self.x, self.answer_x, self.y, self.answer_y],
        }
        node: dict[str, Any] = {
            "step": "battle",
            "parents": parents,
            "stage": self.stage,
            "judges": sorted({j.judge for j in self.judgements}),
        }
        if source is not None:
            node["source"] = source
        node["id"] = node_id("battle", parents, source, content)
        return node

    def node_id(self) -> str:
        """The battle's lineage id."""
        return str(self.lineage()["id"])

    def record(self) -> dict[str, Any]:
        """The battle-log row."""
        r = self.resolution
        winner = None if r.outcome is None else {1.0: self.x, 0.0: self.y}.get(r.outcome, "tie")
        extra: dict[str, Any] = {} if self.known is None else {"known": self.known}
        return {
            "id": self.id,
            "stage": self.stage,
            "dataset": self.dataset,
            "source": self.source,
            "turn": self.turn,
            "category": self.category,
            "prompt": self.prompt,
            "participants": [self.x, self.y],
            "answers": {self.x: self.answer_x, self.y: self.answer_y},
            "judgements": [j.record() for j in self.judgements],
            "perJudge": {
                name: {
                    "status": res.status,
                    "scores": None if res.score_x is None else {self.x: res.score_x, self.y: res.score_y},
                    "outcome": res.outcome,
                }
                for name, res in self.per_judge.items()
            },
            "resolution": {
                "status": r.status,
                "scores": None if r.score_x is None else {self.x: r.score_x, self.y: r.score_y},
                "winner": winner,
                "kept": r.kept,
            },
            **extra,
            "lineage": self.lineage(),
        }


def _meta(origin: Battle, /, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"category": origin.category, "sourceId": origin.source, "turn": origin.turn}
    if origin.dataset is not None:
        meta["dataset"] = origin.dataset
    meta.update(extra)
    return meta


def sft_rows(battles: list[Battle], student: str, margin: float) -> list[dict[str, Any]]:
    """SFT targets: per prompt, the best winner's answer where the student lost by more than `margin`.

    Args:
        battles: co-teaching battles (X = the student), in teacher order per prompt.
        student: the student's name.
        margin: judge points the student must lose by, strictly more than.

    Returns:
        Chat rows `{"id", "messages": prompt + [winner's answer], "meta"}`, one per prompt at most.
    """
    best: dict[str, tuple[float, Battle]] = {}
    order: list[str] = []
    for battle in battles:
        student_score = battle.score(student)
        if not battle.resolution.kept or student_score is None:
            continue
        teacher = battle.y if battle.x == student else battle.x
        teacher_score = battle.score(teacher)
        if teacher_score is None:
            continue
        gap = teacher_score - student_score
        if gap <= margin or gap <= 0:
            continue
        key = _prompt_key(battle)
        if key not in best:
            order.append(key)
        if key not in best or gap > best[key][0]:
            best[key] = (gap, battle)
    rows = []
    for key in order:
        gap, battle = best[key]
        teacher = battle.y if battle.x == student else battle.x
        row = {
            "id": f"{key}/sft",
            "messages": [*battle.prompt, {"role": "assistant", "content": battle.answer(teacher)}],
            "meta": _meta(battle, source="co-teaching", model=teacher, gap=gap, battle=battle.id),
        }
        rows.append(stamp(row, "sft", {"parents": [battle.node_id()]}, winner=teacher))
    return rows


def revision_row(battle: Battle, revised: str, teacher: str, student: str) -> dict[str, Any]:
    """The chat row of a student answer revised with a teacher's suggestions."""
    return {
        "id": f"{_prompt_key(battle)}/revised-{teacher}",
        "messages": [*battle.prompt, {"role": "assistant", "content": revised}],
        "meta": _meta(battle, source="suggestions", model=student, teacher=teacher, battle=battle.id),
    }


def lost_battles(battles: list[Battle], student: str) -> list[Battle]:
    """Kept battles the student lost (candidates for improvement suggestions)."""
    return [b for b in battles if b.outcome_for(student) == 0.0]


def preference_rows(battles: list[Battle], margin: float) -> list[dict[str, Any]]:
    """Preference pairs from battles whose score gap is at least `margin` (and not zero).

    Battles between identical answers give no pair.

    Args:
        battles: judged battles.
        margin: the smallest score gap that makes a pair.

    Returns:
        Preference rows `{"id", "prompt", "chosen", "rejected", "meta"}`.
    """
    rows = []
    for battle in battles:
        r = battle.resolution
        if not r.kept or r.outcome == 0.5 or abs(r.gap) < margin or r.gap == 0:
            continue
        winner, loser = (battle.x, battle.y) if r.gap > 0 else (battle.y, battle.x)
        chosen, rejected = battle.answer(winner), battle.answer(loser)
        if chosen.strip() == rejected.strip():
            continue
        rows.append(
            stamp(
                {
                    "id": f"{battle.id}/pair",
                    "prompt": battle.prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "meta": _meta(
                        battle,
                        source=battle.stage,
                        chosenModel=winner,
                        rejectedModel=loser,
                        chosenScore=battle.score(winner),
                        rejectedScore=battle.score(loser),
                        battle=battle.id,
                    ),
                },
                "pair",
                {"parents": [battle.node_id()]},
                chosen=winner,
                rejected=loser,
            )
        )
    return rows


def win_rate(battles: list[Battle], name: str) -> float | None:
    """`name`'s win rate over its kept battles (a tie counts half), or None without any."""
    outcomes = [o for o in (b.outcome_for(name) for b in battles if name in (b.x, b.y)) if o is not None]
    return sum(outcomes) / len(outcomes) if outcomes else None


def skill_gaps(battles: list[Battle], student: str, categories: list[str] | None = None) -> dict[str, Any]:
    """The student's win rate per category and DataSlice target weights that close the gaps.

    Args:
        battles: co-teaching battles.
        student: the student's name.
        categories: categories to list even without kept battles (they get the weight of a 1/2 win
            rate, so a later DataSlice does not drop them).

    Returns:
        `{"attribute": "category", "weights": {category: weight}, "categories": [...], "studentWinRate"}`;
        `attribute` and `weights` are in the form of a DataSlice `sampling.targets` entry.
    """
    counts: dict[str, dict[str, float]] = {}
    for name in categories or []:
        counts.setdefault(name, {"battles": 0, "wins": 0, "losses": 0, "ties": 0})
    for battle in battles:
        row = counts.setdefault(battle.category, {"battles": 0, "wins": 0, "losses": 0, "ties": 0})
        outcome = battle.outcome_for(student)
        if outcome is None:
            continue
        row["battles"] += 1
        if outcome == 1.0:
            row["wins"] += 1
        elif outcome == 0.0:
            row["losses"] += 1
        else:
            row["ties"] += 1
    table = []
    weakness = {}
    for name in sorted(counts):
        row = counts[name]
        rate = (row["wins"] + 0.5 * row["ties"]) / row["battles"] if row["battles"] else None
        weakness[name] = (1.0 - (0.5 if rate is None else rate)) + WEIGHT_FLOOR
        table.append(
            {
                "name": name,
                "battles": int(row["battles"]),
                "wins": int(row["wins"]),
                "losses": int(row["losses"]),
                "ties": int(row["ties"]),
                "winRate": None if rate is None else round(rate, 4),
            }
        )
    total = sum(weakness.values())
    weights = {name: round(value / total, 4) for name, value in weakness.items()} if total else {}
    return {
        "attribute": "category",
        "weights": weights,
        "categories": table,
        "studentWinRate": win_rate(battles, student),
    }


def _prompt_key(battle: Battle) -> str:
    dataset = "eval" if battle.dataset is None else f"d{battle.dataset + 1}"
    return f"{dataset}/{battle.source}/t{battle.turn}"

"""Co-teaching outputs: SFT targets and preference pairs at their margins, skill gaps, the battle log."""

from __future__ import annotations

import pytest
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
from posttrain_trainer.align.judge import Resolution
from posttrain_trainer.align.prompts import Verdict

PROMPT = [{"role": "user", "content": "Name a prime."}]


def battle(
    teacher: str,
    student_score: float | None,
    teacher_score: float | None,
    source: str = "r1",
    category: str = "math",
    dataset: int | None = 0,
    answers: tuple[str, str] = ("4", "7"),
) -> Battle:
    b = Battle(
        id=f"d1/{source}/t1/student-vs-{teacher}",
        stage="co-teaching",
        prompt=PROMPT,
        x="student",
        y=teacher,
        answer_x=answers[0],
        answer_y=answers[1] + f" ({teacher})",
        source=source,
        dataset=dataset,
        category=category,
    )
    if student_score is None or teacher_score is None:
        b.resolution = Resolution("unparsed")
    else:
        diff = student_score - teacher_score
        outcome = 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
        b.resolution = Resolution("consistent", student_score, teacher_score, outcome)
    return b


@pytest.mark.parametrize(
    ("student", "teacher", "margin", "expected"),
    [
        (2.0, 5.0, 3.0, 0),  # lost by exactly K: not more than K
        (2.0, 5.5, 3.0, 1),  # lost by more than K
        (6.0, 5.0, 0.0, 0),  # won
        (5.0, 5.0, 0.0, 0),  # tie: not a loss even at K = 0
        (4.0, 5.0, 0.0, 1),
    ],
)
def test_sft_target_needs_a_loss_by_more_than_the_margin(
    student: float, teacher: float, margin: float, expected: int
) -> None:
    rows = sft_rows([battle("t1", student, teacher)], "student", margin)
    assert len(rows) == expected
    if rows:
        row = rows[0]
        assert row["messages"] == [*PROMPT, {"role": "assistant", "content": "7 (t1)"}]
        assert row["meta"]["model"] == "t1" and row["meta"]["gap"] == teacher - student
        assert set(row) == {"id", "messages", "meta"}


def test_one_sft_target_per_prompt_from_the_teacher_with_the_largest_gap() -> None:
    battles = [battle("t1", 2, 7), battle("t2", 2, 9), battle("t3", 2, 9), battle("t1", 2, 8, source="r2")]
    rows = sft_rows(battles, "student", 1.0)
    assert [r["meta"]["model"] for r in rows] == ["t2", "t1"]
    assert len({r["id"] for r in rows}) == 2


def test_unparsed_battles_give_no_sft_target_and_no_pair() -> None:
    battles = [battle("t1", None, None)]
    assert sft_rows(battles, "student", 0) == [] and preference_rows(battles, 0) == []


@pytest.mark.parametrize(
    ("student", "teacher", "margin", "chosen"),
    [
        (3.0, 5.0, 2.0, "t1"),  # gap exactly K: at least K
        (3.0, 4.5, 2.0, None),
        (8.0, 5.0, 2.0, "student"),  # the student may win the pair too
        (5.0, 5.0, 0.0, None),  # no preference in a tie
        (5.0, 5.5, 0.0, "t1"),
    ],
)
def test_preference_pair_needs_a_gap_of_at_least_the_margin(
    student: float, teacher: float, margin: float, chosen: str | None
) -> None:
    rows = preference_rows([battle("t1", student, teacher)], margin)
    if chosen is None:
        assert rows == []
        return
    (row,) = rows
    assert set(row) == {"id", "prompt", "chosen", "rejected", "meta"}
    assert row["prompt"] == PROMPT
    assert row["meta"]["chosenModel"] == chosen
    winner_answer = "4" if chosen == "student" else "7 (t1)"
    assert row["chosen"] == winner_answer and row["rejected"] != winner_answer
    assert row["meta"]["chosenScore"] > row["meta"]["rejectedScore"]
    assert row["meta"]["dataset"] == 0 and row["meta"]["category"] == "math"


def test_identical_answers_make_no_pair() -> None:
    b = battle("t1", 2, 9)
    b.answer_y = b.answer_x
    assert preference_rows([b], 0) == []


def test_win_rate_and_lost_battles() -> None:
    battles = [battle("t1", 8, 2), battle("t2", 5, 5), battle("t3", 1, 9), battle("t4", None, None)]
    assert win_rate(battles, "student") == pytest.approx(0.5)
    assert win_rate(battles, "t3") == 1.0
    assert [b.y for b in lost_battles(battles, "student")] == ["t3"]
    assert win_rate([battle("t1", None, None)], "student") is None


def test_skill_gaps_favour_the_weakest_category_and_keep_every_category() -> None:
    battles = [
        battle("t1", 8, 2, category="math"),
        battle("t1", 8, 2, source="r2", category="math"),
        battle("t1", 1, 9, category="coding"),
        battle("t2", 5, 5, category="coding"),
    ]
    table = skill_gaps(battles, "student", categories=["math", "coding", "writing"])
    assert table["attribute"] == "category"
    rates = {row["name"]: row["winRate"] for row in table["categories"]}
    assert rates == {"coding": 0.25, "math": 1.0, "writing": None}
    weights = table["weights"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    # weakness + 0.05: coding 0.8, writing (unknown: 1/2) 0.55, math 0.05
    assert weights["coding"] == pytest.approx(0.8 / 1.4, abs=1e-4)
    assert weights["writing"] == pytest.approx(0.55 / 1.4, abs=1e-4)
    assert weights["coding"] > weights["writing"] > weights["math"] > 0
    assert table["studentWinRate"] == pytest.approx(0.625)


def test_battle_record_has_both_orders_scores_explanations_and_the_resolution() -> None:
    b = battle("t1", 0, 0)
    b.judge(
        [
            Judgement("j", "forward", "x", Verdict(3, 8, "B is right")),
            Judgement("j", "backward", "garbage", Verdict(9, 2, "A is right")),
        ],
        "tie",
    )
    record = b.record()
    assert record["resolution"] == {
        "status": "consistent",
        "scores": {"student": 2.5, "t1": 8.5},
        "winner": "t1",
        "kept": True,
    }
    assert [j["order"] for j in record["judgements"]] == ["forward", "backward"]
    assert record["judgements"][0]["explanation"] == "B is right"
    assert record["answers"] == {"student": "4", "t1": "7 (t1)"}
    assert record["perJudge"]["j"]["status"] == "consistent"


def test_revision_row_is_a_chat_row_for_the_same_prompt() -> None:
    row = revision_row(battle("t1", 2, 8), "A prime: 7.", "t1", "student")
    assert row["messages"][-1] == {"role": "assistant", "content": "A prime: 7."}
    assert row["meta"]["source"] == "suggestions" and row["meta"]["teacher"] == "t1"

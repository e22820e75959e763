"""Judge reliability: each measure on hand-made battles, and whole rounds against test judges.

A position-biased judge (a test OpenAI server that always prefers the answer shown first) must be
flagged by the `JudgeReliable` condition the plan decides from the round's result; a judge that reads
the answers must not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.align import AlignRoundSpec
from posttrain.api.common import Participant, model_family
from posttrain.api.workload import WorkloadConfig
from posttrain.plan.judging import judge_reliability
from posttrain_trainer.align import read_anchors, run
from posttrain_trainer.align.battles import Battle, Judgement
from posttrain_trainer.align.prompts import Verdict
from posttrain_trainer.align.reliability import (
    anchor_drift,
    position_flips,
    reliability_metrics,
    self_preference,
)

from tests.support.fake_openai import FakeOpenAI


def battle(
    verdicts: dict[str, tuple[tuple[float, float], tuple[float, float]]],
    families: dict[str, str] | None = None,
    known: float | None = None,
    x: str = "x",
    y: str = "y",
) -> Battle:
    """A battle judged by each judge: (forward A/B scores, backward A/B scores)."""
    made = Battle(id="b", stage="arena", prompt=[], x=x, y=y, answer_x="a", answer_y="b")
    made.families = families or {}
    made.known = known
    judgements = []
    for judge, (forward, backward) in verdicts.items():
        judgements.append(Judgement(judge, "forward", "", Verdict(forward[0], forward[1], "")))
        judgements.append(Judgement(judge, "backward", "", Verdict(backward[0], backward[1], "")))
    made.judge(judgements, "tie")
    return made


X_WINS = ((8.0, 3.0), (3.0, 8.0))
Y_WINS = ((3.0, 8.0), (8.0, 3.0))
FIRST_WINS = ((8.0, 3.0), (8.0, 3.0))
TIE = ((5.0, 5.0), (5.0, 5.0))


def test_position_flips_count_verdict_pairs_whose_winner_changes_with_the_order() -> None:
    battles = [battle({"fair": X_WINS, "biased": FIRST_WINS}), battle({"fair": Y_WINS, "biased": FIRST_WINS})]
    battles.append(battle({"fair": TIE, "biased": ((6.0, 5.0), (5.0, 5.0))}))  # a win against a tie flips
    assert position_flips(battles) == {"fair": (0, 3), "biased": (3, 3)}


def test_unreadable_verdicts_are_not_counted_as_flips() -> None:
    made = battle({"judge": X_WINS})
    made.judge(
        [Judgement("judge", "forward", "babble", None), Judgement("judge", "backward", "", None)], "tie"
    )
    assert position_flips([made]) == {}


def test_self_preference_is_measured_against_the_other_judges() -> None:
    families = {"x": "gpt", "y": "llama"}
    # The gpt judge gives its own family's answer the win; the llama judge calls it a tie.
    battles = [battle({"gpt-judge": X_WINS, "llama-judge": TIE}, families) for _ in range(3)]
    preference = self_preference(battles, {"gpt-judge": "gpt", "llama-judge": "llama"})
    assert preference["gpt-judge"] == pytest.approx(0.5)
    # The llama judge gives its own side (y) the tie's 1/2 where the gpt judge gave it 0: +1/2 too,
    # measured from the same battles; a fair judge of a family not in the battle is not measured.
    assert preference["llama-judge"] == pytest.approx(0.5)
    fair = self_preference(battles, {"gpt-judge": "gpt", "mistral-judge": "mistral"})
    assert "mistral-judge" not in fair


def test_self_preference_uses_the_known_outcome_of_an_anchor() -> None:
    anchors = [battle({"gpt-judge": Y_WINS}, {"x": "llama", "y": "gpt"}, known=1.0) for _ in range(2)]
    assert self_preference(anchors, {"gpt-judge": "gpt"}) == {"gpt-judge": pytest.approx(1.0)}


def test_self_preference_skips_battles_where_both_or_no_side_is_the_judges_family() -> None:
    both = battle({"judge": X_WINS, "other": TIE}, {"x": "gpt", "y": "gpt"})
    none = battle({"judge": X_WINS, "other": TIE}, {"x": "qwen", "y": "llama"})
    assert self_preference([both, none], {"judge": "gpt", "other": "mistral"}) == {}


def test_anchor_drift_is_the_share_of_anchor_verdicts_against_the_known_outcome() -> None:
    anchors = [
        battle({"a": X_WINS, "b": X_WINS}, known=1.0),
        battle({"a": X_WINS, "b": Y_WINS}, known=1.0),
        battle({"a": FIRST_WINS, "b": X_WINS}, known=1.0),  # a's flip resolves to a tie: not the known win
    ]
    assert anchor_drift(anchors) == {"a": (1, 3), "b": (1, 3)}


def test_reliability_metrics_name_every_measure_in_the_catalogue() -> None:
    battles = [battle({"j1": X_WINS, "j2": FIRST_WINS}, {"x": "gpt", "y": "llama"})]
    anchors = [battle({"j1": X_WINS, "j2": Y_WINS}, known=1.0)]
    metrics = reliability_metrics(battles, anchors, {"j1": "gpt", "j2": "qwen"})
    assert metrics["reliability.swapPairs"] == 4
    assert metrics["reliability.positionFlips"] == pytest.approx(0.25)
    assert metrics["reliability.positionFlips.j2"] == pytest.approx(0.5)
    assert metrics["judgeAgreement"] == pytest.approx(0.0)  # a win against a tie, a win against a loss
    assert metrics["reliability.selfPreference.j1"] == pytest.approx(0.5)
    assert metrics["reliability.anchors"] == 1 and metrics["reliability.anchorDrift"] == pytest.approx(0.5)
    assert metrics["reliability.anchorDrift.j2"] == 1.0


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("gpt-4o-mini", "gpt"),
        ("Qwen2.5-7B-Instruct", "qwen"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama"),
        ("file://models/tiny-teacher", "tiny"),
        ("claude-3-5-sonnet", "claude"),
    ],
)
def test_a_model_family_is_the_first_word_of_the_models_name(name: str, family: str) -> None:
    assert model_family(name) == family


def test_an_explicit_family_wins_over_the_name() -> None:
    served = {"name": "student", "served": {"model": {"from": {"kind": "TrainStage", "name": "sft-2"}}}}
    assert Participant.model_validate(served).model_family() == "sft"
    assert Participant.model_validate({**served, "family": "llama"}).model_family() == "llama"


# --- whole rounds against test judges ---------------------------------------------------------------


def judge_reply(request: dict[str, Any], biased: bool) -> str:
    """Participants answer by model; the judge scores the answer that names the sum (or the first one)."""
    text = request["messages"][-1]["content"]
    if "[Answer of Assistant A]" not in text:
        return "The answer is 5." if request["model"] == "teacher-model" else "I am not sure."
    if biased:
        return "Explanation: the first is better.\nScores: A=8, B=3"
    first = text.split("[Answer of Assistant A]\n", 1)[1].split("\n\n[Answer of Assistant B]")[0]
    return "Explanation: one is right.\nScores: " + ("A=8, B=3" if "5" in first else "A=3, B=8")


def round_config(tmp_path: Path, base_url: str, anchors: bool) -> WorkloadConfig:
    data = tmp_path / "instructions.jsonl"
    questions = [f"What is {n} plus {5 - n}?" for n in range(1, 5)]
    data.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in questions))

    def participant(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name,
            "endpoint": {"baseUrl": base_url, "model": model},
            "sampling": {"temperature": 0},
        }

    spec: dict[str, Any] = {
        "datasets": [{"uri": f"file://{data}"}],
        "student": participant("student", "student-model"),
        "teachers": [participant("teacher", "teacher-model")],
        "judges": [participant("judge", "judge-model")],
        "align": {"coTeaching": {"suggestions": False}, "arena": {"bootstrap": 5}, "maxRetries": 0},
    }
    if anchors:
        path = tmp_path / "anchors.jsonl"
        rows = [
            {
                "id": f"a{n}",
                "prompt": f"What is {n} plus {5 - n}?",
                "chosen": "It is 5.",
                "rejected": "It is 7.",
            }
            for n in range(1, 4)
        ]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        spec["anchorSet"] = {"uri": f"file://{path}"}
    models = {"student": "student-model", "teacher": "teacher-model", "judge": "judge-model"}
    return WorkloadConfig.model_validate(
        {
            "workload": "align",
            "kind": "AlignRound",
            "name": "align",
            "runId": "test",
            "outputUri": f"file://{tmp_path / 'out'}",
            "spec": spec,
            "endpoints": {name: {"baseUrl": base_url, "model": model} for name, model in models.items()},
        }
    )


def judged_round(tmp_path: Path, biased: bool, anchors: bool) -> tuple[dict[str, float], Any]:
    """A round judged by the test judge: its metrics and the condition the plan decides from them."""
    with FakeOpenAI(responder=lambda request: judge_reply(request, biased=biased)) as server:
        config = round_config(tmp_path, server.base_url, anchors)
        metrics = run(config).metrics
    return metrics, judge_reliability(config.typed_spec(), metrics)


@pytest.mark.parametrize("anchors", [False, True])
def test_a_judge_that_always_prefers_the_first_answer_is_flagged(tmp_path: Path, anchors: bool) -> None:
    metrics, condition = judged_round(tmp_path, biased=True, anchors=anchors)
    assert metrics["reliability.positionFlips"] == 1.0 and metrics["reliability.positionFlips.judge"] == 1.0
    assert condition.status == "False" and condition.reason.startswith("PositionBias")
    assert "position flips 1.00 (max 0.30)" in condition.message
    if anchors:
        # Every anchor flips, so every one resolves to a tie instead of its known win.
        assert metrics["reliability.anchors"] == 3 and metrics["reliability.anchorDrift"] == 1.0
        assert condition.reason == "PositionBias,AnchorDrift"
        logged = [json.loads(line) for line in (tmp_path / "out" / "battles.jsonl").read_text().splitlines()]
        assert [b["known"] for b in logged if b["stage"] == "anchor"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("anchors", [False, True])
def test_a_judge_that_reads_the_answers_is_not_flagged(tmp_path: Path, anchors: bool) -> None:
    metrics, condition = judged_round(tmp_path, biased=False, anchors=anchors)
    assert metrics["reliability.swapPairs"] > 0 and metrics["reliability.positionFlips"] == 0.0
    if anchors:
        assert metrics["reliability.anchorDrift"] == 0.0
    assert (condition.status, condition.reason) == ("True", "Reliable")


def test_anchor_rows_without_a_prompt_or_answers_are_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    rows: list[dict[str, Any]] = [
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": "Hello.",
            "rejected": "Go away.",
            "meta": {"chosenModel": "gpt-4o", "rejectedFamily": "llama"},
        },
        {"prompt": "Hi", "chosen": "Hello."},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = AlignRoundSpec.model_validate(
        {
            "datasets": [{"uri": "file:///d"}],
            "anchorSet": {"uri": f"file://{path}"},
            "student": {"name": "s", "endpoint": {"baseUrl": "http://h/v1", "model": "m"}},
            "teachers": [{"name": "t", "endpoint": {"baseUrl": "http://h/v1", "model": "m"}}],
            "judges": [{"name": "j", "endpoint": {"baseUrl": "http://h/v1", "model": "m"}}],
        }
    )
    assert spec.anchor_set is not None
    anchors, rejected = read_anchors(spec.anchor_set)
    assert rejected == 1 and len(anchors) == 1
    assert anchors[0].families == {"chosen": "gpt", "rejected": "llama"} and anchors[0].known == 1.0

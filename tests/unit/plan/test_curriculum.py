"""The Curriculum's chain (names, references, overrides), its gates, and its status as stages finish."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from posttrain.api.curriculum import Curriculum
from posttrain.api.resources import Resource
from posttrain.plan.curriculum import (
    ChainError,
    chain,
    plan_curriculum,
    validate_children,
)
from posttrain.plan.gates import decide_gate

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
BASE = "pvc://posttrain/models/base"


def body(**spec: Any) -> dict[str, Any]:
    """A 3-stage curriculum (fields of `spec` replace the defaults)."""
    teacher = {"name": "teacher", "served": {"model": {"uri": "pvc://posttrain/models/teacher"}}}
    judge = {"name": "judge", "endpoint": {"baseUrl": "https://judge.example/v1", "model": "judge"}}
    defaults: dict[str, Any] = {
        "stages": 3,
        "student": {"name": "student", "served": {"model": {"uri": BASE}, "gpus": 1}},
        "data": {
            "sources": [{"uri": "pvc://posttrain/data/chat.jsonl"}],
            "data": {"evalSets": {"diverse": 50}, "slicing": {"strategy": "difficulty"}},
        },
        "evol": {"teachers": [teacher], "evol": {"rounds": 2}},
        "align": {"teachers": [teacher], "judges": [judge], "align": {"judging": {"inconsistency": "drop"}}},
        "sft": {"train": {"batchSize": 64}},
        "dpo": {"train": {"dpo": {"beta": 0.2}}},
    }
    return {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "Curriculum",
        "metadata": {"name": "wiz", "namespace": "ns", "generation": 1},
        "spec": {**defaults, **spec},
    }


def curriculum(status: dict[str, Any] | None = None, **spec: Any) -> Curriculum:
    document = body(**spec)
    if status is not None:
        document["status"] = status
    return Curriculum.model_validate(document)


def names(children: list[dict[str, Any]]) -> list[str]:
    return [f"{c['kind']}/{c['metadata']['name']}" for c in children]


def by_name(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children}


# --- the chain ---------------------------------------------------------------------------------------


def test_chain_has_one_child_of_each_kind_per_stage_with_deterministic_names() -> None:
    children = chain(curriculum())
    expected = ["DataSlice/wiz-data"]
    for k in (1, 2, 3):
        expected += [
            f"EvolJob/wiz-s{k}-evol",
            f"AlignRound/wiz-s{k}-align",
            f"TrainStage/wiz-s{k}-sft",
            f"TrainStage/wiz-s{k}-dpo",
            f"AlignRound/wiz-s{k}-gate",
        ]
    assert names(children) == expected
    assert names(chain(curriculum())) == expected  # deterministic
    validate_children(children)
    for child in children:
        assert child["metadata"]["labels"]["posttrain.dev/curriculum"] == "wiz"
        assert child["metadata"]["namespace"] == "ns"
        assert "ownerReferences" not in child["metadata"]


def test_each_stage_reads_its_slice_and_its_align_round_battles_the_previous_stages_model() -> None:
    children = by_name(chain(curriculum()))
    assert children["wiz-data"]["spec"]["data"]["slicing"] == {"strategy": "difficulty", "count": 3}
    for k in (1, 2, 3):
        evol = children[f"wiz-s{k}-evol"]["spec"]
        assert evol["dataset"] == {"from": {"kind": "DataSlice", "name": "wiz-data", "output": f"slice-{k}"}}
        align = children[f"wiz-s{k}-align"]["spec"]
        assert align["datasets"] == [{"from": {"kind": "EvolJob", "name": f"wiz-s{k}-evol"}}]
        assert align["evalSet"] == {
            "from": {"kind": "DataSlice", "name": "wiz-data", "output": "eval-diverse"}
        }
        expected_start = (
            {"uri": BASE} if k == 1 else {"from": {"kind": "TrainStage", "name": f"wiz-s{k - 1}-dpo"}}
        )
        assert align["student"]["served"]["model"] == expected_start
        assert align["student"]["served"]["gpus"] == 1
        sft = children[f"wiz-s{k}-sft"]["spec"]
        assert sft["model"] == expected_start
        assert sft["dataset"] == {"from": {"kind": "AlignRound", "name": f"wiz-s{k}-align", "output": "sft"}}
        dpo = children[f"wiz-s{k}-dpo"]["spec"]
        assert dpo["model"] == {"from": {"kind": "TrainStage", "name": f"wiz-s{k}-sft"}}
        assert dpo["preferences"]["from"]["name"] == f"wiz-s{k}-align"
        gate = children[f"wiz-s{k}-gate"]["spec"]
        assert gate["student"]["served"]["model"] == {"from": {"kind": "TrainStage", "name": f"wiz-s{k}-dpo"}}
        assert gate["teachers"][0]["name"] == "previous"
        assert gate["teachers"][0]["served"]["model"] == expected_start
        assert gate["evalSet"] == align["evalSet"]
        assert gate["align"]["arena"]["reference"] == "previous"
        assert gate["align"]["coTeaching"] == {"enabled": False}
        assert gate["judges"] == align["judges"]


def test_only_what_the_user_set_goes_into_the_children() -> None:
    children = by_name(chain(curriculum()))
    assert children["wiz-s1-sft"]["spec"] == {
        "train": {"batchSize": 64},
        "method": "sft",
        "model": {"uri": BASE},
        "dataset": {"from": {"kind": "AlignRound", "name": "wiz-s1-align", "output": "sft"}},
    }


def test_a_stage_override_changes_that_stage_only() -> None:
    overrides = [
        {"stage": 2, "sft": {"train": {"epochs": 1, "batchSize": None}}, "evol": {"evol": {"rounds": 5}}},
    ]
    children = by_name(chain(curriculum(overrides=overrides)))
    assert children["wiz-s2-sft"]["spec"]["train"] == {"epochs": 1}
    assert children["wiz-s1-sft"]["spec"]["train"] == {"batchSize": 64}
    assert children["wiz-s3-sft"]["spec"]["train"] == {"batchSize": 64}
    assert children["wiz-s2-evol"]["spec"]["evol"] == {"rounds": 5}
    assert children["wiz-s3-evol"]["spec"]["evol"] == {"rounds": 2}


def test_editing_one_stage_changes_only_that_stages_specs() -> None:
    before = by_name(chain(curriculum()))
    after = by_name(chain(curriculum(overrides=[{"stage": 3, "dpo": {"train": {"dpo": {"beta": 0.5}}}}])))
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["wiz-s3-dpo"]


def test_rleif_adds_reward_models_trained_from_stage_one_and_ends_each_stage() -> None:
    spec = {
        "rleif": {"train": {"rleif": {"numGenerations": 8}}},
        "rewardModels": {"irm": {"reward": {"epochs": 1}}, "prm": {}},
    }
    children = by_name(chain(curriculum(**spec)))
    assert children["wiz-irm"]["spec"]["dataset"] == {
        "from": {"kind": "EvolJob", "name": "wiz-s1-evol", "output": "rankings"}
    }
    assert children["wiz-irm"]["spec"]["baseModel"] == {"uri": BASE}
    assert children["wiz-prm"]["spec"]["dataset"]["from"]["output"] == "step-labels"
    assert children["wiz-s1-evol"]["spec"]["evol"]["rankings"] == {"enabled": True}
    assert children["wiz-s1-align"]["spec"]["align"]["stepLabels"] == {"enabled": True}
    assert "rankings" not in children["wiz-s2-evol"]["spec"]["evol"]
    rl = children["wiz-s2-rleif"]["spec"]
    assert rl["model"] == {"from": {"kind": "TrainStage", "name": "wiz-s2-dpo"}}
    assert [r["role"] for r in rl["rewardModels"]] == ["irm", "prm"]
    assert children["wiz-s3-align"]["spec"]["student"]["served"]["model"] == {
        "from": {"kind": "TrainStage", "name": "wiz-s2-rleif"}
    }
    assert children["wiz-s2-gate"]["spec"]["student"]["served"]["model"]["from"]["name"] == "wiz-s2-rleif"
    validate_children(list(children.values()))


def test_skill_gaps_feed_the_previous_align_rounds_weights_into_the_next_slice() -> None:
    children = by_name(chain(curriculum(skillGaps={"enabled": True})))
    assert "wiz-s1-data" not in children
    reweigh = children["wiz-s2-data"]["spec"]
    assert reweigh["sources"] == [{"from": {"kind": "DataSlice", "name": "wiz-data", "output": "slice-2"}}]
    assert reweigh["data"]["sampling"]["targetsFrom"] == {
        "from": {"kind": "AlignRound", "name": "wiz-s1-align", "output": "skill-gaps"}
    }
    assert children["wiz-s2-evol"]["spec"]["dataset"] == {
        "from": {"kind": "DataSlice", "name": "wiz-s2-data"}
    }
    assert (
        children["wiz-s3-data"]["spec"]["data"]["sampling"]["targetsFrom"]["from"]["name"] == "wiz-s2-align"
    )
    validate_children(list(children.values()))


def test_an_override_that_breaks_a_child_is_reported_with_the_child_and_field() -> None:
    bad = curriculum(overrides=[{"stage": 2, "sft": {"train": {"epochs": -1}}}])
    with pytest.raises(ChainError) as error:
        validate_children(chain(bad))
    assert any(p.startswith("TrainStage/wiz-s2-sft: spec.train.epochs") for p in error.value.problems)


def test_the_spec_rules() -> None:
    with pytest.raises(ValueError, match="at most `stages`"):
        curriculum(overrides=[{"stage": 4}])
    with pytest.raises(ValueError, match="only once"):
        curriculum(overrides=[{"stage": 1}, {"stage": 1}])
    with pytest.raises(ValueError, match=r"rewardModels\.prm"):
        curriculum(rleif={})
    with pytest.raises(ValueError, match="fixed evaluation set"):
        curriculum(data={"sources": [{"uri": "pvc://p/d"}]})
    with pytest.raises(ValueError, match="served"):
        curriculum(student={"name": "student", "endpoint": {"baseUrl": "https://x/v1", "model": "s"}})


# --- gates -------------------------------------------------------------------------------------------


def gate_metrics(elo: float, low: float, high: float, win: float) -> dict[str, float]:
    return {
        "elo.student": elo,
        "eloLow.student": low,
        "eloHigh.student": high,
        "elo.previous": 1000.0,
        "studentWinRate": win,
    }


def test_elo_gain_rule_promotes_only_when_the_interval_excludes_zero() -> None:
    spec = curriculum().spec
    promoted = decide_gate(spec.promotion, "student", "previous", gate_metrics(1040, 1010, 1070, 0.6), [])
    assert promoted.promoted and promoted.reason == "Promoted"
    assert "gain +40" in promoted.message and "[+10, +70]" in promoted.message
    rejected = decide_gate(spec.promotion, "student", "previous", gate_metrics(1020, 990, 1050, 0.55), [])
    assert not rejected.promoted and rejected.reason == "NotPromoted"
    assert "gain +20" in rejected.message and "[-10, +50]" in rejected.message


def test_win_rate_rule() -> None:
    spec = curriculum(promotion={"rule": "winRate", "minWinRate": 0.6}).spec
    assert decide_gate(
        spec.promotion, "student", "previous", gate_metrics(1000, 900, 1100, 0.61), []
    ).promoted
    verdict = decide_gate(spec.promotion, "student", "previous", gate_metrics(1100, 1050, 1150, 0.59), [])
    assert not verdict.promoted and "win rate 0.59" in verdict.message


def test_an_unreliable_judge_refuses_promotion_and_names_the_condition() -> None:
    spec = curriculum().spec
    conditions = [
        {"type": "JudgeReliable", "status": "False", "reason": "LowAgreement", "message": "kappa 0.1"}
    ]
    verdict = decide_gate(
        spec.promotion, "student", "previous", gate_metrics(1200, 1150, 1250, 0.9), conditions
    )
    assert not verdict.promoted
    assert verdict.reason == "JudgeUnreliable"
    assert "JudgeReliable=False" in verdict.message and "kappa 0.1" in verdict.message


def test_unmeasured_judges_do_not_refuse_promotion_and_the_message_says_so() -> None:
    spec = curriculum().spec
    conditions = [
        {"type": "JudgeReliable", "status": "Unknown", "reason": "NotMeasured", "message": "no battles"}
    ]
    verdict = decide_gate(
        spec.promotion, "student", "previous", gate_metrics(1040, 1010, 1070, 0.6), conditions
    )
    assert verdict.promoted
    assert "judge reliability not measured (JudgeReliable=Unknown: no battles)" in verdict.message


def test_a_gate_without_figures_is_inconclusive() -> None:
    verdict = decide_gate(curriculum().spec.promotion, "student", "previous", {}, [])
    assert not verdict.promoted and verdict.reason == "GateInconclusive"


# --- the plan over time ------------------------------------------------------------------------------


class World:
    """Children's statuses as a driver would report them; `finish` succeeds a child with its outputs."""

    def __init__(self) -> None:
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}

    def status(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return self.statuses.get(key)

    def create(self, children: list[dict[str, Any]]) -> None:
        for child in children:
            self.statuses.setdefault((child["kind"], child["metadata"]["name"]), {})

    def finish(self, kind: str, name: str, metrics: dict[str, float] | None = None) -> None:
        outputs = (
            {"model": {"uri": f"pvc://posttrain/artifacts/{name}/model"}} if kind == "TrainStage" else {}
        )
        self.statuses[(kind, name)] = {"phase": "Succeeded", "outputs": outputs, "metrics": metrics or {}}

    def finish_stage(self, k: int, metrics: dict[str, float]) -> None:
        for role in ("data", "evol", "align"):
            kind = {"data": "DataSlice", "evol": "EvolJob", "align": "AlignRound"}[role]
            self.finish(kind, f"wiz-s{k}-{role}")
        self.finish("DataSlice", "wiz-data")
        self.finish("TrainStage", f"wiz-s{k}-sft")
        self.finish("TrainStage", f"wiz-s{k}-dpo")
        self.finish("AlignRound", f"wiz-s{k}-gate", metrics)


def step(world: World, current: Curriculum) -> tuple[Curriculum, Any]:
    decision = plan_curriculum(current, world.status, T0)
    world.create(decision.children)
    document = body(**current.spec.wire())
    document["status"] = decision.status
    return Curriculum.model_validate(document), decision


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_stages_are_created_one_after_the_other_and_promoted_to_succeeded() -> None:
    world = World()
    current, decision = step(world, curriculum())
    assert names(decision.children) == names(chain(current))[:6]
    assert decision.status["phase"] == "Running"
    assert decision.status["stageSummary"] == "1/3"
    assert condition(decision.status, "Ready")["status"] == "Unknown"
    assert condition(decision.status, "Promoted")["reason"] == "GatePending"
    assert condition(decision.status, "Reconciling")["status"] == "True"
    assert [s["phase"] for s in decision.status["stages"]] == ["Pending", "Pending", "Pending"]
    current, decision = step(world, current)  # the children exist now
    assert [s["phase"] for s in decision.status["stages"]] == ["Running", "Pending", "Pending"]

    world.finish_stage(1, gate_metrics(1040, 1010, 1070, 0.6))
    current, decision = step(world, current)
    assert names(decision.children) == names(chain(current))[:11]
    stage1 = decision.status["stages"][0]
    assert stage1["phase"] == "Promoted" and stage1["promoted"] is True
    assert stage1["eloLow"] == 1010 and stage1["winRate"] == 0.6
    assert stage1["model"] == "pvc://posttrain/artifacts/wiz-s1-dpo/model"
    assert decision.status["stageSummary"] == "2/3"
    assert decision.status["metrics"]["elo"] == 1040
    assert decision.status["lastGate"] == "s1 promoted +40 Elo"
    assert [e.reason for e in decision.events] == ["Promoted"]

    world.finish_stage(2, gate_metrics(1030, 1005, 1060, 0.58))
    current, decision = step(world, current)
    world.finish_stage(3, gate_metrics(1010, 1001, 1020, 0.52))
    current, decision = step(world, current)
    assert decision.children == chain(current)  # every gate promoted: the operator's chain is the render
    assert decision.status["phase"] == "Succeeded"
    assert decision.status["metrics"]["elo"] == 1080
    assert decision.status["metrics"]["stagesPromoted"] == 3
    assert decision.status["currentModel"] == "pvc://posttrain/artifacts/wiz-s3-dpo/model"
    assert condition(decision.status, "Ready")["status"] == "True"
    assert condition(decision.status, "Promoted")["status"] == "True"
    assert condition(decision.status, "Stalled")["status"] == "False"
    assert condition(decision.status, "Reconciling")["status"] == "False"
    _, again = step(world, current)
    assert again.events == []  # a gate's verdict is announced once


def test_a_rejected_gate_stops_the_curriculum_with_the_figures() -> None:
    world = World()
    current, _ = step(world, curriculum())
    world.finish_stage(1, gate_metrics(1040, 1010, 1070, 0.6))
    current, _ = step(world, current)
    world.finish_stage(2, gate_metrics(990, 960, 1020, 0.45))
    current, decision = step(world, current)
    assert "TrainStage/wiz-s3-sft" not in names(decision.children)
    assert decision.status["phase"] == "Failed"
    promoted = condition(decision.status, "Promoted")
    assert promoted["status"] == "False" and promoted["reason"] == "NotPromoted"
    assert "stage 2" in promoted["message"] and "gain -10" in promoted["message"]
    assert condition(decision.status, "Ready")["reason"] == "NotPromoted"
    assert condition(decision.status, "Stalled")["status"] == "True"
    assert decision.status["currentModel"] == "pvc://posttrain/artifacts/wiz-s1-dpo/model"
    assert decision.status["stages"][1]["phase"] == "Rejected"
    assert [e.reason for e in decision.events] == ["NotPromoted"]


def test_a_rejected_gate_with_continue_starts_the_next_stage_from_the_previous_model() -> None:
    world = World()
    current, _ = step(world, curriculum(promotion={"onReject": "continue"}))
    world.finish_stage(1, gate_metrics(990, 960, 1020, 0.45))
    current, decision = step(world, current)
    children = by_name(decision.children)
    assert children["wiz-s2-align"]["spec"]["student"]["served"]["model"] == {"uri": BASE}
    assert children["wiz-s2-sft"]["spec"]["model"] == {"uri": BASE}
    assert children["wiz-s2-gate"]["spec"]["teachers"][0]["served"]["model"] == {"uri": BASE}
    assert decision.status["phase"] == "Running"
    assert condition(decision.status, "Promoted")["status"] == "False"
    assert decision.status["metrics"]["elo"] == 1000
    world.finish_stage(2, gate_metrics(1050, 1020, 1080, 0.6))
    world.finish_stage(3, gate_metrics(1020, 1005, 1040, 0.6))
    current, decision = step(world, current)
    current, decision = step(world, current)
    assert decision.status["phase"] == "Succeeded"
    assert [s["phase"] for s in decision.status["stages"]] == ["Rejected", "Promoted", "Promoted"]
    assert decision.status["metrics"]["stagesPromoted"] == 2
    children = by_name(decision.children)
    assert children["wiz-s3-align"]["spec"]["student"]["served"]["model"]["from"]["name"] == "wiz-s2-dpo"


def test_a_stalled_child_fails_the_curriculum_with_its_message() -> None:
    world = World()
    current, _ = step(world, curriculum())
    world.statuses[("TrainStage", "wiz-s1-sft")] = {
        "phase": "Failed",
        "conditions": [
            {"type": "Stalled", "status": "True", "reason": "RetriesExhausted", "message": "OOMKilled"}
        ],
    }
    current, decision = step(world, current)
    assert decision.status["phase"] == "Failed"
    ready = condition(decision.status, "Ready")
    assert ready["reason"] == "StageFailed" and "TrainStage/wiz-s1-sft: OOMKilled" in ready["message"]
    assert decision.status["stages"][0]["phase"] == "Failed"
    # Once the child recovers (its spec fixed), the curriculum runs again.
    world.statuses[("TrainStage", "wiz-s1-sft")] = {"phase": "Running"}
    _, decision = step(world, current)
    assert decision.status["phase"] == "Running"


def test_an_invalid_expansion_fails_the_curriculum_and_creates_nothing_new() -> None:
    world = World()
    _, decision = step(world, curriculum(overrides=[{"stage": 1, "sft": {"train": {"epochs": -1}}}]))
    assert decision.status["phase"] == "Failed"
    assert "TrainStage/wiz-s1-sft: spec.train.epochs" in condition(decision.status, "Ready")["message"]


def test_status_keeps_its_start_time_and_transition_times() -> None:
    world = World()
    current, first = step(world, curriculum())
    later = datetime(2025, 1, 1, 13, 0, 0, tzinfo=UTC)
    second = plan_curriculum(current, world.status, later)
    assert second.status["startTime"] == first.status["startTime"]

    def times(status: dict[str, Any]) -> dict[str, str]:
        return {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}

    assert times(second.status) == times(first.status)


def test_children_parse_as_resources() -> None:
    for child in chain(curriculum()):
        Resource.parse(copy.deepcopy(child))


def test_a_stalled_shared_child_fails_the_curriculum_before_any_stage() -> None:
    world = World()
    current, _ = step(world, curriculum())
    world.statuses[("DataSlice", "wiz-data")] = {
        "phase": "Failed",
        "conditions": [{"type": "Stalled", "status": "True", "reason": "InvalidInput", "message": "no rows"}],
    }
    _, decision = step(world, current)
    assert decision.status["phase"] == "Failed"
    assert "DataSlice/wiz-data: no rows" in condition(decision.status, "Ready")["message"]
    assert decision.complete  # the children stay as they are


def test_the_win_rate_rule_without_a_win_rate_is_inconclusive() -> None:
    spec = curriculum(promotion={"rule": "winRate"}).spec
    verdict = decide_gate(
        spec.promotion, "student", "previous", {"elo.student": 1100.0, "elo.previous": 1000.0}, []
    )
    assert not verdict.promoted and verdict.reason == "GateInconclusive"
    assert "Elo 1100 vs 1000 (gain +100, 95% [?, ?])" in verdict.message


def test_a_student_read_from_another_resource_has_no_current_model_uri_until_a_stage_promotes() -> None:
    student = {"name": "student", "served": {"model": {"from": {"kind": "TrainStage", "name": "base-sft"}}}}
    world = World()
    _, decision = step(world, curriculum(student=student))
    assert "currentModel" not in decision.status
    children = by_name(decision.children)
    assert children["wiz-s1-sft"]["spec"]["model"] == {"from": {"kind": "TrainStage", "name": "base-sft"}}


def test_a_gate_deciding_again_holds_back_the_later_stages() -> None:
    world = World()
    current, _ = step(world, curriculum())
    for k in (1, 2, 3):
        world.finish_stage(k, gate_metrics(1040, 1010, 1070, 0.6))
        current, decision = step(world, current)
    assert decision.status["phase"] == "Succeeded"
    # Stage 1 was edited: its gate runs again; stages 2 and 3 wait for its verdict.
    world.statuses[("AlignRound", "wiz-s1-gate")] = {"phase": "Waiting"}
    _, decision = step(world, current)
    assert names(decision.children) == names(chain(current))[:6] and decision.complete
    assert decision.status["phase"] == "Running"
    assert [s["phase"] for s in decision.status["stages"]] == ["Running", "Pending", "Pending"]


def test_the_curriculum_budget_goes_to_every_child_unless_it_sets_its_own() -> None:
    budget = {"tokens": {"*": 100000}, "gpuHours": 8.0}
    overrides = [{"stage": 2, "sft": {"budget": {"gpuHours": 2.0}}}]
    children = by_name(chain(curriculum(budget=budget, dpo={"budget": {"requests": 5}}, overrides=overrides)))
    assert children["wiz-data"]["spec"]["budget"] == budget
    assert children["wiz-s1-gate"]["spec"]["budget"] == budget
    assert children["wiz-s1-sft"]["spec"]["budget"] == budget
    assert children["wiz-s2-sft"]["spec"]["budget"] == {"gpuHours": 2.0}  # the stage's override
    assert children["wiz-s3-dpo"]["spec"]["budget"] == {"requests": 5}  # the template's own
    validate_children(list(children.values()))
    assert "budget" not in by_name(chain(curriculum()))["wiz-s1-sft"]["spec"]

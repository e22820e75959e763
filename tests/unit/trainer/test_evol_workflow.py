"""The evol workflow with a scripted in-process teacher.

Rounds, lineage, elimination, Evol-Answer, routing, rankings, difficulty, Auto Evol-Instruct, failures and
replay from the journal.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.evol import AutoEvol, EvolJobSpec
from posttrain_trainer.client import Journal
from posttrain_trainer.evol import prompts
from posttrain_trainer.evol.answer import best_version, evol_answer
from posttrain_trainer.evol.auto import AutoEvolver, split_dev
from posttrain_trainer.evol.caller import Caller
from posttrain_trainer.evol.evolve import EvolOutcome, EvolRun, Seed, draw_operation

from tests.support.evol_teacher import FakeLLM, reply_for

TEACHER = {"endpoint": {"baseUrl": "http://unused/v1", "model": "m"}}
TEXTS = [
    "Write a poem about the sea.",
    "Explain recursion to a child.",
    "REFUSE to do this",
    "SILENT task",
    "LEAK task",
    "SAME task",
    "TWIN task",
]


def make_spec(teachers: Sequence[str] = ("a", "judge"), **evol: Any) -> EvolJobSpec:
    return EvolJobSpec.model_validate(
        {
            "dataset": {"uri": "file:///unused"},
            "teachers": [{"name": name, **TEACHER} for name in teachers],
            "evol": evol,
        }
    )


def make_seeds(texts: Sequence[str] = TEXTS, **meta: Any) -> list[Seed]:
    return [
        Seed.from_row(i, {"id": f"s{i}", "messages": [{"role": "user", "content": t}], "meta": dict(meta)})
        for i, t in enumerate(texts)
    ]


def evolve(
    spec: EvolJobSpec,
    seeds: list[Seed],
    journal: Path,
    client: FakeLLM | None = None,
    method: str | None = None,
) -> tuple[EvolOutcome, Caller, FakeLLM]:
    client = client or FakeLLM()

    async def go() -> tuple[EvolOutcome, Caller]:
        with Journal(journal) as opened:
            caller = Caller(client, opened)
            return await EvolRun(spec, caller, method).run(seeds), caller

    outcome, caller = asyncio.run(go())
    return outcome, caller, client


def test_rounds_lineage_and_elimination_rules(tmp_path: Path) -> None:
    spec = make_spec(rounds=3)
    outcome, caller, client = evolve(spec, make_seeds(), tmp_path / "j.jsonl")
    metrics = outcome.metrics
    assert metrics["seeds"] == 7 and metrics["attempts"] == 21  # recycling keeps every lineage going
    assert metrics["eliminated.refusal"] == 3 and metrics["eliminated.stopwordsOnly"] == 3
    assert metrics["eliminated.noInformationGain"] == 6  # SAME (unchanged) and TWIN (judged equal)
    assert metrics["kept"] + metrics["eliminated"] == 21 and metrics["failed"] == 0
    leaks = [r for r in outcome.eliminated if r["rule"] == "templateLeak"]
    assert leaks and all(r["lineage"]["seed"] == "s4" for r in leaks)
    assert metrics["yield"] == pytest.approx(metrics["kept"] / 21)
    assert sum(v for k, v in metrics.items() if k.startswith("eliminated.")) == metrics["eliminated"]
    operations = {r["lineage"]["operation"] for r in outcome.evolved}
    assert operations <= set(prompts.OPERATIONS)
    assert sum(1 for k in metrics if k.startswith("yield.")) == len(operations)

    # Records: seeds + kept, unique ids, each kept one evolved from the lineage's last kept record.
    ids = [row["id"] for row in outcome.dataset]
    assert len(ids) == len(set(ids)) == 7 + metrics["kept"]
    by_id = {row["id"]: row for row in outcome.dataset}
    for row in outcome.dataset:
        lineage = row["meta"]["lineage"]
        if lineage["round"] == 0:
            assert lineage["parent"] is None and row["id"] == lineage["seed"]
            continue
        parent = by_id[lineage["parent"]]
        assert parent["meta"]["lineage"]["seed"] == lineage["seed"]
        assert parent["meta"]["lineage"]["round"] < lineage["round"]
        assert parent["messages"][0]["content"] in row["messages"][0]["content"]  # the scripted evolutions
        assert row["messages"][-1]["role"] == "assistant" and lineage["teacher"] == "a"
    poem = [r for r in outcome.dataset if r["meta"]["lineage"]["seed"] == "s0"]
    assert [r["meta"]["lineage"]["round"] for r in poem] == [0, 1, 2, 3]
    # The judge (last teacher) judged; the evolver evolved and answered.
    assert client.requests["judge"] > 0 and client.requests["a"] > 0
    assert caller.sent == sum(client.requests.values()) and caller.failed == 0


def test_failed_evolutions_are_not_recycled_when_switched_off(tmp_path: Path) -> None:
    spec = make_spec(rounds=3, elimination={"recycleFailed": False})
    outcome, _, _ = evolve(spec, make_seeds(["REFUSE me", "Write a poem."]), tmp_path / "j.jsonl")
    rounds = Counter(r["lineage"]["seed"] for r in outcome.evolved)
    assert rounds == {"s0": 1, "s1": 3}


def test_recycled_parent_is_evolved_again(tmp_path: Path) -> None:
    spec = make_spec(rounds=2)
    outcome, _, _ = evolve(spec, make_seeds(["SAME thing"]), tmp_path / "j.jsonl")
    assert [r["lineage"]["parent"] for r in outcome.evolved] == ["s0", "s0"]


def test_operation_draws_are_stable_and_follow_the_weights() -> None:
    weights = {op: 1.0 for op in prompts.OPERATIONS}
    assert draw_operation(weights, 3, "x", 1) == draw_operation(dict(weights), 3, "x", 1)
    draws = Counter(draw_operation(weights, 0, f"s{i}", 1) for i in range(3000))
    assert set(draws) == set(prompts.OPERATIONS)
    assert min(draws.values()) > 350  # about 500 each
    only = {op: 0.0 for op in prompts.OPERATIONS} | {"breadth": 2.0, "deepen": 0.0}
    assert {draw_operation(only, 0, f"s{i}", 2) for i in range(100)} == {"breadth"}
    skewed = {op: 0.0 for op in prompts.OPERATIONS} | {"deepen": 9.0, "concretize": 1.0}
    counts = Counter(draw_operation(skewed, 0, f"s{i}", 1) for i in range(2000))
    assert 0.85 < counts["deepen"] / 2000 < 0.95
    with pytest.raises(ValueError):
        draw_operation({op: 0.0 for op in prompts.OPERATIONS}, 0, "x", 1)


def test_round_robin_and_category_routing(tmp_path: Path) -> None:
    spec = make_spec(("a", "b", "c"), rounds=1, routing="round-robin", answer={"passes": 0})
    outcome, _, client = evolve(
        spec, make_seeds(["Task one.", "Task two.", "Task three."]), tmp_path / "rr.jsonl"
    )
    assert [r["lineage"]["teacher"] for r in outcome.evolved] == ["a", "b", "c"]
    assert outcome.metrics["evolutions.b"] == 1
    # The routed teacher answers too; the judge is the last teacher.
    answered = [p for p, messages, _ in client.log if messages[0]["content"].startswith("Task two")]
    assert set(answered) == {"b"}

    seeds = make_seeds(["Math task."], category="math") + make_seeds(["Other task."], category="poetry")
    seeds[1].index, seeds[1].id = 1, "s1"
    spec = make_spec(
        ("a", "b", "c"), rounds=1, routing="category", categoryTeachers={"math": "b"}, answerer="c"
    )
    outcome, _, client = evolve(spec, seeds, tmp_path / "cat.jsonl")
    assert [r["lineage"]["teacher"] for r in outcome.evolved] == ["b", "a"]
    assert {p for p, m, _ in client.log if m[0]["content"] == outcome.evolved[0]["instruction"]} == {"c"}


def test_evol_answer_keeps_the_best_version(tmp_path: Path) -> None:
    assert best_version([5.0, 7.0, 7.0]) == 1
    assert best_version([None, 3.0]) == 1
    assert best_version([None, None]) == 0
    assert best_version([4.0, None, 4.0]) == 0

    def stubborn(messages: Sequence[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        if "Improved answer: <" in text:
            return "I would not change anything."  # no label: unusable
        return reply_for(messages)

    async def go() -> Any:
        with Journal(tmp_path / "j.jsonl") as journal:
            good = await evol_answer(Caller(FakeLLM(), journal), "t1", "Explain tides.", "a", "j", passes=2)
            bad = await evol_answer(
                Caller(FakeLLM(stubborn), journal), "t2", "Explain tides.", "a", "j", passes=2
            )
            none = await evol_answer(
                Caller(FakeLLM(), journal), "t3", "Explain tides.", "a", "j", 0, first="Hi"
            )
            return good, bad, none

    good, bad, none = asyncio.run(go())
    assert len(good.versions) == 3 and good.chosen == 2 and good.answer == good.versions[2]
    assert good.scores == sorted(good.scores)  # the scripted judge prefers longer answers
    assert bad.unparsed_rewrites == 2 and bad.versions == [bad.answer] and bad.scores == []
    assert none.answer == "Hi" and none.versions == ["Hi"]


def test_seed_answers_are_kept_or_made(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]},
        {
            "id": "b",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q2"}],
        },
    ]
    seeds = [Seed.from_row(i, {**row, "meta": {"source": "x"}}) for i, row in enumerate(rows)]
    outcome, _, _ = evolve(make_spec(rounds=0, answer={"passes": 0}), seeds, tmp_path / "j.jsonl")
    first, second = outcome.dataset
    assert first["messages"] == rows[0]["messages"] and first["meta"]["source"] == "x"
    assert second["messages"][0] == {"role": "system", "content": "Be brief."}
    assert second["messages"][-1]["role"] == "assistant" and second["meta"]["answerer"] == "a"
    spec = make_spec(rounds=0, answer={"passes": 0, "keepSeedAnswers": False})
    outcome, _, _ = evolve(spec, seeds, tmp_path / "j2.jsonl")
    assert outcome.dataset[0]["messages"][-1]["content"] != "A1"


def test_rankings_and_difficulty(tmp_path: Path) -> None:
    spec = make_spec(rounds=1, rankings={"enabled": True, "variants": 3, "limit": 2}, difficulty=True)
    outcome, _, _ = evolve(spec, make_seeds(TEXTS[:3]), tmp_path / "j.jsonl")
    assert [row["id"] for row in outcome.rankings] == ["s0", "s1"]  # the limit
    for row in outcome.rankings:
        assert len(row["instructions"]) == 3 == len(set(row["instructions"]))
        assert all(".s" in identifier for identifier in row["meta"]["ids"])  # siblings, not rounds
        assert row["instructions"] == sorted(row["instructions"], key=len, reverse=True)
        assert row["meta"]["ranker"] == "judge"
    assert outcome.metrics["rows.rankings"] == 2
    assert 1 <= outcome.metrics["difficulty.seeds"] <= outcome.metrics["difficulty.final"] <= 10
    assert outcome.metrics["difficulty.final"] == outcome.metrics["difficulty.round.1"]
    assert all("difficulty" in row["meta"] for row in outcome.dataset)


def test_rankings_rank_sibling_evolutions_from_several_operations_and_teachers(tmp_path: Path) -> None:
    spec = make_spec(
        teachers=("a", "b", "judge"), rounds=2, rankings={"enabled": True, "variants": 4, "downward": 1}
    )
    seeds = make_seeds(TEXTS[:2])
    outcome, _, client = evolve(spec, seeds, tmp_path / "j.jsonl")
    descendants = {r["instruction"] for r in outcome.evolved if r["lineage"]["round"] >= 2}
    assert len(outcome.rankings) == 2
    for row, seed in zip(outcome.rankings, seeds, strict=True):
        meta = row["meta"]
        assert meta["parent"] == seed.id and seed.instruction not in row["instructions"]
        # Every variant was evolved from the seed itself, never from a later round's descendant.
        assert not descendants & set(row["instructions"])
        assert meta["operations"].count("downward") == 1 and len(set(meta["operations"])) >= 2
        assert len(set(meta["teachers"])) >= 2
    rank_prompts = [m[-1]["content"] for _, m, _ in client.log if "Ranking: 2 > 1 > 3" in m[-1]["content"]]
    assert rank_prompts and all("definition" in p and "integrity" in p for p in rank_prompts)
    assert not any("how much it asks" in p for p in rank_prompts)
    sibling_requests = [
        m[-1]["content"] for _, m, _ in client.log if seeds[0].instruction in m[-1]["content"]
    ]
    assert any("into an easier version" in p for p in sibling_requests)


def test_downward_evolution_makes_an_easier_instruction() -> None:
    text = prompts.evolve_messages("downward", "Prove that there are infinitely many primes.")[0]["content"]
    assert "easier version" in text and text.rstrip().endswith(prompts.REWRITTEN_MARK)
    assert "downward" in prompts.OPERATIONS and "downward" not in prompts.UPWARD
    spec = make_spec(operations={"downward": 1.0})
    assert spec.evol.operations.downward == 1.0
    assert make_spec().evol.operations.downward == 0.0  # the rounds only make data harder by default


def test_a_garbage_teacher_never_crashes_the_run(tmp_path: Path) -> None:
    spec = make_spec(
        rounds=2, rankings={"enabled": True, "variants": 2}, difficulty=True, answer={"passes": 1}
    )
    client = FakeLLM(lambda messages: "::::::::")
    outcome, _, _ = evolve(spec, make_seeds(TEXTS[:3]), tmp_path / "j.jsonl", client)
    metrics = outcome.metrics
    assert metrics["kept"] == 0 and metrics["eliminated"] == 6
    assert metrics["eliminated.stopwordsOnly"] == 6
    assert outcome.rankings == [] and metrics["rankings.skipped"] == 3  # every sibling the same garbage
    assert metrics["difficulty.unparsed"] == 3 and "difficulty.seeds" not in metrics
    assert metrics["answer.unparsedRewrites"] == 3  # the seeds' answers
    assert len(outcome.dataset) == 3


def test_failed_requests_are_retried_by_the_next_run_and_the_rest_replayed(tmp_path: Path) -> None:
    spec = make_spec(rounds=2, rankings={"enabled": True, "variants": 2})
    journal = tmp_path / "j.jsonl"
    seeds = make_seeds(TEXTS[:2])

    def fails(messages: Sequence[dict[str, str]]) -> bool:
        return (
            "Explain recursion" in messages[-1]["content"] and "Equal or Different" in messages[-1]["content"]
        )

    first, caller, _ = evolve(spec, seeds, journal, FakeLLM(fail=fails))
    assert caller.failed > 0 and first.metrics["failed"] > 0
    assert {r["verdict"] for r in first.evolved if r["lineage"]["seed"] == "s1"} == {"failed"}

    second, caller, client = evolve(spec, seeds, journal)
    assert second.metrics["failed"] == 0 and caller.replayed > 0
    assert caller.sent == sum(client.requests.values()) > 0
    # Everything the first run finished came from the journal: only s1's work was asked again.
    assert all("recursion" in str(messages) for _, messages, _ in client.log)

    third, caller, client = evolve(spec, seeds, journal)
    assert caller.sent == 0 and sum(client.requests.values()) == 0
    assert third.dataset == second.dataset and third.evolved == second.evolved
    assert third.rankings == second.rankings and third.metrics == second.metrics
    keys = [line for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys))


def test_auto_evol_adopts_a_method_only_when_it_fails_less(tmp_path: Path) -> None:
    def picky(messages: Sequence[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        if "Work through the method" in text and prompts.UNIVERSAL_METHOD in text:
            return "Understood. Which instruction?"  # the universal method fails: no final instruction
        return reply_for(messages)

    settings = AutoEvol(enabled=True, steps=2, batch_size=2, candidates=2, dev_set_size=2)
    instructions = [f"Task number {i}." for i in range(6)]

    async def go(responder: Any) -> Any:
        with Journal(tmp_path / f"{responder.__name__}.jsonl") as journal:
            caller = Caller(FakeLLM(responder), journal)
            return await AutoEvolver(caller, settings, "a", "a", "opt", seed=0).run(instructions)

    result = asyncio.run(go(picky))
    assert result.initial_failure_rate == 1.0 and result.failure_rate == 0.0
    assert result.method != prompts.UNIVERSAL_METHOD and result.method.startswith("1. List constraints")
    document = result.document()
    assert document["trajectory"][0]["adopted"] == 0 and document["trajectory"][0]["issues"]
    assert document["trajectory"][1]["adopted"] is None  # the same proposal again: nothing new
    assert len(document["trajectory"]) == 2

    def stuck(messages: Sequence[dict[str, str]]) -> str:
        if "#Optimized Method#" in messages[-1]["content"]:
            return "no method here"
        return reply_for(messages)

    result = asyncio.run(go(stuck))
    assert result.method == prompts.UNIVERSAL_METHOD and result.unparsed == 4

    dev, rest = split_dev(instructions, 2, seed=0)
    assert len(dev) == 2 and len(rest) == 4 and set(dev) | set(rest) == set(instructions)
    assert split_dev(instructions, 2, seed=0) == (dev, rest)


def test_evolving_with_a_chosen_method(tmp_path: Path) -> None:
    spec = make_spec(rounds=1)
    outcome, _, client = evolve(
        spec, make_seeds(TEXTS[:2]), tmp_path / "j.jsonl", method="1. Be precise always."
    )
    assert {r["lineage"]["operation"] for r in outcome.evolved} == {"auto"}
    assert outcome.metrics["kept"] == 2 and "yield.auto" in outcome.metrics
    assert any("1. Be precise always." in m[-1]["content"] for _, m, _ in client.log)


def test_a_small_lineage_window_gives_the_same_outcome(tmp_path: Path) -> None:
    wide, _, _ = evolve(make_spec(rounds=2), make_seeds(), tmp_path / "wide.jsonl")
    narrow, _, _ = evolve(make_spec(rounds=2, concurrency=1), make_seeds(), tmp_path / "narrow.jsonl")
    assert narrow.dataset == wide.dataset and narrow.metrics == wide.metrics

"""The align workload end to end against scripted OpenAI-compatible models (no real model).

A scripted "world" answers like the participants would: the teachers answer well, the student
poorly, the judge prefers the teachers' answers (except where a prompt asks it to be position-biased
or to babble), the teachers suggest, the student revises, the judge ranks and labels steps. The real
server with tiny models is in tests/e2e/test_align_server.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.align import AlignRoundSpec
from posttrain.api.workload import Endpoint, WorkloadConfig
from posttrain_trainer.align import run
from posttrain_trainer.align.battles import Battle, preference_rows, sft_rows, win_rate
from posttrain_trainer.align.workflow import AlignRound, Instruction, hold_out
from posttrain_trainer.client import Journal, Teachers
from posttrain_trainer.common.steps import STEP_FORMAT
from posttrain_trainer.evol.caller import Caller

from tests.support.fake_openai import FakeOpenAI, http_response

QUESTIONS = [
    ("add", "math", "What is 2 plus 3?"),
    ("code", "coding", "Write a function that reverses a string."),
    ("biased", "writing", "Write a haiku (bias)."),
    ("babble", "writing", "Describe the sea (garbage)."),
]


def world(request: dict[str, Any]) -> str:
    """What each scripted participant says to a request."""
    messages = request["messages"]
    text = messages[-1]["content"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    if "[Answer of Assistant A]" in text:
        return judge_pair(text)
    if "Rank the" in text:
        answers = re.findall(r"\[Answer (\d+)\]\n(.*?)(?=\n\n)", text, re.S)
        ordered = sorted(answers, key=lambda a: a[1], reverse=True)  # "candidate 2" > "candidate 1"
        return "Ranking: " + " > ".join(f"[{n}]" for n, _ in ordered)
    if "Check every step" in text:
        count = len(re.findall(r"^Step \d+:", text, re.M))
        return "\n".join(f"Step {n}: {'correct' if n % 2 else 'incorrect'}" for n in range(1, count + 1))
    if "most important improvements" in text:
        return "1. Give the actual result."
    if "[A teacher's suggestions]" in text:
        if "reverses a string" in text:
            return "Improved answer: still a guess."  # a revision no better than the lost answer
        return "Improved answer: the actual result, explained."
    if "You play the user" in system:
        return "USER: Can you explain it in more detail?"
    if STEP_FORMAT in text:  # a step-formatted solution to label
        return "Step 1: read the numbers.\nStep 2: add them.\nStep 3: the answer is 5."
    return answer(request)


def judge_pair(text: str) -> str:
    """The judge's verdict on two answers: see `_score`; alpha narrowly beats beta.

    A prompt marked `(garbage)` gets babble, one marked `(bias)` always prefers the first answer.
    """
    if "(garbage)" in text:
        return "The sea, the sea."
    if "(bias)" in text:
        return "Explanation: the first one.\nScores: A=8, B=4"
    a = text.split("[Answer of Assistant A]\n", 1)[1].split("\n\n[Answer of Assistant B]")[0]
    b = text.split("[Answer of Assistant B]\n", 1)[1].split("\n\nJudge both")[0]
    score_a, score_b = _score(a), _score(b)
    if "alpha" in a and "beta" in b:
        score_a, score_b = 8, 7
    elif "beta" in a and "alpha" in b:
        score_a, score_b = 7, 8
    return f"Explanation: compared both.\nScores: A={score_a}, B={score_b}"


def answer(request: dict[str, Any]) -> str:
    """A participant's answer to a question: the student guesses (or samples candidates), teachers answer."""
    model = request["model"]
    if model == "student-model":
        if "temperature" in request and request.get("temperature", 0) > 0:
            return f"candidate {request.get('seed', 0) % 3}"
        return "student guess"
    return (
        f"Teacher {model} answer: first.\nThen second.\nalpha"
        if "alpha" in model
        else (f"Teacher {model} answer: one.\nThen two.\nbeta")
    )


def _score(answer: str) -> int:
    """The judge's score: teachers' and well-revised answers 9, sampled candidates 5, the rest 3."""
    if "Teacher" in answer or "explained" in answer:
        return 9
    return 5 if "candidate" in answer else 3


def write_dataset(path: Path) -> str:
    rows: list[dict[str, Any]] = [
        {"id": key, "messages": [{"role": "user", "content": q}], "meta": {"category": category}}
        for key, category, q in QUESTIONS
    ]
    # The reference answer of `add` is weak: the student's best candidate beats it (self-teaching SFT).
    rows[0]["messages"].append({"role": "assistant", "content": "no idea"})
    rows.append({"not": "a chat row"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f"file://{path}"


def write_eval(path: Path) -> str:
    rows = [{"instruction": "What is 4 times 5?"}, {"instruction": "Name a colour."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f"file://{path}"


def spec_document(data: str, eval_set: str | None, base_url: str, **align: Any) -> dict[str, Any]:
    def participant(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name,
            "endpoint": {"baseUrl": base_url, "model": model},
            "sampling": {"temperature": 0},
        }

    document: dict[str, Any] = {
        "datasets": [{"uri": data}],
        "student": participant("student", "student-model"),
        "teachers": [participant("alpha", "alpha-model"), participant("beta", "beta-model")],
        "judges": [participant("judge", "judge-model")],
        "align": {
            "coTeaching": {"sftMargin": 3, "preferenceMargin": 1, "turns": 2},
            "selfTeaching": {"enabled": True, "candidates": 3},
            "stepLabels": {"enabled": True},
            "arena": {"bootstrap": 20},
            "concurrency": 8,
            "maxRetries": 0,
            **align,
        },
    }
    if eval_set:
        document["evalSet"] = {"uri": eval_set}
    return document


def config_document(spec: dict[str, Any], output: Path, base_url: str) -> dict[str, Any]:
    models = {
        "student": "student-model",
        "alpha": "alpha-model",
        "beta": "beta-model",
        "judge": "judge-model",
    }
    return {
        "workload": "align",
        "kind": "AlignRound",
        "name": "align",
        "runId": "test",
        "outputUri": f"file://{output}",
        "spec": spec,
        "endpoints": {name: {"baseUrl": base_url, "model": model} for name, model in models.items()},
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=world) as fake:
        yield fake


def test_a_round_produces_every_output_in_its_schema(tmp_path: Path, server: FakeOpenAI) -> None:
    spec = spec_document(
        write_dataset(tmp_path / "d.jsonl"), write_eval(tmp_path / "e.jsonl"), server.base_url
    )
    config = WorkloadConfig.model_validate(config_document(spec, tmp_path / "out", server.base_url))
    result = run(config)
    out = tmp_path / "out"
    assert set(result.outputs) == {"sft", "preferences", "battles", "elo", "skill-gaps", "step-labels"}
    metrics = result.metrics

    battles = read_jsonl(out / "battles.jsonl")
    coteaching = [b for b in battles if b["stage"] == "co-teaching"]
    arena = [b for b in battles if b["stage"] == "arena"]
    revision_checks = [b for b in battles if b["stage"] == "revision"]
    self_checks = [b for b in battles if b["stage"] == "self-teaching"]
    # 4 instructions x 2 turns x 2 teachers; the arena: 2 prompts x 3 pairs.
    assert len(coteaching) == 16 and len(arena) == 6
    # Every revision of a lost battle is judged again; every ranked self-teaching set meets a reference.
    assert len(revision_checks) == 8 and len(self_checks) == 4
    assert metrics["battles"] == 22 and len({b["id"] for b in battles}) == 34
    for b in battles:
        assert [j["order"] for j in b["judgements"]] == ["forward", "backward"]
        assert b["resolution"]["status"] in {"consistent", "inconsistent", "unparsed"}
    assert metrics["battles.identicalAnswers"] == 0
    statuses = {b["source"]: b["resolution"]["status"] for b in coteaching if b["turn"] == 1}
    assert statuses == {
        "add": "consistent",
        "code": "consistent",
        "biased": "inconsistent",
        "babble": "unparsed",
    }
    # The biased judge is inconsistent on 2 turns x 2 teachers and on the self-teaching check; the
    # babbling one unreadable twice each (4 battles and the self-teaching check).
    assert metrics["battles.inconsistent"] == 5 and metrics["verdicts.unparsed"] == 10
    # Turn 2 is the simulator's follow-up after the first teacher's answer.
    turn2 = next(b for b in coteaching if b["turn"] == 2 and b["source"] == "add")
    assert [m["role"] for m in turn2["prompt"]] == ["user", "assistant", "user"]
    assert turn2["prompt"][1]["content"].startswith("Teacher alpha-model")
    assert turn2["prompt"][2]["content"] == "Can you explain it in more detail?"

    # SFT: the student lost by 6 > 3 on add and code, both turns (one target per prompt, from alpha,
    # the first of two equal winners), plus the revisions of lost battles that the judge rates within
    # `revisionMargin` of the teacher's answer: add's four; code's four stay guesses and are left out.
    sft = read_jsonl(out / "sft.jsonl")
    targets = [r for r in sft if r["meta"]["source"] == "co-teaching"]
    revisions = [r for r in sft if r["meta"]["source"] == "suggestions"]
    assert len(targets) == 4 and {r["meta"]["model"] for r in targets} == {"alpha"}
    assert len(revisions) == 4 and {r["meta"]["sourceId"] for r in revisions} == {"add"}
    assert all(r["meta"]["revisionScore"] >= r["meta"]["teacherScore"] - 1 for r in revisions)
    assert metrics["revisions.rejected"] == 4
    # Self-teaching SFT: the best candidate beats add's weak reference answer, not the teachers' answers.
    self_sft = [r for r in sft if r["meta"]["source"] == "self-teaching"]
    assert [(r["meta"]["sourceId"], r["messages"][-1]["content"]) for r in self_sft] == [
        ("add", "candidate 2")
    ]
    assert self_sft[0]["meta"]["reference"] == "reference" and metrics["rows.sftSelfTeaching"] == 1
    assert all(r["messages"][-1]["role"] == "assistant" and set(r) == {"id", "messages", "meta"} for r in sft)
    assert metrics["rows.sft"] == 9 and metrics["rows.sftRevised"] == 4

    preferences = read_jsonl(out / "preferences.jsonl")
    battle_pairs = [p for p in preferences if p["meta"]["source"] == "co-teaching"]
    self_pairs = [p for p in preferences if p["meta"]["source"] == "self-teaching"]
    assert len(battle_pairs) == 8 and all(p["chosen"].startswith("Teacher") for p in battle_pairs)
    # Candidates "candidate 0/1/2" (seeds 0, 1, 2); the judge prefers the highest number.
    assert len(self_pairs) == 4
    assert all((p["chosen"], p["rejected"]) == ("candidate 2", "candidate 0") for p in self_pairs)
    for p in preferences:
        assert set(p) == {"id", "prompt", "chosen", "rejected", "meta"} and p["prompt"][-1]["role"] == "user"
    assert metrics["rows.preferences"] == 12 and metrics["rows.selfTeaching"] == 4

    steps = read_jsonl(out / "step-labels.jsonl")
    # Not the student's co-teaching answer ("student guess", one step) but its step-formatted solution.
    assert len(steps) == 4 and metrics["rows.stepLabels"] == 4
    assert steps[0]["steps"] == ["Step 1: read the numbers.", "Step 2: add them.", "Step 3: the answer is 5."]

    elo = json.loads((out / "elo.json").read_text())
    ratings = {r["name"]: r for r in elo["ratings"]}
    assert elo["reference"] == "alpha" and ratings["alpha"]["rating"] == 1100.0
    assert ratings["student"]["rating"] < ratings["beta"]["rating"] < ratings["alpha"]["rating"]
    assert metrics["elo.student"] == ratings["student"]["median"]
    assert metrics["eloLow.student"] <= metrics["elo.student"] <= metrics["eloHigh.student"]
    assert elo["evalSet"] == {"uri": spec["evalSet"]["uri"], "prompts": 2}  # the fixed set it was measured on
    assert ratings["student"]["battles"] == 4 and ratings["student"]["losses"] == 4

    gaps = json.loads((out / "skill-gaps.json").read_text())
    assert gaps["attribute"] == "category" and set(gaps["weights"]) == {"math", "coding", "writing"}
    # Kept: 8 losses (add, code) and 4 ties (the biased judge, resolved as ties); babble left out.
    assert metrics["studentWinRate"] == pytest.approx(2 / 12)
    assert metrics["rows.rejected"] == 1
    assert json.loads((out / "result.json").read_text())["metrics"]["battles"] == 22


def test_step_labels_come_from_the_labeler(tmp_path: Path, server: FakeOpenAI) -> None:
    spec = spec_document(write_dataset(tmp_path / "d.jsonl"), None, server.base_url)
    spec["student"] = spec["teachers"][1] | {"name": "student"}  # a student whose answers have steps
    spec["align"] |= {"coTeaching": {"enabled": False}, "selfTeaching": {"enabled": False}}
    spec["align"]["arena"] = {"enabled": False}
    config = config_document(spec, tmp_path / "out", server.base_url)
    config["endpoints"]["student"]["model"] = "beta-model"
    result = run(WorkloadConfig.model_validate(config))
    rows = read_jsonl(tmp_path / "out" / "step-labels.jsonl")
    assert len(rows) == 4 and result.metrics["rows.stepLabels"] == 4
    # The student was asked for the step format RLEIF asks its policy for, and those steps are labelled.
    assert rows[0]["steps"] == ["Step 1: read the numbers.", "Step 2: add them.", "Step 3: the answer is 5."]
    assert rows[0]["labels"] == [1, 0, 1]
    assert set(rows[0]) == {"id", "prompt", "steps", "labels", "meta"}
    assert rows[0]["meta"]["lineage"]["step"] == "step-labels"  # every output row carries its lineage
    assert "elo" not in result.outputs and result.metrics["battles"] == 0

    # Without the step-format instruction the student answers the instruction as it is (beta's own
    # answer, three lines: three steps), for a student trained to answer in steps already.
    spec["align"]["stepLabels"] = {"enabled": True, "stepFormat": False}
    config = config_document(spec, tmp_path / "plain", server.base_url)
    config["endpoints"]["student"]["model"] = "beta-model"
    run(WorkloadConfig.model_validate(config))
    rows = read_jsonl(tmp_path / "plain" / "step-labels.jsonl")
    assert len(rows) == 4
    assert rows[0]["steps"] == ["Teacher beta-model answer: one.", "Then two.", "beta"]


def test_several_datasets_get_their_own_preference_outputs(tmp_path: Path, server: FakeOpenAI) -> None:
    data = write_dataset(tmp_path / "d.jsonl")
    spec = spec_document(data, None, server.base_url, selfTeaching={"enabled": False})
    spec["datasets"] = [{"uri": data}, {"uri": data}]
    spec["judges"].append(
        {"name": "judge-2", "endpoint": {"baseUrl": server.base_url, "model": "judge-model"}}
    )
    config = config_document(spec, tmp_path / "out", server.base_url)
    config["endpoints"]["judge-2"] = {"baseUrl": server.base_url, "model": "judge-model"}
    result = run(WorkloadConfig.model_validate(config))
    merged = read_jsonl(tmp_path / "out" / "preferences.jsonl")
    first = read_jsonl(tmp_path / "out" / "preferences-1.jsonl")
    second = read_jsonl(tmp_path / "out" / "preferences-2.jsonl")
    assert first and second and len(first) + len(second) == len(merged)
    assert {p["meta"]["dataset"] for p in first} == {0} and {p["meta"]["dataset"] for p in second} == {1}
    # Two identical judges always agree.
    assert result.metrics["judgeAgreement"] == 1.0
    # Eight instructions; two (a quarter) held out for the arena.
    assert result.metrics["battles.arena"] == 2 * 3


def test_training_rows_that_ask_an_eval_set_prompt_are_set_aside(tmp_path: Path, server: FakeOpenAI) -> None:
    # The dataset holds one of the evaluation prompts (other case and spacing): battles on it would turn
    # the held-out arena prompt into SFT rows and pairs.
    data = tmp_path / "d.jsonl"
    write_dataset(data)
    extra = {"id": "leak", "messages": [{"role": "user", "content": "what is 4  times 5?"}]}
    data.write_text(data.read_text() + json.dumps(extra) + "\n")
    spec = spec_document(f"file://{data}", write_eval(tmp_path / "e.jsonl"), server.base_url)
    result = run(WorkloadConfig.model_validate(config_document(spec, tmp_path / "out", server.base_url)))
    out = tmp_path / "out"
    trained = [b for b in read_jsonl(out / "battles.jsonl") if b["stage"] != "arena"]
    rows = read_jsonl(out / "sft.jsonl") + read_jsonl(out / "preferences.jsonl")
    assert trained and rows
    assert not [b for b in trained if "times" in json.dumps(b["prompt"])]
    assert not [r for r in rows if "times" in json.dumps(r.get("prompt") or r["messages"])]
    assert result.metrics["rows.contaminated"] == 1
    assert result.metrics["battles.coTeaching"] == 16  # the four instructions of the dataset, as before


def test_identical_answers_tie_without_asking_a_judge() -> None:
    class NoModel:
        async def ask(self, *args: Any, **kwargs: Any) -> str:
            raise AssertionError("no request expected")

    spec = AlignRoundSpec.model_validate(spec_document("file:///unused", None, "http://unused/v1"))
    battle = Battle(
        id="d1/q/t1/student-vs-alpha",
        stage="co-teaching",
        prompt=[{"role": "user", "content": "q"}],
        x="student",
        y="alpha",
        answer_x="The same  answer.",
        answer_y="The same answer.\n",
    )
    asyncio.run(AlignRound(spec, NoModel()).judge(battle))  # type: ignore[arg-type]
    assert battle.resolution.status == "identical" and battle.resolution.outcome == 0.5
    assert battle.record()["resolution"] == {
        "status": "identical",
        "scores": None,
        "winner": "tie",
        "kept": True,
    }
    assert preference_rows([battle], 0) == [] and sft_rows([battle], "student", 0) == []
    assert win_rate([battle], "student") == 0.5


def test_hold_out_takes_a_quarter_at_most() -> None:
    items = [Instruction(key=f"d1/{i}", source=str(i), dataset=0, category="g", prompt=[]) for i in range(10)]
    training, evaluation = hold_out(items, 32, seed=0)
    assert len(evaluation) == 2 and len(training) == 8
    assert all(e.key.startswith("eval/") and e.dataset is None for e in evaluation)
    assert hold_out(items[:1], 32, 0)[1] == []


class FlakyServer(FakeOpenAI):
    """The scripted world, except that one model answers 400 while `down` names it."""

    down: str | None = None

    def answer(self, method: str, path: str, body: bytes) -> bytes:
        if method == "POST" and json.loads(body).get("model") == self.down:
            return http_response(400, b'{"error": "bad request"}')
        return super().answer(method, path, body)


def test_failed_requests_are_counted_not_journaled_and_resent(tmp_path: Path) -> None:
    spec = AlignRoundSpec.model_validate(
        spec_document("file:///unused", None, "http://unused/v1", selfTeaching={"enabled": False})
    )
    models = {
        "student": "student-model",
        "alpha": "alpha-model",
        "beta": "beta-model",
        "judge": "judge-model",
    }
    items = [
        Instruction(key=f"d1/{k}", source=k, dataset=0, category=c, prompt=[{"role": "user", "content": q}])
        for k, c, q in QUESTIONS[:2]
    ]

    async def one_round(base_url: str) -> tuple[Any, Caller]:
        endpoints = {name: Endpoint(base_url=base_url, model=model) for name, model in models.items()}
        journal = Journal(tmp_path / "journal.jsonl")
        async with Teachers(endpoints, max_retries=0) as teachers:
            caller = Caller(teachers, journal)
            result = await AlignRound(spec, caller).run(items, [])
        journal.close()
        return result, caller

    with FlakyServer(responder=world) as server:
        server.down = "beta-model"
        first, caller = asyncio.run(one_round(server.base_url))
        assert caller.failed > 0 and first.metrics["requests.failed"] == caller.failed
        assert all(b.y == "alpha" for b in first.coteaching)  # beta never answered
        server.down = None
        second, caller = asyncio.run(one_round(server.base_url))
    assert caller.replayed > 0 and caller.failed == 0
    assert {b.y for b in second.coteaching} == {"alpha", "beta"}
    assert len(second.coteaching) == 2 * len(first.coteaching)


def test_a_killed_round_resumes_without_losing_or_repeating_battles(tmp_path: Path) -> None:
    def slow_world(request: dict[str, Any]) -> str:
        time.sleep(0.01)  # long enough to kill the round in the middle
        return world(request)

    with FakeOpenAI(responder=slow_world) as fake:
        spec = spec_document(
            write_dataset(tmp_path / "d.jsonl"), write_eval(tmp_path / "e.jsonl"), fake.base_url
        )
        spec["align"]["concurrency"] = 2
        reference = tmp_path / "reference"
        killed = tmp_path / "killed"
        files = {}
        for name, out in (("reference", reference), ("killed", killed)):
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(config_document(spec, out, fake.base_url)))
            files[name] = path

        def trainer(config: Path) -> subprocess.Popen[bytes]:
            command = [sys.executable, "-m", "posttrain_trainer.cli", "align", "--config", str(config)]
            env = os.environ | {"POSTTRAIN_TERMINATION_LOG": str(tmp_path / "termination")}
            return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        assert trainer(files["reference"]).wait(120) == 0
        expected = json.loads((reference / "result.json").read_text())["metrics"]

        process = trainer(files["killed"])
        journal = killed / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert not (killed / "result.json").exists(), "the round finished before it was killed"
        journaled = journal.read_bytes().count(b"\n")

        assert trainer(files["killed"]).wait(120) == 0
    resumed = json.loads((killed / "result.json").read_text())["metrics"]
    assert resumed["requests.replayed"] >= journaled
    assert resumed["requests.replayed"] + resumed["requests.sent"] == expected["requests.sent"]
    assert (killed / "battles.jsonl").read_text() == (reference / "battles.jsonl").read_text()
    ids = [b["id"] for b in read_jsonl(killed / "battles.jsonl")]
    checks = expected["battles"] + 8 + 4  # the revision and self-teaching checks are logged too
    assert len(ids) == len(set(ids)) == checks
    for name in ("sft.jsonl", "preferences.jsonl", "elo.json", "skill-gaps.json"):
        assert (killed / name).read_text() == (reference / name).read_text(), name


def arithmetic_world(request: dict[str, Any]) -> str:
    """Sums: the teacher answers right, the student one too many, both with worked steps."""
    text = request["messages"][-1]["content"]
    numbers = [int(n) for n in re.findall(r"\d+", text.split("\n\n")[0])]
    if len(numbers) < 2:
        return "Blue." if request["model"] == "student-model" else "Red is a colour."
    total = sum(numbers[:2]) + (1 if request["model"] == "student-model" else 0)
    if request["model"] == "student-model" and request.get("temperature", 0) > 0:
        # Sampled candidates: one in three right, the others wrong in two ways (a tie for a verifier).
        total += (-1, 0, 1)[request.get("seed", 0) % 3]
    # The student's server returns the space its tokenizer merged into the first token.
    space = " " if request["model"] == "student-model" else ""
    return f"{space}Step 1: {numbers[0]} + {numbers[1]} = {total}.\nStep 2: The answer is {total}."


def test_a_verifier_judges_and_labels_steps_without_a_model(tmp_path: Path) -> None:
    rows = [
        {"id": "add", "messages": [{"role": "user", "content": "What is 2 plus 3?"}]},
        {"id": "add-2", "messages": [{"role": "user", "content": "What is 4 plus 4?"}]},
        {"id": "colour", "messages": [{"role": "user", "content": "Name a colour."}]},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with FakeOpenAI(responder=arithmetic_world) as fake:
        spec = spec_document(
            f"file://{data}", None, fake.base_url, selfTeaching={"enabled": True, "candidates": 4}
        )
        spec["judges"] = [{"name": "judge", "verifier": {"type": "arithmetic"}}]
        spec["align"]["coTeaching"] = {"sftMargin": 0, "preferenceMargin": 0, "suggestions": False}
        spec["align"]["arena"] = {"enabled": False}
        spec["teachers"] = spec["teachers"][:1]
        config = config_document(spec, tmp_path / "out", fake.base_url)
        del config["endpoints"]["judge"]  # a verifier runs in the workload: it has no endpoint
        result = run(WorkloadConfig.model_validate(config))
        judged = fake.requests
    out = tmp_path / "out"
    battles = {b["id"]: b for b in read_jsonl(out / "battles.jsonl") if b["stage"] == "co-teaching"}
    # The sums are checked: the teacher's right answer beats the student's wrong one; the colour
    # cannot be checked, so its battle is left out like an unreadable verdict.
    assert battles["d1/add/t1/student-vs-alpha"]["resolution"]["winner"] == "alpha"
    assert battles["d1/colour/t1/student-vs-alpha"]["resolution"]["kept"] is False
    pairs = [p for p in read_jsonl(out / "preferences.jsonl") if p["meta"].get("source") != "self-teaching"]
    assert {p["chosen"] for p in pairs} == {
        "Step 1: 2 + 3 = 5.\nStep 2: The answer is 5.",
        "Step 1: 4 + 4 = 8.\nStep 2: The answer is 8.",
    }
    assert all(not p["rejected"].startswith(" ") for p in pairs)  # no stray space to learn
    # Self-teaching: the verifier ranks the right candidate over the two wrong ones (which tie: it checks
    # each answer alone, so their order is no inconsistency), one pair per sum; the colour's candidates
    # are all the same answer.
    own = [p for p in read_jsonl(out / "preferences.jsonl") if p["meta"].get("source") == "self-teaching"]
    assert sorted(p["chosen"][-2:] for p in own) == ["5.", "8."]
    assert all(p["rejected"][-2:] not in ("5.", "8.") for p in own)
    labels = {r["id"]: r["labels"] for r in read_jsonl(out / "step-labels.jsonl")}
    assert labels == {"d1/add/t1/steps": [0, 0], "d1/add-2/t1/steps": [0, 0]}
    assert result.metrics["verdicts.unparsed"] == 0
    # No request went to a judge model: only answers, candidates and solutions were asked for.
    assert judged == 3 * 2 + 3 * 4 + 3

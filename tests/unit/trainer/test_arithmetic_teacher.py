"""The quickstart's stand-in teacher: what it replies to the evol workload's requests, and its server."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from posttrain.api.evol import Elimination
from posttrain.support.processes import free_port, http_ok, stop_group, wait_ready
from posttrain_trainer.align import prompts as align_prompts
from posttrain_trainer.common.steps import step_prompt
from posttrain_trainer.common.verify import RIGHT, AnswerVerifier
from posttrain_trainer.demo.arithmetic_teacher import Problem, quality, reply
from posttrain_trainer.evol import prompts
from posttrain_trainer.evol.elimination import RULES, check_without_judge
from posttrain_trainer.serving import program_module, server_command

SEEDS = [f"What is {a} plus {b}?" for a in range(1, 10) for b in range(1, 10)]


def test_upward_evolutions_make_the_sum_harder_and_downward_ones_easier() -> None:
    harder = reply(prompts.evolve_messages("addConstraints", "What is 3 plus 4?"))
    assert harder.startswith("What is 3 plus 4 plus ")
    assert reply(prompts.evolve_messages("increaseReasoning", "What is 7 plus 8?")) == step_prompt(
        "What is 7 plus 8?"
    )
    assert reply(prompts.evolve_messages("downward", step_prompt("What is 2 plus 4 plus 6?"))) == (
        "What is 2 plus 4?"
    )


def test_answers_are_worked_steps_the_verifier_finds_right() -> None:
    verifier = AnswerVerifier("arithmetic")
    answered = [(q, reply(prompts.answer_messages(q))) for q in SEEDS]
    worked = [(q, a) for q, a in answered if a.startswith("Step 1:")]
    assert len(worked) > 0.75 * len(SEEDS)
    assert all(verifier.score(q, a) == RIGHT for q, a in worked)
    assert all(verifier.label_steps(q, a.splitlines()) == [1] * len(a.splitlines()) for q, a in worked)


def test_its_failures_are_the_ones_the_elimination_rules_catch() -> None:
    rules = Elimination()
    caught: Counter[str] = Counter()
    for seed in SEEDS:
        for operation in ("addConstraints", "deepen", "increaseReasoning", "breadth"):
            evolved = prompts.parse_instruction(reply(prompts.evolve_messages(operation, seed)))
            assert evolved is not None
            answer = reply(prompts.answer_messages(evolved))
            rule = check_without_judge(rules, seed, evolved, answer)
            if rule is None and prompts.parse_equal(reply(prompts.equal_messages(seed, evolved))):
                rule = "noInformationGain"
            caught[rule or "kept"] += 1
    assert {"templateLeak", "refusal", "stopwordsOnly", "noInformationGain"} <= set(caught)
    assert set(caught) - {"kept"} <= set(RULES)
    assert 0.5 < caught["kept"] / sum(caught.values()) < 0.9


def test_rankings_put_checkable_well_formed_tasks_first() -> None:
    shown = [
        "#Rewritten Instruction#: What is 3 plus 4?",
        "Please answer this: what is 3 plus 4?",
        step_prompt("What is 3 plus 4?"),
        "What is 3 plus 4 plus 2?",
    ]
    ranking = prompts.parse_ranking(reply(prompts.rank_messages(shown)), len(shown))
    assert ranking == [2, 3, 1, 0]
    assert quality(shown[2]) > quality(shown[0])


def test_scores_improvements_and_difficulty() -> None:
    assert prompts.parse_score(reply(prompts.score_messages("What is 3 plus 4?", "The answer is 7."))) == 9
    assert prompts.parse_score(reply(prompts.score_messages("What is 3 plus 4?", "The answer is 8."))) == 2
    improved = prompts.parse_improved(reply(prompts.improve_messages("What is 3 plus 4?", "8")))
    assert improved == Problem([3, 4]).answer()
    easy = prompts.parse_score(reply(prompts.difficulty_messages("What is 3 plus 4?")))
    hard = prompts.parse_score(reply(prompts.difficulty_messages(step_prompt("What is 3 plus 4 plus 5?"))))
    assert easy is not None and hard is not None and hard > easy


def test_as_a_judge_it_checks_the_sums() -> None:
    prompt = [{"role": "user", "content": "What is 3 plus 4?"}]
    verdict = align_prompts.parse_verdict(reply(align_prompts.judge_messages(prompt, "So 7.", "It is 8.")))
    assert verdict is not None and (verdict.score_a, verdict.score_b) == (10, 1)
    ranked = reply(align_prompts.ranking_messages(prompt, ["It is 8.", "The answer is 7."]))
    assert align_prompts.parse_ranking(ranked, 2) == [1, 0]
    labelled = reply(
        align_prompts.step_label_messages(prompt, ["Step 1: 3 + 4 = 7.", "Step 2: The answer is 8."])
    )
    assert align_prompts.parse_step_labels(labelled, 2) == [1, 0]


def test_a_model_folder_names_its_program_and_is_served_by_it(tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    folder.mkdir()
    assert program_module(folder) is None
    (folder / "posttrain-server.json").write_text(
        json.dumps({"module": "posttrain_trainer.demo.arithmetic_teacher"})
    )
    port = free_port()
    command = server_command("program", str(folder), port)
    assert command[1:3] == ["-m", "posttrain_trainer.demo.arithmetic_teacher"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_ready(lambda: http_ok(base + "/health"), 30, lambda: process.poll() is None) == "ready"
        messages = [{"role": "user", "content": "What is 2 plus 3?"}]
        body = json.dumps({"model": str(folder), "messages": messages})
        request = urllib.request.Request(
            base + "/v1/chat/completions", body.encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            document = json.load(response)
        assert document["choices"][0]["message"]["content"] == reply(messages)
        assert reply(messages).endswith("The answer is 5.")
    finally:
        stop_group(process.pid, 5, process)


def test_only_programs_of_the_trainer_package_are_run(tmp_path: Path) -> None:
    (tmp_path / "posttrain-server.json").write_text(json.dumps({"module": "os"}))
    with pytest.raises(ValueError, match="posttrain_trainer"):
        program_module(tmp_path)

"""RLEIF's reward as WizardMath meant it.

The IRM weights each prompt, so two IRMs that rank the same prompts differently train the policy differently;
r_I and r_A are logged per completion; PRM steps are capped, aggregated length-robustly and cut-off
completions are handled explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.train import RLEIFSettings, TrainStageSpec
from posttrain_trainer.common.steps import STEP_FORMAT
from posttrain_trainer.train.common import DistributedEnv, Hardware
from posttrain_trainer.train.rleif import RLEIFReward, build_trainer, prompts_of, rl_config

from tests.support.learning_toys import single_thread
from tests.unit.trainer.test_train_rleif import rleif_spec

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

QUESTIONS = ["What is 1+1?", "What is 2+5?"]


def prm(items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
    """Steps score by their length, so the completions of one prompt differ."""
    return [[0.1 + 0.8 * (len(step) % 7) / 6 for step in steps] for _, steps in items]


def irm_ranking(first: float, second: float) -> Any:
    scores = dict(zip(QUESTIONS, (first, second), strict=True))
    return lambda instructions: [scores[i] for i in instructions]


def stage(**rleif: Any) -> TrainStageSpec:
    """One RLEIF step on the two questions; the reward models are given in-process, not by URI."""
    # A random tiny model never ends its answers: score the steps it finished.
    spec = rleif_spec(Path("/unused"), "file:///unused.jsonl", Path("/irm"), Path("/prm"), **rleif)
    spec["train"]["maxSteps"] = 1
    spec["train"]["rleif"] |= {"stepSeparator": " ", "truncated": "complete-steps", **rleif}
    return TrainStageSpec.model_validate(spec)


def one_update(
    model_folder: Path, output: Path, irm: Any, **rleif: Any
) -> tuple[list[float], list[float], list[str]]:
    """One RLEIF step with the given IRM (same seed, same samples).

    Returns the advantages TRL computed, the r_I logged beside each of them, and the completions.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = stage(**rleif)
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
    model = AutoModelForCausalLM.from_pretrained(str(model_folder))
    rows = [
        {"id": f"q{i}", "messages": [{"role": "user", "content": q}], "meta": {}}
        for i, q in enumerate(QUESTIONS)
    ]
    reward = RLEIFReward(spec.train.rleif, irm, prm, tokenizer.eos_token_id)
    args = rl_config(spec, output, Hardware(), DistributedEnv())
    trainer = build_trainer(spec, model, tokenizer, prompts_of(rows, step_format=True), reward, args)
    trainer.train()
    logs = trainer._logs  # TRL's completions table: each completion with its rewards and advantage
    return list(logs["advantages"]), list(logs["extra"]["reward.irm"]), [str(c) for c in logs["completion"]]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_two_irms_that_rank_prompts_differently_train_differently(
    tiny_teacher: Path, tmp_path: Path, algorithm: str
) -> None:
    first, irm_first, completions = one_update(
        tiny_teacher, tmp_path / "a", irm_ranking(0.9, 0.1), algorithm=algorithm
    )
    second, irm_second, same_completions = one_update(
        tiny_teacher, tmp_path / "b", irm_ranking(0.1, 0.9), algorithm=algorithm
    )
    assert completions == same_completions and len(first) == 8  # the same samples: only the IRM differs
    assert sorted(set(irm_first)) == [0.1, 0.9] and irm_second == [
        0.1 if x == 0.9 else 0.9 for x in irm_first
    ]
    # Under a per-group std (GRPO's old default scaling) r_I divides out and the advantages are equal.
    assert max(abs(a - b) for a, b in zip(first, second, strict=True)) > 0.1
    # r_I weights its prompt: the favoured prompt's advantages are the larger ones in each run.
    for advantages, irm in ((first, irm_first), (second, irm_second)):
        favoured = max(abs(a) for a, i in zip(advantages, irm, strict=True) if i == 0.9)
        other = max(abs(a) for a, i in zip(advantages, irm, strict=True) if i == 0.1)
        assert favoured > 2 * other


def test_prompts_ask_for_steps_and_keep_the_instruction_for_the_reward_models() -> None:
    rows = [{"id": "q", "messages": [{"role": "user", "content": "What is 1+1?"}], "meta": {}}]
    [item] = prompts_of(rows, step_format=True)
    assert item["prompt"][0]["content"].endswith(STEP_FORMAT) and item["instruction"] == "What is 1+1?"
    seen: list[str] = []

    def irm(instructions: Sequence[str]) -> list[float]:
        seen.extend(instructions)
        return [0.5] * len(instructions)

    reward = RLEIFReward(RLEIFSettings(), irm, prm)
    reward(
        [item["prompt"]], [[{"role": "assistant", "content": "Step 1: 2"}]], instruction=[item["instruction"]]
    )
    assert seen == ["What is 1+1?"]  # the IRM scores the instruction, not the format request


def test_irm_and_prm_scores_are_logged_per_completion_beside_the_advantages() -> None:
    metrics: dict[str, float] = {}
    columns: dict[str, list[float]] = {}
    reward = RLEIFReward(RLEIFSettings(step_aggregate="mean"), irm_ranking(0.8, 0.4), prm)
    rewards = reward(
        [[{"role": "user", "content": q}] for q in QUESTIONS],
        [[{"role": "assistant", "content": "ab\nabcd"}], [{"role": "assistant", "content": "abc"}]],
        log_metric=metrics.__setitem__,
        log_extra=columns.__setitem__,
    )
    assert columns["reward.irm"] == [0.8, 0.4]
    assert columns["reward.prm"] == pytest.approx(
        [(0.1 + 0.8 * 2 / 6 + 0.1 + 0.8 * 4 / 6) / 2, 0.1 + 0.8 * 3 / 6]
    )
    assert rewards == pytest.approx([0.8 * columns["reward.prm"][0], 0.4 * columns["reward.prm"][1]])
    assert metrics["reward.irm"] == pytest.approx(0.6) and metrics["reward.truncated"] == 0.0


def test_cut_off_completions_are_excluded_zeroed_or_scored_without_their_last_step() -> None:
    answer = [{"role": "assistant", "content": "ab\nabcd\nabcdef"}]
    question = [{"role": "user", "content": QUESTIONS[0]}]
    ids = [[5] * 8]  # eight tokens, no end of sequence: maxNewTokens ran out
    settings = {"max_new_tokens": 8, "step_aggregate": "mean"}
    excluded = RLEIFReward(RLEIFSettings(**settings), irm_ranking(1.0, 1.0), prm, eos_token_id=2)
    assert excluded([question], [answer], completion_ids=ids) == [None]
    assert excluded([question], [answer], completion_ids=[[5, 5, 2]]) != [None]  # it ended
    zeroed = RLEIFReward(
        RLEIFSettings(**settings, truncated="zero"), irm_ranking(1.0, 1.0), prm, eos_token_id=2
    )
    assert zeroed([question], [answer], completion_ids=ids) == [0.0]
    scored = RLEIFReward(
        RLEIFSettings(**settings, truncated="complete-steps"), irm_ranking(1.0, 1.0), prm, eos_token_id=2
    )
    assert scored([question], [answer], completion_ids=ids) == pytest.approx(
        [(0.1 + 0.8 * 2 / 6 + 0.1 + 0.8 * 4 / 6) / 2]
    )


def test_steps_the_prm_could_not_score_count_as_cut_off() -> None:
    def short_context(items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        return [[0.9] * min(2, len(steps)) for _, steps in items]  # only two steps fit

    reward = RLEIFReward(RLEIFSettings(), irm_ranking(1.0, 1.0), short_context)
    question = [{"role": "user", "content": QUESTIONS[0]}]
    assert reward([question], [[{"role": "assistant", "content": "a\nb\nc"}]]) == [None]
    assert reward([question], [[{"role": "assistant", "content": "a\nb"}]]) == pytest.approx([0.9])


def test_long_solutions_are_capped_and_not_punished_for_their_length() -> None:
    seen: list[list[str]] = []

    def flat(items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        seen.extend(list(steps) for _, steps in items)
        return [[0.8] * len(steps) for _, steps in items]

    reward = RLEIFReward(RLEIFSettings(max_steps=4), None, flat)
    question = [{"role": "user", "content": QUESTIONS[0]}]
    short, long = reward(
        [question, question],
        [
            [{"role": "assistant", "content": "a\nb"}],
            [{"role": "assistant", "content": "\n".join("abcdefghij")}],
        ],
    )
    assert short == pytest.approx(long)  # the geometric mean: more steps, same score
    assert seen[1] == ["a", "b", "c", "d\ne\nf\ng\nh\ni\nj"]

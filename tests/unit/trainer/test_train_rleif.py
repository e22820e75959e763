"""RLEIF: the reward function handed to TRL, and online RL end to end through the CLI.

The online runs use a trained IRM and PRM (GRPO raises the mean reward; RLOO runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.train import RLEIFSettings
from posttrain_trainer.train.common import Hardware
from posttrain_trainer.train.rleif import (
    RLEIFReward,
    check_generation_batch,
    message_text,
    prompts_of,
    use_vllm,
)

from tests.support.learning_toys import (
    arithmetic_chats,
    run_cli,
    single_thread,
    toy_reward_model,
    write_config,
    write_jsonl,
)

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


class FakeModels:
    """IRM: longer instructions score higher; PRM: a step scores 0.9 when it holds a digit."""

    def __init__(self) -> None:
        self.irm_calls: list[list[str]] = []
        self.prm_calls: list[list[tuple[str, list[str]]]] = []

    def irm(self, instructions: Sequence[str]) -> list[float]:
        self.irm_calls.append(list(instructions))
        return [min(1.0, len(text) / 20) for text in instructions]

    def prm(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        self.prm_calls.append([(q, list(s)) for q, s in items])
        return [[0.9 if any(c.isdigit() for c in step) else 0.1 for step in steps] for _, steps in items]


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_reward_is_irm_times_the_weakest_step() -> None:
    models = FakeModels()
    reward = RLEIFReward(RLEIFSettings(step_aggregate="min"), models.irm, models.prm)
    question = "What is 2+2? Show it."  # 21 characters: IRM score 1.0
    scores = reward(
        [prompt(question), prompt(question), prompt("2+2?")],
        [answer("2+2=4\nSo 4."), answer("2+2=4\nI think so."), answer("4")],
    )
    assert scores == pytest.approx([0.9, 0.1, 0.2 * 0.9])
    # Every prompt comes back numGenerations times: the IRM scores each instruction once.
    assert models.irm_calls == [["2+2?", question]]
    reward([prompt(question)], [answer("5")])
    assert len(models.irm_calls) == 1
    assert models.prm_calls[0][0] == (question, ["2+2=4", "So 4."])


def test_reward_options_and_single_models() -> None:
    models = FakeModels()
    summed = RLEIFReward(RLEIFSettings(combine="sum", step_aggregate="mean"), models.irm, models.prm)
    assert summed([prompt("x" * 10)], [answer("1\nno")]) == pytest.approx([0.5 + 0.5])
    only_prm = RLEIFReward(RLEIFSettings(step_separator=";"), None, models.prm)
    assert only_prm(["plain prompt"], ["1; 2"]) == pytest.approx([0.9])
    logged: dict[str, float] = {}
    only_irm = RLEIFReward(RLEIFSettings(), models.irm, None)
    only_irm([prompt("x" * 5)], [answer("")], log_metric=lambda name, value: logged.__setitem__(name, value))
    assert logged == {"reward.irm": 0.25, "reward.truncated": 0.0}
    with pytest.raises(ValueError):
        RLEIFReward(RLEIFSettings(), None, None)


def test_prompts_vllm_and_batch_rules() -> None:
    rows = [*arithmetic_chats()[:2], {"id": "x", "messages": [{"role": "user", "content": "  "}], "meta": {}}]
    assert prompts_of(rows) == [
        {"prompt": prompt(q), "instruction": q} for q in ("What is 1+1?", "What is 1+2?")
    ]
    assert message_text(prompt("q")) == "q" and message_text(answer("a")) == "a" and message_text("t") == "t"
    gpu = Hardware(cuda=True, vllm=True)
    assert use_vllm("auto", gpu) and not use_vllm("auto", Hardware(vllm=True)) and not use_vllm("never", gpu)
    with pytest.raises(ValueError, match="vLLM"):
        use_vllm("always", Hardware(cuda=True))
    check_generation_batch(8, 1, 1, 4)
    check_generation_batch(2, 2, 2, 8)
    with pytest.raises(ValueError, match="numGenerations"):
        check_generation_batch(6, 1, 1, 4)


def rleif_spec(model: Path, data: str, irm: Path, prm: Path, **rleif: Any) -> dict[str, Any]:
    return {
        "method": "rleif",
        "model": {"uri": f"file://{model}"},
        "dataset": {"uri": data},
        "rewardModels": [
            {"role": "irm", "model": {"uri": f"file://{irm}"}},
            {"role": "prm", "model": {"uri": f"file://{prm}"}},
        ],
        "train": {
            "learningRate": 5e-3,
            "lrScheduler": "constant",
            "warmupRatio": 0.0,
            "batchSize": 8,
            "microBatchSize": 8,
            "maxLength": 256,
            "checkpointSteps": 1000,
            "rleif": {"numGenerations": 4, "maxNewTokens": 8, "klCoef": 0.0, "truncated": "as-is", **rleif},
        },
    }


def test_rleif_raises_the_mean_reward(
    tiny_teacher: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    toys = tmp_path_factory.getbasetemp() / "learning-toys"
    irm, _ = toy_reward_model("irm", toys, tiny_teacher)
    prm, _ = toy_reward_model("prm", toys, tiny_teacher)
    rows = [{**r, "messages": r["messages"][:1]} for r in arithmetic_chats()]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)

    spec = rleif_spec(tiny_teacher, data, irm, prm)
    spec["train"]["maxSteps"] = 30
    spec["train"]["evaluation"] = {"fraction": 0.2}
    result = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, tmp_path / "grpo"))
    metrics = result["metrics"]
    assert metrics["reward.mean.end"] > 2 * metrics["reward.mean.start"]
    assert metrics["steps"] == 30 and metrics["rows.used"] == 20  # five of the 25 prompts held out
    # The same five held-out prompts, answered greedily before and after: the reward rose on them too.
    assert metrics["eval.reward"] > metrics["eval.reward.start"] > 0.0
    # r_I and r_A were logged beside the reward: the run reports their means.
    assert 0.0 < metrics["reward.irm"] < 1.0 and 0.0 < metrics["reward.prm"] < 1.0
    assert metrics["reward.truncated"] > 0.5  # eight new tokens cut most answers off
    assert (tmp_path / "grpo" / "model" / "config.json").exists()

    spec = rleif_spec(tiny_teacher, data, irm, prm, algorithm="rloo", klCoef=0.1, stepAggregate="mean")
    spec["train"]["maxSteps"] = 2
    result = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, tmp_path / "rloo"))
    assert result["metrics"]["steps"] == 2
    assert math.isfinite(result["metrics"]["kl"])  # KL control is on: the penalty is measured

"""Stage-DPO end to end through the CLI.

Preference accuracy rises on a toy slice, and a second stage starts from the first stage's model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from posttrain_trainer.common.chat import RowError
from posttrain_trainer.train.dpo import conversational, preference_pair

from tests.support.learning_toys import answer_pairs, run_cli, single_thread, write_config, write_jsonl

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def dpo_spec(model: Path, data: str, **train: Any) -> dict[str, Any]:
    settings = {
        "learningRate": 3e-3,
        "lrScheduler": "constant",
        "warmupRatio": 0.0,
        "batchSize": 8,
        "microBatchSize": 8,
        "maxLength": 256,
        "checkpointSteps": 1000,
        "evaluation": {"fraction": 0.25},
        **train,
    }
    return {
        "method": "dpo",
        "model": {"uri": f"file://{model}"},
        "preferences": {"uri": data},
        "train": settings,
    }


def test_preference_rows() -> None:
    row = {"id": "p", "prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "meta": {}}
    pair = preference_pair(row)
    assert pair == {"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": "4", "rejected": "5"}
    assert conversational(pair)["chosen"] == [{"role": "assistant", "content": "4"}]
    chat = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": "a",
        "rejected": "b",
    }
    assert preference_pair(chat)["prompt"] == chat["prompt"]
    for broken in (
        {"prompt": "q", "chosen": "a"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {
            "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "chosen": "a",
            "rejected": "b",
        },
        {"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"},
        {"prompt": 3, "chosen": "a", "rejected": "b"},
    ):
        with pytest.raises(RowError):
            preference_pair(broken)


def test_stage_dpo_raises_preference_accuracy_and_chains(tiny_teacher: Path, tmp_path: Path) -> None:
    rows = answer_pairs()
    data = write_jsonl(tmp_path / "slice-1.jsonl", [*rows, {"id": "broken", "prompt": "q"}])
    first = tmp_path / "dpo-1"
    spec = dpo_spec(tiny_teacher, data, maxSteps=30, dpo={"beta": 0.1, "precomputeRefLogProbs": True})
    result = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, first))

    metrics = result["metrics"]
    # The untrained model prefers the shorter refusal; after the stage it prefers the answer.
    assert metrics["eval.preferenceAccuracy.start"] <= 0.2
    assert metrics["eval.preferenceAccuracy"] >= 0.9
    assert metrics["eval.rewardAccuracy"] >= 0.9 and metrics["eval.rewardMargin"] > 0
    assert metrics["rows.used"] == 48 and metrics["rows.rejected"] == 1
    assert (first / "model" / "chat_template.jinja").exists()
    # The manifest names what the stage read (the model, then one line per row: trained on, held out
    # or set aside), not a copy of it.
    manifest = [json.loads(line)["lineage"] for line in (first / "lineage.jsonl").read_text().splitlines()]
    assert [m["input"] for m in manifest] == ["model"] + ["preferences"] * (len(rows) + 1)
    assert manifest[0]["model"].endswith(str(tiny_teacher)) and all(m["step"] == "train" for m in manifest)
    assert [m["source"]["line"] for m in manifest[1:]] == list(range(1, len(rows) + 2))

    # The next stage of the curriculum starts from this one's model, with a frozen reference copy.
    second = tmp_path / "dpo-2"
    data_2 = write_jsonl(tmp_path / "slice-2.jsonl", answer_pairs(count=16, seed=1))
    spec_2 = dpo_spec(first / "model", data_2, maxSteps=2, dpo={"beta": 0.1, "lossType": "ipo"})
    result_2 = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec_2, second))
    assert result_2["metrics"]["eval.preferenceAccuracy.start"] >= 0.9
    assert result_2["metrics"]["steps"] == 2


def test_an_sft_weight_adds_the_chosen_answers_nll_to_the_dpo_loss(tmp_path: Path) -> None:
    from posttrain.api.train import TrainStageSpec
    from posttrain_trainer.train.common import DistributedEnv, Hardware
    from posttrain_trainer.train.dpo import dpo_config

    plain = TrainStageSpec.model_validate(dpo_spec(tmp_path, "file:///p.jsonl"))
    args = dpo_config(plain, tmp_path, Hardware(), DistributedEnv())
    assert args.loss_type == ["sigmoid"]
    weighted = TrainStageSpec.model_validate(dpo_spec(tmp_path, "file:///p.jsonl", dpo={"sftWeight": 0.5}))
    args = dpo_config(weighted, tmp_path, Hardware(), DistributedEnv())
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]

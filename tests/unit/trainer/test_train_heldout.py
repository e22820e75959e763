"""Problems of `train.evaluation.tasks` stay held out of every TrainStage method's training rows.

An earlier stage can put a benchmark question into the training data (an evolution that happens to
produce it, a co-teaching battle on it); the stage sets such rows aside and counts them, so
`eval.taskAccuracy` measures problems the stage did not train on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.api.metrics import Train
from posttrain.api.train import TrainStageSpec
from posttrain_trainer.train.dpo import DPO
from posttrain_trainer.train.rleif import RLEIF
from posttrain_trainer.train.sft import SFT

from tests.support.learning_toys import write_jsonl


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


BENCHMARK = [chat("What is 4 plus 6?", "10"), chat("What is 9 plus 9?", "18")]
TRAINING = [
    chat("What is 4 plus 6?", "10"),  # the benchmark's question: must not be trained on
    chat("  what is 9   PLUS 9?", "18"),  # the same question with other case and spacing
    chat("What is 4 plus 6 plus 1?", "11"),
    chat("What is 2 plus 2?", "4"),
]


def spec(tmp_path: Path, method: str, data: str, **fields: Any) -> TrainStageSpec:
    benchmark = write_jsonl(tmp_path / "benchmark.jsonl", BENCHMARK)
    document: dict[str, Any] = {
        "method": method,
        "model": {"uri": f"file://{tmp_path}/model"},
        "train": {
            "evaluation": {
                "fraction": 0.0,
                "tasks": {"dataset": {"uri": benchmark}, "verifier": {"type": "arithmetic"}},
            }
        },
        **fields,
    }
    if method == "sft" or method == "rleif":
        document["dataset"] = {"uri": data}
    if method == "rleif":
        document["rewardModels"] = [{"role": "prm", "model": {"uri": f"file://{tmp_path}/prm"}}]
    return TrainStageSpec.model_validate(document)


def test_sft_sets_aside_rows_that_ask_a_task_problem(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", TRAINING)
    split = SFT(spec(tmp_path, "sft", data)).load_data()
    assert [row["messages"][0]["content"] for row in split.train] == [
        "What is 4 plus 6 plus 1?",
        "What is 2 plus 2?",
    ]
    assert split.counts[Train.ROWS_CONTAMINATED] == 2
    assert split.counts[Train.ROWS_USED] == 2


def test_dpo_sets_aside_pairs_on_a_task_problem(tmp_path: Path) -> None:
    pairs = [
        {
            "prompt": [{"role": "user", "content": row["messages"][0]["content"]}],
            "chosen": "a",
            "rejected": "b",
        }
        for row in TRAINING
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    split = DPO(spec(tmp_path, "dpo", "", preferences={"uri": data})).load_data()
    assert [pair["prompt"][0]["content"] for pair in split.train] == [
        "What is 4 plus 6 plus 1?",
        "What is 2 plus 2?",
    ]
    assert split.counts[Train.ROWS_CONTAMINATED] == 2


def test_rleif_sets_aside_prompts_that_are_task_problems(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", TRAINING)
    split = RLEIF(spec(tmp_path, "rleif", data)).load_data()
    assert [prompt["instruction"] for prompt in split.train] == [
        "What is 4 plus 6 plus 1?",
        "What is 2 plus 2?",
    ]
    assert split.counts[Train.ROWS_CONTAMINATED] == 2


def test_without_tasks_nothing_is_set_aside(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", TRAINING)
    document = spec(tmp_path, "sft", data).model_dump(by_alias=True)
    document["train"]["evaluation"]["tasks"] = None
    split = SFT(TrainStageSpec.model_validate(document)).load_data()
    assert len(split.train) == 4
    assert split.counts[Train.ROWS_CONTAMINATED] == 0

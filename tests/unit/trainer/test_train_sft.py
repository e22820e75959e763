"""SFT end to end through the CLI.

It learns arithmetic chats, writes the output contract, resumes after being killed, and trains with two
processes under torchrun (gloo).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from posttrain.support.processes import free_port
from posttrain_trainer.train.common import checkpoint_step, latest_checkpoint
from posttrain_trainer.train.sft import trainable_chats

from tests.support.learning_toys import (
    ONE_THREAD_ENV,
    arithmetic_chats,
    run_cli,
    single_thread,
    write_config,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[3]
one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def sft_spec(model: Path, data: str, **train: Any) -> dict[str, Any]:
    settings = {
        "learningRate": 5e-3,
        "lrScheduler": "constant",
        "warmupRatio": 0.0,
        "batchSize": 8,
        "microBatchSize": 8,
        "maxLength": 256,
        "checkpointSteps": 1000,
        "evaluation": {"maxNewTokens": 4},
        **train,
    }
    return {"method": "sft", "model": {"uri": f"file://{model}"}, "dataset": {"uri": data}, "train": settings}


def test_trainable_chats_need_an_answer() -> None:
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "assistant", "content": "no question"}]},
    ]
    assert trainable_chats(rows) == [rows[0]]


def test_sft_raises_exact_match_on_arithmetic(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    spec = sft_spec(tiny_teacher, data, maxSteps=120, checkpointSteps=60)
    # The toy measures memorisation: the evaluation set is the training set.
    spec["evalDataset"] = {"uri": data}
    output = tmp_path / "out"
    result = run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, output))

    metrics = result["metrics"]
    assert metrics["eval.exactMatch.start"] <= 0.1
    assert metrics["eval.exactMatch"] >= 0.8
    assert metrics["steps"] == 120 and metrics["resumedFromStep"] == 0 and metrics["worldSize"] == 1
    assert metrics["loss"] < 1.0
    assert metrics["rows.used"] == 25

    model = result["outputs"]["model"]
    assert model["uri"] == f"file://{output}/model" and model["digest"].startswith("sha256:")
    folder = output / "model"
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    assert "ASSISTANT:" in (folder / "chat_template.jinja").read_text()
    assert {p.name for p in (output / "checkpoints").iterdir() if p.is_dir()} == {
        "checkpoint-60",
        "checkpoint-120",
    }
    progress = json.loads((output / "progress.json").read_text())
    assert progress["done"] == 120 and progress["total"] == 120 and progress["unit"] == "steps"


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    spec = sft_spec(tiny_teacher, data, maxSteps=40, checkpointSteps=2, microBatchSize=4, batchSize=4)
    spec["train"]["evaluation"] = {"maxSamples": 0}
    output = tmp_path / "out"
    config = write_config(tmp_path, "train", "TrainStage", spec, output)
    checkpoints = output / "checkpoints"

    process = subprocess.Popen(
        [sys.executable, "-m", "posttrain_trainer.cli", "train", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **ONE_THREAD_ENV},
    )
    deadline = time.monotonic() + 300
    while (latest := latest_checkpoint(checkpoints)) is None or (checkpoint_step(latest) or 0) < 4:
        assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint within the deadline"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "result.json").exists()
    latest = latest_checkpoint(checkpoints)
    assert latest is not None
    killed_at = checkpoint_step(latest)
    assert killed_at is not None and 4 <= killed_at < 40

    result = run_cli("train", config)
    assert result["metrics"]["resumedFromStep"] == killed_at
    assert result["metrics"]["steps"] == 40
    state = json.loads((checkpoints / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["global_step"] == 40
    # One history across both attempts: the steps before the kill come from the first one.
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, 41))


def test_two_processes_train_together_under_torchrun(tiny_teacher: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    spec = sft_spec(tiny_teacher, data, maxSteps=4, microBatchSize=4, batchSize=8)
    spec["train"]["evaluation"] = {"maxSamples": 0}
    output = tmp_path / "out"
    config = write_config(tmp_path, "train", "TrainStage", spec, output)
    environment = {**os.environ, **ONE_THREAD_ENV}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "posttrain_trainer.cli",
        "train",
        "--config",
        str(config),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"metrics"')]
    assert len(results) == 2
    main = next(r for r in results if r["outputs"])
    other = next(r for r in results if not r["outputs"])
    assert main["metrics"]["worldSize"] == other["metrics"]["worldSize"] == 2
    # The logged loss is averaged over both processes, so both report the same one.
    assert main["metrics"]["loss"] == other["metrics"]["loss"]
    # 2 processes x micro batch 4 make the global batch of 8 without accumulation.
    assert main["metrics"]["steps"] == 4
    assert json.loads((output / "result.json").read_text()) == main


def test_lora_adapters_are_merged_or_kept_for_the_next_stage(tiny_teacher: Path, tmp_path: Path) -> None:
    from posttrain_trainer.train.common import load_model

    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    outputs = {}
    for merge in (True, False):
        lora = {"enabled": True, "r": 4, "alpha": 8, "merge": merge}
        spec = sft_spec(tiny_teacher, data, maxSteps=3, lora=lora, evaluation={"maxSamples": 0})
        output = tmp_path / f"merge-{merge}"
        run_cli("train", write_config(tmp_path, "train", "TrainStage", spec, output))
        outputs[merge] = output / "model"

    merged, adapters = outputs[True], outputs[False]
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
    assert not (merged.parent / "model.adapters").exists()
    assert json.loads((adapters / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_teacher
    )
    # Both load as plain causal LMs for the next stage, and agree: the same adapters, merged or not.
    import torch

    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(load_model(merged)(ids).logits, load_model(adapters)(ids).logits, atol=1e-4)
        assert not torch.allclose(
            load_model(merged)(ids).logits, load_model(tiny_teacher)(ids).logits, atol=1e-4
        )


def test_a_wall_time_budget_stops_training_cleanly_with_the_model_so_far(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", arithmetic_chats())
    spec = sft_spec(tiny_teacher, data, maxSteps=40, checkpointSteps=1000)
    spec["train"]["evaluation"] = {"maxSamples": 0}
    spec["budget"] = {"wallSeconds": 60}
    output = tmp_path / "out"
    config = write_config(tmp_path, "train", "TrainStage", spec, output)
    # The run started long ago (an earlier attempt): its wall time is spent after the first step.
    document = json.loads(config.read_text())
    config.write_text(json.dumps({**document, "startedAt": "2020-01-01T00:00:00Z"}))
    result = run_cli("train", config)
    assert result["budgetExhausted"].startswith("wall time:")
    assert result["metrics"]["steps"] == 1 and result["metrics"]["budget.exhausted"] == 1
    assert result["metrics"]["usage.wallSeconds"] > 60
    assert (output / "model" / "config.json").exists() and result["outputs"]["model"]["digest"]

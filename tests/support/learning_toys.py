"""Toy tasks and runners for the learning workloads' tests (train: SFT, DPO, RLEIF; reward: IRM, PRM).

Every toy is small enough for a tiny random Llama on two CPU cores, and built so the method's own metric
has room to move: arithmetic chats to memorise (SFT exact match), answers preferred over a shorter
refusal (DPO preference accuracy: the untrained model prefers the shorter text), instruction variants
ranked by how much they ask (IRM), solution steps that state an answer vs. gibberish (PRM).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write rows; returns the file's URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"file://{path}"


def write_config(folder: Path, workload: str, kind: str, spec: dict[str, Any], output: Path) -> Path:
    """A workload config file (what the operator mounts into the pod)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{workload}-{output.name}.json"
    config = {
        "workload": workload,
        "kind": kind,
        "name": f"toy-{output.name}",
        "runId": "toy",
        "outputUri": f"file://{output}",
        "spec": spec,
    }
    path.write_text(json.dumps(config))
    return path


def run_cli(workload: str, config: Path) -> dict[str, Any]:
    """`posttrain-trainer WORKLOAD --config FILE` in this process; returns result.json."""
    from posttrain_trainer.cli import main

    assert main([workload, "--config", str(config)]) == 0
    output = Path(json.loads(config.read_text())["outputUri"][len("file://") :])
    result: dict[str, Any] = json.loads((output / "result.json").read_text())
    return result


def arithmetic_chats() -> list[dict[str, Any]]:
    """25 one-turn chats `What is a+b?` -> `a+b`."""
    return [
        {
            "id": f"sum-{a}-{b}",
            "messages": [
                {"role": "user", "content": f"What is {a}+{b}?"},
                {"role": "assistant", "content": str(a + b)},
            ],
            "meta": {},
        }
        for a in range(1, 6)
        for b in range(1, 6)
    ]


def answer_pairs(count: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Preference pairs: an answer (`The answer is N.`) chosen over a bare refusal (`No.`)."""
    rng = random.Random(seed)
    problems = [(a, b) for a in range(1, 10) for b in range(1, 10)]
    rng.shuffle(problems)
    return [
        {
            "id": f"pair-{a}-{b}",
            "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
            "chosen": f"The answer is {a + b}.",
            "rejected": "No.",
            "meta": {},
        }
        for a, b in problems[:count]
    ]


TOPICS = [
    f"{thing} about {subject}"
    for thing in ("a poem", "a story", "an email", "a haiku", "a summary", "a list")
    for subject in ("the sea", "rain", "a fox", "recursion", "git", "SQL")
]


def instruction_rankings() -> list[dict[str, Any]]:
    """36 rankings of three variants each: detailed, plain, a bare keyword (best first)."""
    return [
        {
            "id": f"rank-{index}",
            "instructions": [
                f"Write {topic}. Explain each step in detail and give one example.",
                f"Write {topic}.",
                topic.split()[-1],
            ],
            "meta": {},
        }
        for index, topic in enumerate(TOPICS)
    ]


def gibberish(rng: random.Random) -> str:
    """A step that says nothing: random letters and symbols."""
    alphabet = string.ascii_letters + string.punctuation
    return " ".join("".join(rng.choices(alphabet, k=rng.randint(2, 6))) for _ in range(rng.randint(2, 4)))


def step_labels(count: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Solutions of two steps: `The answer is N.` (correct) or gibberish (incorrect)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        labels = [rng.randint(0, 1) for _ in range(2)]
        steps = [f"The answer is {a + b}." if label else gibberish(rng) for label in labels]
        rows.append({"id": f"sol-{index}", "prompt": f"What is {a}+{b}?", "steps": steps, "labels": labels})
    return rows


def reward_spec(kind: str, base: Path, data: str, steps: int) -> dict[str, Any]:
    """A RewardModel spec for the toys."""
    return {
        "type": kind,
        "baseModel": {"uri": f"file://{base}"},
        "dataset": {"uri": data},
        "reward": {
            "maxSteps": steps,
            "learningRate": 3e-3,
            "batchSize": 8,
            "microBatchSize": 8,
            "maxLength": 256,
            "checkpointSteps": 1000,
            "evalFraction": 0.25,
        },
    }


def toy_reward_model(kind: str, folder: Path, base: Path) -> tuple[Path, dict[str, Any]]:
    """Train (once per folder) the IRM or PRM of the toys; returns (model folder, result document)."""
    output = folder / kind
    if not (output / "result.json").exists():
        rows = instruction_rankings() if kind == "irm" else step_labels()
        data = write_jsonl(folder / f"{kind}.jsonl", rows)
        steps = 30 if kind == "irm" else 40
        run_cli(
            "reward",
            write_config(folder, "reward", "RewardModel", reward_spec(kind, base, data, steps), output),
        )
    return output / "model", json.loads((output / "result.json").read_text())


def single_thread() -> Iterator[None]:
    """Run torch on one thread for a test module (use as an autouse fixture).

    The toys are too small to gain from a second thread, and on a shared CI machine intra-op threads
    that wait for each other's core make every step several times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The same for subprocesses."""

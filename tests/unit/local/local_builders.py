"""Builders shared by the local runner's tests: a fake trainer, a fake model server, small pipelines."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from posttrain.local.driver import RunOptions
from posttrain.local.servers import ServerCommand

HERE = Path(__file__).parent
FAKE_TRAINER = HERE / "fake_trainer.py"
FAKE_SERVER = HERE.parent.parent / "support" / "fake_openai.py"

# data -> evol (served teacher) -> sft; retries without backoff so failures are quick to test.
CHAIN = """
apiVersion: posttrain.dev/v1alpha1
kind: DataSlice
metadata: {name: data}
spec:
  sources: [{uri: file://seed.jsonl}]
  retries: {limit: 1, backoffSeconds: 0}
---
apiVersion: posttrain.dev/v1alpha1
kind: EvolJob
metadata: {name: evol}
spec:
  dataset: {from: {kind: DataSlice, name: data}}
  teachers:
    - name: teacher
      served: {model: {uri: file://models/teacher}, gpus: 0}
  retries: {limit: 1, backoffSeconds: 0}
---
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {name: sft}
spec:
  method: sft
  model: {uri: file://models/student}
  dataset: {from: {kind: EvolJob, name: evol}}
  retries: {limit: 1, backoffSeconds: 0}
"""


def write_pipeline(folder: Path, text: str = CHAIN) -> Path:
    """A manifest file plus the seed data and (empty) model folders it names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seed.jsonl").write_text(json.dumps({"instruction": "What is 1 plus 1?", "output": "2"}) + "\n")
    for model in ("teacher", "student"):
        (folder / "models" / model).mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def fake_options(poll_interval: float = 0.05) -> RunOptions:
    """Run options with the fake trainer and the fake OpenAI server."""
    return RunOptions(
        trainer_command=[sys.executable, str(FAKE_TRAINER)],
        server_command=ServerCommand((sys.executable, str(FAKE_SERVER), "--port", "{port}"), "fake"),
        poll_interval=poll_interval,
        server_ready_timeout=30.0,
    )


def starts(log: Path) -> list[str]:
    """`Kind/name` of every workload start the fake trainer saw."""
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []

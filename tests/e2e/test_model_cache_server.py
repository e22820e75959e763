"""The model-call cache shared by `posttrain run` and an operator-run resource, against a real server.

The server is `transformers serve` of the tiny teacher, behind one counting proxy per driver: the local
runner reaches it at one address, the cluster at another. `posttrain run` runs an EvolJob on this
machine; then the same EvolJob as the operator would run it (the plan with the operator's settings,
pointed at the same store, and the workload the Job's pod runs) asks the teacher nothing: every reply
comes from the cache the local run filled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from posttrain.files import load_resources
from posttrain.local.state import StateDir
from posttrain.plan.reconcile import plan
from posttrain.plan.types import Observed, Settings, StartWorkload
from posttrain_trainer.evol import run
from posttrain_trainer.serving import Server

from tests.support.fault_proxy import FaultProxy
from tests.support.fixtures import served_teacher

__all__ = ["served_teacher"]  # the fixture, imported so pytest finds it

SEEDS = ["Write a haiku about rain.", "Sum the numbers 2 and 5.", "Explain why the sky is blue."]


def manifest(folder: Path, dataset: Path, base_url: str, model: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "EvolJob",
        "metadata": {"name": "evol"},
        "spec": {
            "dataset": {"uri": f"file://{dataset}"},
            "teachers": [
                {
                    "name": "tiny",
                    "endpoint": {"baseUrl": base_url, "model": model},
                    "sampling": {"temperature": 0.0, "maxTokens": 16},
                }
            ],
            "evol": {"rounds": 1, "answer": {"passes": 0}, "concurrency": 2, "requestTimeoutSeconds": 60},
        },
    }
    path = folder / "evol.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_the_local_runner_and_an_operator_run_share_the_model_call_cache(
    served_teacher: Server, tmp_path: Path
) -> None:
    dataset = tmp_path / "seeds.jsonl"
    dataset.write_text("".join(json.dumps({"instruction": s}) + "\n" for s in SEEDS))
    state = StateDir(tmp_path / ".posttrain")

    with FaultProxy(served_teacher.base_url, rate=0.0) as on_laptop:
        local = manifest(tmp_path / "local", dataset, on_laptop.base_url, served_teacher.model)
        command = [sys.executable, "-m", "posttrain.cli", "run", str(local.parent)]
        done = subprocess.run(
            [*command, "--state-dir", str(state.root), "--no-report"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        paid = on_laptop.counters()["forwarded"]
    assert paid > 0
    (record,) = state.records()
    local_status = record.typed_status()
    assert local_status is not None and local_status.phase == "Succeeded"
    assert local_status.metrics["cache.misses"] == paid and local_status.metrics["cache.hits"] == 0

    with FaultProxy(served_teacher.base_url, rate=0.0) as in_cluster:
        cluster = manifest(tmp_path / "cluster", dataset, in_cluster.base_url, served_teacher.model)
        (resource,) = load_resources([cluster])
        # The operator's settings: its own artifact root, pointed at the store the laptop used.
        settings = Settings(artifact_root=state.artifact_root, progress_interval=15.0)
        decision = plan(Observed(resource), settings, datetime.now(UTC))
        (start,) = [a for a in decision.actions if isinstance(a, StartWorkload)]
        assert start.config.endpoints["tiny"].base_url == in_cluster.base_url != on_laptop.base_url
        result = run(start.config)
        assert in_cluster.counters()["requests"] == 0
    assert result.metrics["cache.hits"] == paid and result.metrics["requests.sent"] == 0
    laptop_dataset = Path(local_status.outputs["dataset"].uri.removeprefix("file://"))
    cluster_dataset = Path(result.outputs["dataset"].uri.removeprefix("file://"))
    assert laptop_dataset != cluster_dataset  # another spec (the address), another run folder
    assert cluster_dataset.read_bytes() == laptop_dataset.read_bytes()

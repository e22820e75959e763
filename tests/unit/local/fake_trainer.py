"""A stand-in for `posttrain-trainer <workload> --config FILE`, for testing the local runner's driver.

It speaks the workload protocol (config in, progress.json, result.json and the termination message
out) without any model, so the driver's tests run in seconds. What it does per resource comes from
the environment variable `FAKE_TRAINER` (JSON): `{"Kind/name": {"fail": N, "seconds": S,
"steps": K, "invalid": true, "outputs": [...], "metrics": {...}}}` fails the first N attempts (every
attempt as invalid input with `invalid`), takes S seconds in K progress steps, and reports the
outputs named (default: a few per kind) with the metrics given.

Each start appends a line to `$FAKE_TRAINER_LOG` (when set): `Kind/name runId` — tests count them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

OUTPUTS = {
    "DataSlice": ["dataset"],
    "EvolJob": ["dataset", "rankings"],
    "AlignRound": ["preferences", "sft", "step-labels"],
    "TrainStage": ["model"],
    "RewardModel": ["model"],
}


def main() -> int:
    workload, _, config_path = sys.argv[1:4]
    config = json.loads(Path(config_path).read_text())
    assert config["workload"] == workload, (config["workload"], workload)
    label = f"{config['kind']}/{config['name']}"
    behaviour = json.loads(os.environ.get("FAKE_TRAINER", "{}")).get(label, {})
    if os.environ.get("FAKE_TRAINER_LOG"):
        with open(os.environ["FAKE_TRAINER_LOG"], "a") as log:
            log.write(f"{label} {config['runId']}\n")
    output = Path(config["outputUri"].removeprefix("file://"))
    output.mkdir(parents=True, exist_ok=True)
    attempts_file = output / "fake-attempts"
    attempts = int(attempts_file.read_text()) + 1 if attempts_file.exists() else 1
    attempts_file.write_text(str(attempts))
    # The endpoints the driver passed, so tests can check that served participants were reachable.
    (output / "endpoints.json").write_text(json.dumps(config.get("endpoints", {})))

    steps = int(behaviour.get("steps", 2))
    seconds = float(behaviour.get("seconds", 0.0))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        progress = {"done": step, "total": steps, "unit": "steps", "message": "", "updatedAt": time.time()}
        (output / "progress.json").write_text(json.dumps(progress))

    if behaviour.get("invalid"):
        # What the real trainer does for input it cannot use (common/failures.py).
        error = json.dumps({"error": "DataFileError: rows.jsonl: line 1: not JSON", "reason": "InvalidInput"})
        Path(os.environ["POSTTRAIN_TERMINATION_LOG"]).write_text(error)
        return 65

    if attempts <= int(behaviour.get("fail", 0)):
        error = json.dumps({"error": f"RuntimeError: planned failure {attempts}"})
        Path(os.environ["POSTTRAIN_TERMINATION_LOG"]).write_text(error)
        print("failing on purpose", file=sys.stderr)
        return 1

    outputs = {}
    for name in behaviour.get("outputs") or OUTPUTS[config["kind"]]:
        (output / name).mkdir(exist_ok=True)
        (output / name / "data.jsonl").write_text(json.dumps({"from": label}) + "\n")
        outputs[name] = {
            "uri": f"{config['outputUri']}/{name}",
            "rows": 1,
            "digest": f"sha256:{config['runId']}{name}",
        }
    metrics = {"attempts": attempts, **behaviour.get("metrics", {})}
    result = json.dumps({"outputs": outputs, "metrics": metrics}, sort_keys=True)
    (output / "result.json").write_text(result)
    Path(os.environ["POSTTRAIN_TERMINATION_LOG"]).write_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

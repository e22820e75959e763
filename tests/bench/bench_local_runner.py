"""Benchmark: what the local runner costs on top of the workloads it runs.

    python tests/bench/bench_local_runner.py [--stages 20] [--fanout 24] [--parallel 4]

Workloads are the fake trainer of the unit tests (a Python process that writes its result and
exits), so what is measured is the runner itself: planning, state files, process start and polling.

1. A chain of N DataSlices (each reads the previous one) run by `LocalRunner`, against the baseline
   of the same N trainer processes started back to back by a plain loop (`subprocess.run`).
2. A fan-out of M independent DataSlices with `parallel` P, against a plain pool of P threads each
   running the processes.
3. A steady-state pass over the finished fan-out (what every poll costs), against the baseline of
   `plan()` alone on observations built once (no files read).

Ratios > 1 are the runner's overhead. Figures: docs/bench/local-runner.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from posttrain.local.driver import LocalRunner, RunOptions, load_pipeline  # noqa: E402
from posttrain.local.state import StateDir  # noqa: E402
from posttrain.plan.reconcile import plan  # noqa: E402

FAKE_TRAINER = REPO / "tests" / "unit" / "local" / "fake_trainer.py"


def manifest(count: int, chained: bool) -> str:
    docs = []
    for index in range(count):
        source = (
            "{uri: file://seed.jsonl}"
            if index == 0 or not chained
            else f"{{from: {{kind: DataSlice, name: d{index - 1}}}}}"
        )
        docs.append(
            "apiVersion: posttrain.dev/v1alpha1\nkind: DataSlice\n"
            f"metadata: {{name: d{index}}}\nspec:\n  sources: [{source}]\n  data: {{seed: {index}}}\n"
        )
    return "---\n".join(docs)


def write_pipeline(folder: Path, count: int, chained: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seed.jsonl").write_text(json.dumps({"instruction": "What is 1 plus 1?", "output": "2"}) + "\n")
    path = folder / "pipeline.yaml"
    path.write_text(manifest(count, chained))
    return path


def options(parallel: int) -> RunOptions:
    """The runner's defaults (a pass every 0.5 s), with the fake trainer."""
    return RunOptions(trainer_command=[sys.executable, str(FAKE_TRAINER)], parallel=parallel)


class FixedSleepRunner(LocalRunner):
    """The named baseline: a fixed sleep between passes (no early wake)."""

    def _wait(self, seconds: float) -> None:
        time.sleep(seconds)


def run_runner(
    root: Path, count: int, chained: bool, parallel: int, early_wake: bool = True
) -> tuple[float, LocalRunner]:
    pipeline = load_pipeline([write_pipeline(root / "manifests", count, chained)])
    runner = (LocalRunner if early_wake else FixedSleepRunner)(
        pipeline, StateDir(root / "state"), options(parallel)
    )
    start = time.perf_counter()
    summary = runner.run()
    elapsed = time.perf_counter() - start
    assert summary.succeeded, summary
    return elapsed, runner


def one_process(root: Path, index: int) -> None:
    """The baseline's unit: the same trainer process with a config of its own."""
    import subprocess

    output = root / f"out-{index}"
    config = root / f"config-{index}.json"
    config.write_text(
        json.dumps(
            {
                "workload": "data",
                "kind": "DataSlice",
                "name": f"d{index}",
                "runId": f"r{index}",
                "outputUri": f"file://{output}",
                "spec": {},
            }
        )
    )
    env = {**os.environ, "POSTTRAIN_TERMINATION_LOG": str(root / f"term-{index}")}
    subprocess.run([sys.executable, str(FAKE_TRAINER), "data", "--config", str(config)], check=True, env=env)


def baseline(root: Path, count: int, parallel: int) -> float:
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if parallel <= 1:
        for index in range(count):
            one_process(root, index)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda i: one_process(root, i), range(count)))
    return time.perf_counter() - start


def pass_cost(runner: LocalRunner, repeats: int = 20) -> tuple[float, float]:
    """(seconds per runner pass, seconds per plan-only pass) over a finished pipeline."""
    with runner.state.lock():
        runner.load_records()
        start = time.perf_counter()
        for _ in range(repeats):
            runner.step()
        stepped = (time.perf_counter() - start) / repeats
        observed = [runner.observe(key) for key in runner.pipeline.order]
        now = datetime.now(UTC)
        start = time.perf_counter()
        for _ in range(repeats):
            for item in observed:
                plan(item, runner.settings, now)
        planned = (time.perf_counter() - start) / repeats
    return stepped, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=20)
    parser.add_argument("--fanout", type=int, default=24)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    os.environ.pop("FAKE_TRAINER", None)
    os.environ.pop("FAKE_TRAINER_LOG", None)
    root = Path(tempfile.mkdtemp(prefix="bench-local-runner-"))
    try:
        print(f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}")
        chain, _ = run_runner(root / "chain", args.stages, chained=True, parallel=1)
        plain = baseline(root / "chain-baseline", args.stages, parallel=1)
        print(
            f"chain of {args.stages}: runner {chain:.2f}s, plain loop {plain:.2f}s, ratio {chain / plain:.2f}, "
            f"overhead {(chain - plain) / args.stages * 1000:.0f} ms per stage"
        )
        fixed, _ = run_runner(root / "chain-fixed", args.stages, chained=True, parallel=1, early_wake=False)
        print(
            f"chain of {args.stages} with a fixed 0.5 s sleep between passes: {fixed:.2f}s; waking on exit is "
            f"{fixed / chain:.1f}x faster"
        )
        fan, runner = run_runner(root / "fan", args.fanout, chained=False, parallel=args.parallel)
        pool = baseline(root / "fan-baseline", args.fanout, parallel=args.parallel)
        print(
            f"fan-out of {args.fanout}, parallel {args.parallel}: runner {fan:.2f}s, thread pool {pool:.2f}s, "
            f"ratio {fan / pool:.2f}"
        )
        stepped, planned = pass_cost(runner)
        print(
            f"steady pass over {args.fanout} resources: runner {stepped * 1000:.1f} ms, plan() alone "
            f"{planned * 1000:.2f} ms, ratio {stepped / planned:.1f}, "
            f"{stepped / args.fanout * 1000:.2f} ms per resource"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The mapping from watched Jobs and pods to the plan's observations (adapters/observe.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posttrain.adapters.observe import (
    deployment_summary,
    input_state,
    job_summary,
    merge_patch,
    owner_of,
    pod_summary,
    workloads,
)
from posttrain.api import labels
from posttrain.files import load_resources
from posttrain.manifests.naming import child_labels


def job(state: str = "", active: int = 0, message: str = "") -> dict[str, Any]:
    conditions = []
    if state:
        conditions.append(
            {"type": state, "status": "True", "reason": "BackoffLimitExceeded", "message": message}
        )
    return {
        "metadata": {
            "name": "evoljob-e-abc-1",
            "labels": {"posttrain.dev/run": "abc", "posttrain.dev/attempt": "1"},
        },
        "status": {"active": active, "conditions": conditions},
    }


def pod(phase: str, exit_code: int | None = None, message: str = "") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "workload", "state": {"running": {}}}
    if exit_code is not None:
        container["state"] = {
            "terminated": {"exitCode": exit_code, "reason": "Completed", "message": message}
        }
    return {
        "metadata": {"labels": {"batch.kubernetes.io/job-name": "evoljob-e-abc-1"}},
        "status": {"phase": phase, "containerStatuses": [container]},
    }


RESULT = json.dumps({"outputs": {"dataset": {"uri": "file:///out/dataset", "digest": "d"}}, "metrics": {}})


def test_job_states_follow_its_conditions_and_active_count() -> None:
    assert job_summary(job())["state"] == "pending"
    assert job_summary(job(active=1))["state"] == "active"
    assert job_summary(job("Complete"))["state"] == "succeeded"
    failed = job_summary(job("Failed", message="too many failures"))
    assert (failed["state"], failed["reason"], failed["message"]) == (
        "failed",
        "BackoffLimitExceeded",
        "too many failures",
    )


def test_a_finished_attempt_carries_the_pods_exit_code_and_result() -> None:
    [observed] = workloads(
        [job_summary(job("Complete"))], {"evoljob-e-abc-1": pod_summary(pod("Succeeded", 0, RESULT))}
    )
    assert (observed.state, observed.exit_code, observed.run_id, observed.attempt) == (
        "succeeded",
        0,
        "abc",
        1,
    )
    assert observed.result is not None and observed.result.outputs["dataset"].uri == "file:///out/dataset"


def test_a_jobs_verdict_seen_before_its_pods_last_update_waits_for_the_pod() -> None:
    # Jobs and pods come on separate watch streams: the Job may be Complete in the index while its pod
    # still shows Running; calling the result missing then would fail a good attempt.
    running = pod_summary(pod("Running"))
    for state in ("Complete", "Failed"):
        [observed] = workloads([job_summary(job(state))], {"evoljob-e-abc-1": running})
        assert observed.state == "active", state
    # Without any pod (deleted, garbage-collected) the Job's verdict stands.
    [gone] = workloads([job_summary(job("Complete"))], {})
    assert gone.state == "succeeded" and gone.result is None


def test_a_failed_pod_gives_its_exit_code_and_message() -> None:
    [observed] = workloads(
        [job_summary(job("Failed"))], {"evoljob-e-abc-1": pod_summary(pod("Failed", 3, "out of memory"))}
    )
    assert (observed.state, observed.exit_code, observed.message) == ("failed", 3, "out of memory")


def test_merge_patch_nulls_removed_keys_and_keeps_equal_ones_out() -> None:
    old = {"phase": "Running", "progress": {"done": 1}, "retryAfter": "t", "runId": "a"}
    new = {"phase": "Succeeded", "progress": {"done": 2}, "runId": "a"}
    assert merge_patch(old, new) == {"phase": "Succeeded", "progress": {"done": 2}, "retryAfter": None}
    assert merge_patch(new, new) == {}


def test_the_adapters_read_the_label_keys_the_manifests_write() -> None:
    resource = load_resources([Path(__file__).parents[3] / "examples" / "quickstart"])[0]
    workload = child_labels(resource, "workload", run="r1", attempt=2)
    teacher = child_labels(resource, "teacher", participant="judge")
    body = {"metadata": {"namespace": "ns", "labels": workload}, "status": {}}

    assert owner_of(body) == ("ns", resource.kind, resource.metadata.name)
    assert (job_summary(body)["run"], job_summary(body)["attempt"]) == ("r1", 2)
    assert deployment_summary({"metadata": {"labels": teacher}})["participant"] == "judge"
    assert {labels.KIND, labels.NAME, labels.COMPONENT, labels.RUN, labels.ATTEMPT} <= set(workload)


def test_an_input_knows_its_outputs_from_its_spec() -> None:
    summary = {
        "kind": "DataSlice",
        "metadata": {"name": "mix", "generation": 1},
        "spec": {"sources": [{"uri": "file:///d.jsonl"}], "data": {"slicing": {"count": 2}}},
        "status": {"phase": "Running"},
    }
    state = input_state(summary)
    assert state.known_outputs == ("dataset", "slice-1", "slice-2", "rejects", "report")
    # A spec the models reject is reported on that resource; its readers are not told anything.
    assert input_state({**summary, "spec": {"sources": []}}).known_outputs is None


def test_a_job_summary_has_its_gpus_and_times() -> None:
    body = job("Failed")
    body["spec"] = {
        "parallelism": 2,
        "template": {
            "spec": {
                "containers": [
                    {"name": "workload", "resources": {"limits": {"nvidia.com/gpu": "4", "memory": "1Gi"}}},
                    {"name": "sidecar", "resources": {}},
                ]
            }
        },
    }
    body["status"]["startTime"] = "2026-01-01T00:00:00Z"
    body["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:05:00Z"
    summary = job_summary(body)
    assert (summary["gpus"], summary["start"], summary["end"]) == (
        8,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:05:00Z",
    )
    assert job_summary(job(active=1))["gpus"] == 0

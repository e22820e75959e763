"""Turn what the API server shows into the plan layer's observations.

What it shows: Jobs, their pods, teacher Deployments and other posttrain resources.

The summaries are what the operator keeps in its in-memory indexes: small dicts, not whole bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from posttrain.api import labels
from posttrain.api.outputs import outputs_of
from posttrain.api.resources import KINDS, Resource
from posttrain.api.status import Output
from posttrain.api.workload import Endpoint, Result
from posttrain.plan.types import InputState, ObservedTeacher, ObservedWorkload, WorkloadState

Body = Mapping[str, Any]


def owner_of(body: Body) -> tuple[str, str, str] | None:
    """(namespace, kind, name) of the posttrain resource a child belongs to, from its labels."""
    metadata = body.get("metadata", {})
    found = metadata.get("labels") or {}
    kind = found.get(labels.KIND)
    name = (metadata.get("annotations") or {}).get(labels.NAME_ANNOTATION) or found.get(labels.NAME)
    if not kind or not name:
        return None
    return (metadata.get("namespace", ""), kind, name)


def job_gpus(body: Body) -> int:
    """GPUs a Job holds while it runs: the `*/gpu` limits of its pod's containers times its pods."""
    template = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    per_pod = 0
    for container in template.get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        for resource, quantity in limits.items():
            if str(resource).endswith("/gpu"):
                try:
                    per_pod += int(str(quantity))
                except ValueError:
                    continue
    return per_pod * int((body.get("spec") or {}).get("parallelism") or 1)


def job_summary(body: Body) -> dict[str, Any]:
    """The parts of a Job the plan needs."""
    metadata = body.get("metadata", {})
    found = metadata.get("labels") or {}
    status = body.get("status") or {}
    state: WorkloadState = "pending"
    reason = ""
    message = ""
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            state = "succeeded"
        elif condition.get("type") == "Failed":
            state = "failed"
            reason = condition.get("reason") or "Failed"
            message = condition.get("message") or ""
    if state == "pending" and (status.get("active") or 0) > 0:
        state = "active"
    finished = status.get("completionTime") or next(
        (
            c.get("lastTransitionTime")
            for c in status.get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        None,
    )
    return {
        "gpus": job_gpus(body),
        "start": status.get("startTime"),
        "end": finished,
        "name": metadata.get("name", ""),
        "run": found.get(labels.RUN, ""),
        "attempt": int(found.get(labels.ATTEMPT, "0") or 0),
        "state": state,
        "reason": reason,
        "message": message,
        "deleting": bool(metadata.get("deletionTimestamp")),
    }


def pod_summary(body: Body) -> dict[str, Any]:
    """The terminated state of a workload pod's container: exit code, reason, termination message."""
    metadata = body.get("metadata", {})
    found = metadata.get("labels") or {}
    status = body.get("status") or {}
    out: dict[str, Any] = {
        "job": found.get("batch.kubernetes.io/job-name") or found.get("job-name", ""),
        "phase": status.get("phase", ""),
    }
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            out.update(
                exit_code=terminated.get("exitCode"),
                reason=terminated.get("reason") or "",
                message=terminated.get("message") or "",
            )
    return out


def deployment_summary(body: Body) -> dict[str, Any]:
    """A teacher Deployment's readiness."""
    metadata = body.get("metadata", {})
    found = metadata.get("labels") or {}
    status = body.get("status") or {}
    return {
        "name": metadata.get("name", ""),
        "participant": found.get(labels.PARTICIPANT, ""),
        "ready": (status.get("readyReplicas") or 0) >= 1,
        "deleting": bool(metadata.get("deletionTimestamp")),
    }


def resource_summary(body: Body) -> dict[str, Any]:
    """What is kept of a posttrain resource: enough to plan it and the resources that read from it."""
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: v
            for k, v in (body.get("metadata") or {}).items()
            if k
            in ("name", "namespace", "uid", "generation", "labels", "deletionTimestamp", "ownerReferences")
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def parse_result(message: str) -> Result | None:
    """The result document in a termination message, if it is one."""
    text = message.strip()
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or "outputs" not in document:
        return None
    try:
        return Result.model_validate(document)
    except ValueError:
        return None


def workloads(
    jobs: Iterable[Mapping[str, Any]], pods: Mapping[str, Mapping[str, Any]]
) -> list[ObservedWorkload]:
    """Observed attempts from Job summaries and the summaries of their pods (by Job name)."""
    out = []
    for job in jobs:
        if job.get("deleting"):
            continue
        pod = pods.get(job["name"], {})
        state: WorkloadState = job["state"]
        if state in ("succeeded", "failed") and pod and pod.get("phase") not in ("Succeeded", "Failed"):
            # The Job's verdict was seen before its pod's last update (separate watch streams): wait for
            # the pod's exit code and termination message rather than call the result missing.
            state = "active"
        message = pod.get("message") or job.get("message", "")
        reason = job.get("reason", "")
        if state == "failed" and pod.get("reason"):
            reason = pod["reason"] if pod["reason"] not in ("Error", "") else reason or "Error"
        out.append(
            ObservedWorkload(
                run_id=job["run"],
                attempt=job["attempt"],
                name=job["name"],
                state=state,
                exit_code=pod.get("exit_code"),
                reason=reason,
                message=message,
                result=parse_result(message) if state == "succeeded" else None,
            )
        )
    return out


def teachers(
    deployments: Iterable[Mapping[str, Any]], endpoint_of: Mapping[str, Endpoint]
) -> list[ObservedTeacher]:
    """Observed teachers from Deployment summaries; `endpoint_of` maps participant -> Service endpoint."""
    return [
        ObservedTeacher(
            participant=d["participant"],
            name=d["name"],
            ready=bool(d["ready"]),
            endpoint=endpoint_of.get(d["participant"]),
        )
        for d in deployments
        if not d.get("deleting")
    ]


def input_state(summary: Mapping[str, Any] | None) -> InputState:
    """The state of a referenced resource from its summary (None: it does not exist)."""
    if summary is None or summary.get("metadata", {}).get("deletionTimestamp"):
        return InputState(exists=False)
    status = summary.get("status") or {}
    generation = summary.get("metadata", {}).get("generation") or 1
    outputs = {}
    for name, raw in (status.get("outputs") or {}).items():
        try:
            outputs[name] = Output.model_validate(raw)
        except ValueError:
            continue
    return InputState(
        exists=True,
        phase=status.get("phase"),
        current=(status.get("observedGeneration") or 0) >= generation,
        outputs=outputs,
        run_id=status.get("runId"),
        stalled=next(
            (
                str(c.get("message", ""))
                for c in status.get("conditions") or []
                if c.get("type") == "Stalled" and c.get("status") == "True"
            ),
            None,
        ),
        known_outputs=known_outputs(summary),
    )


def known_outputs(summary: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The outputs a resource produces, from its spec; None when its spec is invalid (reported on it)."""
    kind = summary.get("kind")
    if kind not in KINDS:
        return None
    try:
        spec = KINDS[kind].spec_model.model_validate(summary.get("spec") or {})
    except ValueError:
        return None
    return tuple(outputs_of(kind, spec))


def parse_resource(summary: Mapping[str, Any]) -> Resource:
    """A resource from its summary (raises pydantic.ValidationError on a spec the models reject)."""
    return Resource.parse(dict(summary))


def merge_patch(old: Any, new: Any) -> Any:
    """A JSON merge patch (RFC 7386) turning `old` into `new`: removed keys become null."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch

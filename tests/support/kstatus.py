"""kstatus' verdict on an object, computed in Python the way sigs.k8s.io/cli-utils computes it.

Flux (kustomize-controller's `wait`), kpt and cli-utils judge a resource with kstatus'
`status.Compute` (pkg/kstatus/status/status.go and generic.go). For a custom resource, which has no
kind-specific rules there, the computation is:

1. `metadata.deletionTimestamp` set: **Terminating**.
2. `status.observedGeneration` present and different from `metadata.generation`: **InProgress**
   (`LatestGenerationNotObserved`). An absent `observedGeneration` skips this check.
3. The first condition, in list order, that is `Reconciling=True` (**InProgress**) or `Stalled=True`
   (**Failed**) decides ("abnormal-true" conditions: absent means False).
4. A `Ready` condition (added in cli-utils v0.35; Flux's fork has it too): `True` is **Current**,
   `False` or `Unknown` **InProgress**. Releases before it skip this step.
5. Otherwise **Current** ("the absence of any known conditions means the resource is current").

`compute(obj, ready_condition=False)` gives the verdict of the older releases, which ignore `Ready`:
a status contract that only relies on `Stalled`/`Reconciling` gets the same verdict from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["InProgress", "Failed", "Current", "Terminating"]


@dataclass(frozen=True)
class Result:
    """kstatus' `Result`: the status and its message."""

    status: Verdict
    message: str


def _integer(value: Any) -> int | None:
    # unstructured.NestedInt64 finds only int64 values; anything else is an error in Go.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    assert isinstance(conditions, list), "status.conditions is not a list"
    return [c for c in conditions if isinstance(c, dict)]


def compute(obj: dict[str, Any], *, ready_condition: bool = True) -> Result:
    """The kstatus verdict of a custom resource.

    Args:
        obj: the object as the API server returns it (apiVersion, kind, metadata, spec, status).
        ready_condition: also apply the `Ready` rule of cli-utils v0.35 and later.

    Returns:
        The verdict and kstatus' message for it.
    """
    metadata = obj.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return Result("Terminating", "Resource scheduled for deletion")
    generation = _integer(metadata.get("generation"))
    observed = _integer((obj.get("status") or {}).get("observedGeneration"))
    if generation is not None and observed is not None and observed != generation:
        return Result(
            "InProgress",
            f"{obj.get('kind')} generation is {generation}, but latest observed generation is {observed}",
        )
    for condition in _conditions(obj):
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Reconciling":
            return Result("InProgress", str(condition.get("message", "")))
        if condition.get("type") == "Stalled":
            return Result("Failed", str(condition.get("message", "")))
    if ready_condition:
        for condition in _conditions(obj):
            if condition.get("type") != "Ready":
                continue
            if condition.get("status") == "True":
                return Result("Current", "Resource is Ready")
            if condition.get("status") in ("False", "Unknown"):
                return Result("InProgress", str(condition.get("message", "")))
    return Result("Current", "Resource is current")

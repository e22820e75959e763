"""The driver core: what both drivers derive the same way before they ask `plan()`.

A driver (the operator, the local runner) observes one resource's children and inputs; the core adds
what depends on the other resources of the pipeline, from lookups the driver supplies:

- the reference cycle the resource is part of (each resource of every cycle reports its own; a
  resource that only reads from a cycle waits for it),
- the run it would work on now (the content hash of its spec and input digests),
- the finished result of that run (outputs and metrics), when another resource of the same kind
  finished it already or an earlier run left its result document in the run's content-addressed
  folder. The whole result is carried, so a resource that reuses it gets the status a fresh run
  gives: the same metrics and the conditions the plan decides from them.

So the two drivers can never decide differently: they only observe and carry out the plan's actions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from posttrain.api.status import Output
from posttrain.api.workload import Result
from posttrain.plan.graph import cycle_through
from posttrain.plan.reconcile import current_run, output_uri, result_outputs
from posttrain.plan.types import Observed, ReusableRun, Settings

Key = tuple[str, str]
"""(kind, name) of a resource; every resource a driver handles at once shares one namespace."""


@dataclass(frozen=True)
class FinishedRun:
    """A resource that finished a run successfully."""

    name: str
    """The resource's name (of the same kind as the one looking)."""
    outputs: dict[str, Output]
    """Its outputs."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Its metrics."""


def nothing_stored(uri: str) -> Result | None:
    """For drivers that do not read result documents from the artifact store: nothing is there."""
    return None


@dataclass(frozen=True)
class Lookups:
    """What a driver knows of the other resources and of the artifact store."""

    refs_of: Callable[[Key], Iterable[Key]]
    """The resources a resource reads from (nothing if it does not exist)."""
    finished_runs: Callable[[str, str], Iterable[FinishedRun]]
    """(kind, run id) -> resources of that kind whose status records the run as Succeeded."""
    stored_result: Callable[[str], Result | None] = nothing_stored
    """The result document left in an output folder (URI), if the driver reads it."""


def wants_reuse(observed: Observed, run: str) -> bool:
    """True when the resource is about to start `run` from scratch (no attempt of it exists)."""
    status = observed.resource.status
    if any(w.run_id == run for w in observed.workloads):
        return False
    if status is None or status.run_id != run:
        return True
    return status.attempt == 0 and status.phase not in ("Succeeded", "Failed")


def reusable_run(observed: Observed, run: str, lookups: Lookups, settings: Settings) -> ReusableRun | None:
    """The finished result of `run` (outputs and metrics) and where it came from, if any."""
    resource = observed.resource
    for other in lookups.finished_runs(resource.kind, run):
        if other.name != resource.metadata.name:
            return ReusableRun(f"{resource.kind}/{other.name}", dict(other.outputs), dict(other.metrics))
    folder = output_uri(resource, settings, run)
    stored = lookups.stored_result(folder)
    outputs = result_outputs(stored) if stored is not None else None
    if stored is None or not isinstance(outputs, dict):
        # A document that does not fit the status is no result to take over: the run starts afresh.
        return None
    return ReusableRun(f"an earlier run ({folder})", outputs, dict(stored.metrics))


def complete(observed: Observed, lookups: Lookups, settings: Settings) -> Observed:
    """The driver's observation with the cycle and the reusable finished run filled in.

    Args:
        observed: what the driver saw of the resource, its children and its inputs.
        lookups: the driver's view of the other resources and of the artifact store.
        settings: driver-wide settings (the default artifact root names the output folder).

    Returns:
        The observation `plan()` decides on.
    """
    cycle = cycle_through(observed.resource.key, lookups.refs_of)
    observed = replace(observed, cycle=cycle, reusable=None)
    run = current_run(observed)
    if run is None or not wants_reuse(observed, run):
        return observed
    return replace(observed, reusable=reusable_run(observed, run, lookups, settings))

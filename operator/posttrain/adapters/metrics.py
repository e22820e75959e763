"""Prometheus metrics, named like controller-runtime's so existing dashboards and alerts work."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Reconciliations per controller and result",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total", "Reconciliations that raised an error", ["controller"]
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Duration of a reconciliation",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STAGE_DURATION = Histogram(
    "posttrain_stage_duration_seconds",
    "Time from the start of a run to its success or failure",
    ["kind", "phase"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
)


class ResourceCollector(Collector):
    """`posttrain_resources{kind,phase}`: counted from the operator's index when scraped."""

    def __init__(self, phases: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self.phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "posttrain_resources", "posttrain resources by kind and phase", labels=["kind", "phase"]
        )
        for (kind, phase), count in sorted(Tally(self.phases()).items()):
            family.add_metric([kind, phase], count)
        yield family


_COLLECTORS: dict[int, ResourceCollector] = {}
_SERVED: set[int] = set()


def serve(
    port: int, phases: Callable[[], Iterable[tuple[str, str]]], registry: CollectorRegistry = REGISTRY
) -> None:
    """Register the resource gauge and serve /metrics on the port (0 disables the server).

    Idempotent within a process: an operator restarted in the same process (tests) reuses both.
    """
    collector = _COLLECTORS.get(id(registry))
    if collector is None:
        collector = _COLLECTORS[id(registry)] = ResourceCollector(phases)
        registry.register(collector)
    collector.phases = phases
    if port and port not in _SERVED:
        start_http_server(port, registry=registry)
        _SERVED.add(port)

"""Prometheus metrics of the operator and of the workloads it runs.

The operator's are named like controller-runtime's so existing dashboards and alerts work; the workloads'
(teacher tokens and requests, judge verdicts) are read from the result documents of finished runs
(`record_result`).

The workload metrics are counters that grow once per successful run, labelled by the resource
(namespace, kind, name) and, where the result breaks it down, by teacher. They read the names of the
metric catalogue (`posttrain.api.metrics`), the ones the workloads write. What the workloads report
today: EvolJob and AlignRound results count requests and tokens per participant
(`requests.sent.<participant>`, `tokens.prompt|completion.<participant>`), the model-call cache's hits
and misses, whether the run stopped at its budget, and its wall time; AlignRound results also count
battles, kept battles, position-swap disagreements (`battles.inconsistent`) and unparsed verdicts. GPU time is not a workload's to report: the operator
computes `posttrain_workload_gpu_seconds` from the Jobs it keeps in its index (GPUs held x time from
the Job's start to its completion or failure, or to now while it runs), so it survives an operator
restart and counts failed attempts too.
"""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from posttrain.api import metrics as names
from posttrain.support import times

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

RESOURCE_LABELS = ["namespace", "kind", "name"]
TEACHER_REQUESTS = Counter(
    "posttrain_teacher_requests_total",
    "Successful requests to each teacher (participant), from the results of finished runs",
    [*RESOURCE_LABELS, "teacher"],
)
TEACHER_TOKENS = Counter(
    "posttrain_teacher_tokens_total",
    "Tokens each teacher read (type=prompt) and generated (type=completion), from finished runs",
    [*RESOURCE_LABELS, "teacher", "type"],
)
WORKLOAD_REQUESTS = Counter(
    "posttrain_workload_requests_total",
    "Requests a workload sent to its teachers and judges in all, from finished runs",
    RESOURCE_LABELS,
)
JUDGE_BATTLES = Counter(
    "posttrain_judge_battles_total",
    "Judged battles of finished AlignRounds, by outcome (kept: a usable verdict; dropped: none)",
    [*RESOURCE_LABELS, "outcome"],
)
JUDGE_SWAP_DISAGREEMENTS = Counter(
    "posttrain_judge_swap_disagreements_total",
    "Judge verdicts that changed when the answers' positions were swapped, from finished AlignRounds",
    RESOURCE_LABELS,
)
MODEL_CACHE_LOOKUPS = Counter(
    "posttrain_model_cache_lookups_total",
    "Model calls of finished runs looked up in the namespace's model-call cache, by result (hit: replayed)",
    [*RESOURCE_LABELS, "result"],
)
BUDGET_EXHAUSTED = Counter(
    "posttrain_budget_exhausted_total",
    "Runs that stopped at their spec.budget and succeeded with partial outputs",
    RESOURCE_LABELS,
)
WORKLOAD_WALL_SECONDS = Counter(
    "posttrain_workload_wall_seconds_total",
    "Wall time of finished runs from their start, over every attempt (usage.wallSeconds)",
    RESOURCE_LABELS,
)
JUDGE_UNPARSED = Counter(
    "posttrain_judge_unparsed_verdicts_total",
    "Judge replies without a readable verdict, from finished AlignRounds",
    RESOURCE_LABELS,
)


def record_result(kind: str, name: str, namespace: str, metrics: Mapping[str, float]) -> None:
    """Count a finished run's workload metrics (its result document's `metrics`).

    Call it once per run that succeeded with a result of its own (a reused result was counted when
    it was made). Keys a result does not have are simply not counted; negative or non-finite values
    (never written by the workloads) are ignored rather than breaking a counter.

    Args:
        kind: the resource's kind.
        name: the resource's name.
        namespace: the resource's namespace.
        metrics: the result document's metrics.
    """
    resource = (namespace, kind, name)

    def count(counter: Counter, value: float | None, *labels: str) -> None:
        if value is not None and math.isfinite(value) and value > 0:
            counter.labels(*resource, *labels).inc(value)

    for key, value in metrics.items():
        if (teacher := names.REQUESTS_SENT_BY.items(key)) is not None:
            count(TEACHER_REQUESTS, value, *teacher)
        elif (teacher := names.TOKENS_PROMPT_BY.items(key)) is not None:
            count(TEACHER_TOKENS, value, *teacher, "prompt")
        elif (teacher := names.TOKENS_COMPLETION_BY.items(key)) is not None:
            count(TEACHER_TOKENS, value, *teacher, "completion")
    count(WORKLOAD_REQUESTS, metrics.get(names.REQUESTS_SENT))
    battles, kept = metrics.get(names.Align.BATTLES), metrics.get(names.Align.BATTLES_KEPT)
    if battles is not None and kept is not None:
        count(JUDGE_BATTLES, kept, "kept")
        count(JUDGE_BATTLES, battles - kept, "dropped")
    count(JUDGE_SWAP_DISAGREEMENTS, metrics.get(names.Align.BATTLES_INCONSISTENT))
    count(JUDGE_UNPARSED, metrics.get(names.Align.VERDICTS_UNPARSED))
    count(MODEL_CACHE_LOOKUPS, metrics.get(names.CACHE_HITS), "hit")
    count(MODEL_CACHE_LOOKUPS, metrics.get(names.CACHE_MISSES), "miss")
    count(BUDGET_EXHAUSTED, metrics.get(names.BUDGET_EXHAUSTED))
    count(WORKLOAD_WALL_SECONDS, metrics.get(names.USAGE_WALL_SECONDS))


GpuUse = tuple[str, str, str, int, str | None, str | None]
"""(namespace, kind, name, GPUs, start, end) of one workload Job; times in RFC 3339, end None while it runs."""


def gpu_seconds(uses: Iterable[GpuUse], now: float) -> dict[tuple[str, str, str], float]:
    """GPU-seconds per resource: GPUs x (end or `now`) - start, summed over its Jobs that started."""
    totals: dict[tuple[str, str, str], float] = {}
    for namespace, kind, name, gpus, start, end in uses:
        began = times.seconds(start)
        if not gpus or began is None:
            continue
        ended = times.seconds(end) if end else now
        totals[(namespace, kind, name)] = totals.get((namespace, kind, name), 0.0) + gpus * max(
            (ended or now) - began, 0.0
        )
    return totals


class ResourceCollector(Collector):
    """Gauges computed from the operator's index when scraped.

    `posttrain_resources{kind,phase}` counts resources; `posttrain_workload_gpu_seconds{namespace,kind,
    name}` sums the GPU time of each resource's workload Jobs.
    """

    def __init__(
        self,
        phases: Callable[[], Iterable[tuple[str, str]]],
        gpu_uses: Callable[[], Iterable[GpuUse]] = lambda: (),
    ) -> None:
        self.phases = phases
        self.gpu_uses = gpu_uses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield both gauges as the index has them now."""
        family = GaugeMetricFamily(
            "posttrain_resources", "posttrain resources by kind and phase", labels=["kind", "phase"]
        )
        for (kind, phase), count in sorted(Tally(self.phases()).items()):
            family.add_metric([kind, phase], count)
        yield family
        gpu = GaugeMetricFamily(
            "posttrain_workload_gpu_seconds",
            "GPU-seconds held by each resource's workload Jobs (every attempt; running ones up to now)",
            labels=RESOURCE_LABELS,
        )
        for labels, value in sorted(gpu_seconds(self.gpu_uses(), time.time()).items()):
            gpu.add_metric(list(labels), value)
        yield gpu


_COLLECTORS: dict[int, ResourceCollector] = {}
_SERVED: set[int] = set()


def serve(
    port: int,
    phases: Callable[[], Iterable[tuple[str, str]]],
    registry: CollectorRegistry = REGISTRY,
    gpu_uses: Callable[[], Iterable[GpuUse]] = lambda: (),
) -> None:
    """Register the resource gauge and serve /metrics on the port (0 disables the server).

    Idempotent within a process: an operator restarted in the same process (tests) reuses both.
    """
    collector = _COLLECTORS.get(id(registry))
    if collector is None:
        collector = _COLLECTORS[id(registry)] = ResourceCollector(phases, gpu_uses)
        registry.register(collector)
    collector.phases = phases
    collector.gpu_uses = gpu_uses
    if port and port not in _SERVED:
        start_http_server(port, registry=registry)
        _SERVED.add(port)

"""Benchmark: the operator at scale on the real control plane, against a do-nothing kopf operator.

    python tests/bench/bench_operator_scale.py --pipelines 100 [--workers 4 --qps 50 --idle 60]

Starts its own control plane (etcd, kube-apiserver, controller manager, scheduler, kwok with four
roomy nodes). Then, once per operator, in a fresh namespace:

1. runs the operator as a subprocess (`posttrain operator ...`, or the baseline
   `kopf run --standalone tests/bench/baseline_operator.py`), so its CPU time and peak RSS are read
   from /proc;
2. applies N pipelines of 5 resources (DataSlice -> EvolJob with an external teacher -> AlignRound ->
   TrainStage sft -> TrainStage dpo; a `uri` at the head) in bursts;
3. for posttrain, plays the workload pods with tests/cluster/workload_player.py (the baseline's Jobs
   finish by themselves in kwok);
4. waits until every resource is Succeeded, then watches an idle window.

Measured: operator CPU ms per resource (after start-up), peak RSS (VmHWM), apply -> first child
latency of the pipeline heads (p50/p99; times the bench's own watches see), input Succeeded -> child
latency of the chained resources (posttrain only), the operator's API requests per resource (from
the API server's audit log: the operator's user agents — `posttrain-operator/*` for its client,
`kopf/*` for the framework — in its namespace, WATCH left out), and in the idle window: LISTs by any
client, and any PATCH by the operator (a patch loop).

Baseline: tests/bench/baseline_operator.py (creates one Job per resource, patches status once).
`--profile DIR` runs the posttrain operator under cProfile and writes DIR/operator.prof.
Figures: docs/bench/operator-scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from kubernetes import client, watch  # noqa: E402
from posttrain.support.processes import free_port  # noqa: E402
from posttrain.testenv import ControlPlane, FakeNode, wait_until  # noqa: E402

from tests.cluster.test_operator import _storage  # noqa: E402
from tests.cluster.workload_player import WorkloadPlayer  # noqa: E402

GROUP, VERSION = "posttrain.dev", "v1alpha1"
KINDS = {
    "DataSlice": "dataslices",
    "EvolJob": "evoljobs",
    "AlignRound": "alignrounds",
    "TrainStage": "trainstages",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BASELINE = REPO / "tests" / "bench" / "baseline_operator.py"


def pipeline(prefix: str) -> list[dict[str, Any]]:
    """The five resources of one pipeline named `prefix-*` (bodies for the custom objects API)."""
    endpoint = {"baseUrl": "https://llm.example.com/v1"}

    def body(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}

    def ref(kind: str, name: str, output: str | None = None) -> dict[str, Any]:
        target = {"kind": kind, "name": name}
        return {"from": {**target, "output": output} if output else target}

    data, evol, align, sft, dpo = (f"{prefix}-{s}" for s in ("data", "evol", "align", "sft", "dpo"))
    return [
        body("DataSlice", data, {"sources": [{"uri": f"pvc://posttrain/data/{prefix}.jsonl"}]}),
        body(
            "EvolJob",
            evol,
            {
                "dataset": ref("DataSlice", data, "dataset"),
                "teachers": [
                    {
                        "name": "teacher",
                        "endpoint": {
                            **endpoint,
                            "model": "teacher",
                            "apiKeySecretRef": {"name": "teacher-b-api", "key": "api-key"},
                        },
                    }
                ],
            },
        ),
        body(
            "AlignRound",
            align,
            {
                "datasets": [ref("EvolJob", evol)],
                "student": {"name": "student", "endpoint": {**endpoint, "model": "student"}},
                "teachers": [{"name": "teacher", "endpoint": {**endpoint, "model": "teacher"}}],
                "judges": [{"name": "judge", "endpoint": {**endpoint, "model": "judge"}}],
            },
        ),
        body(
            "TrainStage",
            sft,
            {
                "method": "sft",
                "model": {"uri": "pvc://posttrain/models/base"},
                "dataset": ref("AlignRound", align, "sft"),
                "resources": {"gpus": 0},
            },
        ),
        body(
            "TrainStage",
            dpo,
            {
                "method": "dpo",
                "model": ref("TrainStage", sft),
                "preferences": ref("AlignRound", align, "preferences"),
                "resources": {"gpus": 0},
            },
        ),
    ]


INPUTS = {"evol": ["data"], "align": ["evol"], "sft": ["align"], "dpo": ["align", "sft"]}


# --- measurements --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    verbs: [watch]
  - level: Metadata
    verbs: [list]
  - level: Metadata
    resources:
      - group: posttrain.dev
      - group: batch
        resources: [jobs, jobs/status]
      - group: ""
        resources: [configmaps, services, events, pods]
      - group: apps
        resources: [deployments]
      - group: events.k8s.io
        resources: [events]
  - level: None
"""
OPERATOR_AGENTS = ("posttrain-operator/", "posttrain-bench-baseline/", "kopf/")


@dataclass
class Request:
    """One audited API request."""

    at: float
    verb: str
    resource: str
    namespace: str
    agent: str


def audit_requests(path: Path) -> list[Request]:
    """Every audited request so far (ResponseComplete), oldest first."""
    out = []
    # The API server rotates its audit log (every 100 MB): read the rotated files too.
    for file in sorted(path.parent.glob(f"{path.stem}*{path.suffix}")):
        out.extend(_audited(file))
    return sorted(out, key=lambda r: r.at)


def _audited(path: Path) -> list[Request]:
    out = []
    with path.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            stamp = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()
            out.append(
                Request(
                    stamp,
                    event["verb"].upper(),
                    resource,
                    ref.get("namespace", ""),
                    event.get("userAgent", ""),
                )
            )
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Watcher:
    """Watches one list call in a thread; calls `seen(event_type, object)` for every event."""

    def __init__(
        self, list_call: Callable[..., Any], namespace: str, seen: Callable[[str, Any], None]
    ) -> None:
        self.list_call = list_call
        self.namespace = namespace
        self.seen = seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                kwargs: dict[str, str] = {"resource_version": version} if version else {}
                for event in stream.stream(self.list_call, self.namespace, timeout_seconds=30, **kwargs):
                    obj = event["object"]
                    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
                    version = meta.get("resource_version") or meta.get("resourceVersion") or version
                    self.seen(event["type"], obj)
                    if self._stop.is_set():
                        break
            except Exception:  # a dropped watch: start again from the last version seen
                version = None
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


@dataclass
class Run:
    """What one operator did under the load."""

    name: str
    resources: int
    cpu_ms_per_resource: float = 0.0
    peak_rss_mb: float = 0.0
    head_latency: list[float] = field(default_factory=list)
    handoff_latency: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    """The operator's requests (its own user agents, its namespace, no WATCH) by "VERB resource"."""
    idle: Counter[str] = field(default_factory=Counter)
    """Requests in the idle window: every client's LISTs ("client: LIST resource"), the operator's rest."""
    idle_s: float = 0.0


# --- one run -------------------------------------------------------------------------------------


def _new_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        timeout=30,
        message=f"the default ServiceAccount of {name}",
    )


def _healthy(port: int) -> bool:
    try:
        status: int = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status
        return status == 200
    except OSError:
        return False


def _operator_command(name: str, args: argparse.Namespace, namespace: str, health: int) -> list[str]:
    """The command line of the operator under test: `posttrain` (optionally profiled) or the baseline."""
    if name == "posttrain":
        exe = shutil.which("posttrain") or "posttrain"
        command = [exe, "operator", "-n", namespace, "--metrics-port", str(free_port())]
        command += ["--health-port", str(health), "--workers", str(args.workers), "--qps", str(args.qps)]
        command += ["--burst", str(args.burst), "--log-format", "text"]
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "cProfile", "-o", f"{args.profile}/operator.prof", *command]
        return command
    kopf = str(Path(sys.executable).with_name("kopf"))
    liveness = f"http://127.0.0.1:{health}/healthz"
    return [kopf, "run", "--standalone", "-n", namespace, "--liveness", liveness, str(BASELINE)]


@dataclass
class _Timeline:
    """When each resource was applied, got its first child Job and Succeeded (filled by the watchers)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    applied: dict[str, float] = field(default_factory=dict)
    first_child: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)

    def on_job(self, _type: str, job: Any) -> None:
        """Note the first Job seen of the resource that owns it."""
        labels = job.metadata.labels or {}
        owner = labels.get("posttrain.dev/name") or labels.get("bench.posttrain.dev/name")
        if owner:
            with self.lock:
                self.first_child.setdefault(owner, time.time())

    def on_resource(self, _type: str, body: dict[str, Any]) -> None:
        """Note when a resource is first seen Succeeded."""
        if (body.get("status") or {}).get("phase") == "Succeeded":
            with self.lock:
                self.succeeded.setdefault(body["metadata"]["name"], time.time())

    def latencies(self, name: str, pipelines: int) -> tuple[list[float], list[float]]:
        """(apply -> first Job of each pipeline's head, inputs Succeeded -> first Job of each later stage).

        The baseline runs no workloads, so only the posttrain operator has hand-off latencies.
        """
        heads = [self.first_child[f"p{i}-data"] - self.applied[f"p{i}-data"] for i in range(pipelines)]
        handoff = []
        if name == "posttrain":
            for i in range(pipelines):
                for stage, needs in INPUTS.items():
                    ready = max(self.succeeded[f"p{i}-{n}"] for n in needs)
                    handoff.append(self.first_child[f"p{i}-{stage}"] - ready)
        return heads, handoff


def _watchers(api: client.ApiClient, namespace: str, timeline: _Timeline) -> list[Watcher]:
    """Watch the namespace's Jobs and every posttrain kind into the timeline."""
    custom = client.CustomObjectsApi(api)
    watchers = [Watcher(client.BatchV1Api(api).list_namespaced_job, namespace, timeline.on_job)]
    for plural in KINDS.values():

        def lister(ns: str, _plural: str = plural, **kw: Any) -> Any:
            return custom.list_namespaced_custom_object(GROUP, VERSION, ns, _plural, **kw)

        watchers.append(Watcher(lister, namespace, timeline.on_resource))
    return watchers


def _apply_load(
    custom: client.CustomObjectsApi, namespace: str, args: argparse.Namespace, timeline: _Timeline
) -> None:
    """Create the pipelines in bursts of `burst_size`, recording when each resource was sent."""

    def create(body: dict[str, Any]) -> None:
        plural = KINDS[body["kind"]]
        sent = time.time()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        with timeline.lock:
            timeline.applied[body["metadata"]["name"]] = sent

    with ThreadPoolExecutor(8) as pool:
        for start in range(0, args.pipelines, args.burst_size):
            bodies = [
                b
                for i in range(start, min(args.pipelines, start + args.burst_size))
                for b in pipeline(f"p{i}")
            ]
            list(pool.map(create, bodies))
            time.sleep(args.burst_interval)


def _count_requests(
    audit_log: Path, namespace: str, load: tuple[float, float], idle: tuple[float, float]
) -> tuple[Counter[str], Counter[str]]:
    """(the operator's requests during the load, the requests in the idle window), from the audit log.

    `load` and `idle` are (begin, end) times; see `Run.requests` and `Run.idle` for the keys.
    """
    during: Counter[str] = Counter()
    idling: Counter[str] = Counter()
    for request in audit_requests(audit_log):
        operator = request.agent.startswith(OPERATOR_AGENTS) and request.namespace == namespace
        if load[0] <= request.at < load[1] and operator:
            during[f"{request.verb} {request.resource}"] += 1
        elif idle[0] <= request.at <= idle[1]:
            if request.verb == "LIST":
                idling[f"{request.agent.split('/')[0]}: LIST {request.resource}"] += 1
            elif operator:
                idling[f"operator: {request.verb} {request.resource}"] += 1
    return during, idling


def run_one(plane: ControlPlane, args: argparse.Namespace, name: str) -> Run:
    """Apply the load to one operator (`posttrain` or `baseline`) and measure it."""
    api = plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{name}"
    _new_namespace(core, namespace)
    _storage(core, namespace)
    health = free_port()
    env = plane.env()
    # Measure this tree's operator, whatever the environment has installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO), env.get("PYTHONPATH", "")])
    command = _operator_command(name, args, namespace, health)
    log = open(Path(args.logs) / f"{name}.log", "w")  # noqa: SIM115 (closed after the run)
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    player = None
    watchers: list[Watcher] = []
    try:
        wait_until(lambda: _healthy(health), timeout=60, message=f"{name} operator healthy")
        time.sleep(2)  # let start-up work settle before the CPU clock starts

        timeline = _Timeline()
        watchers = _watchers(api, namespace, timeline)
        if name == "posttrain":
            player = WorkloadPlayer(api, namespace).__enter__()
        time.sleep(1)

        total = args.pipelines * 5
        cpu0 = cpu_seconds(proc.pid)
        begin = time.time()
        _apply_load(custom, namespace, args, timeline)
        wait_until(
            lambda: len(timeline.succeeded) >= total,
            timeout=args.timeout,
            interval=1,
            message=f"{name}: every resource Succeeded ({len(timeline.succeeded)}/{total})",
        )
        wall = time.time() - begin
        cpu1 = cpu_seconds(proc.pid)
        time.sleep(3)  # the last status patches and child events land
        after = time.time()
        if player is not None:
            player.__exit__(None, None, None)
            player = None
        for watcher in watchers:
            watcher.stop()
        watchers = []
        idle_begin = time.time()
        time.sleep(args.idle)
        idle_s = time.time() - idle_begin
        time.sleep(1)  # the audit log is written when responses complete

        requests, idle = _count_requests(
            args.audit_log, namespace, (begin, after), (idle_begin, idle_begin + idle_s)
        )
        heads, handoff = timeline.latencies(name, args.pipelines)
        return Run(
            name=name,
            resources=total,
            cpu_ms_per_resource=(cpu1 - cpu0) * 1000 / total,
            peak_rss_mb=peak_rss_mb(proc.pid),
            head_latency=heads,
            handoff_latency=handoff,
            wall_s=wall,
            requests=requests,
            idle=idle,
            idle_s=idle_s,
        )
    finally:
        if player is not None:
            player.__exit__(None, None, None)
        for watcher in watchers:
            watcher.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        api.close()


# --- report --------------------------------------------------------------------------------------


def _per_resource(run: Run) -> dict[str, float]:
    return {k: v / run.resources for k, v in sorted(run.requests.items())}


def report(runs: dict[str, Run], args: argparse.Namespace) -> str:
    """A markdown report of the runs, with posttrain / baseline ratios."""
    ours, base = runs["posttrain"], runs["baseline"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    def reqs(run: Run) -> float:
        return sum(_per_resource(run).values())

    def idle_lists(run: Run) -> int:
        return sum(v for key, v in run.idle.items() if ": LIST " in key)

    def idle_patches(run: Run) -> float:
        return sum(v for key, v in run.idle.items() if key.startswith("operator: PATCH")) / run.resources

    rows = [
        ("operator CPU ms / resource", ours.cpu_ms_per_resource, base.cpu_ms_per_resource),
        ("peak RSS MB", ours.peak_rss_mb, base.peak_rss_mb),
        (
            "apply -> first child p50 s (heads)",
            percentile(ours.head_latency, 0.5),
            percentile(base.head_latency, 0.5),
        ),
        (
            "apply -> first child p99 s (heads)",
            percentile(ours.head_latency, 0.99),
            percentile(base.head_latency, 0.99),
        ),
        ("operator API requests / resource (audit log, no WATCH)", reqs(ours), reqs(base)),
        ("wall s (apply -> all Succeeded)", ours.wall_s, base.wall_s),
        (f"LISTs in {args.idle:.0f} s idle (every client)", idle_lists(ours), idle_lists(base)),
        ("operator PATCHes / resource in idle", idle_patches(ours), idle_patches(base)),
    ]
    lines = [
        f"pipelines: {args.pipelines} x 5 resources, bursts of {args.burst_size} pipelines every "
        f"{args.burst_interval} s; posttrain --workers {args.workers} --qps {args.qps} --burst {args.burst}",
        "",
        "| measure | posttrain | baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, a, b in rows:
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {ratio(float(a), float(b))} |")
    if ours.handoff_latency:
        lines += [
            "",
            f"posttrain input Succeeded -> dependant's child: p50 {percentile(ours.handoff_latency, 0.5):.3f} s, "
            f"p99 {percentile(ours.handoff_latency, 0.99):.3f} s ({len(ours.handoff_latency)} hand-offs)",
        ]
    for run in (ours, base):
        lines += ["", f"{run.name}: API requests per resource by verb and resource", ""]
        for key, value in _per_resource(run).items():
            lines.append(f"- {key}: {value:.2f}")
        lines.append(
            f"- idle window ({run.idle_s:.0f} s; LISTs of every client, other requests of the operator): "
            f"{dict(run.idle) or 'nothing'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--burst-size", type=int, default=100, help="pipelines applied per burst")
    parser.add_argument("--burst-interval", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--qps", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle window")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--only", choices=["posttrain", "baseline"], help="run one operator only")
    parser.add_argument("--profile", help="folder for a cProfile of the posttrain operator")
    parser.add_argument("--logs", default="/tmp/posttrain-bench-operator", help="folder of operator logs")
    args = parser.parse_args()
    Path(args.logs).mkdir(parents=True, exist_ok=True)

    nodes = [FakeNode(name=f"kwok-node-{i}", pods="1100") for i in range(4)]
    audit = Path(tempfile.mkdtemp(prefix="posttrain-bench-audit-"))
    (audit / "policy.yaml").write_text(AUDIT_POLICY)
    args.audit_log = audit / "audit.log"
    audit_flags = [
        f"--audit-policy-file={audit / 'policy.yaml'}",
        f"--audit-log-path={args.audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
    ]
    with ControlPlane(nodes=nodes, apiserver_args=audit_flags) as plane:
        for path in sorted((REPO / "crds").glob("*.yaml")):
            plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        runs = {}
        for name in ("baseline", "posttrain"):
            if args.only and args.only != name:
                continue
            runs[name] = run_one(plane, args, name)
            print(f"{name}: done in {runs[name].wall_s:.1f} s", flush=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if len(runs) == 2:
        print(report(runs, args))
    else:
        for run in runs.values():
            print(
                run.name,
                f"cpu ms/resource {run.cpu_ms_per_resource:.2f}",
                f"rss {run.peak_rss_mb:.1f} MB",
                f"head p50 {percentile(run.head_latency, 0.5):.3f} p99 {percentile(run.head_latency, 0.99):.3f}",
                f"handoff p99 {percentile(run.handoff_latency, 0.99):.3f}",
            )
            print(_per_resource(run), dict(run.idle))
    shutil.rmtree(audit, ignore_errors=True)


if __name__ == "__main__":
    main()

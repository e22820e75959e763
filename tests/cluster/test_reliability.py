"""Reliability and security on the real control plane: operator kills, fuzzed resources, least privilege.

- Operator kills: the progressive example runs while a subprocess operator is SIGKILLed at random
  moments (at least 50 times) and restarted; the pipeline completes with every Job created once and no
  workload played twice. It runs in a namespace that enforces Pod Security `restricted`, so every pod
  the operator creates (workload Jobs, teacher Deployments) must be admitted under it, and the planted
  API key is searched for in the operator's logs, Events, status, ConfigMaps, Jobs and pods.
- Fuzzed resources: hypothesis mutates valid specs of every kind into invalid ones (wrong types,
  out-of-range numbers, unknown enum values, both `uri` and `from`, missing required fields, unknown
  fields) and sends each as a server-side dry run; each is rejected with the field path in the message,
  and the pydantic models reject the same resources (one set of rules).

The chart's ServiceAccount being denied Secrets (get, list, watch; real requests) is tested in
tests/cluster/test_chart.py.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from posttrain.api.resources import KINDS
from posttrain.files import load_resources
from posttrain.testenv import wait_until
from pydantic import ValidationError

from tests.cluster.test_operator import GROUP, PLURALS, VERSION, _jobs, _objects, _phases, _storage
from tests.cluster.workload_player import Outcome, WorkloadPlayer, success
from tests.support.kube import present

ROOT = Path(__file__).resolve().parents[2]
# The progressive Curriculum's rendered chain: plain resources whose workloads all run (the default
# player reports no arena figures, so the Curriculum itself would stop at its first promotion gate).
PROGRESSIVE_DIR = ROOT / "examples" / "progressive-rendered"
PROGRESSIVE = len(load_resources([PROGRESSIVE_DIR]))
"""Resources the progressive example applies (those it creates in turn come on top)."""
PLANTED = "sk-test-planted-secret-value"
KILLS = int(os.environ.get("POSTTRAIN_TEST_KILLS", "50"))


# --- operator kills, restricted Pod Security, secrets -----------------------------------------------


# Imports the operator once, then forks a fresh operator process per line read: a restart costs the
# operator's own start-up, not the interpreter's imports (~1-2 s on a busy CI machine), so 50 kills fit
# in a short pipeline with real work done between them.
ZYGOTE = """
import os, signal, sys
import kopf, kubernetes.client
import posttrain.cli, posttrain.handlers.operator
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
argv, log = sys.argv[1:-1], sys.argv[-1]
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os._exit(posttrain.cli.main(argv))
    print(pid, flush=True)
"""


class OperatorProcess:
    """`posttrain operator` in processes that can be SIGKILLed and started again; logs kept in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, *, verbose: bool = False) -> None:
        argv = ["operator", "-n", namespace, "--metrics-port", "0", "--health-port", "0"]
        if verbose:
            argv.append("--verbose")
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "POSTTRAIN_PROGRESS_INTERVAL": "2",
            "POSTTRAIN_ARTIFACT_ROOT": "pvc://posttrain/artifacts",
        }
        self.log = log
        self.zygote = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, *argv, str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid: int | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.zygote.stdin is not None and self.zygote.stdout is not None
        self.zygote.stdin.write("start\n")
        self.zygote.stdin.flush()
        self.pid = int(self.zygote.stdout.readline())
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"=== operator start {self.starts}, pid {self.pid}, {time.strftime('%H:%M:%S')}\n")

    def _gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid or 0, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.01)
        return False

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or released."""
        assert self.pid is not None and self.alive(), "the operator exited on its own"
        os.kill(self.pid, signal.SIGKILL)
        assert self._gone(30)
        with self.log.open("a") as log:
            log.write(f"=== operator pid {self.pid} SIGKILLed, {time.strftime('%H:%M:%S')}\n")
        self.pid = None

    def stop(self) -> None:
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGTERM)
            if not self._gone(20):
                os.kill(self.pid, signal.SIGKILL)
                self._gone(10)
        self.pid = None
        if self.zygote.stdin is not None:
            self.zygote.stdin.close()
        self.zygote.wait(timeout=10)

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


def _all_text(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """Everything the operator or its children made visible in the namespace, as text per source."""
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    dump = kube.sanitize_for_serialization
    return {
        "events": json.dumps([dump(e) for e in core.list_namespaced_event(namespace).items]),
        "status": json.dumps([body.get("status") for body in _objects(custom, namespace).values()]),
        "configmaps": json.dumps([dump(c) for c in core.list_namespaced_config_map(namespace).items]),
        "jobs": json.dumps([dump(j) for j in _jobs(kube, namespace)]),
        # Termination messages (the result documents) are in the pods' status.
        "pods": json.dumps([dump(p) for p in core.list_namespaced_pod(namespace).items]),
        "deployments": json.dumps(
            [dump(d) for d in client.AppsV1Api(kube).list_namespaced_deployment(namespace).items]
        ),
    }


def _all_succeeded(phases: dict[tuple[str, str], str]) -> bool:
    """Every resource of the example (and any it created) Succeeded."""
    return len(phases) >= PROGRESSIVE and set(phases.values()) == {"Succeeded"}


def _counts(child: dict[str, Any]) -> dict[str, Any]:
    """The pod counts of a Job's or Deployment's status."""
    counted = ("active", "ready", "succeeded", "failed", "replicas", "readyReplicas", "conditions")
    status = child.get("status") or {}
    return {k: [c["type"] for c in v] if k == "conditions" else v for k, v in status.items() if k in counted}


def _stuck(kube: client.ApiClient, namespace: str, dump: Path) -> str:
    """What a resource that did not finish shows: written in full to `dump`, summarised in the text.

    Per unfinished resource: its annotations (kopf's progress and last-handled state), finalizers,
    status, and its Jobs (labels, annotations, status) and Deployments.
    """
    custom = client.CustomObjectsApi(kube)
    serialize = kube.sanitize_for_serialization
    jobs = [{**serialize(j), "kind": "Job"} for j in _jobs(kube, namespace)]
    deployments = [
        {**serialize(d), "kind": "Deployment"}
        for d in client.AppsV1Api(kube).list_namespaced_deployment(namespace).items
    ]
    lines = []
    stuck = {}
    for (kind, name), body in sorted(_objects(custom, namespace).items()):
        status = body.get("status") or {}
        if status.get("phase") == "Succeeded":
            continue

        def owned(child: dict[str, Any], kind: str = kind, name: str = name) -> bool:
            labels = child["metadata"].get("labels") or {}
            return bool(labels.get("posttrain.dev/kind") == kind and labels.get("posttrain.dev/name") == name)

        children = [c for c in jobs + deployments if owned(c)]
        stuck[f"{kind}/{name}"] = {"metadata": body["metadata"], "status": status, "children": children}
        conditions = {
            c["type"]: f"{c['status']} ({c.get('reason', '')})" for c in status.get("conditions", [])
        }
        lines.append(
            f"  {kind}/{name}: phase {status.get('phase')!r}, conditions {conditions}, "
            f"annotations {sorted(body['metadata'].get('annotations') or {})}, "
            f"children {[(c['kind'], c['metadata']['name'], _counts(c)) for c in children]}"
        )
    dump.write_text(json.dumps(stuck, indent=1, default=str))
    return "\n".join(lines) + f"\nfull dump: {dump}"


def test_the_kill_test_waits_for_every_resource_the_example_applies() -> None:
    # The count once shared its name with the example's folder: the kill test then waited for a number
    # of resources equal to a path, never true, and failed every run however the operator did.
    resources = load_resources([PROGRESSIVE_DIR])
    assert PROGRESSIVE == len(resources) > 1
    phases: dict[tuple[str, str], str] = {(r.kind, r.metadata.name): "Succeeded" for r in resources}
    assert _all_succeeded(phases)
    assert not _all_succeeded({**phases, (resources[-1].kind, resources[-1].metadata.name): "Running"})
    assert not _all_succeeded(dict(list(phases.items())[1:]))


@pytest.mark.slow
def test_operator_killed_50_times_completes_the_progressive_pipeline_under_restricted_pss(
    kube: client.ApiClient,
    kubeconfig: Path,
    kubectl: Any,
    restricted_namespace: str,
    posttrain_crds: list[Path],
    tmp_path: Path,
) -> None:
    ns = restricted_namespace
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    _storage(core, ns)
    # Pod Security is enforced here: a privileged pod is refused (so admitting ours means something).
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(
            ns,
            client.V1Pod.model_validate(
                {
                    "metadata": {"name": "privileged"},
                    "spec": {
                        "containers": [
                            {"name": "x", "image": "busybox", "securityContext": {"privileged": True}}
                        ]
                    },
                }
            ),
            dry_run="All",
        )
    assert refused.value.status == 403 and "restricted" in str(refused.value.body)

    rng = random.Random(12)
    operator = OperatorProcess(kubeconfig, ns, tmp_path / "operator.log", verbose=True)
    # Workload pods last a moment, so kills land while workloads run as well as between them.
    player_decide = lambda config, attempt: Outcome(  # noqa: E731
        0, success(config).message, duration=f"{rng.randint(4000, 8000)}ms"
    )
    done_at_kill: list[int] = []  # resources Succeeded when each kill landed
    started = time.monotonic()
    try:
        with WorkloadPlayer(kube, ns, player_decide) as player:
            operator.start()
            kubectl("apply", "-n", ns, "-f", str(PROGRESSIVE_DIR))
            # At least KILLS kills; on a slow machine, where the operator gets little done between kills,
            # keep killing with longer lives until the kills have landed in at least three stages.
            while len(done_at_kill) < KILLS or (len(set(done_at_kill)) < 3 and len(done_at_kill) < 3 * KILLS):
                life = (0.3, 1.8) if len(done_at_kill) < KILLS else (1.5, 4.0)
                time.sleep(rng.uniform(*life))
                phases = _phases(custom, ns)
                if _all_succeeded(phases):
                    break
                operator.kill()
                done_at_kill.append(list(phases.values()).count("Succeeded"))
                operator.start()
            kills = len(done_at_kill)
            wait_until(
                lambda: _all_succeeded(_phases(custom, ns)),
                timeout=180,
                interval=1,
                message=f"every resource Succeeded after the last of {kills} kills",
                state=lambda: (
                    f"operator alive: {operator.alive()}, player errors: {player.errors}, operator log "
                    f"(--verbose): {operator.log}; unfinished:\n" + _stuck(kube, ns, tmp_path / "stuck.json")
                ),
            )
            wait_until(
                lambda: not client.AppsV1Api(kube).list_namespaced_deployment(ns).items,
                timeout=60,
                message="teachers removed",
            )
            assert operator.alive(), "the operator exited on its own"
    finally:
        operator.stop()
    elapsed = time.monotonic() - started
    objects = _objects(custom, ns)
    played = Counter((p.kind, p.name) for p in player.played)
    spread = dict(sorted(Counter(done_at_kill).items()))
    print(
        f"\n{len(done_at_kill)} SIGKILLs mid-pipeline, {operator.starts} operator starts, {elapsed:.0f} s; "
        f"kills by resources already Succeeded: {spread}; workload pods played: {sum(played.values())}"
    )
    assert not player.errors, player.errors
    assert len(done_at_kill) >= KILLS, f"the pipeline finished after {len(done_at_kill)} kills"
    assert len(spread) >= 3, f"the kills did not spread over the pipeline: {spread}"
    # Every Job exactly once per (resource, run, attempt), and only the first attempt ran.
    jobs = Counter(
        (
            j.metadata.labels["posttrain.dev/kind"],
            j.metadata.labels["posttrain.dev/name"],
            j.metadata.labels.get("posttrain.dev/run", ""),
            j.metadata.labels.get("posttrain.dev/attempt", ""),
        )
        for j in _jobs(kube, ns)
    )
    assert set(jobs.values()) == {1} and len(jobs) == len(objects), jobs
    # No output recomputed: one workload pod per resource, two for the two-node SFT stage.
    assert played == Counter({key: 2 if key[1].endswith("-sft") else 1 for key in objects}), played
    for key, body in objects.items():
        status = body["status"]
        assert status["observedGeneration"] == body["metadata"]["generation"], key
        assert status.get("attempt", 1) == 1, (key, status.get("attempt"))
        assert status["outputs"], key
    # Every pod the operator made was admitted under `restricted`: no refusal was ever recorded.
    refusals = [
        e.message
        for e in core.list_namespaced_event(ns).items
        if e.reason in ("FailedCreate",) and "PodSecurity" in (e.message or "")
    ]
    assert not refusals, refusals
    # The planted key never leaks: logs, Events, status, ConfigMaps, Jobs, pods, Deployments.
    log = operator.log.read_text(errors="replace")
    assert log and PLANTED not in log
    for source, text in _all_text(kube, ns).items():
        assert PLANTED not in text, source
    # ... though it is used: the key reaches the workload pods only as a secretKeyRef.
    jobs_text = _all_text(kube, ns)["jobs"]
    assert '"secretKeyRef"' in jobs_text and '"teacher-b-api"' in jobs_text


# --- fuzzed resources -------------------------------------------------------------------------------

MUTATIONS = ("wrong-type", "out-of-range", "bad-enum", "both-uri-and-from", "missing", "unknown-field")


def _examples() -> dict[str, list[dict[str, Any]]]:
    """Valid specs of every kind, from the examples."""
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PLURALS}
    for path in sorted((ROOT / "examples").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            # The five kinds' specs (a Curriculum's chain is in examples/progressive-rendered/).
            if isinstance(doc, dict) and doc.get("apiVersion") == f"{GROUP}/{VERSION}" and doc["kind"] in out:
                out[doc["kind"]].append(doc["spec"])
    return out


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) inside a spec, containers included."""
    found: list[tuple[tuple[Any, ...], Any]] = [(prefix, value)] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


def _field_path(path: tuple[Any, ...]) -> str:
    text = "spec"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _set(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = spec
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _other_type(value: Any) -> st.SearchStrategy[Any]:
    """A value of another JSON type than `value`."""
    choices: list[st.SearchStrategy[Any]] = []
    if not isinstance(value, str):
        choices.append(st.text(min_size=1, max_size=8))
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        choices.append(st.integers(-5, 5))
    if not isinstance(value, bool):
        choices.append(st.booleans())
    if not isinstance(value, list):
        choices.append(st.lists(st.integers(), min_size=1, max_size=2))
    if not isinstance(value, dict):
        choices.append(st.fixed_dictionaries({"x": st.integers()}))
    return st.one_of(choices)


@st.composite
def _invalid(draw: st.DrawFn, kind: str, bases: list[dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
    """(mutated spec, mutation, the field path it touched)."""
    spec = copy.deepcopy(draw(st.sampled_from(bases)))
    paths = _paths(spec)
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "both-uri-and-from":
        refs = [(p, v) for p, v in paths if isinstance(v, dict) and ("uri" in v) != ("from" in v)]
        if refs:
            path, ref = draw(st.sampled_from(refs))
            if "uri" in ref:
                ref["from"] = {
                    "kind": "DataSlice",
                    "name": draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
                }
            else:
                ref["uri"] = "pvc://posttrain/" + draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True))
            return spec, mutation, _field_path(path)
        mutation = "wrong-type"
    if mutation == "out-of-range":
        numbers = [(p, v) for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers:
            path, _ = draw(st.sampled_from(numbers))
            _set(spec, path, draw(st.one_of(st.integers(-(10**9), -1), st.integers(10**7, 10**12))))
            return spec, mutation, _field_path(path)
        mutation = "wrong-type"
    if mutation == "bad-enum":
        strings = [(p, v) for p, v in paths if isinstance(v, str)]
        if strings:
            path, _ = draw(st.sampled_from(strings))
            _set(spec, path, "NotA-" + draw(st.from_regex(r"[A-Za-z]{1,6}", fullmatch=True)) + " value!")
            return spec, mutation, _field_path(path)
        mutation = "wrong-type"
    if mutation == "missing":
        keys = [(p, v) for p, v in paths if isinstance(p[-1], str)]
        path, _ = draw(st.sampled_from(keys))
        target: Any = spec
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
        return spec, mutation, _field_path(path)
    if mutation == "unknown-field":
        objects = [((), spec)] + [(p, v) for p, v in paths if isinstance(v, dict)]
        path, target = draw(st.sampled_from(objects))
        name = "zz" + draw(st.from_regex(r"[A-Z][a-z]{1,6}", fullmatch=True))
        target[name] = draw(st.integers(0, 9))
        return spec, mutation, _field_path((*path, name))
    path, value = draw(st.sampled_from(paths))
    _set(spec, path, draw(_other_type(value)))
    return spec, "wrong-type", _field_path(path)


def _names_the_field(message: str, path: str) -> bool:
    """The server's message names the field or one of the objects that contain it."""
    parts = path.replace("[", ".[").split(".")
    candidates = {".".join(parts[:i]).replace(".[", "[") for i in range(2, len(parts) + 1)}
    return any(c in message for c in candidates)


def test_fuzzed_invalid_resources_are_rejected_with_the_field_path(
    kube: client.ApiClient, kubeconfig: Path, namespace: str, posttrain_crds: list[Path], tmp_path: Path
) -> None:
    custom = client.CustomObjectsApi(kube)
    bases = _examples()
    counts: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    accepted: dict[str, dict[str, Any]] = {}
    per_kind = 220

    def checker(kind: str, plural: str) -> Any:
        model = KINDS[kind].spec_model

        @settings(
            max_examples=per_kind,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=_invalid(kind, bases[kind]))
        def check(case: tuple[dict[str, Any], str, str]) -> None:
            spec, mutation, path = case
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind,
                "metadata": {"name": f"fuzz-{counts.total() % 1000}"},
                "spec": spec,
            }
            try:
                # Strict, as JSON: the server takes no `true` for a number; lax pydantic would (1.0).
                model.model_validate_json(json.dumps(spec), strict=True)
                model_ok = True
            except ValidationError:
                model_ok = False
            try:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, body, dry_run="All", field_validation="Strict"
                )
            except ApiException as error:
                assert error.status in (400, 422), (error.status, error.body)
                message = json.loads(present(error.body, "the error's body")).get("message", "")
                counts[(kind, "rejected")] += 1
                if not _names_the_field(message, path):
                    failures.append(f"{kind} {mutation} {path}: no field path in {message[:300]}")
                if model_ok:
                    failures.append(
                        f"{kind} {mutation} {path}: server rejects, model accepts: {message[:300]}"
                    )
                return
            # Accepted: a harmless mutation (an optional field left out, an unbounded number) must be
            # valid for the models too; otherwise the operator would have to report it in status.
            counts[(kind, "accepted")] += 1
            accepted.setdefault(json.dumps(body["spec"], sort_keys=True), body)
            if not model_ok:
                counts[(kind, "accepted, model rejects")] += 1
                failures.append(f"{kind} {mutation} {path}: server accepts what the model rejects")

        return check

    for kind, plural in PLURALS.items():
        checker(kind, plural)()

    total = sum(v for (_, outcome), v in counts.items() if outcome in ("rejected", "accepted"))
    print(f"\nfuzzed resources: {total} tried")
    for kind in PLURALS:
        print(
            f"  {kind}: {counts[(kind, 'rejected')]} rejected with the field path, "
            f"{counts[(kind, 'accepted')]} accepted (valid after the mutation), "
            f"{counts[(kind, 'accepted, model rejects')]} accepted but invalid"
        )
    assert not failures, "\n".join(failures[:30])
    assert total >= 1000

    # What the server accepted is created for real: the operator reports each in status, and survives.
    chosen = random.Random(3).sample(sorted(accepted), min(40, len(accepted)))
    created = []
    for index, key in enumerate(chosen):
        body = {**accepted[key], "metadata": {"name": f"accepted-{index}"}}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[body["kind"]], body)
        created.append((body["kind"], body["metadata"]["name"]))
    operator = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log")
    operator.start()
    try:

        def reported() -> bool:
            objects = _objects(custom, namespace)
            return all(
                any(
                    c["type"] == "Ready" and c.get("reason")
                    for c in objects[k].get("status", {}).get("conditions", [])
                )
                for k in created
            )

        wait_until(reported, timeout=90, interval=1, message="every accepted resource reported in status")
        assert operator.alive(), "the operator exited"
    finally:
        operator.stop()
    phases = Counter(_phases(custom, namespace)[k] for k in created)
    print(f"  {len(created)} accepted resources created for real; phases reported: {dict(phases)}")
    log = operator.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]

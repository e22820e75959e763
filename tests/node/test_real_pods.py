"""What only real pods show.

The operator from its image surviving a pod kill, workload logs, an OOM kill by the kernel, and every pod
admitted under Pod Security ``restricted`` on a real runtime.

The workloads are the trainer image's CPU variant on tiny models (examples/quickstart-cluster/data and the
session's tiny student on a host volume of the node), so each runs in seconds to a minute on 2 cores.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import yaml
from kubernetes import client
from posttrain.testenv import wait_until

from tests.node.conftest import OPERATOR_NS, ROOT, NodeCluster
from tests.support.kube import (
    container_statuses_of,
    labels_of,
    meta_of,
    name_of,
    phase_of,
    spec_of,
    status_of,
)

GROUP, VERSION = "posttrain.dev", "v1alpha1"
NAME_LABEL = "posttrain.dev/name"

DATASLICE = """
apiVersion: posttrain.dev/v1alpha1
kind: DataSlice
metadata: {name: seed-data}
spec:
  sources: [{uri: pvc://posttrain/data/seed.jsonl}]
  data: {sampling: {total: 24}, seed: 1}
  resources: {cpu: 500m, memory: 2Gi}
  artifacts: {uri: pvc://posttrain/artifacts}
"""

SFT = """
apiVersion: posttrain.dev/v1alpha1
kind: TrainStage
metadata: {name: sft}
spec:
  method: sft
  model: {uri: pvc://posttrain/models/tiny-student}
  dataset: {from: {kind: DataSlice, name: seed-data}}
  train: {epochs: 2, learningRate: 0.003, batchSize: 8, microBatchSize: 8, maxLength: 128,
          evaluation: {maxSamples: 0}}
  resources: {cpu: "1", memory: 3Gi}
  artifacts: {uri: pvc://posttrain/artifacts}
"""


def _apply(cluster: NodeCluster, ns: str, *documents: str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input="---\n".join(documents))


def _objects(cluster: NodeCluster, ns: str) -> dict[str, dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "posttrain", "-n", ns, "-o", "json").stdout)["items"]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in items}


def _phases(cluster: NodeCluster, ns: str) -> dict[str, str]:
    return {k: (o.get("status") or {}).get("phase", "") for k, o in _objects(cluster, ns).items()}


def _operator_pod(cluster: NodeCluster) -> client.V1Pod | None:
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        OPERATOR_NS, label_selector="app.kubernetes.io/component=operator"
    )
    running = [p for p in pods.items if phase_of(p) == "Running" and not meta_of(p).deletion_timestamp]
    return running[0] if running else None


def _restricted_pod(pod: client.V1Pod) -> bool:
    spec = spec_of(pod)
    containers = [*(spec.init_containers or []), *spec.containers]
    pod_ctx = spec.security_context
    return all(
        c.security_context is not None
        and c.security_context.allow_privilege_escalation is False
        and c.security_context.capabilities is not None
        and c.security_context.capabilities.drop == ["ALL"]
        and (c.security_context.run_as_non_root or (pod_ctx and pod_ctx.run_as_non_root))
        for c in containers
    )


def test_pipeline_survives_operator_pod_kill_with_logs_and_restricted_pods(
    node_cluster: NodeCluster, pipeline_ns: tuple[str, Any]
) -> None:
    cluster = node_cluster
    ns, folder = pipeline_ns
    core = client.CoreV1Api(cluster.api)
    batch = client.BatchV1Api(cluster.api)
    before = _operator_pod(cluster)
    assert before is not None, "the operator runs from its image"
    _apply(cluster, ns, DATASLICE, SFT)

    # Kill the operator pod while the first workload's container runs.
    wait_until(
        lambda: any(
            phase_of(p) == "Running" for p in core.list_namespaced_pod(ns, label_selector=NAME_LABEL).items
        ),
        timeout=300,
        interval=0.5,
        message="the first workload's container running",
    )
    cluster.kubectl("delete", "pod", "-n", OPERATOR_NS, name_of(before), "--wait=false")

    def replaced() -> client.V1Pod | None:
        pod = _operator_pod(cluster)
        return pod if pod is not None and meta_of(pod).uid != meta_of(before).uid else None

    after = wait_until(
        replaced,
        timeout=120,
        interval=0.5,
        message="a new operator pod",
    )
    wait_until(
        lambda: (
            set(_phases(cluster, ns).values()) == {"Succeeded"} or "Failed" in _phases(cluster, ns).values()
        ),
        timeout=900,
        interval=2,
        message="the pipeline to finish",
        state=lambda: _phases(cluster, ns),
    )
    objects = _objects(cluster, ns)
    assert _phases(cluster, ns) == {"DataSlice/seed-data": "Succeeded", "TrainStage/sft": "Succeeded"}, (
        objects
    )

    # No duplicate Job: one per resource, its first attempt.
    jobs = batch.list_namespaced_job(ns).items
    assert Counter(labels_of(j)[NAME_LABEL] for j in jobs) == {"seed-data": 1, "sft": 1}
    assert {o["status"]["attempt"] for o in objects.values()} == {1}
    assert container_statuses_of(after)[0].image == "localhost/posttrain/operator:dev"

    # The training Job's log shows its progress; its outputs landed on the volume as UID 1000.
    sft_job = next(name_of(j) for j in jobs if labels_of(j)[NAME_LABEL] == "sft")
    log = cluster.kubectl("logs", "-n", ns, f"job/{sft_job}").stdout
    assert "loss" in log, log[-2000:]
    sft = objects["TrainStage/sft"]["status"]
    assert sft["outputs"]["model"]["uri"].startswith("pvc://posttrain/artifacts/")
    assert "train.loss" in sft["metrics"] or any(k.endswith("loss") for k in sft["metrics"]), sft["metrics"]
    outputs = [p for p in (folder / "artifacts").rglob("*") if p.is_file()]
    assert outputs and {p.stat().st_uid for p in outputs} == {1000}

    # Every pod ran as admitted under "restricted" (the namespaces enforce it) with its context.
    for namespace in (ns, OPERATOR_NS):
        assert labels_of(core.read_namespace(namespace))["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [*core.list_namespaced_pod(ns).items, after]
    assert pods and all(_restricted_pod(p) for p in pods)


def test_oom_killed_workload_is_reported_and_retried(
    node_cluster: NodeCluster, pipeline_ns: tuple[str, Any]
) -> None:
    cluster = node_cluster
    ns, _ = pipeline_ns
    stage = yaml.safe_load(SFT)
    stage["metadata"]["name"] = "oom"
    stage["spec"]["dataset"] = {"uri": "pvc://posttrain/data/seed.jsonl"}
    # Far below what importing torch takes: the kernel kills the container (cgroup memory limit).
    stage["spec"]["resources"] = {"cpu": "500m", "memory": "96Mi"}
    stage["spec"]["retries"] = {"limit": 1, "backoffSeconds": 1}
    _apply(cluster, ns, yaml.safe_dump(stage))
    wait_until(
        lambda: _phases(cluster, ns).get("TrainStage/oom") == "Failed",
        timeout=600,
        interval=1,
        message="the OOM-killed stage to fail after its retry",
        state=lambda: _phases(cluster, ns),
    )
    status = _objects(cluster, ns)["TrainStage/oom"]["status"]
    assert status["lastFailure"]["reason"] == "OOMKilled", status
    assert status["attempt"] == 2, status
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(ns).items
    assert len(jobs) == 2
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(ns).items
    reasons = {
        s.state.terminated.reason
        for p in pods
        for s in status_of(p).container_statuses or []
        if s.state and s.state.terminated
    }
    assert reasons == {"OOMKilled"}, reasons


def test_the_cluster_quickstart_succeeds_with_teachers_served_on_cpu(
    node_cluster: NodeCluster, pipeline_ns: tuple[str, Any]
) -> None:
    """The examples/quickstart-cluster/ pipeline (what hack/cluster-quickstart.sh applies).

    Every kind, served participants on `transformers serve` from the trainer image, reached by their Service
    names.
    """
    cluster = node_cluster
    ns, _ = pipeline_ns
    cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / "quickstart-cluster"))
    wait_until(
        lambda: (
            set(_phases(cluster, ns).values()) == {"Succeeded"} or "Failed" in _phases(cluster, ns).values()
        ),
        timeout=1500,
        interval=5,
        message="the quickstart to finish",
        state=lambda: _phases(cluster, ns),
    )
    objects = _objects(cluster, ns)
    assert set(_phases(cluster, ns).values()) == {"Succeeded"}, {
        k: o.get("status") for k, o in objects.items()
    }
    assert len(objects) == 8
    # The served participants ran from the trainer image and are gone once their resources finished.
    deployments = client.AppsV1Api(cluster.api).list_namespaced_deployment(ns).items
    assert deployments == []
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    pulled = {
        e["involvedObject"]["name"]: e["message"]
        for e in events
        if e["reason"] == "Pulled" and e["involvedObject"]["name"].startswith(("evol-evol-", "align-align-"))
    }
    assert pulled and all(cluster.trainer_image in message for message in pulled.values()), pulled
    assert objects["EvolJob/evol"]["status"]["metrics"], objects["EvolJob/evol"]["status"]

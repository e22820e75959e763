"""Play posttrain workloads on kwok: the test decides how each workload pod ends.

kwok runs no containers. Pods of posttrain workloads (label `posttrain.dev/kind`) stay Running until
annotated (see operator/posttrain/testenv/stages.yaml); this player watches them, reads the workload's
config from its ConfigMap, and annotates the pod with an exit code and a termination message — by
default a successful result document with the outputs that kind produces.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client, watch
from posttrain.api.outputs import outputs_of
from posttrain.api.workload import WorkloadConfig

from tests.support.kube import present


@dataclass
class Outcome:
    """How a workload pod ends."""

    exit_code: int = 0
    message: str = ""
    duration: str = "200ms"


@dataclass
class Played:
    """One workload pod the player finished."""

    kind: str
    name: str
    run_id: str
    attempt: int
    pod: str
    job: str
    exit_code: int
    at: float


def outputs_for(config: WorkloadConfig) -> list[str]:
    """The output names a successful workload of this config reports (the kind's, from its spec)."""
    return outputs_of(config.kind, config.typed_spec())


def success(config: WorkloadConfig) -> Outcome:
    """A successful result document with every output of the kind."""
    outputs = {}
    for name in outputs_for(config):
        uri = f"{config.output_uri}/{name}"
        digest = "sha256:" + hashlib.sha256(uri.encode()).hexdigest()
        outputs[name] = {"uri": uri, "rows": 10, "digest": digest}
    return Outcome(0, json.dumps({"outputs": outputs, "metrics": {"loss": 0.5, "kept": 10}}))


def success_with(metrics: dict[str, float]) -> Callable[[WorkloadConfig, int], Outcome]:
    """A decision: every workload succeeds as with `success`, reporting these metrics besides."""

    def decide(config: WorkloadConfig, attempt: int) -> Outcome:
        document = json.loads(success(config).message)
        document["metrics"].update(metrics)
        return Outcome(0, json.dumps(document))

    return decide


class WorkloadPlayer:
    """Finishes workload pods in a namespace as `decide(config, attempt)` says (default: success)."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        decide: Callable[[WorkloadConfig, int], Outcome] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.decide = decide or (lambda config, attempt: success(config))
        self.played: list[Played] = []
        self.checks: list[Callable[[Any, WorkloadConfig], None]] = []
        self.errors: list[str] = []
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkloadPlayer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector="posttrain.dev/kind,app.kubernetes.io/component=workload",
                    timeout_seconds=5,
                ):
                    if self._stop.is_set():
                        break
                    self._handle(event["object"])
            except Exception as error:  # keep playing; the test reads `errors`
                self.errors.append(repr(error))
                time.sleep(0.2)

    def _handle(self, pod: Any) -> None:
        name = pod.metadata.name
        annotations = pod.metadata.annotations or {}
        if (
            name in self._done
            or "posttrain.dev/kwok-exit-code" in annotations
            or pod.status.phase != "Running"
        ):
            return
        config_map = next(v.config_map.name for v in pod.spec.volumes if v.config_map is not None)
        data = present(self.core.read_namespaced_config_map(config_map, self.namespace).data, "data")
        config = WorkloadConfig.model_validate(yaml.safe_load(next(iter(data.values()))))
        labels = pod.metadata.labels
        attempt = int(labels.get("posttrain.dev/attempt", "0"))
        for check in self.checks:
            check(pod, config)
        outcome = self.decide(config, attempt)
        self.core.patch_namespaced_pod(
            name,
            self.namespace,
            {
                "metadata": {
                    "annotations": {
                        "posttrain.dev/kwok-exit-code": str(outcome.exit_code),
                        "posttrain.dev/kwok-termination-message": outcome.message,
                        "posttrain.dev/kwok-duration": outcome.duration,
                    }
                }
            },
        )
        self._done.add(name)
        self.played.append(
            Played(
                config.kind,
                config.name,
                config.run_id,
                attempt,
                name,
                labels.get("batch.kubernetes.io/job-name", ""),
                outcome.exit_code,
                time.time(),
            )
        )

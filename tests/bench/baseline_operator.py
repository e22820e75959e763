"""A do-nothing kopf operator with the posttrain operator's handler shape.

It is the baseline of bench_operator_scale.py.

For each of the five kinds: on creation, create one child Job (one pod that kwok completes by itself)
and patch the resource's status once (phase Succeeded). No plan, no indexes, no dependency order: this
is the floor a kopf operator costs per resource on the same control plane.

Run: `kopf run --standalone -n NS tests/bench/baseline_operator.py` (KUBECONFIG names the cluster).
Inputs: resources of the posttrain.dev/v1alpha1 kinds. Outputs: Jobs labelled
`bench.posttrain.dev/kind` and `bench.posttrain.dev/name`, status.phase=Succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from kubernetes import client, config

GROUP, VERSION = "posttrain.dev", "v1alpha1"
PLURALS = {
    "DataSlice": "dataslices",
    "EvolJob": "evoljobs",
    "AlignRound": "alignrounds",
    "TrainStage": "trainstages",
    "RewardModel": "rewardmodels",
}
_BATCH: list[client.BatchV1Api] = []


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Annotations under the same prefix as the posttrain operator; on.create needs kopf's diff base.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    config.load_kube_config()
    api = client.ApiClient()
    api.user_agent = "posttrain-bench-baseline/0"  # the bench counts its requests in the audit log
    _BATCH.append(client.BatchV1Api(api))


def _job(kind: str, name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name}-{kind.lower()}"[:63],
            "namespace": namespace,
            "labels": {"bench.posttrain.dev/kind": kind, "bench.posttrain.dev/name": name},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": kind,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "work", "image": "busybox"}],
                }
            },
        },
    }


def _register(kind: str, plural: str) -> None:
    @kopf.on.create(GROUP, VERSION, plural, id=f"create_{plural}")
    async def on_create(name: str, namespace: str | None, uid: str, patch: kopf.Patch, **_: Any) -> None:
        assert namespace is not None, "the kinds are namespaced"
        body = _job(kind, name, namespace, uid)
        # The client sends a dict body as it is (as the operator does); its signature names the model only.
        await asyncio.to_thread(_BATCH[0].create_namespaced_job, namespace, body)  # type: ignore[arg-type]
        patch.status["phase"] = "Succeeded"


for _kind, _plural in PLURALS.items():
    _register(_kind, _plural)

"""Fixtures for tests on a real node: real containers from the images built here (docs/testenv.md).

The tier needs root, Debian's containerd/runc/CNI plugins and the node's binaries, so it is opt-in:
collected only when ``POSTTRAIN_NODE_TESTS=1`` (``hack/test.sh`` sets it on machines that can run a
node, which CI's are). Right after collection, outside any test's timeout, the binaries
(``hack/build-testenv.sh --node``) and the images (``hack/build-images.sh``) are built when not
cached. One session: a control plane without kwok nodes, one real node, and the chart installed with
the operator running from its own image in a namespace that enforces Pod Security ``restricted``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from posttrain.testenv import ControlPlane, find_binaries, wait_until
from posttrain.testenv.realnode import RealNode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "charts" / "posttrain-operator"
ENABLE_ENV = "POSTTRAIN_NODE_TESTS"
IMAGES_ENV = "POSTTRAIN_IMAGES_DIR"
OPERATOR_NS = "posttrain-system"
RELEASE = "posttrain"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}

collect_ignore_glob = [] if os.environ.get(ENABLE_ENV) == "1" else ["test_*.py"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.node)
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build what the node needs now if a selected test needs it (no-ops when cached)."""
    if not any(item.get_closest_marker("node") for item in session.items):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    show = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with show:
        find_binaries(log=sys.stderr, node=True)
        if not os.environ.get(IMAGES_ENV):
            proc = subprocess.run(
                ["bash", str(ROOT / "hack" / "build-images.sh")],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            os.environ[IMAGES_ENV] = proc.stdout.strip().splitlines()[-1]


@dataclass
class NodeCluster:
    """The session's cluster: control plane, real node, and the installed operator."""

    plane: ControlPlane
    node: RealNode
    api: client.ApiClient
    trainer_image: str

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, **kwargs)


def _namespace(api: client.ApiClient, name: str, labels: dict[str, str]) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        timeout=30,
        message=f"the default ServiceAccount of {name}",
    )


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """Control plane + real node + ``helm install`` of the chart, the operator from its image."""
    images = sorted(Path(os.environ[IMAGES_ENV]).glob("*.oci.tar"))
    tag = os.environ.get("IMAGE_TAG", "dev")
    with ControlPlane(nodes=[]) as plane, RealNode(plane, images=images) as node:
        api = plane.api_client()
        try:
            _namespace(api, OPERATOR_NS, RESTRICTED)
            trainer = f"localhost/posttrain/trainer:{tag}-cpu"
            plane.helm(
                "install", RELEASE, str(CHART), "--namespace", OPERATOR_NS, "--wait", "--timeout", "180s",
                "--set", "image.repository=localhost/posttrain/operator", "--set", f"image.tag={tag}",
                "--set", f"workloads.trainerImage={trainer}",
                "--set", "operator.progressIntervalSeconds=2", "--set", "operator.logFormat=text",
                "--set", "workloads.servingEngine=auto",
            )  # fmt: skip
            plane.kubectl(
                "wait", "pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/component=operator",
                "--for=condition=Ready", "--timeout=180s",
            )  # fmt: skip
            yield NodeCluster(plane=plane, node=node, api=api, trainer_image=trainer)
        finally:
            api.close()


@pytest.fixture
def pipeline_ns(
    node_cluster: NodeCluster, request: pytest.FixtureRequest, tiny_student: Path, tiny_teacher: Path
) -> Iterator[tuple[str, Path]]:
    """A restricted namespace with the example data and tiny models on a claim; yields (namespace, folder).

    The PersistentVolumeClaim ``posttrain`` is on a host folder of the node, holding the example data
    (``data/``) and the tiny models (``models/tiny-student``, ``models/tiny-teacher``), owned by UID 1000 like
    the pods.
    """
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    ns = f"{stem}-{uuid.uuid4().hex[:6]}"
    folder = node_cluster.node.run / "volumes" / ns
    shutil.copytree(ROOT / "examples" / "quickstart-cluster" / "data", folder / "data")
    shutil.copytree(tiny_student, folder / "models" / "tiny-student")
    shutil.copytree(tiny_teacher, folder / "models" / "tiny-teacher")
    (folder / "artifacts").mkdir()
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, 1000, 1000)
    _namespace(node_cluster.api, ns, RESTRICTED)
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(host_volume(ns, folder)))
    try:
        yield ns, folder
    finally:
        with contextlib.suppress(Exception):
            node_cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=60s", check=False)
            node_cluster.kubectl("delete", "pv", f"posttrain-{ns}", "--wait=false", check=False)


def host_volume(namespace: str, folder: Path, claim: str = "posttrain") -> dict[str, Any]:
    """A hostPath PersistentVolume pre-bound to claim ``claim`` of ``namespace``, and the claim."""
    name = f"{claim}-{namespace}"
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": str(folder), "type": "Directory"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": name,
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            },
        ],
    }

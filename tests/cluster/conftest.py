"""Fixtures for tests against a real control plane.

Etcd, kube-apiserver, controller manager, scheduler and kwok run as local processes; see docs/testenv.md.

One control plane serves the whole session. Every test under tests/cluster is marked ``cluster``.
Missing binaries are built (``hack/build-testenv.sh``) once, right after collection, outside any
test's timeout; the suite never skips for want of them.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from posttrain.testenv import ControlPlane, FakeNode, find_binaries, wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CRDS = ROOT / "crds"

Tool = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane's binaries now if a selected test needs them (a no-op when cached)."""
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    show = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with show:
        find_binaries(log=sys.stderr)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane: two kwok nodes with 8 ``nvidia.com/gpu`` each."""
    nodes = [FakeNode(name="kwok-node-0"), FakeNode(name="kwok-node-1")]
    with ControlPlane(nodes=nodes) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """Path of the admin kubeconfig."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """A ``kubernetes`` ApiClient authenticated as the cluster admin."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Tool:
    """``kubectl(*args, input=None, check=True)``: the built kubectl with the admin kubeconfig."""
    return control_plane.kubectl


@pytest.fixture(scope="session")
def helm(control_plane: ControlPlane) -> Tool:
    """``helm(*args, input=None, check=True)``: the built helm with the admin kubeconfig."""
    return control_plane.helm


def _new_namespace(kube: client.ApiClient, request: pytest.FixtureRequest, labels: dict[str, str]) -> str:
    core = client.CoreV1Api(kube)
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    # Pods are refused until the service account controller has made the "default" ServiceAccount.
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        timeout=30,
        message=f"the default ServiceAccount of namespace {name}",
    )
    return name


def _delete_namespace(kube: client.ApiClient, name: str) -> None:
    with contextlib.suppress(Exception):  # best effort: the cluster may be going away
        client.CoreV1Api(kube).delete_namespace(name)


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = _new_namespace(kube, request, {})
    yield name
    _delete_namespace(kube, name)


@pytest.fixture
def restricted_namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that enforces the ``restricted`` Pod Security Standard."""
    name = _new_namespace(kube, request, {"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    _delete_namespace(kube, name)


@pytest.fixture(scope="session")
def posttrain_crds(kubectl: Tool) -> list[Path]:
    """Apply ``crds/*.yaml`` (server-side) and wait until every CRD is Established."""
    files = sorted(CRDS.glob("*.yaml"))
    assert files, f"no CRDs in {CRDS} (generate them with `posttrain crds`)"
    for path in files:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"--filename={p}" for p in files))
    # Discovery (and with it the `posttrain` category) catches up a moment after Established.
    wait_until(
        lambda: kubectl("get", "posttrain", "--all-namespaces", check=False).returncode == 0,
        timeout=30,
        message="the posttrain category in discovery",
    )
    return files

"""The operator's client wrapper against the real API server.

Idempotent creates and deletes, status patches, and connections kept alive (a request must not cost a TLS
handshake).
"""

from __future__ import annotations

from typing import Any

import pytest
import urllib3.connectionpool
from kubernetes import client
from posttrain.adapters.client import api_client, connection_info
from posttrain.adapters.kube import Kube

from tests.support.kube import document, name_of


def data_slice(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "DataSlice",
        "metadata": {"name": "d", "namespace": namespace},
        "spec": {"sources": [{"uri": "file:///data/seed.jsonl"}]},
    }


def config_map(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}


def test_requests_reuse_connections_and_are_idempotent(
    kube: client.ApiClient, namespace: str, posttrain_crds: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "posttrain.dev", "v1alpha1", namespace, "dataslices", data_slice(namespace)
    )
    wrapper = Kube(client.ApiClient(kube.configuration), qps=0, burst=0)
    opened: list[object] = []
    original = urllib3.connectionpool.HTTPSConnectionPool._new_conn

    def counting(pool: Any) -> Any:
        opened.append(pool)
        return original(pool)

    monkeypatch.setattr(urllib3.connectionpool.HTTPSConnectionPool, "_new_conn", counting)

    for attempt in range(10):
        wrapper.patch_status("DataSlice", namespace, "d", {"phase": "Running", "attempt": attempt})
    assert wrapper.create(config_map(namespace, "c")) is True
    assert wrapper.create(config_map(namespace, "c")) is False  # already there: no error
    assert wrapper.delete("ConfigMap", namespace, "c") is True
    assert wrapper.delete("ConfigMap", namespace, "c") is False
    wrapper.patch_status("DataSlice", namespace, "gone", {"phase": "Running"})  # deleted meanwhile: no error

    status = document(
        client.CustomObjectsApi(kube).get_namespaced_custom_object_status(
            "posttrain.dev", "v1alpha1", namespace, "dataslices", "d"
        )
    )["status"]
    assert (status["phase"], status["attempt"]) == ("Running", 9)
    # Every response handed its connection back: 15 requests, one connection.
    assert len(opened) == 1, f"{len(opened)} connections opened for 15 sequential requests"


def test_the_client_and_kopfs_login_use_the_same_kubeconfig(
    kubeconfig: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api = api_client()
    try:
        assert api.user_agent.startswith("posttrain-operator/")
        assert name_of(client.CoreV1Api(api).read_namespace(namespace)) == namespace
        login = connection_info()
        configuration = api.configuration
    finally:
        api.close()
    assert login.server == configuration.host and login.ca_path == configuration.ssl_ca_cert
    assert login.insecure is False
    # The admin kubeconfig authenticates by client certificate or by token; kopf gets the same.
    assert (login.certificate_path, login.private_key_path) == (
        configuration.cert_file,
        configuration.key_file,
    )
    assert bool(login.certificate_path) or bool(login.token)

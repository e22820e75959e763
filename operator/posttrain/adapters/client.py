"""The operator's connection to the API server: one configuration for its client and for kopf's login.

Both read the in-cluster service account, or the kubeconfig (`KUBECONFIG`) outside a cluster, when the
operator starts rather than when the client library is imported.
"""

from __future__ import annotations

import os
from importlib.metadata import version

import kopf
from kubernetes import client
from kubernetes import config as kube_config

USER_AGENT = f"posttrain-operator/{version('posttrain')}"
"""Tells the operator's requests apart in audit logs."""


def api_client() -> client.ApiClient:
    """A client for the cluster the operator runs in, or of the kubeconfig (KUBECONFIG) outside one."""
    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except kube_config.ConfigException:
        kube_config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    api = client.ApiClient(configuration)
    api.user_agent = USER_AGENT
    return api


def connection_info() -> kopf.ConnectionInfo:
    """The credentials of kopf's own requests, from the same configuration as `api_client()`."""
    configuration = api_client().configuration
    api_key = configuration.api_key or {}
    token: str = api_key.get("authorization", "") or api_key.get("BearerToken", "")
    # The in-cluster loader stores "bearer <token>" (lower case), a kubeconfig "Bearer <token>".
    scheme, _, rest = token.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        token = rest
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer" if token else None,
        token=token.strip() or None,
        default_namespace=None,
    )

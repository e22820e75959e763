"""The operator's kopf login: the same credentials as its client, whatever the loader."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from posttrain.adapters import client


@pytest.mark.parametrize(
    "api_key",
    [
        {"BearerToken": "bearer abc.def"},  # the in-cluster loader (a pod's service account token)
        {"authorization": "Bearer abc.def"},  # a kubeconfig with a token
        {"BearerToken": "abc.def"},
    ],
)
def test_login_sends_the_bare_token(monkeypatch: pytest.MonkeyPatch, api_key: dict[str, str]) -> None:
    configuration = SimpleNamespace(
        api_key=api_key, host="https://10.96.0.1:443", ssl_ca_cert="/ca.crt", verify_ssl=True, cert_file=None,
        key_file=None,
    )  # fmt: skip
    monkeypatch.setattr(client, "api_client", lambda: SimpleNamespace(configuration=configuration))
    info = client.connection_info()
    assert (info.scheme, info.token) == ("Bearer", "abc.def")

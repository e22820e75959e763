"""The operator's startup handler: a restarted operator reaches its first watch without importing.

kubernetes' client package imports each API class, and the models it names, on first use. In the
startup handler that cost (about 2 s of CPU, over 10 s on a loaded machine) blocked the event loop of
every operator start before its first watch: killed within that time, as the kill test kills it, an
operator never did any work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# What a process that has imported the operator (as `posttrain operator` and the kill test's zygote
# have) still imports when kopf runs its startup handler: printed as a JSON list.
STARTUP = """
import asyncio, json, sys
import kopf
import posttrain.handlers.operator as operator
before = set(sys.modules)
memo = kopf.Memo()
asyncio.run(operator.startup(settings=kopf.OperatorSettings(), memo=memo))
assert isinstance(operator.reconciler_of(memo), operator.Reconciler)
print(json.dumps(sorted(set(sys.modules) - before)))
"""

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: user, user: {token: unused}}]
contexts: [{name: local, context: {cluster: local, user: user}}]
current-context: local
"""


def test_the_startup_handler_imports_no_module(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POSTTRAIN_METRICS_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-c", STARTUP], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    imported = json.loads(done.stdout.splitlines()[-1])
    assert imported == [], f"{len(imported)} modules imported at startup, e.g. {imported[:5]}"

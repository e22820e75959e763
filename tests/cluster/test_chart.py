"""The Helm chart on the real control plane.

Install, RBAC proven by running the operator with the chart's ServiceAccount token, no Secrets access, no
GitOps drift, upgrade and uninstall.

kwok runs no containers, so the chart's operator pod only goes Ready (which is what `helm install
--wait` waits for). The operator itself runs in this process (kopf's test runner), configured from the
chart's Deployment and authenticated with a token of the chart's ServiceAccount: whatever it needs and
the chart does not grant fails here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from posttrain import cli
from posttrain.api.resources import GROUP, KINDS, VERSION
from posttrain.files import load_resources
from posttrain.support.processes import free_port
from posttrain.testenv import ControlPlane, wait_until

from tests.cluster.conftest import Tool
from tests.cluster.test_operator import _objects, _phases
from tests.cluster.test_operator import _storage as operator_storage
from tests.cluster.workload_player import WorkloadPlayer
from tests.support.kube import annotations_of, name_of, present, spec_of, status_of

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "posttrain-operator"
QUICKSTART = ROOT / "examples" / "quickstart" / "pipeline.yaml"
QUICKSTART_RESOURCES = len(load_resources([QUICKSTART]))
"""Resources of the CPU quickstart (one Job each when it runs once)."""
RELEASE = "posttrain-operator"
PLANTED = "sk-chart-test-planted-secret"
GITOPS_MANAGER = "posttrain-gitops"


@dataclass
class Installed:
    """The release as installed by the module's fixture."""

    namespace: str
    service_account: str
    deployment: dict[str, Any]
    install_output: str


def _create_namespace(kube: client.ApiClient, stem: str, labels: dict[str, str] | None = None) -> str:
    core = client.CoreV1Api(kube)
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {})))
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        timeout=30,
        message=f"the default ServiceAccount of {name}",
    )
    return name


@pytest.fixture(scope="module")
def installed(kube: client.ApiClient, helm: Tool, kubectl: Tool) -> Iterator[Installed]:
    """`helm install --wait` into a namespace that enforces Pod Security "restricted"."""
    namespace = _create_namespace(kube, "chart", {"pod-security.kubernetes.io/enforce": "restricted"})
    # --take-ownership: other tests of the session may have applied crds/ with kubectl already.
    result = helm(
        "install", RELEASE, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s",
        "--take-ownership",
    )  # fmt: skip
    manifest = [d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE, "-n", namespace).stdout) if d]
    deployment = next(d for d in manifest if d["kind"] == "Deployment")
    account = next(d for d in manifest if d["kind"] == "ServiceAccount")["metadata"]["name"]
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{i.plural}.{GROUP}" for i in KINDS.values()),
    )
    wait_until(
        lambda: kubectl("get", "posttrain", "--all-namespaces", check=False).returncode == 0,
        timeout=30,
        message="the posttrain category in discovery",
    )
    yield Installed(namespace, account, deployment, result.stdout)
    helm("uninstall", RELEASE, "-n", namespace, "--wait", check=False)
    client.CoreV1Api(kube).delete_namespace(namespace)


def test_install_waits_for_a_ready_operator_under_restricted_pod_security(
    installed: Installed, kube: client.ApiClient, helm: Tool
) -> None:
    apps = client.AppsV1Api(kube)
    name = installed.deployment["metadata"]["name"]
    deployment = apps.read_namespaced_deployment(name, installed.namespace)
    # The pod exists, so Pod Security admission accepted it, and --wait saw it ready.
    assert status_of(deployment).ready_replicas == 1
    assert present(spec_of(deployment).strategy, "spec.strategy").type == "Recreate"
    status = json.loads(helm("status", RELEASE, "-n", installed.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "kubectl get posttrain" in installed.install_output  # NOTES.txt
    extensions = client.ApiextensionsV1Api(kube)
    for info in KINDS.values():
        crd = extensions.read_custom_resource_definition(f"{info.plural}.{GROUP}")
        assert annotations_of(crd)["helm.sh/resource-policy"] == "keep"
        assert annotations_of(crd)["meta.helm.sh/release-name"] == RELEASE
    roles = {name_of(r) for r in client.RbacAuthorizationV1Api(kube).list_cluster_role().items}
    assert {f"{name}-admin", f"{name}-editor", f"{name}-viewer"} <= roles


def test_a_typo_in_values_is_rejected_by_install(installed: Installed, helm: Tool) -> None:
    proc = helm(
        "install", "typo", str(CHART), "-n", installed.namespace, "--skip-crds", "--set", "operator.wokers=2",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "additional properties 'wokers' not allowed" in proc.stderr
    assert "typo" not in helm("list", "-n", installed.namespace, "-q").stdout.split()


# --- the chart's ServiceAccount runs the operator ------------------------------------------------


def _token_kubeconfig(control_plane: ControlPlane, kubectl: Tool, installed: Installed, folder: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token, as in the pod)."""
    token = kubectl(
        "create", "token", installed.service_account, "-n", installed.namespace, "--duration=1h"
    ).stdout.strip()
    path = folder / "operator-kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testenv",
                "cluster": {
                    "server": control_plane.server,
                    "certificate-authority": str(control_plane.pki.ca_cert),
                },
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "testenv", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def _chart_operator_settings(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], dict[str, str]]:
    """(kopf arguments, environment) of the chart's operator container, read by the real CLI parser."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    parsed: list[Any] = []

    def capture(args: Any) -> int:
        parsed.append(args)
        return 0

    with monkeypatch.context() as patch:
        patch.setattr(cli, "_operator", capture)
        assert cli.main(container["args"]) == 0
    args = parsed[0]
    scope = ["--all-namespaces"] if args.all_namespaces else [f"--namespace={n}" for n in args.namespace]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env.update(
        {
            "POSTTRAIN_ARTIFACT_ROOT": args.artifact_root,
            "POSTTRAIN_TRAINER_IMAGE": args.trainer_image,
            "POSTTRAIN_VLLM_IMAGE": args.vllm_image,
            "POSTTRAIN_WORKERS": str(args.workers),
            "POSTTRAIN_KUBE_QPS": str(args.qps),
            "POSTTRAIN_KUBE_BURST": str(args.burst),
        }
    )
    return scope, env


@contextmanager
def _operator_as(kubeconfig: Path, scope: list[str], env: dict[str, str]) -> Iterator[None]:
    overrides = {
        **env,
        "KUBECONFIG": str(kubeconfig),
        "POSTTRAIN_METRICS_PORT": str(free_port()),
        # Test pace: look at running workloads every 2 s instead of the chart's production interval.
        "POSTTRAIN_PROGRESS_INTERVAL": "2",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        with KopfRunner(
            ["run", "--standalone", *scope, "-m", "posttrain.handlers.operator"], timeout=60
        ) as runner:
            yield
        assert runner.exception is None, runner.exception
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _storage(kube: client.ApiClient, namespace: str) -> None:
    """The `posttrain` claim the chart's artifact root names, and a Secret the operator must not read."""
    operator_storage(client.CoreV1Api(kube), namespace, secret=("teacher-api", PLANTED))


def _forbidden(call: Callable[[], object]) -> bool:
    try:
        call()
    except ApiException as error:
        return bool(error.status == 403)
    return False


def test_chart_rbac_runs_the_quickstart_without_secrets_and_without_drift(
    installed: Installed,
    control_plane: ControlPlane,
    kube: client.ApiClient,
    kubectl: Tool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    examples = _create_namespace(kube, "chart-examples")
    try:
        _storage(kube, examples)
        kubeconfig = _token_kubeconfig(control_plane, kubectl, installed, tmp_path)
        scope, env = _chart_operator_settings(installed.deployment, monkeypatch)
        assert scope == ["--all-namespaces"]  # the chart's default mode
        custom = client.CustomObjectsApi(kube)
        apply = (
            "apply",
            "--server-side",
            f"--field-manager={GITOPS_MANAGER}",
            "-n",
            examples,
            "-f",
            str(QUICKSTART),
        )
        caplog.set_level(logging.WARNING)
        with _operator_as(kubeconfig, scope, env), WorkloadPlayer(kube, examples) as player:
            kubectl(*apply)
            wait_until(
                lambda: (
                    set(_phases(custom, examples).values()) == {"Succeeded"}
                    and len(_phases(custom, examples)) == QUICKSTART_RESOURCES
                ),
                timeout=150,
                interval=1,
                message="the quickstart Succeeded",
                state=lambda: _phases(custom, examples),
            )
        assert len(player.played) == QUICKSTART_RESOURCES and not player.errors
        # kopf reports permissions it lacks as warnings and carries on in a degraded mode (no CRD
        # watch); any request denied to the operator (an event it could not post, a child it could not
        # create) names its ServiceAccount.
        identity = f"system:serviceaccount:{installed.namespace}:{installed.service_account}"
        signs = ("not enough permissions", identity)
        lacking = [r.getMessage() for r in caplog.records if any(s in r.getMessage().lower() for s in signs)]
        assert not lacking, lacking
        # Events were posted with the chart's token.
        reasons = {
            e.reason
            for e in client.CoreV1Api(kube).list_namespaced_event(examples).items
            if e.involved_object.api_version == f"{GROUP}/{VERSION}"
        }
        assert {"Started", "Succeeded"} <= reasons, reasons

        # Flux and kstatus: every resource observed at its generation, with a Ready condition.
        for key, body in _objects(custom, examples).items():
            status = body["status"]
            assert status["observedGeneration"] == body["metadata"]["generation"], key
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True", key
            assert not [k for k in body["metadata"].get("annotations", {}) if k.startswith("kopf.")]

        # GitOps: applying the same manifests again changes nothing, and the diff is empty.
        diff = kubectl(
            "diff", "--server-side", f"--field-manager={GITOPS_MANAGER}", "-n", examples, "-f", str(QUICKSTART),
            check=False,
        )  # fmt: skip
        assert diff.returncode == 0 and not diff.stdout, diff.stdout + diff.stderr
        before = {k: v["metadata"]["resourceVersion"] for k, v in _objects(custom, examples).items()}
        kubectl(*apply)
        after = {k: v["metadata"]["resourceVersion"] for k, v in _objects(custom, examples).items()}
        assert after == before

        # The chart's token cannot read Secrets: real requests, answered 403.
        operator_api = client.ApiClient(_configuration(kubeconfig))
        core = client.CoreV1Api(operator_api)
        assert _forbidden(lambda: core.read_namespaced_secret("teacher-api", examples))
        assert _forbidden(lambda: core.list_namespaced_secret(examples))
        assert _forbidden(lambda: core.list_secret_for_all_namespaces())
        assert _forbidden(
            lambda: next(iter(watch.Watch().stream(core.list_namespaced_secret, examples, timeout_seconds=1)))
        )
        # ... nor write the specs of users' resources (only a Curriculum's children, labelled as such:
        # the chart's admission policy narrows the RBAC grant), nor create pods directly.
        custom_as_operator = client.CustomObjectsApi(operator_api)
        assert _forbidden(
            lambda: custom_as_operator.patch_namespaced_custom_object(
                GROUP, VERSION, examples, "trainstages", "sft", {"spec": {"train": {"epochs": 9}}}
            )
        )
        assert _forbidden(
            lambda: custom_as_operator.delete_namespaced_custom_object(
                GROUP, VERSION, examples, "trainstages", "sft"
            )
        )
        child = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrainStage",
            "metadata": {"name": "a-child", "labels": {"posttrain.dev/curriculum": "c"}},
            "spec": {"method": "sft", "model": {"uri": "pvc://p/m"}, "dataset": {"uri": "pvc://p/d"}},
        }
        custom_as_operator.create_namespaced_custom_object(
            GROUP, VERSION, examples, "trainstages", child, dry_run="All"
        )
        unlabelled = {**child, "metadata": {"name": "not-a-child"}}
        assert _forbidden(
            lambda: custom_as_operator.create_namespaced_custom_object(
                GROUP, VERSION, examples, "trainstages", unlabelled, dry_run="All"
            )
        )
        assert _forbidden(
            lambda: custom_as_operator.patch_namespaced_custom_object(
                GROUP, VERSION, examples, "curricula", "any", {"spec": {"stages": 2}}
            )
        )
        assert _forbidden(
            lambda: core.create_namespaced_pod(
                examples,
                client.V1Pod.model_validate(
                    {
                        "metadata": {"name": "x"},
                        "spec": {"containers": [{"name": "x", "image": "busybox:1.36"}]},
                    }
                ),
            )
        )
        operator_api.close()
        # The planted key never reached a child object.
        for job in client.BatchV1Api(kube).list_namespaced_job(examples).items:
            assert PLANTED not in json.dumps(kube.sanitize_for_serialization(job))
    finally:
        core_admin = client.CoreV1Api(kube)
        core_admin.delete_namespace(examples)
        with contextlib.suppress(ApiException):  # volumes are cluster-scoped: not deleted with it
            core_admin.delete_persistent_volume(f"chart-{examples}"[:63])


def _configuration(kubeconfig: Path) -> client.Configuration:
    from kubernetes import config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


# --- upgrade and uninstall -------------------------------------------------------------------------


def _can(kubectl: Tool, installed: Installed, verb: str, resource: str, namespace: str) -> bool:
    who = f"system:serviceaccount:{installed.namespace}:{installed.service_account}"
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    answer = kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={who}", check=False
    ).stdout
    return answer.strip() == "yes"


def test_upgrade_to_namespaced_mode_narrows_the_grants(
    installed: Installed, kube: client.ApiClient, helm: Tool, kubectl: Tool
) -> None:
    watched = _create_namespace(kube, "chart-watched")
    other = _create_namespace(kube, "chart-other")
    try:
        assert _can(kubectl, installed, "create", "jobs.batch", other)  # cluster-wide before
        helm(
            "upgrade", RELEASE, str(CHART), "-n", installed.namespace, "--reuse-values", "--wait", "--timeout", "120s",
            "--set", f"operator.watchNamespaces={{{watched}}}",
        )  # fmt: skip
        assert _can(kubectl, installed, "create", "jobs.batch", watched)
        assert _can(kubectl, installed, "patch", "trainstages.posttrain.dev/status", watched)
        assert not _can(kubectl, installed, "create", "jobs.batch", other)
        assert not _can(kubectl, installed, "list", "trainstages.posttrain.dev", other)
        assert _can(kubectl, installed, "list", "namespaces", other)  # kopf's namespace observation
        assert not _can(kubectl, installed, "get", "secrets", watched)
        deployment = client.AppsV1Api(kube).read_namespaced_deployment(
            installed.deployment["metadata"]["name"], installed.namespace
        )
        pod_spec = spec_of(spec_of(deployment).template)
        assert f"--namespace={watched}" in (pod_spec.containers[0].args or [])
    finally:
        helm("upgrade", RELEASE, str(CHART), "-n", installed.namespace, "--reuse-values", "--wait",
             "--set", "operator.watchNamespaces=null")  # fmt: skip
        for namespace in (watched, other):
            client.CoreV1Api(kube).delete_namespace(namespace)


def test_uninstall_keeps_the_crds(installed: Installed, kube: client.ApiClient, helm: Tool) -> None:
    helm("uninstall", RELEASE, "-n", installed.namespace, "--wait")
    extensions = client.ApiextensionsV1Api(kube)
    for info in KINDS.values():
        assert name_of(extensions.read_custom_resource_definition(f"{info.plural}.{GROUP}"))
    assert not client.AppsV1Api(kube).list_namespaced_deployment(installed.namespace).items

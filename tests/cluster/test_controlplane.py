"""The test control plane is a real Kubernetes.

Controllers, scheduling, kwok-run pods, garbage collection, RBAC, admission of CRDs with OpenAPI and CEL
validation, and helm.
"""

from __future__ import annotations

import functools
import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from posttrain.api.metrics import Data
from posttrain.testenv import (
    ANNOTATION_DURATION,
    ANNOTATION_EXIT_CODE,
    ANNOTATION_TERMINATION_MESSAGE,
    ControlPlane,
    wait_until,
)

from tests.support.kube import meta_of, name_of, phase_of, present, spec_of, status_of, terminated_of

pytestmark = pytest.mark.cluster

Tool = Callable[..., "subprocess.CompletedProcess[str]"]  # the kubectl / helm fixtures


def _job(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=spec.pop("backoff_limit", 0),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations or {}),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(
                            name="work",
                            image="registry.invalid/posttrain-trainer:test",
                            resources=client.V1ResourceRequirements(
                                requests={"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
                                limits={"nvidia.com/gpu": "1"},
                            ),
                        )
                    ],
                ),
            ),
            **spec,
        ),
    )


def _job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """``Complete`` or ``Failed`` once the Job has finished, else None."""
    job = batch.read_namespaced_job_status(name, namespace)
    for cond in status_of(job).conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return None


def _job_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def test_nodes_are_ready_with_gpus(kube: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube).list_node().items
    assert len(nodes) == 2
    for node in nodes:
        ready = {c.type: c.status for c in status_of(node).conditions or []}
        assert ready["Ready"] == "True"
        assert (status_of(node).allocatable or {})["nvidia.com/gpu"] == "8"
        assert not [t for t in spec_of(node).taints or [] if t.key.startswith("node.kubernetes.io/")]


def test_job_pod_runs_and_completes(kube: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    result = {"outputs": {"dataset": {"uri": "file:///tmp/out", "rows": 3}}, "metrics": {"kept": 3}}
    annotations = {ANNOTATION_TERMINATION_MESSAGE: json.dumps(result), ANNOTATION_DURATION: "2s"}
    batch.create_namespaced_job(namespace, _job("ok", annotations))

    # Scheduled onto a kwok node and running for a while, then done.
    running = wait_until(
        lambda: [p for p in _job_pods(core, namespace, "ok") if phase_of(p) == "Running"],
        timeout=60,
        message="the Job's pod to run",
    )
    assert present(spec_of(running[0]).node_name, "spec.nodeName").startswith("kwok-node-")
    assert wait_until(lambda: _job_condition(batch, namespace, "ok"), timeout=60) == "Complete"

    (pod,) = _job_pods(core, namespace, "ok")
    assert phase_of(pod) == "Succeeded"
    ended = terminated_of(pod)
    assert ended.exit_code == 0
    assert ended.reason == "Completed"
    assert json.loads(present(ended.message, "the termination message")) == result
    job = batch.read_namespaced_job_status("ok", namespace)
    assert status_of(job).succeeded == 1


def test_job_pod_fails_with_chosen_exit_code(kube: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    message = '{"error": "CUDA out of memory"}'
    annotations = {ANNOTATION_EXIT_CODE: "3", ANNOTATION_TERMINATION_MESSAGE: message}
    batch.create_namespaced_job(namespace, _job("boom", annotations))

    assert wait_until(lambda: _job_condition(batch, namespace, "boom"), timeout=60) == "Failed"
    (pod,) = _job_pods(core, namespace, "boom")
    assert phase_of(pod) == "Failed"
    ended = terminated_of(pod)
    assert ended.exit_code == 3
    assert ended.reason == "Error"
    assert ended.message == message
    job = batch.read_namespaced_job_status("boom", namespace)
    assert status_of(job).failed == 1
    failed = next(c for c in status_of(job).conditions or [] if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"


def test_pod_failure_policy_sees_the_exit_code(kube: client.ApiClient, namespace: str) -> None:
    """The Job controller acts on the simulated exit code, as it would on a real one."""
    batch = client.BatchV1Api(kube)
    policy = client.V1PodFailurePolicy(
        rules=[
            client.V1PodFailurePolicyRule(
                action="FailJob",
                on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(operator="In", values=[42]),
            )
        ]
    )
    job = _job("fatal", {ANNOTATION_EXIT_CODE: "42"}, backoff_limit=6, pod_failure_policy=policy)
    batch.create_namespaced_job(namespace, job)

    assert wait_until(lambda: _job_condition(batch, namespace, "fatal"), timeout=60) == "Failed"
    failed = next(
        c
        for c in status_of(batch.read_namespaced_job_status("fatal", namespace)).conditions or []
        if c.type == "Failed"
    )
    assert failed.reason == "PodFailurePolicy"


def test_deleting_an_owner_collects_its_dependents(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=meta_of(owner).uid)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[ref]))
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bystander"))
    )

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def names() -> set[str]:
        return {name_of(cm) for cm in core.list_namespaced_config_map(namespace).items}

    wait_until(
        lambda: "child" not in names(), timeout=60, message="the garbage collector to delete the child"
    )
    assert "bystander" in names()


def test_deleting_a_job_collects_its_pods(kube: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    batch.create_namespaced_job(namespace, _job("long", {ANNOTATION_DURATION: "10m"}))
    wait_until(
        lambda: [p for p in _job_pods(core, namespace, "long") if phase_of(p) == "Running"],
        timeout=60,
        message="the Job's pod to run",
    )
    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")
    wait_until(lambda: not _job_pods(core, namespace, "long"), timeout=60, message="the pods to go")


def test_service_account_gets_only_what_its_role_grants(
    control_plane: ControlPlane, kube: client.ApiClient, kubectl: Tool, namespace: str
) -> None:
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    # A bound token from the TokenRequest API, used by a second client that is not the admin.
    token = kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    config = client.Configuration()
    config.host = control_plane.server
    config.ssl_ca_cert = str(control_plane.pki.ca_cert)
    config.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(config) as as_reader:
        reader = client.CoreV1Api(as_reader)
        # RBAC is served from an informer cache: the binding shows up within moments.
        wait_until(
            lambda: _allowed(lambda: reader.list_namespaced_config_map(namespace)),
            timeout=30,
            message="the RoleBinding to take effect",
        )
        for forbidden in (
            lambda: reader.list_namespaced_secret(namespace),
            lambda: reader.create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"))
            ),
            lambda: reader.list_namespaced_config_map("default"),
            lambda: reader.list_node(),
        ):
            with pytest.raises(client.ApiException) as denied:
                forbidden()
            assert denied.value.status == 403
            assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)
    who = kubectl(
        "auth",
        "whoami",
        "-o",
        "json",
        f"--token={token}",
        "--kubeconfig=/dev/null",
        f"--server={control_plane.server}",
        f"--certificate-authority={control_plane.pki.ca_cert}",
    )
    assert (
        json.loads(who.stdout)["status"]["userInfo"]["username"]
        == f"system:serviceaccount:{namespace}:reader"
    )


def _allowed(call: Any) -> bool:
    try:
        call()
    except client.ApiException as e:
        if e.status == 403:
            return False
        raise
    return True


CHART_FILES = {
    "Chart.yaml": """\
        apiVersion: v2
        name: demo
        version: 0.1.0
        kubeVersion: ">=1.30.0-0"
        """,
    "values.yaml": """\
        greeting: hello
        replicas: 1
        """,
    "templates/configmap.yaml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {{ .Release.Name }}-settings
        data:
          greeting: {{ .Values.greeting | quote }}
          kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
        """,
    "templates/deployment.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ .Release.Name }}-server
        spec:
          replicas: {{ .Values.replicas }}
          selector:
            matchLabels: {app: {{ .Release.Name }}}
          template:
            metadata:
              labels: {app: {{ .Release.Name }}}
            spec:
              containers:
              - name: server
                image: registry.invalid/server:1
                ports: [{containerPort: 8000}]
        """,
    "templates/service.yaml": """\
        apiVersion: v1
        kind: Service
        metadata:
          name: {{ .Release.Name }}-server
        spec:
          selector: {app: {{ .Release.Name }}}
          ports: [{port: 80, targetPort: 8000}]
        """,
}


def test_helm_template_and_install(
    tmp_path: Path, helm: Tool, kube: client.ApiClient, namespace: str
) -> None:
    chart = tmp_path / "demo"
    for rel, text in CHART_FILES.items():
        (chart / rel).parent.mkdir(parents=True, exist_ok=True)
        (chart / rel).write_text(textwrap.dedent(text))

    rendered = list(yaml.safe_load_all(helm("template", "demo", str(chart), "--set", "greeting=hi").stdout))
    kinds = {doc["kind"] for doc in rendered if doc}
    assert kinds == {"ConfigMap", "Deployment", "Service"}
    settings = next(doc for doc in rendered if doc and doc["kind"] == "ConfigMap")
    assert settings["data"]["greeting"] == "hi"
    # helm was built knowing the Kubernetes version it goes with (not its v1.20 fallback).
    assert settings["data"]["kubeVersion"].startswith("v1.36.")

    helm("install", "demo", str(chart), "-n", namespace, "--wait", "--timeout=120s")
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("demo-server", namespace)
    assert status_of(deployment).available_replicas == 1
    settings_cm = client.CoreV1Api(kube).read_namespaced_config_map("demo-settings", namespace)
    assert (settings_cm.data or {})["kubeVersion"].startswith("v1.36.")
    status = json.loads(helm("status", "demo", "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    helm("uninstall", "demo", "-n", namespace, "--wait", "--timeout=60s")


def _crd_docs(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def test_crds_are_established(posttrain_crds: list[Path], kube: client.ApiClient, kubectl: Tool) -> None:
    ext = client.ApiextensionsV1Api(kube)
    kinds = set()
    for path in posttrain_crds:
        crd = ext.read_custom_resource_definition(_crd_docs(path)["metadata"]["name"])
        conditions = {c.type: c.status for c in status_of(crd).conditions or []}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
        kinds.add(crd.spec.names.kind)
    assert kinds == {"DataSlice", "EvolJob", "AlignRound", "TrainStage", "RewardModel", "Curriculum"}
    # The category names every kind.
    listed = kubectl("api-resources", "--categories=posttrain", "-o", "name").stdout.split()
    assert sorted(listed) == sorted(_crd_docs(p)["metadata"]["name"] for p in posttrain_crds)


def test_kubectl_explain_shows_field_docs(posttrain_crds: list[Path], kubectl: Tool) -> None:
    for path in posttrain_crds:
        crd = _crd_docs(path)
        plural = crd["spec"]["names"]["plural"]
        spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        # The published OpenAPI follows the CRD by a moment.
        explained = wait_until(
            functools.partial(_explain, kubectl, f"{plural}.spec"),
            timeout=30,
            message=f"kubectl explain {plural}.spec",
        )
        words = " ".join(explained.split())
        assert " ".join(spec_schema["description"].split()[:6]) in words
        for field in spec_schema.get("required", []):
            assert f"{field}\t" in explained or f"{field} " in explained, f"{plural}.spec.{field} missing"


def _explain(kubectl: Tool, what: str) -> str | None:
    proc = kubectl("explain", what, check=False)
    return proc.stdout if proc.returncode == 0 and "FIELDS:" in proc.stdout else None


def _evoljob(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataset": {"uri": "file:///data/seed.jsonl"},
        "teachers": [{"name": "teacher", "endpoint": {"baseUrl": "http://teacher:8000/v1", "model": "m"}}],
    }
    base.update(spec)
    return {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "EvolJob",
        "metadata": {"name": "evol"},
        "spec": base,
    }


def _create(kubectl: Tool, namespace: str, obj: dict[str, Any], *extra: str) -> Any:
    return kubectl("create", "-n", namespace, "-f", "-", *extra, input=json.dumps(obj), check=False)


def test_valid_resource_is_accepted(posttrain_crds: list[Path], kubectl: Tool, namespace: str) -> None:
    proc = _create(kubectl, namespace, _evoljob(), "--dry-run=server", "-o", "json")
    assert proc.returncode == 0, proc.stderr


def test_schema_violation_is_rejected_with_field_path(
    posttrain_crds: list[Path], kubectl: Tool, namespace: str
) -> None:
    proc = _create(kubectl, namespace, _evoljob(timeoutSeconds="an hour"))
    assert proc.returncode != 0
    assert "spec.timeoutSeconds" in proc.stderr
    assert "must be of type integer" in proc.stderr


def test_cel_rule_is_rejected_with_field_path(
    posttrain_crds: list[Path], kubectl: Tool, namespace: str
) -> None:
    both = {"uri": "file:///data/seed.jsonl", "from": {"kind": "DataSlice", "name": "slice-1"}}
    proc = _create(kubectl, namespace, _evoljob(dataset=both))
    assert proc.returncode != 0
    assert "spec.dataset" in proc.stderr
    assert "exactly one of `uri` and `from` must be set" in proc.stderr
    neither: dict[str, Any] = {"format": "chat"}
    proc = _create(kubectl, namespace, _evoljob(dataset=neither))
    assert proc.returncode != 0
    assert "spec.dataset" in proc.stderr


def _rleif(roles: list[str], **rleif: Any) -> dict[str, Any]:
    return {
        "apiVersion": "posttrain.dev/v1alpha1",
        "kind": "TrainStage",
        "metadata": {"name": "rleif"},
        "spec": {
            "method": "rleif",
            "model": {"uri": "file:///models/policy"},
            "dataset": {"uri": "file:///data/prompts.jsonl"},
            "rewardModels": [{"role": role, "model": {"uri": f"file:///models/{role}"}} for role in roles],
            "train": {"rleif": rleif},
        },
    }


def test_rleif_rewards_that_cannot_move_the_advantages_are_rejected(
    posttrain_crds: list[Path], kubectl: Tool, namespace: str
) -> None:
    accepted = _create(kubectl, namespace, _rleif(["irm", "prm"]), "--dry-run=server", "-o", "json")
    assert accepted.returncode == 0, accepted.stderr
    rloo = _rleif(["irm", "prm"], algorithm="rloo", scaleRewards="group")
    assert _create(kubectl, namespace, rloo, "--dry-run=server", "-o", "json").returncode == 0
    for roles, settings, field in (
        (["irm"], {}, "spec.rewardModels"),
        (["irm", "prm"], {"combine": "sum"}, "spec.train.rleif.combine"),
        (["irm", "prm"], {"scaleRewards": "group"}, "spec.train.rleif.scaleRewards"),
    ):
        proc = _create(kubectl, namespace, _rleif(roles, **settings), "--dry-run=server")
        assert proc.returncode != 0 and field in proc.stderr, (settings, proc.stderr)


def test_restricted_namespace_enforces_pod_security(
    kube: client.ApiClient, restricted_namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="root"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="registry.invalid/x:1")]),
    )
    with pytest.raises(client.ApiException) as denied:
        core.create_namespaced_pod(restricted_namespace, pod)
    assert denied.value.status == 403
    assert "violates PodSecurity" in str(denied.value.body)
    spec_of(pod).security_context = client.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=1000, seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")
    )
    spec_of(pod).containers[0].security_context = client.V1SecurityContext(
        allow_privilege_escalation=False, capabilities=client.V1Capabilities(drop=["ALL"])
    )
    core.create_namespaced_pod(restricted_namespace, pod)


def test_a_printer_column_reads_a_dotted_metric_through_its_escaped_path(kubectl: Tool) -> None:
    """`Metric.json_path()` escapes the dots of a metric key; the apiserver accepts and prints it."""
    column = {"name": "Out", "type": "integer", "jsonPath": Data.ROWS_OUT.json_path()}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "metricprobes.example.dev"},
        "spec": {
            "group": "example.dev",
            "scope": "Namespaced",
            "names": {"plural": "metricprobes", "singular": "metricprobe", "kind": "MetricProbe"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                    "additionalPrinterColumns": [column],
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(crd))
    kubectl("wait", "--for=condition=Established", "crd/metricprobes.example.dev", "--timeout=30s")
    probe = {
        "apiVersion": "example.dev/v1",
        "kind": "MetricProbe",
        "metadata": {"name": "p", "namespace": "default"},
    }
    wait_until(
        lambda: kubectl("apply", "-f", "-", input=json.dumps(probe), check=False).returncode == 0, timeout=30
    )
    patch = {"status": {"metrics": {str(Data.ROWS_OUT): 24}}}
    kubectl(
        "patch",
        "metricprobe",
        "p",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )

    table = kubectl("get", "metricprobes", "-n", "default").stdout.split()

    assert table[:2] == ["NAME", "OUT"] and table[3] == "24"
    kubectl("delete", "crd", "metricprobes.example.dev")

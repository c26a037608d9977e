"""The Helm chart, rendered with the Helm SDK and checked against Kubernetes' own schemas.

Every scenario (the defaults and each ``charts/voxmesh/ci/*.yaml``) is rendered, linted,
validated with kubernetes-validate (strict) against Kubernetes 1.29 and 1.33, and checked for
what the chart promises: hardened containers, gRPC probes, liveness that does not depend on
NATS, a worker grace period that covers the drain, independent scaling, no secrets in the
output, ordered provider chains with their keys, the LiveKit edge, and a NATS config that the
real nats-server accepts.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import golden
import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from crd_schema import validate as validate_against_crd

from voxmesh.cli.stack import nats_server_binary
from voxmesh_operator.__main__ import crd_text

ROOT = Path(__file__).parents[2]
CHART = golden.CHART
SCENARIOS = golden.scenarios()
KUBE_VERSIONS = ("1.29", "1.33")
GRPC_SERVICES = {"stt": 50051, "llm": 50052, "tts": 50053, "guardrails": 50054,
                 "subagents": 50055}
PROVIDER_SERVICES = ("stt", "llm", "tts")
LIVEKIT = "voxmesh-livekit"

Manifest = dict[str, Any]


@pytest.fixture(scope="module", params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name = request.param
    return name, golden.manifests(SCENARIOS[name])


def _pod_specs(objects: list[Manifest]) -> list[tuple[str, Manifest]]:
    """(owner name, pod spec) of every workload, the AgentPool's worker template included."""
    specs = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "AgentPool":
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return specs


def _by_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(objects: list[Manifest], component: str) -> Manifest:
    deployment = _by_kind(objects, "Deployment")[f"voxmesh-{component}"]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _env(container: Manifest) -> dict[str, Manifest]:
    """Env var name -> its entry (``value`` or ``valueFrom``)."""
    return {e["name"]: e for e in container.get("env", [])}


def _livekit_enabled(name: str) -> bool:
    return bool((SCENARIOS[name].get("livekit") or {}).get("enabled"))


def _render_error(values: dict) -> str:
    """The message of a render that must fail."""
    with pytest.raises(helm.HelmError) as error:
        golden.render(values)
    return str(error.value)


LIVEKIT_ON = {"livekit": {"enabled": True, "url": "wss://voxmesh.livekit.cloud",
                          "credentials": {"existingSecret": "voxmesh-livekit"}}}


def test_lint_is_strict_and_clean() -> None:
    for values in SCENARIOS.values():
        for version in KUBE_VERSIONS:
            report = helm.lint(str(CHART), values, strict=True, kube_version=f"{version}.0")
            assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_manifest_validates_strictly(scenario: tuple[str, list[Manifest]],
                                           version: str) -> None:
    crd = yaml.safe_load(crd_text())
    for obj in scenario[1]:
        if obj["kind"] == "AgentPool":
            assert validate_against_crd(crd, obj) == [], obj["metadata"]["name"]
            continue
        # Raises ValidationError naming the field on a schema violation or an unknown field.
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_container_is_hardened(scenario: tuple[str, list[Manifest]]) -> None:
    specs = _pod_specs(scenario[1])
    assert len(specs) >= 8
    # The LiveKit edge's pod is among those checked wherever a scenario runs it.
    assert (LIVEKIT in dict(specs)) is _livekit_enabled(scenario[0])
    for owner, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, owner
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, owner
            assert context["readOnlyRootFilesystem"] is True, owner
            assert context["allowPrivilegeEscalation"] is False, owner
            assert context["capabilities"] == {"drop": ["ALL"]}, owner
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, owner
            assert "resources" in container, owner


def test_grpc_services_have_grpc_probes_and_liveness_without_nats(
        scenario: tuple[str, list[Manifest]]) -> None:
    objects = scenario[1]
    for component, port in GRPC_SERVICES.items():
        container = _container(objects, component)
        assert container["readinessProbe"]["grpc"] == {"port": port}, component
        # The liveness service is SERVING before models load or NATS connects (see
        # tests/unit/test_grpc_liveness.py); the overall status is readiness only.
        assert container["livenessProbe"]["grpc"] == {"port": port,
                                                      "service": "voxmesh.liveness"}
    edge = _container(objects, "edge")
    assert edge["livenessProbe"]["httpGet"]["path"] == "/livez"  # /healthz checks NATS


def test_worker_grace_period_covers_the_drain(scenario: tuple[str, list[Manifest]]) -> None:
    values = golden.scenarios()[scenario[0]]
    drain = (values.get("workers") or {}).get("drainTimeoutSeconds", 600)
    workers = [spec for owner, spec in _pod_specs(scenario[1]) if owner == "voxmesh-worker"]
    assert len(workers) == 1
    assert workers[0]["terminationGracePeriodSeconds"] >= drain + 30
    env = {e["name"]: e.get("value") for e in workers[0]["containers"][0]["env"]}
    assert env["VOXMESH_WORKER_DRAIN_TIMEOUT_S"] == str(drain)
    for pool in _by_kind(scenario[1], "AgentPool").values():
        assert pool["spec"]["drainTimeoutSeconds"] == drain


def test_scaling_one_service_changes_no_other_manifest() -> None:
    base = {(o["kind"], o["metadata"]["name"]): o for o in golden.manifests({})}
    for component in GRPC_SERVICES:
        scaled = {(o["kind"], o["metadata"]["name"]): o for o in golden.manifests(
            {"services": {component: {"replicas": 5}}})}
        changed = {key for key in base if base[key] != scaled.get(key)}
        assert changed == {("Deployment", f"voxmesh-{component}")}, component
        assert scaled[("Deployment", f"voxmesh-{component}")]["spec"]["replicas"] == 5
    autoscaled = {(o["kind"], o["metadata"]["name"]) for o in golden.manifests(
        {"services": {"llm": {"autoscaling": {"enabled": True}}}})}
    assert autoscaled - set(base) == {("HorizontalPodAutoscaler", "voxmesh-llm")}


@pytest.mark.parametrize("name", ["cloud-providers", "livekit-cloud"])
def test_no_secret_values_in_the_output(name: str) -> None:
    values = SCENARIOS[name]
    objects = golden.manifests(values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    secretish = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET)$")
    keys = {}
    for _, spec in _pod_specs(objects):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if secretish.search(env["name"]):
                    assert "value" not in env, env
                    keys[env["name"]] = env["valueFrom"]["secretKeyRef"]
    expected = {}
    for component in PROVIDER_SERVICES:
        key = values["services"][component]["apiKey"]
        expected[f"VOXMESH_{component.upper()}_API_KEY"] = {"name": key["existingSecret"],
                                                            "key": key["key"]}
    if _livekit_enabled(name):
        credentials = values["livekit"]["credentials"]
        expected["VOXMESH_LIVEKIT_API_KEY"] = {"name": credentials["existingSecret"],
                                               "key": "api-key"}
        expected["VOXMESH_LIVEKIT_API_SECRET"] = {"name": credentials["existingSecret"],
                                                  "key": "api-secret"}
    assert keys == expected


def test_a_cloud_provider_without_a_key_fails_with_the_key_to_set() -> None:
    values = {"services": {"tts": {"provider": {"name": "cartesia"}}}}
    with pytest.raises(helm.HelmError, match=r"services\.tts\.apiKey\.existingSecret: "
                                             r"provider cartesia needs an API key"):
        golden.render(values)


def test_the_provider_variable_is_the_ordered_chain(
        scenario: tuple[str, list[Manifest]]) -> None:
    values = SCENARIOS[scenario[0]]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in PROVIDER_SERVICES:
        provider = ((values.get("services") or {}).get(component) or {}).get("provider") or {}
        chain = [provider.get("name", defaults["services"][component]["provider"]["name"]),
                 *provider.get("fallback", [])]
        env = _env(_container(scenario[1], component))
        assert env[f"VOXMESH_{component.upper()}_PROVIDER"]["value"] == ",".join(chain)
    if scenario[0] == "livekit-cloud":  # a scenario with fallbacks, so the join is exercised
        assert _env(_container(scenario[1], "stt"))["VOXMESH_STT_PROVIDER"]["value"] == (
            "deepgram,whisper-local")


def test_a_cloud_fallback_needs_a_key_and_the_internet() -> None:
    local_first = {"services": {"stt": {"provider": {"name": "whisper-local",
                                                     "fallback": ["deepgram"]}}}}
    assert re.search(r"services\.stt\.apiKey\.existingSecret: provider deepgram needs an API "
                     r"key from an existing Secret", _render_error(local_first))

    local_first["services"]["stt"]["apiKey"] = {"existingSecret": "voxmesh-deepgram"}
    objects = golden.manifests(local_first)
    env = _env(_container(objects, "stt"))
    assert env["VOXMESH_STT_PROVIDER"]["value"] == "whisper-local,deepgram"
    assert env["VOXMESH_STT_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "voxmesh-deepgram", "key": "api-key"}
    egress = _by_kind(objects, "NetworkPolicy")["voxmesh-stt"]["spec"]["egress"]
    assert {"protocol": "TCP", "port": 443} in [p for rule in egress
                                                for p in rule.get("ports", [])]


def test_a_chain_of_local_providers_needs_no_key_and_no_internet() -> None:
    objects = golden.manifests({"services": {"stt": {"provider": {
        "name": "whisper-local", "fallback": ["latency-model"]}}}})
    env = _env(_container(objects, "stt"))
    assert env["VOXMESH_STT_PROVIDER"]["value"] == "whisper-local,latency-model"
    assert "VOXMESH_STT_API_KEY" not in env
    egress = _by_kind(objects, "NetworkPolicy")["voxmesh-stt"]["spec"]["egress"]
    assert not [rule for rule in egress if "ipBlock" in str(rule)]


def test_a_fallback_that_repeats_the_primary_fails() -> None:
    values = {"services": {"llm": {"provider": {"name": "openai", "fallback": ["openai"]},
                                   "apiKey": {"existingSecret": "voxmesh-openai"}}}}
    assert ("services.llm.provider.fallback: openai is already services.llm.provider.name; "
            "a fallback must be another provider") in _render_error(values)


def test_the_livekit_edge_is_off_by_default() -> None:
    for name in SCENARIOS:
        if _livekit_enabled(name):
            continue
        objects = golden.manifests(SCENARIOS[name])
        assert not [o for o in objects if "livekit" in o["metadata"]["name"]
                    or o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                    == "livekit"], name


def test_the_livekit_edge_deployment() -> None:
    values = SCENARIOS["livekit-cloud"]["livekit"]
    objects = golden.manifests(SCENARIOS["livekit-cloud"])
    named = {(o["kind"], o["metadata"]["name"]) for o in objects if o["metadata"]["name"]
             == LIVEKIT}
    assert named == {("ServiceAccount", LIVEKIT), ("Deployment", LIVEKIT),
                     ("PodDisruptionBudget", LIVEKIT), ("NetworkPolicy", LIVEKIT)}
    assert _by_kind(objects, "ServiceAccount")[LIVEKIT]["automountServiceAccountToken"] is False
    deployment = _by_kind(objects, "Deployment")[LIVEKIT]
    assert deployment["spec"]["replicas"] == values["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    # LiveKit's drain and the calls still running must finish before the kill.
    assert pod["terminationGracePeriodSeconds"] == values["drainTimeoutSeconds"] + 30
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["image"] == _container(objects, "edge")["image"]
    assert container["command"] == ["python", "-m", "voxmesh_edge.livekit"]
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "health"}, probe
    env = _env(container)
    secret = values["credentials"]["existingSecret"]
    assert env["VOXMESH_LIVEKIT_API_KEY"] == {"name": "VOXMESH_LIVEKIT_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": secret, "key": "api-key"}}}
    assert env["VOXMESH_LIVEKIT_API_SECRET"] == {"name": "VOXMESH_LIVEKIT_API_SECRET",
                                                 "valueFrom": {"secretKeyRef": {
                                                     "name": secret, "key": "api-secret"}}}
    plain = {name: entry["value"] for name, entry in env.items() if "value" in entry}
    assert plain["VOXMESH_LIVEKIT_URL"] == values["url"]
    assert plain["VOXMESH_LIVEKIT_AGENT_NAME"] == values["agentName"]
    assert plain["VOXMESH_LIVEKIT_MAX_CALLS"] == str(values["maxCalls"])
    assert plain["VOXMESH_LIVEKIT_DRAIN_TIMEOUT_S"] == str(values["drainTimeoutSeconds"])
    assert plain["VOXMESH_LIVEKIT_HEALTH_PORT"] == "8081"
    assert plain["VOXMESH_NATS_URL"] == _env(_container(objects, "edge"))[
        "VOXMESH_NATS_URL"]["value"]
    assert plain["VOXMESH_METRICS_PORT"] == "9464"
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"]
    pdb = _by_kind(objects, "PodDisruptionBudget")[LIVEKIT]
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_the_livekit_edge_network_policy() -> None:
    values = copy.deepcopy(LIVEKIT_ON)
    values["livekit"]["url"] = "wss://livekit.example.com:8443/rtc"  # self-hosted, own port
    policy = _by_kind(golden.manifests(values), "NetworkPolicy")[LIVEKIT]["spec"]
    # Only scrapers come in (metrics and the health port); LiveKit is dialled out to.
    assert [rule["ports"] for rule in policy["ingress"]] == [
        [{"protocol": "TCP", "port": 9464}, {"protocol": "TCP", "port": 8081}]]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert policy["ingress"][0]["from"] == defaults["networkPolicy"]["metricsFrom"]
    egress = policy["egress"]
    signalling = [rule for rule in egress if "ipBlock" in str(rule.get("to"))]
    assert signalling == [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [
        {"protocol": "TCP", "port": port} for port in (443, 7880, 7881, 8443)]}]
    assert {"ports": [{"protocol": "UDP", "port": 1024, "endPort": 65535}]} in egress
    reached = {rule["to"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
               for rule in egress if "podSelector" in str(rule.get("to"))}
    assert reached == {"nats", "otel-collector", None}  # None: kube-dns


@pytest.mark.parametrize(("livekit", "message"), [
    ({"credentials": {"existingSecret": ""}}, "livekit.credentials.existingSecret: the LiveKit "
                                              "API key and secret come from an existing Secret"),
    ({"url": ""}, "livekit.url: the LiveKit server URL (wss://...) is required"),
])
def test_the_livekit_edge_without_its_settings_fails_naming_them(livekit: dict,
                                                                 message: str) -> None:
    values = copy.deepcopy(LIVEKIT_ON)
    values["livekit"].update(livekit)
    assert message in _render_error(values)


@pytest.mark.parametrize(("values", "message"), [
    ({"livekit": {"apiKey": "APIxxxx"}},
     "at '/livekit': additional properties 'apiKey' not allowed"),
    ({"livekit": {"credentials": {"apiSecret": "xxxx"}}},
     "at '/livekit/credentials': additional properties 'apiSecret' not allowed"),
    ({"livekit": {"url": "https://voxmesh.livekit.cloud"}}, "at '/livekit/url'"),
    ({"services": {"stt": {"provider": {"name": "deepgram", "fallback": ["piper-local"]}}}},
     "at '/services/stt/provider/fallback/0': value must be one of 'whisper-local', "
     "'deepgram', 'latency-model'"),
    ({"services": {"tts": {"provider": {"fallback": ["cartesia", "cartesia"]}}}},
     "at '/services/tts/provider/fallback': items at 0 and 1 are equal"),
    ({"services": {"stt": {"replicas": "two"}}},
     "at '/services/stt/replicas': got string, want integer"),
    ({"services": {"stt": {"replica": 2}}},
     "at '/services/stt': additional properties 'replica' not allowed"),
    ({"workers": {"pool": {"buffer": "150%"}}}, "at '/workers/pool/buffer'"),
    ({"services": {"llm": {"provider": {"name": "bard"}}}},
     "at '/services/llm/provider/name': value must be one of 'llama-local', 'openai', "
     "'latency-model'"),
    ({"nats": {"externalUrl": "http://nats"}}, "at '/nats/externalUrl'"),
    ({"edge": {"service": {"type": "Ingress"}}}, "at '/edge/service/type'"),
])
def test_the_schema_rejects_bad_values_naming_the_key(values: dict, message: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(values)
    assert message in str(error.value)


def test_the_schema_covers_every_value_in_values_yaml() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict, path: str) -> None:
        if not isinstance(value, dict) or node.get("additionalProperties") not in (False, None):
            return
        for key, item in value.items():
            assert key in node.get("properties", {}), f"{path}.{key} is not in the schema"
            walk(item, node["properties"][key], f"{path}.{key}")

    walk(defaults, schema, "")

    def described(node: dict, path: str) -> None:
        for key, item in node.get("properties", {}).items():
            assert item.get("description"), f"{path}.{key} has no description"
            described(item, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            described(node["items"], f"{path}[]")

    described(schema, "")
    subprocess.run(["python", str(ROOT / "charts" / "build_values_schema.py"), "--check"],
                   check=True, env={**os.environ, "PATH": os.path.dirname(
                       sys.executable) + os.pathsep + os.environ.get("PATH", "")})


def test_the_crd_is_the_operators_and_a_valid_definition() -> None:
    shipped = (CHART / "crds" / "agentpools.voxmesh.dev.yaml").read_text()
    assert shipped == crd_text(), "run `make chart-sync`: the chart's CRD differs"
    crd = yaml.safe_load(shipped)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)
    sample = _by_kind(golden.manifests({}), "AgentPool")["voxmesh-worker"]
    assert validate_against_crd(crd, sample) == []
    broken = copy.deepcopy(sample)
    broken["spec"]["minReplicas"] = 50
    assert validate_against_crd(crd, broken) == [
        "spec: Invalid value: minReplicas must not exceed maxReplicas"]


def test_nats_config_passes_nats_server_check(tmp_path: Path) -> None:
    for name in ("default", "minimal"):
        config = _by_kind(golden.manifests(SCENARIOS[name]), "ConfigMap")["voxmesh-nats"]
        text = config["data"]["nats.conf"]
        path = tmp_path / f"{name}.conf"
        path.write_text(text.replace("/data", str(tmp_path / "data")))
        result = subprocess.run([nats_server_binary(), "-t", "-c", str(path)],
                                env={**os.environ, "POD_NAME": "voxmesh-nats-0"},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr + result.stdout
        assert ("routes" in text) is (name == "default")  # one server: no cluster block
    # The check is real: a bad size is refused.
    path.write_text(text.replace("max_file_store: 1", "max_file_store: lots"))
    result = subprocess.run([nats_server_binary(), "-t", "-c", str(path)],
                            env={**os.environ, "POD_NAME": "voxmesh-nats-0"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def test_images_match_the_dockerfiles() -> None:
    built = {}
    for dockerfile in [*ROOT.glob("services/*/Dockerfile"), ROOT / "operator" / "Dockerfile"]:
        tag = re.search(r"-t (ghcr\.io/voxmesh/\S+)", dockerfile.read_text())
        assert tag, f"{dockerfile} names no image"
        built[tag.group(1)] = dockerfile
    images = {c["image"] for _, spec in _pod_specs(golden.manifests({}))
              for c in spec["containers"] if c["image"].startswith("ghcr.io/voxmesh/")}
    assert images == set(built)


def test_chart_copies_match_their_sources() -> None:
    for copy_dir, source_dir, pattern in [
        (CHART / "dashboards", ROOT / "infra" / "grafana" / "dashboards", "*.json"),
        (CHART / "files" / "agents", ROOT / "services" / "worker" / "agents", "*.yaml"),
    ]:
        copies = {p.name: p.read_text() for p in copy_dir.glob(pattern)}
        sources = {p.name: p.read_text() for p in source_dir.glob(pattern)}
        assert copies == sources, f"run `make chart-sync`: {copy_dir} differs from {source_dir}"


def test_rendered_output_matches_the_golden_files() -> None:
    for name, values in SCENARIOS.items():
        path = golden.GOLDEN / f"{name}.yaml"
        assert path.read_text() == golden.golden_text(values), (
            f"{path.name} drifted: review the diff of `make chart-golden`")


@pytest.mark.parametrize("path", ["infra/values-production.yaml", "infra/kind/values-kind.yaml"])
def test_the_infra_values_files_install_cleanly(path: str) -> None:
    values = yaml.safe_load((ROOT / path).read_text())
    objects = golden.manifests(values)  # validates against values.schema.json first
    for obj in objects:
        if obj["kind"] != "AgentPool":
            kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)
    assert {o["kind"] for o in objects} >= {"AgentPool", "Deployment", "StatefulSet"}


def _merged(base: dict, overlay: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_the_commented_production_example_installs_cleanly() -> None:
    text = (ROOT / "infra" / "values-production.yaml").read_text()
    # The example is the commented YAML at the end: top-level keys and their indented lines.
    example = yaml.safe_load("\n".join(
        line[2:] for line in text[text.index("\n# services:"):].splitlines()
        if re.match(r"# (services|livekit):|#   ", line) and not re.search(r"kubectl|--from",
                                                                            line)))
    assert set(example) == {"services", "livekit"}
    objects = golden.manifests(_merged(yaml.safe_load(text), example))
    for obj in objects:
        if obj["kind"] != "AgentPool":
            kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)
    assert LIVEKIT in _by_kind(objects, "Deployment")
    assert _env(_container(objects, "tts"))["VOXMESH_TTS_PROVIDER"]["value"] == (
        "cartesia,piper-local")

"""Writes ``charts/voxmesh/values.schema.json`` (``make chart-schema``).

The schema is built here rather than by hand because the six services share one shape: it is
defined once, below. Every object is closed (``additionalProperties: false``), so a misspelt
or unknown key fails ``helm install`` with a message naming it, as does a wrong type.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent / "voxmesh" / "values.schema.json"

Schema = dict[str, Any]


def obj(properties: dict[str, Schema], description: str = "", required: tuple[str, ...] = (),
        ) -> Schema:
    """A closed object: only the listed keys are allowed."""
    schema: Schema = {"type": "object", "additionalProperties": False,
                      "properties": properties}
    if description:
        schema["description"] = description
    if required:
        schema["required"] = list(required)
    return schema


def free_map(description: str, values: Schema | None = None) -> Schema:
    """An object whose keys are the user's (labels, node selectors, settings)."""
    return {"type": "object", "description": description,
            "additionalProperties": values or {"type": "string"}}


def integer(description: str, minimum: int = 0, maximum: int | None = None) -> Schema:
    """An integer in a range."""
    schema: Schema = {"type": "integer", "minimum": minimum, "description": description}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def string(description: str, **extra: Any) -> Schema:
    """A string, with any further keywords (enum, pattern, minLength)."""
    return {"type": "string", "description": description, **extra}


BOOLEAN = {"type": "boolean"}
QUANTITY = {"anyOf": [{"type": "string", "pattern": r"^[0-9.]+([eE][0-9]+|[KMGTPE]i?|m)?$"},
                      {"type": "number", "minimum": 0}]}
RESOURCES = obj({
    "requests": free_map("Requested cpu, memory, ...", QUANTITY),
    "limits": free_map("Limits: cpu, memory, ...", QUANTITY),
}, "Container resources (the GPU request is added from `gpu`)")
SCHEDULING = {
    "nodeSelector": free_map("Node labels the pods must have"),
    "tolerations": {"type": "array", "items": {"type": "object"},
                    "description": "Pod tolerations (Kubernetes form)"},
    "affinity": {"type": "object", "description": "Pod affinity (Kubernetes form)"},
}
AUTOSCALING = obj({
    "enabled": {**BOOLEAN, "description": "An HPA instead of fixed replicas"},
    "minReplicas": integer("HPA floor", 1),
    "maxReplicas": integer("HPA ceiling", 1),
    "targetCPUUtilizationPercentage": integer("Average CPU the HPA aims for", 1, 100),
}, "A HorizontalPodAutoscaler on CPU instead of fixed replicas")
GPU = obj({
    "enabled": {**BOOLEAN, "description": "Request GPUs for this service"},
    "count": integer("GPUs per pod", 1),
    "resourceName": string("Extended resource name", minLength=1),
}, "GPUs requested by each pod")
PDB = obj({"maxUnavailable": integer("Pods a voluntary disruption may take at once", 0)},
          "The PodDisruptionBudget")
API_KEY = obj({
    "existingSecret": string("Secret holding the provider's API key (never the key itself)"),
    "key": string("Key in that Secret", minLength=1),
}, "API key of a cloud provider, read from an existing Secret")
INT_OR_PERCENT = {"anyOf": [{"type": "integer", "minimum": 0},
                            {"type": "string", "pattern": "^[0-9]{1,2}%$"}]}

# latency-model: synthetic delays for capacity tests of the platform (never quality figures).
PROVIDERS = {
    "stt": ["whisper-local", "deepgram", "latency-model"],
    "llm": ["llama-local", "openai", "latency-model"],
    "tts": ["piper-local", "cartesia", "latency-model"],
}


def service(name: str, extra: dict[str, Schema] | None = None) -> Schema:
    """The shape every gRPC service shares, plus its own keys."""
    properties: dict[str, Schema] = {
        "enabled": {**BOOLEAN, "description": f"Run the {name} service"},
        "replicas": integer("Pods, when autoscaling is off", 0),
        "autoscaling": AUTOSCALING,
        "resources": RESOURCES,
        "gpu": GPU,
        **SCHEDULING,
        "podDisruptionBudget": PDB,
        "drainGraceSeconds": integer("Seconds in-flight streams get after SIGTERM", 0, 3600),
    }
    if name in PROVIDERS:
        properties["provider"] = obj({
            "name": string("Which implementation serves it", enum=PROVIDERS[name]),
            "fallback": {
                "type": "array", "uniqueItems": True,
                "items": string("A provider tried after the ones before it",
                                enum=PROVIDERS[name]),
                "description": "Providers tried in order when the one before fails before "
                               "its first result; never the primary again (a local one "
                               "loads its model in the same pod)"},
            "settings": free_map(f"Extra VOXMESH_{name.upper()}_* settings (key -> value)",
                                 {"type": ["string", "number", "boolean"]}),
        }, f"The {name} provider chain: name, then fallback", required=("name",))
        properties["apiKey"] = API_KEY
    properties.update(extra or {})
    return obj(properties, f"The {name} service")


def image(description: str) -> Schema:
    """A third-party image: repository and tag."""
    return obj({"repository": string("Image repository", minLength=1),
                "tag": string("Image tag", minLength=1)}, description)


def values_schema() -> Schema:
    """The whole schema."""
    peers = {"type": "array", "items": {"type": "object"}}
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "Voxmesh chart values",
        **obj({
            "global": obj({
                "image": obj({
                    "registry": string("Registry and path of the Voxmesh images", minLength=1),
                    "tag": string("Tag of every Voxmesh image; empty: the chart's appVersion"),
                    "pullPolicy": string("Image pull policy",
                                         enum=["Always", "IfNotPresent", "Never"]),
                }, "The Voxmesh images"),
                "imagePullSecrets": {"type": "array", "items": obj(
                    {"name": string("Secret name", minLength=1)}),
                    "description": "Pull secrets of every pod"},
                "logLevel": string("Log level", enum=["debug", "info", "warning", "error"]),
                "commonLabels": free_map("Extra labels on every object"),
            }, "Settings every component shares"),
            "networkPolicy": obj({
                "enabled": {**BOOLEAN, "description": "Deny by default, allow per component"},
                "metricsFrom": {**peers, "description": "Peers allowed to scrape /metrics"},
                "edgeFrom": {**peers, "description": "Peers allowed to call the edge"},
                "externalEgressCidrs": {"type": "array", "items": {"type": "string"},
                                        "description": "CIDRs reachable on 443"},
                "apiServer": obj({
                    "cidrs": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                              "description": "CIDRs of the API server"},
                    "ports": {"type": "array", "items": integer("port", 1, 65535),
                              "minItems": 1, "description": "Ports of the API server"},
                }, "Where the operator reaches the Kubernetes API"),
            }, "NetworkPolicies: deny by default, then what each component needs"),
            "nats": obj({
                "enabled": {**BOOLEAN, "description": "Run NATS in the chart"},
                "externalUrl": string("nats:// URL when NATS is external",
                                      pattern="^(nats://[^ ]+)?$"),
                "replicas": integer("NATS servers (3 for a JetStream quorum)", 1, 9),
                "image": image("NATS image"),
                "jetstream": obj({
                    "maxMemoryStore": string("nats-server size, e.g. 256M",
                                             pattern="^[0-9]+[KMGT]?$"),
                    "maxFileStore": string("nats-server size, e.g. 10G",
                                           pattern="^[0-9]+[KMGT]?$"),
                    "storage": obj({"size": string("PVC size", minLength=1),
                                    "storageClassName": string("Storage class")},
                                   "Each server's JetStream volume"),
                }, "JetStream limits and storage"),
                "resources": RESOURCES,
                **SCHEDULING,
            }, "NATS with JetStream, in the chart or external"),
            "observability": obj({
                "enabled": {**BOOLEAN, "description": "OTel Collector and dashboards"},
                "traceTranscripts": {**BOOLEAN,
                                     "description": "PII-redacted transcripts on turn spans"},
                "metricsPort": integer("Port of every /metrics", 1024, 65535),
                "collector": obj({
                    "replicas": integer("Collector pods", 1),
                    "image": image("Collector image"),
                    "tempoEndpoint": string("Tempo OTLP gRPC host:port",
                                            pattern="^[^:/ ]+:[0-9]+$"),
                    "resources": RESOURCES,
                }, "The OpenTelemetry Collector"),
                "dashboards": obj({
                    "enabled": {**BOOLEAN, "description": "Dashboard ConfigMaps"},
                    "labels": free_map("Labels the Grafana sidecar selects"),
                    "namespace": string("Namespace of the dashboard ConfigMaps"),
                }, "Grafana dashboards as ConfigMaps"),
                "datasources": obj({
                    "enabled": {**BOOLEAN, "description": "Datasource ConfigMaps"},
                    "labels": free_map("Labels the Grafana sidecar selects"),
                    "prometheusUrl": string("Prometheus URL", pattern="^https?://"),
                    "tempoUrl": string("Tempo query URL", pattern="^https?://"),
                }, "Grafana datasources with the uids the dashboards use"),
            }, "Traces, metrics and dashboards"),
            "services": obj({
                "stt": service("stt"),
                "llm": service("llm"),
                "tts": service("tts"),
                "guardrails": service("guardrails", {
                    "audit": {**BOOLEAN, "description": "LLM judge over finished turns"}}),
                "subagents": service("subagents", {
                    "knowledgeBases": free_map("Knowledge base name -> ConfigMap of documents",
                                               {"type": "string", "minLength": 1})}),
            }, "The gRPC services, each scaled and placed on its own"),
            "edge": obj({
                "enabled": {**BOOLEAN, "description": "Run the WebRTC edge"},
                "replicas": integer("Pods, when autoscaling is off", 0),
                "autoscaling": AUTOSCALING,
                "resources": RESOURCES,
                **SCHEDULING,
                "podDisruptionBudget": PDB,
                "drainGraceSeconds": integer("Seconds live calls get after SIGTERM", 0, 3600),
                "service": obj({
                    "type": string("Service type",
                                   enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                    "port": integer("Service port", 1, 65535),
                }, "The edge's Service"),
                "maxCalls": integer("Concurrent calls per edge pod", 1),
            }, "The WebRTC edge (aiortc) and its browser page"),
            "livekit": obj({
                "enabled": {**BOOLEAN, "description": "Run the LiveKit edge"},
                "url": string("LiveKit server URL (wss://...); required when enabled",
                              pattern="^(wss?://[^ ]+)?$"),
                "agentName": string("Agent name the edge registers under (explicit dispatch)",
                                    pattern="^[A-Za-z0-9_.-]+$", maxLength=128),
                "maxCalls": integer("Concurrent calls per LiveKit edge pod", 1, 10000),
                "drainTimeoutSeconds": integer(
                    "How long calls may run after SIGTERM; pods get 30 s more", 1, 86400),
                "replicas": integer("LiveKit edge pods", 0),
                "resources": RESOURCES,
                **SCHEDULING,
                "podDisruptionBudget": PDB,
                "credentials": obj({
                    "existingSecret": string("Secret holding the LiveKit API key and secret "
                                             "(required when enabled)"),
                    "apiKeyKey": string("Key of the API key in that Secret", minLength=1),
                    "apiSecretKey": string("Key of the API secret in that Secret",
                                           minLength=1),
                }, "The LiveKit project's key pair, only from an existing Secret"),
            }, "The LiveKit edge: carries the calls LiveKit dispatches to Voxmesh workers"),
            "workers": obj({
                "agent": string("The agent the workers run (a key of agents)",
                                pattern="^[A-Za-z0-9_-]+$"),
                "agents": free_map("Agent files: name -> YAML text"),
                "maxSessionsPerWorker": integer("Calls per worker", 1, 1000),
                "drainTimeoutSeconds": integer("How long draining calls may run", 0, 86400),
                "pool": obj({
                    "minReplicas": integer("Workers kept with no calls", 0),
                    "maxReplicas": integer("Workers never exceeded", 1),
                    "buffer": {**INT_OR_PERCENT,
                               "description": "Idle warm workers: a count or e.g. 20%"},
                    "scaleDownDelaySeconds": integer("Surplus kept this long", 0, 3600),
                    "maxSurge": {"anyOf": [{"type": "integer", "minimum": 0},
                                           {"type": "string", "pattern": "^[0-9]{1,3}%$"}],
                                 "description": "New workers a rollout may add at once"},
                }, "The AgentPool the operator keeps warm"),
                "replicas": integer("Workers when the operator is off", 0),
                "resources": RESOURCES,
                **SCHEDULING,
            }, "Agent workers: one call loop per session"),
            "operator": obj({
                "enabled": {**BOOLEAN, "description": "Warm pools; off: a worker Deployment"},
                "reconcileIntervalSeconds": {"type": "number", "exclusiveMinimum": 0,
                                             "maximum": 60,
                                             "description": "Seconds between reconciles"},
                "resources": RESOURCES,
                **SCHEDULING,
            }, "The operator that keeps the worker pool warm"),
        }),
    }


def main() -> None:
    """Writes the schema, or with ``--check`` fails if the file is out of date."""
    text = json.dumps(values_schema(), indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        if SCHEMA_PATH.read_text() != text:
            raise SystemExit(f"{SCHEMA_PATH} is out of date: run `make chart-schema`")
        return
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()

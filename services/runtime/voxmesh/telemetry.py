"""OpenTelemetry tracing shared by every Voxmesh process.

One trace per conversation turn: the worker starts a ``turn`` span when the caller starts
speaking, and every process the turn touches adds its spans to that trace. The context travels

* in gRPC metadata for per-turn RPCs (LLM ``Generate``, TTS ``Synthesize``);
* inside messages for long-lived streams that serve many turns (STT ``Finalize.trace_context``);
* in NATS message headers (agent audio to the edge).

Exporters are configured by the standard ``OTEL_*`` variables: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) sends OTLP/gRPC to a collector.
``VOXMESH_TRACE_FILE`` appends spans as JSON lines to a local file (``voxmesh up`` sets it;
``voxmesh trace`` reads it). With neither, tracing stays the OpenTelemetry no-op.
Span names and attributes: ``docs/tracing.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Tracer

log = logging.getLogger("voxmesh.telemetry")

_configured: set[str] = set()


def _otlp_endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "")


def tracing_enabled() -> bool:
    """True when an OTLP endpoint or a local trace file is configured in the environment."""
    return bool(_otlp_endpoint() or os.environ.get("VOXMESH_TRACE_FILE")) and (
        os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true")


def tracer(component: str) -> Tracer:
    """The tracer of a component. Safe at import time: it follows :func:`setup_tracing`."""
    return trace.get_tracer(f"voxmesh.{component}")


def setup_tracing(component: str) -> None:
    """Installs the tracer provider of a process (once), if an exporter is configured.

    Args:
        component: ``"worker"``, ``"stt"``, ``"llm"``, ``"tts"``, ``"edge"``…; the resource's
            ``service.name`` becomes ``voxmesh-<component>`` unless ``OTEL_SERVICE_NAME`` is set.
    """
    if tracing_enabled() and not _configured:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: I001
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({
            "service.name": os.environ.get("OTEL_SERVICE_NAME", f"voxmesh-{component}"),
            "service.namespace": "voxmesh",
        })
        provider = TracerProvider(resource=resource)
        if _otlp_endpoint():
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            log.info("tracing to %s", _otlp_endpoint())
        if trace_file := os.environ.get("VOXMESH_TRACE_FILE"):
            from voxmesh.tracefile import JsonLinesSpanExporter

            provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(trace_file)))
            log.info("tracing to %s", trace_file)
        trace.set_tracer_provider(provider)
        _configured.add(component)


def shutdown_tracing() -> None:
    """Flushes and stops the exporter (call before the process exits)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def context_carrier(span_context: otel_context.Context | None = None) -> dict[str, str]:
    """The W3C trace context of ``span_context`` (default: current) as a string map."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=span_context)
    return carrier


def grpc_metadata(span_context: otel_context.Context | None = None) -> list[tuple[str, str]]:
    """Trace context as gRPC metadata for an outgoing call."""
    return list(context_carrier(span_context).items())


def extract(carrier: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> otel_context.Context:
    """Context from a string map, gRPC invocation metadata or NATS headers."""
    if carrier is None:
        return otel_context.Context()
    if not isinstance(carrier, Mapping):
        carrier = {key: value for key, value in carrier if isinstance(value, str)}
    return propagate.extract(carrier)

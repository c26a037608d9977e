"""A minimal OTLP/gRPC trace endpoint for tests that run a service as its own process."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class SpanReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace endpoint: span names, attributes and events."""

    def __init__(self) -> None:
        """Starts with no spans."""
        self.spans: list[dict[str, Any]] = []

    async def Export(  # noqa: N802 - OTLP method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Keeps each exported span's name, attributes and events."""
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name,
                        "attributes": {a.key: a.value.string_value or a.value.int_value
                                       for a in span.attributes},
                        "events": [(e.name, {a.key: a.value.string_value for a in e.attributes})
                                   for e in span.events]})
        return trace_service_pb2.ExportTraceServiceResponse()

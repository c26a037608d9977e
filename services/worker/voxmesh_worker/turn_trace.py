"""The trace of one conversation turn, as the worker sees it.

Each turn is its own trace. Its root ``turn`` span starts when the caller starts speaking and
ends when the answer has been played out (or interrupted); it links to the call's ``session``
span. Stage spans hang under it: ``stt`` (each final asked for), ``endpointing``, ``llm``,
``tts`` and ``playout``. The model services continue the trace from the context the worker
sends them. Transcript text is never recorded. See docs/tracing.md.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from voxmesh.telemetry import context_carrier, grpc_metadata, tracer

_tracer = tracer("worker")


def _ns(wall_seconds: float) -> int:
    return int(wall_seconds * 1e9)


def start_session_span(session_id: str, agent: str, worker_id: str) -> Span:
    """The span covering a whole call; turns link to it."""
    return _tracer.start_span("session", attributes={
        "voxmesh.session.id": session_id, "voxmesh.agent": agent, "voxmesh.worker.id": worker_id})


class TurnTrace:
    """Spans of one turn."""

    def __init__(self, session_span: Span, session_id: str, speech_start_wall: float) -> None:
        """Starts the root ``turn`` span in a new trace, at the caller's speech onset."""
        self.span = _tracer.start_span(
            "turn",
            context=otel_context.Context(),  # a new trace per turn
            links=[Link(session_span.get_span_context())],
            start_time=_ns(speech_start_wall),
            attributes={"voxmesh.session.id": session_id},
        )
        self._context = trace.set_span_in_context(self.span)
        self._open: list[Span] = []

    @property
    def trace_id(self) -> str:
        """The turn's W3C trace id as 32 hex digits; "" when tracing is off."""
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else ""

    def child(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL,
              start_wall: float | None = None, **attributes: Any) -> Span:
        """Starts a stage span under the turn; :meth:`finish` ends any left open."""
        span = _tracer.start_span(
            name, context=self._context, kind=kind, attributes=attributes or None,
            start_time=_ns(start_wall) if start_wall is not None else None)
        self._open.append(span)
        return span

    def record(self, name: str, start_wall: float, end_wall: float, **attributes: Any) -> None:
        """Adds a stage span whose times are already known (e.g. endpointing)."""
        span = _tracer.start_span(name, context=self._context, start_time=_ns(start_wall),
                                  attributes=attributes or None)
        span.end(end_time=_ns(end_wall))

    @staticmethod
    def carrier(span: Span) -> dict[str, str]:
        """W3C trace context of ``span``, for a message field or NATS headers."""
        return context_carrier(trace.set_span_in_context(span))

    @staticmethod
    def metadata(span: Span) -> list[tuple[str, str]]:
        """W3C trace context of ``span`` as gRPC metadata."""
        return grpc_metadata(trace.set_span_in_context(span))

    def finish(self, *, turn_index: int, interrupted: bool, discarded: bool,
               voice_to_voice_ms: int, metrics: dict[str, int]) -> None:
        """Ends every stage span still open (e.g. tts after a barge-in), then the turn."""
        now = time.time_ns()
        for span in self._open:
            if span.is_recording():
                span.set_attribute("voxmesh.interrupted", interrupted)
                span.end(end_time=now)
        self.span.set_attributes({
            "voxmesh.turn.index": turn_index,
            "voxmesh.turn.interrupted": interrupted,
            "voxmesh.turn.discarded": discarded,
            "voxmesh.turn.voice_to_voice_ms": voice_to_voice_ms,
            **{f"voxmesh.turn.{name}": value for name, value in metrics.items()},
        })
        self.span.end(end_time=now)

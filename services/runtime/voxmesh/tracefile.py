"""Spans as JSON lines in a local file, for ``voxmesh up`` without a collector.

Every process of a local stack appends to the same file; each export batch is written under
an exclusive lock, one JSON object per line. ``voxmesh trace`` reads it back.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        """Creates the exporter; the file and its folder are created on first export."""
        self._path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Writes a batch of spans."""
        lines = [json.dumps(_to_dict(span)) + "\n" for span in spans]
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as out:
                fcntl.flock(out, fcntl.LOCK_EX)
                out.writelines(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def _to_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}" if context else "",
        "span_id": f"{context.span_id:016x}" if context else "",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else "",
        "name": span.name,
        "service": str(span.resource.attributes.get("service.name", "")),
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "attributes": dict(span.attributes or {}),
    }


@dataclass
class StoredSpan:
    """A span read back from a trace file."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        """Length of the span."""
        return (self.end_ns - self.start_ns) / 1e6


def read_spans(path: Path) -> Iterator[StoredSpan]:
    """Spans in a trace file; unreadable lines (a crash mid-write) are skipped."""
    with path.open(encoding="utf-8") as source:
        for line in source:
            try:
                yield StoredSpan(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue

import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import set_span_in_context

from voxmesh.cli.waterfall import render_session, sessions
from voxmesh.tracefile import JsonLinesSpanExporter, read_spans


def test_spans_round_trip_through_the_file_and_render_as_a_waterfall(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "voxmesh-worker"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")
    start = time.time_ns()
    turn = tracer.start_span("turn", start_time=start, attributes={
        "voxmesh.session.id": "abc123", "voxmesh.turn.index": 1,
        "voxmesh.turn.voice_to_voice_ms": 900})
    context = set_span_in_context(turn)
    tracer.start_span("endpointing", context=context, start_time=start).end(
        end_time=start + 300_000_000)
    tracer.start_span("llm", context=context, start_time=start + 300_000_000).end(
        end_time=start + 800_000_000)
    turn.end(end_time=start + 1_000_000_000)
    provider.shutdown()

    spans = list(read_spans(path))
    assert {s.name for s in spans} == {"turn", "endpointing", "llm"}
    assert len({s.trace_id for s in spans}) == 1
    assert sessions(path)[0][:2] == ("abc123", 1)
    text = render_session(path, "abc")
    lines = text.splitlines()
    assert "voice-to-voice 900 ms" in text
    endpointing = next(line for line in lines if line.strip().startswith("endpointing"))
    llm = next(line for line in lines if line.strip().startswith("llm"))
    assert endpointing.rstrip().endswith("300 ms") and llm.rstrip().endswith("500 ms")
    # The llm bar starts where endpointing ends (30 % of the turn).
    assert llm.index("█") > endpointing.index("█")

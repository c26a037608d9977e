"""Observability: one trace per turn across processes (received by a real OTLP/gRPC endpoint),
and Prometheus metrics scraped from every process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from voxmesh.cli.call import run_call
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack, free_port
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP trace receiver: what a collector would get."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    async def Export(  # noqa: N802 - OTLP method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ReceivedSpan(
                        service=resource.get("service.name", ""), name=span.name,
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes}))
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@asynccontextmanager
async def _traced_stack(state_dir: Path, env: dict[str, str]) -> AsyncIterator[tuple[Stack, Receiver]]:
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stack = Stack(
        state_dir=state_dir, ports=Ports.free(), drain_grace_s=3, metrics=True,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
             "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "200", **env})
    try:
        await stack.start()
        yield stack, receiver
    finally:
        await stack.stop()
        await server.stop(None)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Receiver]]:
    """A stack exporting traces to a test receiver; transcripts off (the default)."""
    async with _traced_stack(Path(tmp_path_factory.mktemp("traced")), {}) as pair:
        yield pair


def _session_turns(receiver: Receiver, session_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.spans if s.name == "turn"
            and s.attributes.get("voxmesh.session.id") == session_id
            and not s.attributes.get("voxmesh.turn.discarded")]


def _trace(receiver: Receiver, trace_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.spans if s.trace_id == trace_id]


async def test_each_turn_is_one_trace_across_processes(
    traced: tuple[Stack, Receiver], caller_voice: CallerVoice
) -> None:
    stack, receiver = traced
    said = ["What is the capital of France?", "And what is the capital of Spain?"]
    report = await run_call(stack.edge_url, [(t, caller_voice.speak(t)) for t in said])
    assert all(t.voice_to_voice_ms for t in report.turns)
    await asyncio.sleep(1.5)  # batch exporters flush every 200 ms

    turns = _session_turns(receiver, report.session_id)
    assert sorted(s.attributes["voxmesh.turn.index"] for s in turns) == [1, 2]
    for turn in turns:
        spans = _trace(receiver, turn.trace_id)
        assert len({t.trace_id for t in turns}) == 2, "each turn has its own trace"
        services = {s.service for s in spans}
        assert {"voxmesh-worker", "voxmesh-stt", "voxmesh-llm", "voxmesh-tts"} <= services
        ids = {s.span_id for s in spans}
        orphans = [s.name for s in spans if s.parent_id and s.parent_id not in ids]
        assert not orphans, f"spans whose parent is missing: {orphans}"
        roots = [s for s in spans if not s.parent_id]
        assert [r.name for r in roots] == ["turn"]
        names = {s.name for s in spans}
        assert {"endpointing", "stt", "stt.transcribe", "llm", "llm.generate", "tts",
                "tts.synthesize", "tts.segment", "playout", "edge.first_packet"} <= names
        for span in spans:  # stages lie within the turn
            assert turn.start_ns - 5_000_000 <= span.start_ns <= span.end_ns <= turn.end_ns + 5_000_000
        # The critical path adds up: endpointing, then the LLM, then playout, within the turn.
        stage = {s.name: s for s in spans}
        endpointing, llm, playout = stage["endpointing"], stage["llm"], stage["playout"]
        assert endpointing.end_ns <= llm.start_ns + 5_000_000
        assert llm.start_ns <= playout.start_ns
        path_ns = (endpointing.end_ns - endpointing.start_ns) + (
            playout.start_ns - llm.start_ns) + (playout.end_ns - playout.start_ns)
        assert path_ns <= turn.end_ns - turn.start_ns
        for key in ("voxmesh.turn.index", "voxmesh.turn.interrupted",
                    "voxmesh.turn.voice_to_voice_ms", "voxmesh.turn.endpointing_ms"):
            assert key in turn.attributes
        generate = next(s for s in spans if s.name == "llm.generate")
        assert generate.attributes["voxmesh.llm.first_token_ms"] > 0
        # Transcript text is off by default: no attribute carries what was said.
        for span in spans:
            for value in span.attributes.values():
                assert not (isinstance(value, str) and "capital" in value.lower())
    # ... and no log line of any process does either.
    for name in stack.children:
        assert "capital" not in (await asyncio.to_thread(stack.log_tail, name, 10_000)).lower(), name


async def test_interrupted_turn_is_marked_and_its_spans_are_ended(
    traced: tuple[Stack, Receiver], caller_voice: CallerVoice
) -> None:
    stack, receiver = traced
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    try:
        await caller.play(caller_voice.speak("Please tell me a long story about a brave dragon."))
        await caller.wait_event(
            lambda e: e.get("agent_state", {}).get("state") == "STATE_SPEAKING", timeout=40)
        await asyncio.sleep(1.0)
        await caller.play(caller_voice.speak("Wait, stop please."))
        await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("interrupted", False), timeout=15)
    finally:
        await caller.hangup()
    await asyncio.sleep(1.5)
    first = next(t for t in _session_turns(receiver, caller.session_id or "")
                 if t.attributes["voxmesh.turn.index"] == 1)
    assert first.attributes["voxmesh.turn.interrupted"] is True
    spans = {s.name: s for s in _trace(receiver, first.trace_id)}
    tts = spans["tts"]
    assert tts.end_ns >= tts.start_ns and tts.attributes.get("voxmesh.interrupted") is True
    assert "tts.synthesize" in spans  # the server side ended its span when the stream was cut
    assert spans["tts.synthesize"].end_ns <= first.end_ns + 1_000_000_000


async def test_transcripts_on_spans_only_when_enabled_and_redacted(
    tmp_path: Path, caller_voice: CallerVoice
) -> None:
    said = ["My card number is 4111 1111 1111 1111.", "My phone number is 415 555 0123."]
    async with _traced_stack(tmp_path, {"VOXMESH_WORKER_TRACE_TRANSCRIPTS": "true"}) as pair:
        stack, receiver = pair
        report = await run_call(stack.edge_url, [(t, caller_voice.speak(t)) for t in said])
        await asyncio.sleep(1.5)
    turns = _session_turns(receiver, report.session_id)
    user_text = " | ".join(t.attributes["voxmesh.turn.user_text"] for t in turns)
    assert "card number" in user_text.lower() and "phone number" in user_text.lower()
    # Whisper formats spoken digits unpredictably, so which marker a number gets varies; what
    # matters is that each number is masked and no run of digits leaves the session. The
    # guardrails service may have masked it already ("[card number]") in the transcript the
    # worker answers; otherwise trace redaction did ("[CARD]").
    masked = re.compile(r"\[(CARD|PHONE|NUMBER|card number|phone number)\]")
    for turn in turns:
        assert masked.search(turn.attributes["voxmesh.turn.user_text"])
    assert not re.search(r"\d{3}", user_text), f"digits left in {user_text!r}"
    assert all("voxmesh.turn.agent_text" in t.attributes for t in turns)


def _scrape(port: int) -> dict[str, float]:
    """Prometheus samples of a process, as ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{")[0] == name and all(w in k for w in wanted))


async def test_every_process_serves_prometheus_metrics(
    traced: tuple[Stack, Receiver], caller_voice: CallerVoice
) -> None:
    stack, _ = traced
    report = await run_call(stack.edge_url, [("Hello there.", caller_voice.speak("Hello there."))])
    assert report.turns[0].voice_to_voice_ms
    ports = stack.metrics_ports
    worker = await asyncio.to_thread(_scrape, ports["worker"])
    assert _total(worker, "voxmesh_turn_voice_to_voice_milliseconds_count") >= 1
    for stage in ("endpointing", "stt_final", "llm_first_token", "tts_first_audio"):
        assert _total(worker, "voxmesh_turn_stage_milliseconds_count", stage=stage) >= 1, stage
    assert _total(worker, "voxmesh_calls_total") >= 1
    assert _total(worker, "voxmesh_turns_total") >= 1
    assert "voxmesh_worker_state" in {k.split("{")[0] for k in worker}
    assert _total(worker, "voxmesh_worker_state", state="idle") + _total(
        worker, "voxmesh_worker_state", state="busy") == 1
    stt = await asyncio.to_thread(_scrape, ports["stt"])
    assert _total(stt, "voxmesh_stt_processing_milliseconds_count") >= 1
    llm = await asyncio.to_thread(_scrape, ports["llm"])
    assert _total(llm, "voxmesh_llm_first_token_milliseconds_count") >= 1
    assert _total(llm, "voxmesh_llm_tokens_total", kind="completion") >= 1
    tts = await asyncio.to_thread(_scrape, ports["tts"])
    assert _total(tts, "voxmesh_tts_first_audio_milliseconds_count") >= 1


REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana"


def _check_dashboards_current(out: Path) -> None:
    """The checked-in JSON is what the generator produces now."""
    subprocess.run([sys.executable, str(GRAFANA / "build_dashboards.py"), str(out)], check=True)
    generated = list(out.glob("*.json"))
    assert generated
    for path in generated:
        assert path.read_text() == (GRAFANA / "dashboards" / path.name).read_text(), (
            f"{path.name} is stale: run `make dashboards`")


async def test_dashboards_are_current_and_query_what_the_processes_serve(
    traced: tuple[Stack, Receiver], caller_voice: CallerVoice, tmp_path: Path
) -> None:
    await asyncio.to_thread(_check_dashboards_current, tmp_path)

    datasources = yaml.safe_load((GRAFANA / "datasources.yaml").read_text())["datasources"]
    uids = {d["uid"]: d["type"] for d in datasources}

    stack, receiver = traced
    await run_call(stack.edge_url, [("Good morning.", caller_voice.speak("Good morning."))])
    served: set[str] = set()
    for port in stack.metrics_ports.values():
        served |= {name.split("{")[0] for name in await asyncio.to_thread(_scrape, port)}

    dashboards = [json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")]
    assert dashboards
    traceql: list[str] = []
    for board in dashboards:
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert uids.get(panel["datasource"]["uid"]) == panel["datasource"]["type"]
            for target in panel["targets"]:
                assert uids.get(target["datasource"]["uid"]) == target["datasource"]["type"]
                if "expr" in target:
                    names = set(re.findall(r"voxmesh_[a-z_]+", target["expr"]))
                    assert names, target["expr"]
                    missing = names - served
                    assert not missing, f"{panel['title']}: no process serves {missing}"
                if "query" in target:
                    traceql.append(target["query"])
    # The slow-turn TraceQL query filters on attributes the turn spans really carry.
    turn_attributes = {k for s in receiver.spans if s.name == "turn" for k in s.attributes}
    for query in traceql:
        for attribute in re.findall(r"span\.([a-z_.]+)", query):
            assert attribute in turn_attributes, f"{attribute} is not on turn spans"


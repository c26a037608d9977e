"""Tracing overhead per turn (``make bench``): the same turn instrumentation, traced vs not.

Runs the span work one turn causes in every process (the worker's turn and stage spans,
context injection into gRPC metadata, the message field and NATS headers; the services'
extraction and server spans), all in one process, paced at 100 turns/s (5x what a worker
with 100 calls sees), with tracing off (OpenTelemetry's no-op) and on (the SDK with a batch
processor exporting OTLP/gRPC to a local receiver, as in production). Off and on runs are
interleaved in one invocation; the result is the difference of per-turn time on the
conversation path. Export runs on the batch processor's thread; when it holds the GIL it
shows up in the traced samples, so it is counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r'''
import json, os, sys, time
traced = sys.argv[1] == "on"
if traced:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[2]
    os.environ["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
from opentelemetry.trace import SpanKind
from voxmesh.telemetry import extract, setup_tracing, shutdown_tracing, tracer
from voxmesh_worker.turn_trace import TurnTrace, start_session_span
setup_tracing("bench")
services = tracer("bench-service")
session = start_session_span("s" * 32, "default", "w1")

def one_turn() -> None:
    wall = time.time()
    trace = TurnTrace(session, "s" * 32, wall)
    for speculative in (True, True):
        stt = trace.child("stt", kind=SpanKind.CLIENT, **{"voxmesh.stt.speculative": speculative})
        with services.start_as_current_span("stt.transcribe", context=extract(trace.carrier(stt)),
                                            kind=SpanKind.SERVER):
            pass
        stt.end()
    trace.record("endpointing", wall, wall + 0.3)
    llm = trace.child("llm", kind=SpanKind.CLIENT)
    tts = trace.child("tts", kind=SpanKind.CLIENT)
    headers = trace.carrier(trace.span)
    services.start_span("llm.generate", context=extract(trace.metadata(llm)),
                        kind=SpanKind.SERVER).end()
    with services.start_as_current_span("tts.synthesize", context=extract(trace.metadata(tts))):
        for index in range(3):
            with services.start_as_current_span("tts.segment",
                                                attributes={"voxmesh.tts.segment_index": index}):
                pass
    services.start_span("edge.first_packet", context=extract(headers)).end()
    llm.end(); tts.end()
    trace.child("playout").end()
    trace.finish(turn_index=1, interrupted=False, discarded=False, voice_to_voice_ms=1000,
                 metrics={"endpointing_ms": 320, "llm_first_token_ms": 250})

for _ in range(200):
    one_turn()
samples = []
interval = 1 / float(sys.argv[4])
next_turn = time.perf_counter()
for _ in range(int(sys.argv[3])):
    next_turn += interval
    started = time.perf_counter()
    one_turn()
    samples.append((time.perf_counter() - started) * 1000)
    time.sleep(max(0.0, next_turn - time.perf_counter()))
shutdown_tracing()
print(json.dumps(samples))
'''


def _receiver() -> tuple[object, int]:
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802, D102 - OTLP method
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main() -> None:
    """Measures and merges ``tracing`` into the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--turns-per-second", type=float, default=100.0,
                        help="pace of turns; a worker with 100 calls sees ~20 turns/s")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    server, port = _receiver()
    runs: dict[str, list[float]] = {}
    try:
        for mode in ("off", "on", "off", "on"):  # interleaved, so drift hits both alike
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, f"http://127.0.0.1:{port}", str(args.turns),
                 str(args.turns_per_second)],
                capture_output=True, text=True, check=True)
            runs.setdefault(mode, []).extend(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.stop(None)  # type: ignore[attr-defined]

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    off, on = runs["off"], runs["on"]
    section = {
        "overhead_p50_ms": round(statistics.median(on) - statistics.median(off), 3),
        "overhead_p95_ms": round(pct(on, 95) - pct(off, 95), 3),
        "traced_p95_ms": round(pct(on, 95), 3),
        "untraced_p95_ms": round(pct(off, 95), 3),
        "spans_per_turn": 15,
        "turns": len(on),
        "turns_per_second": args.turns_per_second,
        "measured_at": "per-turn span work of every process, OTLP/gRPC batch export to loopback",
        "date": time.strftime("%Y-%m-%d"),
    }
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing["tracing"] = section
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"tracing overhead per turn: p50 {section['overhead_p50_ms']} ms, "
          f"p95 {section['overhead_p95_ms']} ms -> {args.out}")


if __name__ == "__main__":
    main()

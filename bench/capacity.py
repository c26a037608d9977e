"""Capacity (``make bench``): how many concurrent calls before the platform adds latency.

The whole embedded platform runs on latency-model providers with constant delays, so the model
time on a turn's critical path is known exactly. Synthetic calls at growing concurrency then
measure the caller's voice-to-voice; the platform-added latency of a turn is that minus the
configured delays on the critical path:

    max(endpoint silence, speculative pause + STT delay) + LLM first token + TTS first audio

(speculative STT runs during the endpoint wait, so the STT delay only counts past it). The
figure is the largest concurrency whose added latency stays within 50 ms at p95, per
transport. Latency-model figures are capacity figures only, never quality figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from voxmesh import eventloop
from voxmesh.cli.stack import Ports, Stack
from voxmesh_loadtest.arrivals import Arrivals
from voxmesh_loadtest.runner import LoadRun, RunConfig, to_json
from voxmesh_loadtest.scenario import load_scenario
from voxmesh_loadtest.stats import distribution, summarize

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD_MS = 50.0
#: Constant model delays (ms) and the worker's turn-taking settings they combine with.
STT_MS, LLM_MS, TTS_MS = 100, 200, 50
ENDPOINT_MS, SPECULATIVE_MS = 448, 160
CRITICAL_PATH_MS = max(ENDPOINT_MS, SPECULATIVE_MS + STT_MS) + LLM_MS + TTS_MS
WORKERS, SESSIONS_PER_WORKER = 2, 250
#: Calls start at concurrency/4 a second, at most this many: a level measures calls held at
#: once, not how fast the platform can set calls up.
MAX_ARRIVALS_PER_S = 10.0

PLATFORM_ENV = {
    "VOXMESH_STT_PROVIDER": "latency-model",
    "VOXMESH_STT_LATENCY_FIRST_BYTE": f"constant:ms={STT_MS}",
    "VOXMESH_LLM_PROVIDER": "latency-model",
    "VOXMESH_LLM_LATENCY_FIRST_TOKEN": f"constant:ms={LLM_MS}",
    # A one-word first sentence: the first sentence is ready with the first token.
    "VOXMESH_LLM_LATENCY_TEXT": "Sure. We open at nine tomorrow morning.",
    "VOXMESH_LLM_LATENCY_TOKENS_PER_S": "50",
    "VOXMESH_TTS_PROVIDER": "latency-model",
    "VOXMESH_TTS_LATENCY_FIRST_AUDIO": f"constant:ms={TTS_MS}",
    "VOXMESH_WORKER_ENDPOINT_SILENCE_MS": str(ENDPOINT_MS),
    "VOXMESH_WORKER_SPECULATIVE_PAUSE_MS": str(SPECULATIVE_MS),
    "VOXMESH_WORKER_MAX_SESSIONS": str(SESSIONS_PER_WORKER),
    "VOXMESH_WORKER_TURN_COMPLETION_TAGS": "false",
    "VOXMESH_EDGE_MAX_CALLS": "1000",
    "VOXMESH_WORKER_GUARDRAILS_TIMEOUT_MS": "1000",
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _load(stack: Stack, transport: str, concurrency: int) -> dict[str, Any]:
    """One run of ``concurrency`` calls, starting at up to 10 a second; all overlap."""
    scenario = load_scenario(ROOT / "loadtest" / "scenarios" / "capacity.yaml")
    rate = min(concurrency / 4, MAX_ARRIVALS_PER_S)
    config = RunConfig(edge_url=stack.edge_url, scenario=scenario,
                       arrivals=Arrivals.parse(f"constant:rate={rate:g}"),
                       calls=concurrency, concurrency=concurrency, transport=transport,
                       check_content=False)
    return to_json(await LoadRun(config, progress=None).run(),
                   {"providers": "latency-model (stt, llm, tts)"})


async def _level(stack: Stack, transport: str, concurrency: int,
                 repeats: int) -> dict[str, Any]:
    """A concurrency level: ``repeats`` runs, their turns pooled.

    One run's p95 moves by tens of milliseconds from run to run on this machine near the knee;
    pooling runs is what makes the level's figure repeatable.
    """
    added: list[float] = []
    calls = failed = answered = peak = 0
    errors: Counter[str] = Counter()
    run: dict[str, Any] = {}
    for _ in range(repeats):
        run = await _load(stack, transport, concurrency)
        summary = summarize(run)
        added += [t["voice_to_voice_ms"] - CRITICAL_PATH_MS for c in run["calls"]
                  for t in c["turns"] if t["voice_to_voice_ms"] is not None]
        calls += summary["calls"]
        failed += summary["calls_failed"]
        answered += summary["turns_answered"]
        errors.update(summary["errors"])
        peak = max(peak, *(int(active) for _, active in run.get("concurrency") or [(0, 0)]))
    stats = distribution(added)
    return {"concurrency": concurrency, "peak_concurrency": peak, "runs": repeats,
            "calls": calls, "failed": failed, "errors": dict(errors),
            "turns_answered": answered, "added_p50_ms": stats["p50"],
            "added_p95_ms": stats["p95"], "run": run}


async def _measure(transport: str, levels: list[int], repeats: int,
                   state: Path) -> dict[str, Any]:
    stack = Stack(state_dir=state, ports=Ports.free(), drain_grace_s=5.0, env=PLATFORM_ENV)
    points: list[dict[str, Any]] = []
    try:
        await stack.start()
        for index in range(1, WORKERS):
            await stack.add_worker(f"capacity-{index}")
        # A warm-up call per worker, not measured: first calls pay one-off costs (connections,
        # caches) that are not what capacity is about.
        await _load(stack, transport, WORKERS)
        for concurrency in levels:
            started = time.monotonic()
            point = await _level(stack, transport, concurrency, repeats)
            points.append(point)
            _say(f"  {transport:<16} {concurrency:4d} calls (peak {point['peak_concurrency']} "
                 f"at once): added p50 {point['added_p50_ms']} ms, p95 {point['added_p95_ms']} "
                 f"ms, failed {point['failed']} "
                 f"({time.monotonic() - started:.0f}s)")
            too_slow = point["added_p95_ms"] is None or point["added_p95_ms"] > 4 * THRESHOLD_MS
            if too_slow or point["failed"] > point["calls"] * 0.05:
                break  # past the knee: higher levels only measure an overloaded machine
    finally:
        await stack.stop()
    within = [p["concurrency"] for p in points
              if p["added_p95_ms"] is not None and p["added_p95_ms"] <= THRESHOLD_MS
              and p["failed"] == 0]
    return {"transport": transport, "threshold_ms": THRESHOLD_MS,
            "max_concurrency_within_threshold": max(within, default=0), "points": points}


def main() -> None:
    """Measures each transport and merges ``capacity`` into the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,10,25,40,50,60,80,100,150,200",
                        help="concurrency levels for the WebSocket transports")
    parser.add_argument("--webrtc-levels", default="1,2,4,6,8,10,15,20",
                        help="concurrency levels for WebRTC (its callers cost ~10x more CPU)")
    parser.add_argument("--transports", default="websocket-pcm16,webrtc")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per level, their turns pooled (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "capacity")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    webrtc_levels = [int(level) for level in args.webrtc_levels.split(",")]
    curves = []
    for transport in args.transports.split(","):
        _say(f"capacity over {transport} (latency-model providers, critical path "
             f"{CRITICAL_PATH_MS} ms)")
        with tempfile.TemporaryDirectory(prefix="voxmesh-capacity-") as state:
            curves.append(eventloop.run(_measure(
                transport, webrtc_levels if transport == "webrtc" else levels, args.repeats,
                Path(state))))
    from voxmesh_loadtest.report import write_report

    last_run = curves[0]["points"][-1]["run"]
    write_report(last_run, args.report, capacity=[
        {**curve, "points": [{k: v for k, v in p.items() if k != "run"}
                             for p in curve["points"]]} for curve in curves])
    section = {
        "what": "largest concurrency whose platform-added latency (caller voice-to-voice "
                "minus the configured model delays on the critical path) stays <= 50 ms p95; "
                "latency-model providers, capacity figures only",
        "critical_path_ms": CRITICAL_PATH_MS,
        "workers": WORKERS, "host": "this host (2 cores), load generator included",
        "scenario": "loadtest/scenarios/capacity.yaml (4 turns per call), calls starting at "
                    f"concurrency/4 per second, at most {MAX_ARRIVALS_PER_S:g}, after a warm-up; "
                    f"{args.repeats} runs per level, turns pooled",
        "date": time.strftime("%Y-%m-%d"),
        "transports": {
            curve["transport"]: {
                "max_concurrency_within_threshold": curve["max_concurrency_within_threshold"],
                "points": [{k: p[k] for k in ("concurrency", "peak_concurrency", "runs",
                                              "calls", "failed", "added_p50_ms",
                                              "added_p95_ms")}
                           for p in curve["points"]]}
            for curve in curves},
    }
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing["capacity"] = section
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    for curve in curves:
        print(f"capacity over {curve['transport']}: "
              f"{curve['max_concurrency_within_threshold']} concurrent calls within "
              f"{THRESHOLD_MS:g} ms added p95 -> {args.out}, {args.report}/report.html")


if __name__ == "__main__":
    main()

"""Voice-to-voice benchmark of the embedded default (``make bench``).

Starts the whole platform on loopback (nats-server, stt, llm, tts, a worker, the WebRTC edge),
places synthetic calls through an aiortc client, and measures, per turn:

* voice-to-voice at the caller: last sample of caller speech sent -> first audible sample of
  the answer received over WebRTC (what a caller feels);
* the worker's per-stage breakdown (endpointing, STT final, LLM first token, first sentence,
  TTS first audio, edge first packet), from its ``turn_metrics`` events.

Results are merged into ``bench/results.json`` (other sections are kept) and a latency picture
is written next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voxmesh.cli.call import percentile, run_call
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack

SENTENCES = [
    "Hello, what can you help me with today?",
    "What is the capital of France?",
    "Can you recommend a good book to read?",
    "How far away is the moon?",
    "What is a healthy breakfast?",
    "Tell me something interesting about cats.",
    "What time is it usually busy at restaurants?",
    "Thank you, that is all for now.",
]
STAGES = ["endpointing_ms", "stt_final_ms", "llm_first_token_ms", "first_sentence_ms",
          "tts_first_audio_ms", "edge_first_packet_ms", "voice_to_voice_ms"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 95), 1)} if values else {}


async def _barge_in_trials(
    stack: Stack, voice: CallerVoice, trials: int
) -> tuple[list[float], list[float]]:
    """Caller starts talking while the agent speaks; time until the agent's audio stops.

    Returns two measurements per trial:

    * at the edge (the definition): caller speech onset as the edge receives it -> the last
      agent audio packet the edge sends (reported by the edge on the data channel);
    * at the caller: first sample of the interruption sent -> first received frame of the
      silence that follows (adds both WebRTC legs and their jitter buffers).
    """
    from voxmesh_edge.client import WebRTCCaller

    at_edge: list[float] = []
    at_caller: list[float] = []
    question = voice.speak("Please tell me a long story about a dragon and a village.")
    interruption = voice.speak("Wait, stop.")
    for trial in range(trials):
        caller = WebRTCCaller(stack.edge_url)
        await caller.connect()
        try:
            await caller.play(question)
            await caller.wait_event(
                lambda e: e.get("agent_state", {}).get("state") == "STATE_SPEAKING", timeout=40)
            await asyncio.sleep(1.0)
            # Interrupt mid-word, not in a pause between sentences (that would measure ~0).
            for _ in range(100):
                frames = caller.agent_audio
                if len(frames) and frames.level_dbfs(len(frames) - 1) > -35:
                    break
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await caller.play(interruption)
            await caller.wait_event(
                lambda e: e.get("agent_text", {}).get("interrupted", False), timeout=15)
            try:
                edge = await caller.wait_event(
                    lambda e: "barge_in_stop_ms" in e.get("edge", {}), timeout=3)
            except TimeoutError:
                # The edge reports nothing when the agent was between words at the onset.
                print(f"  barge-in {trial + 1}/{trials}: agent was quiet at the onset; skipped",
                      file=sys.stderr)
                continue
            at_edge.append(float(edge["edge"]["barge_in_stop_ms"]))
            await asyncio.sleep(1.5)  # receive the silence that follows the barge-in
            # A natural pause between two sentences is shorter than the silence a barge-in leaves
            # (the caller talks, then the next answer needs its own turn), so look for 1 s.
            stopped = caller.agent_audio.first_silence_after(started, quiet_ms=1000)
            if stopped is not None:
                at_caller.append(round((stopped - started) * 1000, 1))
            print(f"  barge-in {trial + 1}/{trials}: agent audio stopped {at_edge[-1]:.0f} ms "
                  f"after the onset at the edge"
                  + (f", {at_caller[-1]:.0f} ms at the caller" if stopped else ""),
                  file=sys.stderr)
        finally:
            await caller.hangup()
    return at_edge, at_caller


async def _run_turns(
    stack: Stack, voice: CallerVoice, turns: int, turns_per_call: int, label: str
) -> tuple[list[float], dict[str, list[float]]]:
    """Calls with ``turns_per_call`` questions each until ``turns`` turns were measured."""
    caller_v2v: list[float] = []
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    call_index = 0
    while len(caller_v2v) < turns:
        count = min(turns_per_call, turns - len(caller_v2v))
        picks = [SENTENCES[(call_index * turns_per_call + i) % len(SENTENCES)]
                 for i in range(count)]
        report = await run_call(stack.edge_url, [(text, voice.speak(text)) for text in picks])
        for turn in report.turns:
            if turn.voice_to_voice_ms is None:
                continue
            caller_v2v.append(turn.voice_to_voice_ms)
            for name in STAGES:
                if turn.stages.get(name):
                    stages[name].append(turn.stages[name])
            print(f"  {label} turn {len(caller_v2v):>3}/{turns}  voice-to-voice "
                  f"{turn.voice_to_voice_ms:6.0f} ms   running p50 "
                  f"{statistics.median(caller_v2v):5.0f} ms", file=sys.stderr)
        call_index += 1
    return caller_v2v, stages


async def _with_stack(state: Path, env: dict[str, str], work: Any) -> Any:
    stack = Stack(state_dir=state, ports=Ports.free(), env=env)
    print(f"starting the platform ({env or 'defaults'})…", file=sys.stderr)
    await stack.start(lambda n, w, s: print(f"  {n:<7} {w:<9} {s:5.1f}s", file=sys.stderr))
    try:
        return await work(stack)
    finally:
        await stack.stop()


async def _bench(turns: int, turns_per_call: int, barge_in_trials: int,
                 no_speculation_turns: int) -> dict[str, object]:
    voice = CallerVoice(Path(".voxmesh/cache/caller"))
    with tempfile.TemporaryDirectory(prefix="voxmesh-bench-") as state:

        async def main_run(stack: Stack) -> Any:
            measured = await _run_turns(stack, voice, turns, turns_per_call, "speculative")
            return measured, await _barge_in_trials(stack, voice, trials=barge_in_trials)

        (caller_v2v, stages), barge_in = await _with_stack(Path(state) / "a", {}, main_run)
        # Same run, same machine: only speculative STT differs.
        plain_v2v, plain_stages = await _with_stack(
            Path(state) / "b", {"VOXMESH_WORKER_SPECULATIVE_STT": "false"},
            lambda stack: _run_turns(stack, voice, no_speculation_turns, turns_per_call,
                                     "no-speculation"))
    return {
        "machine": {"cores": os.cpu_count(), "cpu_model": _cpu_model(),
                    "date": time.strftime("%Y-%m-%d")},
        "voice_to_voice": {
            **_stats(caller_v2v),
            "turns": len(caller_v2v),
            "measured_at": "caller (aiortc client over WebRTC through the edge)",
            "worker_measured": _stats(stages["voice_to_voice_ms"]),
            "stages": {name: round(statistics.median(v), 1)
                       for name, v in stages.items() if v and name != "voice_to_voice_ms"},
            "stages_p95": {name: round(percentile(v, 95), 1)
                           for name, v in stages.items() if v and name != "voice_to_voice_ms"},
            "samples_ms": caller_v2v,
        },
        "endpointing": _stats(stages["endpointing_ms"]),
        "speculative_stt": {
            "on": {**_stats(caller_v2v), "turns": len(caller_v2v),
                   "stt_final": _stats(stages["stt_final_ms"])},
            "off": {**_stats(plain_v2v), "turns": len(plain_v2v),
                    "stt_final": _stats(plain_stages["stt_final_ms"])},
            "measured_at": "caller voice-to-voice; stt_final from the worker's turn metrics",
        },
        "barge_in": {
            **_stats(barge_in[0]),
            "trials": len(barge_in[0]),
            "measured_at": "edge: caller speech onset received -> last agent audio packet sent",
            "samples_ms": barge_in[0],
            "at_caller": {
                **_stats(barge_in[1]),
                "measured_at": "caller: first sample of the interruption sent -> agent audio "
                               "silent (adds both WebRTC legs)",
                "samples_ms": barge_in[1],
            },
        },
    }


def main() -> None:
    """Runs the benchmark and merges its results into the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--turns-per-call", type=int, default=4)
    parser.add_argument("--barge-in-trials", type=int, default=8)
    parser.add_argument("--no-speculation-turns", type=int, default=12,
                        help="turns measured again with speculative STT off")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    results = asyncio.run(_bench(args.turns, args.turns_per_call, args.barge_in_trials,
                                 args.no_speculation_turns))
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing.update(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    from bench_plot import write_latency_svg

    svg = args.out.with_name("voice_to_voice.svg")
    write_latency_svg(svg, results["voice_to_voice"])  # type: ignore[arg-type]
    v2v = results["voice_to_voice"]
    print(f"voice-to-voice p50 {v2v['p50_ms']} ms, p95 {v2v['p95_ms']} ms "  # type: ignore[index]
          f"over {v2v['turns']} turns -> {args.out}, {svg}")  # type: ignore[index]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()

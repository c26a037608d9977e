"""``voxmesh call``: a synthetic caller that talks to the platform over WebRTC.

Each utterance is played in real time through an aiortc client; the caller then waits for the
agent's spoken answer and measures voice-to-voice latency where a caller feels it: from the
last sample of its own speech to the first audible sample of the agent's answer.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from voxmesh.text import word_error_rate


@dataclass
class TurnReport:
    """What happened in one turn, as measured by the caller."""

    index: int
    said: str
    heard_by_agent: str = ""
    wer: float | None = None
    agent_text: str = ""
    voice_to_voice_ms: float | None = None
    agent_audio_ms: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass
class CallReport:
    """A whole synthetic call."""

    session_id: str = ""
    turns: list[TurnReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def latencies(self) -> list[float]:
        """Voice-to-voice latencies of the turns that got an answer."""
        return [t.voice_to_voice_ms for t in self.turns if t.voice_to_voice_ms is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def run_call(
    edge_url: str,
    utterances: list[tuple[str, bytes]],
    *,
    agent: str = "default",
    pause_s: float = 0.6,
    answer_timeout_s: float = 40.0,
    on_turn: Any = None,
) -> CallReport:
    """Places one call and speaks each utterance, waiting for the agent's answer in between.

    Args:
        edge_url: Base URL of the edge.
        utterances: (reference text, 16 kHz PCM16 audio) per turn; text may be "" for WAVs.
        agent: Agent name to dispatch to.
        pause_s: Silence after each answer before the next utterance.
        answer_timeout_s: How long to wait for an answer to start and finish.
        on_turn: Optional callback receiving each :class:`TurnReport` as it completes.
    """
    from voxmesh_edge.client import WebRTCCaller

    caller = WebRTCCaller(edge_url, agent=agent)
    report = CallReport()
    await caller.connect()
    report.session_id = caller.session_id or ""
    try:
        await caller.wait_greeting(timeout=answer_timeout_s)
        for index, (text, pcm) in enumerate(utterances, start=1):
            turn = TurnReport(index=index, said=text)
            sent_end = await caller.play(pcm)
            try:
                first, _end, answer = await caller.wait_agent_audio(
                    start_after=sent_end, silence_ms=900, timeout=answer_timeout_s
                )
                turn.voice_to_voice_ms = round((first - sent_end) * 1000, 1)
                turn.agent_audio_ms = len(answer) * 1000 // 32000
            except TimeoutError:
                turn.error = "no agent audio"
            else:
                # A long pause between two sentences can look like the end of the answer; the
                # worker's final agent_text (sent once playout is done) is the real end.
                await _wait_turn_done(caller, index, answer_timeout_s)
            _collect_events(caller.events, turn)
            if text and turn.heard_by_agent:
                turn.wer = round(word_error_rate(text, turn.heard_by_agent), 3)
            report.turns.append(turn)
            if on_turn is not None:
                on_turn(turn)
            await asyncio.sleep(pause_s)
    finally:
        report.errors = [
            e["error"]["detail"].get("message", "") for e in caller.events if "error" in e
        ]
        await caller.hangup()
    return report


async def _wait_turn_done(caller: Any, index: int, timeout_s: float) -> None:
    def done(event: dict[str, Any]) -> bool:
        metrics = event.get("turn_metrics") or {}
        return bool(metrics.get("turn_index") == index)

    try:
        await caller.wait_event(done, timeout=timeout_s)
    except TimeoutError:
        pass  # reported as missing stages; the turn still has its caller-side measurement


def _collect_events(events: list[dict[str, Any]], turn: TurnReport) -> None:
    """Fills a turn from the session events of its index (user transcript, agent text, metrics).

    The worker numbers turns itself; the caller's n-th utterance is the worker's n-th turn as
    long as every utterance produced one, which the test scenarios ensure.
    """
    for event in events:
        if "user_transcript" in event:
            body = event["user_transcript"]
            if body.get("is_final") and body.get("turn_index") == turn.index:
                turn.heard_by_agent = body.get("text", "")
        elif "agent_text" in event:
            body = event["agent_text"]
            if body.get("is_final") and body.get("turn_index") == turn.index:
                turn.agent_text = body.get("text", "")
        elif "turn_metrics" in event:
            body = event["turn_metrics"]
            if body.get("turn_index") == turn.index:
                turn.stages = {k: int(v) for k, v in body.items() if k.endswith("_ms")}


def summarize(report: CallReport) -> str:
    """A human-readable summary of a call."""
    lines = [f"session {report.session_id}"]
    for turn in report.turns:
        v2v = f"{turn.voice_to_voice_ms:.0f} ms" if turn.voice_to_voice_ms is not None else "—"
        lines.append(f"  turn {turn.index}  voice-to-voice {v2v}")
        lines.append(f"    caller said : {turn.said}")
        lines.append(f"    agent heard : {turn.heard_by_agent}"
                     + (f"   (WER {turn.wer:.0%})" if turn.wer is not None else ""))
        lines.append(f"    agent said  : {turn.agent_text}")
        if turn.error:
            lines.append(f"    error       : {turn.error}")
    latencies = report.latencies()
    if latencies:
        lines.append(f"voice-to-voice p50 {statistics.median(latencies):.0f} ms, "
                     f"p95 {percentile(latencies, 95):.0f} ms over {len(latencies)} turns")
    for error in report.errors:
        lines.append(f"error event: {error}")
    return "\n".join(lines)

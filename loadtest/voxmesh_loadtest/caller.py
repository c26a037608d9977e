"""One synthetic call: plays a scenario over the real edge and measures what the caller hears.

Every number is taken at the caller, on its own clock:

* voice-to-voice: the last sample of the caller's utterance sent, to the first audible frame of
  the agent's answer received;
* first transcript: the last sample sent, to the first transcript event of that turn;
* barge-in stop: the caller starting to interrupt, to the first stretch of silence in the agent's
  audio after it;
* content: the agent's answer audio transcribed with the local Whisper model, and each expected
  phrase looked for in it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voxmesh_loadtest.results import CallResult, TurnResult
from voxmesh_loadtest.scenario import Noise, Scenario

#: Quiet the agent's audio must keep after a barge-in to count as stopped.
BARGE_IN_QUIET_MS = 300
#: Silence that ends an answer.
ANSWER_SILENCE_MS = 900


class Caller(Protocol):
    """What the load tester needs of a transport client (WebRTC or WebSocket)."""

    session_id: str | None
    worker_id: str | None
    events: list[dict[str, Any]]
    agent_audio: Any

    async def connect(self) -> None: ...  # noqa: D102 - see voxmesh_edge.client.WebRTCCaller

    async def play(self, pcm16_16k: bytes) -> float: ...  # noqa: D102

    async def wait_event(  # noqa: D102
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0,  # noqa: ASYNC109
    ) -> dict[str, Any]: ...

    async def wait_agent_audio(  # noqa: D102
        self, start_after: float, silence_ms: int = 800,
        timeout: float = 15.0,  # noqa: ASYNC109
    ) -> tuple[float, float, bytes]: ...

    async def wait_greeting(self, timeout: float = 30.0) -> str: ...  # noqa: D102, ASYNC109

    async def hangup(self, wait_s: float = 3.0) -> None: ...  # noqa: D102


#: Transport name -> factory(edge_url, agent).
TRANSPORTS = ("webrtc", "websocket-pcm16", "websocket-mulaw")


def make_caller(transport: str, edge_url: str, agent: str) -> Caller:
    """A client of the given transport."""
    if transport == "webrtc":
        from voxmesh_edge.client import WebRTCCaller

        return WebRTCCaller(edge_url, agent=agent)
    if transport in ("websocket-pcm16", "websocket-mulaw"):
        from voxmesh_edge.ws_client import WebSocketCaller

        return WebSocketCaller(edge_url, agent=agent, codec=transport.split("-")[1])
    raise ValueError(f"unknown transport {transport!r} (use {', '.join(TRANSPORTS)})")


@dataclass(frozen=True)
class PreparedTurn:
    """A turn's audio, synthesized or loaded once for the whole run."""

    said: str
    pcm: bytes


def add_noise(pcm: bytes, noise: Noise | None, seed: int) -> bytes:
    """Mixes background noise into PCM16 at the noise's level."""
    if noise is None:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    rng = np.random.default_rng(seed)
    hiss = rng.standard_normal(len(samples)).astype(np.float32)
    if noise.kind == "pink":
        # Pink-ish: a leaky integrator tilts white noise towards low frequencies.
        hiss = np.asarray(np.cumsum(hiss) * 0.02, dtype=np.float32)
        hiss -= np.convolve(hiss, np.ones(64) / 64, mode="same")
    rms = float(np.sqrt(np.mean(hiss ** 2))) or 1.0
    hiss *= (10 ** (noise.level_dbfs / 20) * 32767) / rms
    return np.clip(samples + hiss, -32768, 32767).astype(np.int16).tobytes()


class ContentChecker:
    """Transcribes agent audio with the local Whisper model, in a worker thread."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _transcribe(self, pcm16: bytes) -> str:
        with self._lock:  # one inference at a time: the load generator shares the CPU
            if self._model is None:
                from faster_whisper import WhisperModel

                from voxmesh.models import whisper_model_dir

                self._model = WhisperModel(str(whisper_model_dir()), device="cpu",
                                           compute_type="int8", cpu_threads=1)
            samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768
            segments, _ = self._model.transcribe(samples, language="en", beam_size=1)
            return " ".join(segment.text.strip() for segment in segments)

    async def transcribe(self, pcm16: bytes) -> str:
        """The text of 16 kHz PCM16 speech."""
        return await asyncio.to_thread(self._transcribe, pcm16)


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def phrases_heard(expected: list[str], heard: str) -> bool:
    """True when every expected phrase appears in ``heard`` (case and punctuation aside)."""
    text = f" {_normalize(heard)} "
    return all(f" {_normalize(phrase)} " in text for phrase in expected)


class SyntheticCall:
    """Runs one scenario as one call.

    Args:
        call_id: Its number in the run.
        scenario: What to say.
        turns: The scenario's audio, prepared once per run.
        edge_url: Base URL of the edge.
        transport: Transport name (see :data:`TRANSPORTS`).
        run_started: ``time.monotonic()`` of the start of the run (result times are relative).
        content: Transcriber for expected phrases (None: content is not checked).
    """

    def __init__(self, call_id: int, scenario: Scenario, turns: list[PreparedTurn],
                 edge_url: str, transport: str, run_started: float,
                 content: ContentChecker | None = None,
                 connect: Callable[[], Awaitable[Caller]] | None = None) -> None:
        self.scenario = scenario
        self.turns = turns
        self.edge_url = edge_url
        self.transport = transport
        self.run_started = run_started
        self.content = content
        self._connect = connect
        self.result = CallResult(call_id=call_id, transport=transport)

    def _now_s(self) -> float:
        return round(time.monotonic() - self.run_started, 3)

    async def run(self) -> CallResult:
        """Places the call, plays every turn, hangs up; never raises for call failures."""
        result = self.result
        result.started_s = self._now_s()
        caller = make_caller(self.transport, self.edge_url, self.scenario.agent)
        try:
            try:
                await caller.connect()
            except Exception as error:  # noqa: BLE001 - every failure is a measured outcome
                result.error, result.error_message = _connect_error(error)
                return result
            result.connected_s = self._now_s()
            result.session_id, result.worker_id = caller.session_id or "", caller.worker_id or ""
            await self._play(caller)
        finally:
            try:
                await caller.hangup()
            except Exception:  # noqa: BLE001, S110 - a failed hangup changes no measurement
                pass
            result.ended_s = self._now_s()
            self._collect_session_errors(caller)
        return result

    async def _play(self, caller: Caller) -> None:
        result = self.result
        answer_started: float | None = None
        answer_ended = time.monotonic()
        try:
            if self.scenario.wait_for_greeting:
                await caller.wait_greeting(timeout=30)
                answer_ended = time.monotonic()
            for index, (turn, prepared) in enumerate(
                    zip(self.scenario.turns, self.turns, strict=True), start=1):
                record = TurnResult(call_id=result.call_id, index=index, said=prepared.said,
                                    expected=list(turn.expect))
                result.turns.append(record)
                barge_in = turn.barge_in_after_ms is not None and answer_started is not None
                if barge_in:
                    assert answer_started is not None and turn.barge_in_after_ms is not None
                    await _sleep_until(answer_started + turn.barge_in_after_ms / 1000)
                else:
                    await _sleep_until(answer_ended + turn.pause_ms / 1000)
                answer_started, answer_ended = await self._turn(
                    caller, record, prepared, barge_in, turn.answer_timeout_s)
                if record.error in ("no_answer", "call_ended"):
                    return
        except ConnectionError as error:
            result.error, result.error_message = "call_ended", str(error)
        except TimeoutError:
            result.error, result.error_message = "no_answer", "no greeting within 30 s"

    async def _turn(self, caller: Caller, record: TurnResult, prepared: PreparedTurn,
                    barge_in: bool, timeout_s: float) -> tuple[float | None, float]:
        """Speaks one turn and measures the answer; returns (answer start, answer end)."""
        events_before = len(caller.events)
        speak_start = time.monotonic()
        record.started_s = round(speak_start - self.run_started, 3)

        async def first_transcript() -> tuple[float, int]:
            event = await caller.wait_event(
                lambda e: "user_transcript" in e and _is_new(caller, e, events_before),
                timeout=timeout_s)
            return time.monotonic(), int(event["user_transcript"].get("turn_index", 0))

        transcript = asyncio.ensure_future(first_transcript())
        try:
            sent_end = await caller.play(prepared.pcm)
            listen_from = sent_end
            if barge_in:
                stopped = await _wait_for(lambda: caller.agent_audio.first_silence_after(
                    speak_start, quiet_ms=BARGE_IN_QUIET_MS), timeout_s=10)
                if stopped is None:
                    record.error = "barge_in"
                    record.error_message = "the agent's audio did not stop within 10 s"
                else:
                    record.barge_in_stop_ms = round((stopped - speak_start) * 1000, 1)
                    listen_from = max(sent_end, stopped)
            try:
                first, end, pcm = await caller.wait_agent_audio(
                    start_after=listen_from, silence_ms=ANSWER_SILENCE_MS, timeout=timeout_s)
            except TimeoutError:
                record.error = record.error or "no_answer"
                record.error_message = record.error_message or (
                    f"no agent audio within {timeout_s:g} s")
                return None, time.monotonic()
            except ConnectionError as error:
                record.error, record.error_message = "call_ended", str(error)
                return None, time.monotonic()
            record.voice_to_voice_ms = round((first - sent_end) * 1000, 1)
            turn_index = 0
            if transcript.done() and not transcript.cancelled() and not transcript.exception():
                heard_at, turn_index = transcript.result()
                record.first_transcript_ms = round((heard_at - sent_end) * 1000, 1)
            await self._fill_from_events(caller, record, turn_index)
            if record.expected and self.content is not None:
                record.heard = await self.content.transcribe(pcm)
                record.content_ok = phrases_heard(record.expected, record.heard)
                if not record.content_ok and not record.error:
                    record.error = "content"
                    record.error_message = (f"expected {record.expected!r}, heard "
                                            f"{record.heard!r}")
            return first, end
        finally:
            if not transcript.done():
                transcript.cancel()
            await asyncio.gather(transcript, return_exceptions=True)

    async def _fill_from_events(self, caller: Caller, record: TurnResult,
                                turn_index: int) -> None:
        """The agent's final text and trace id of the platform's turn ``turn_index``.

        The final text is sent once playout is done, so it may trail the audio a little.
        """
        if not turn_index:
            return

        def final_text(event: dict[str, Any]) -> bool:
            text = event.get("agent_text") or {}
            return bool(text.get("is_final")) and text.get("turn_index") == turn_index

        try:
            event = await caller.wait_event(final_text, timeout=5)
            record.agent_text = event["agent_text"].get("text", "")
        except (TimeoutError, ConnectionError):
            pass
        for event in caller.events:
            metrics = event.get("turn_metrics") or {}
            if metrics.get("turn_index") == turn_index and metrics.get("trace_id"):
                record.trace_id = metrics["trace_id"]

    def _collect_session_errors(self, caller: Caller) -> None:
        errors = [e["error"] for e in caller.events if "error" in e]
        if errors and not self.result.error:
            detail = errors[0].get("detail", {})
            self.result.error = "session_error"
            self.result.error_message = (f"{detail.get('reason', 'ERROR')}: "
                                         f"{detail.get('message', '')}").strip()


def _is_new(caller: Caller, event: dict[str, Any], since: int) -> bool:
    return any(e is event for e in caller.events[since:])


def _connect_error(error: BaseException) -> tuple[str, str]:
    reason = getattr(error, "reason", "")
    if reason:
        return "rejected", f"{reason}: {getattr(error, 'message', '') or error}"
    return "connect_failed", f"{type(error).__name__}: {error}"


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _wait_for(check: Callable[[], float | None], timeout_s: float) -> float | None:
    """Polls ``check`` (a measurement over received audio) until it has a value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value is not None:
            return value
        await asyncio.sleep(0.02)
    return check()

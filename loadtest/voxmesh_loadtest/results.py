"""What the load tester measured, per turn and per call, in plain dataclasses (JSON-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Error kinds, for the report's error table.
ERROR_KINDS = {
    "rejected": "the edge refused the call (reason in the message, e.g. NO_WORKER_AVAILABLE)",
    "connect_failed": "the connection to the edge failed or timed out",
    "no_answer": "no agent audio within the turn's answer timeout",
    "call_ended": "the call ended before the scenario did",
    "session_error": "the platform reported an error event during the call",
    "content": "an expected phrase was not heard in the agent's answer",
    "barge_in": "the agent kept talking after the caller interrupted",
}


@dataclass
class TurnResult:
    """One caller utterance and the agent's answer, as the caller measured them.

    Times are milliseconds; ``None`` when not measured (e.g. no answer).

    Attributes:
        call_id: The call it belongs to.
        index: Turn number in the scenario, from 1.
        said: What the caller said.
        started_s: When the caller started speaking, seconds from the start of the run.
        voice_to_voice_ms: End of the caller's audio to the first agent audio received.
        first_transcript_ms: End of the caller's audio to the first transcript event (negative
            when speculative STT beat the end of speech).
        barge_in_stop_ms: Caller starts interrupting to the agent's audio stopping.
        expected: Phrases the scenario expected in the answer.
        heard: The agent's answer as transcribed from its audio (only with ``expected``).
        content_ok: Every expected phrase was heard (None when nothing was expected).
        agent_text: The agent's text for the turn, from its events.
        trace_id: The turn's trace (for Grafana), when the platform traces.
        error: Error kind, "" when the turn went fine.
        error_message: What happened.
    """

    call_id: int
    index: int
    said: str
    started_s: float = 0.0
    voice_to_voice_ms: float | None = None
    first_transcript_ms: float | None = None
    barge_in_stop_ms: float | None = None
    expected: list[str] = field(default_factory=list)
    heard: str = ""
    content_ok: bool | None = None
    agent_text: str = ""
    trace_id: str = ""
    error: str = ""
    error_message: str = ""


@dataclass
class CallResult:
    """One synthetic call.

    Attributes:
        call_id: Sequence number in the run, from 0.
        transport: ``webrtc``, ``websocket-pcm16`` or ``websocket-mulaw``.
        scheduled_s: When the arrival pattern started it (seconds from the start of the run).
        started_s: When it actually started (later when the concurrency limit held it).
        connected_s: When the edge accepted it.
        ended_s: When it ended.
        session_id: The platform's session id.
        worker_id: The worker that took it.
        turns: Per-turn results.
        error: Error kind of the call itself ("" when it ran to the end).
        error_message: What happened.
        providers: Provider names the platform reported (stt/llm/tts), when it did.
    """

    call_id: int
    transport: str
    scheduled_s: float = 0.0
    started_s: float = 0.0
    connected_s: float | None = None
    ended_s: float = 0.0
    session_id: str = ""
    worker_id: str = ""
    turns: list[TurnResult] = field(default_factory=list)
    error: str = ""
    error_message: str = ""
    providers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The call and every turn went fine."""
        return not self.error and not any(t.error for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "ok": self.ok}

"""Configuration of the agent worker (environment prefix ``VOXMESH_WORKER_``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voxmesh.agent import AgentDefinition
from voxmesh.config import CommonSettings

DEFAULT_SYSTEM_PROMPT = (
    "You are Vox, a friendly voice assistant on a phone call. Answer in one or two short, "
    "plain sentences that sound natural when spoken. Never use lists, markdown, emojis or "
    "abbreviations. If you do not know something, say so briefly."
)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(CommonSettings):
    """Agent worker settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_WORKER_", extra="ignore")

    worker_id: str = Field(default_factory=_default_worker_id)
    #: Agent definition (YAML). Its name, prompt, voice, turn-taking and LLM settings override
    #: the individual settings below.
    agent_file: Path | None = None
    agent: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]+$")
    max_sessions: int = Field(default=4, ge=1, le=10_000)
    stt_address: str = "127.0.0.1:50051"
    llm_address: str = "127.0.0.1:50052"
    tts_address: str = "127.0.0.1:50053"
    #: Guardrails service; empty disables the checks (not recommended in production).
    guardrails_address: str = "127.0.0.1:50054"
    #: A check that takes longer fails (closed, unless ``guardrails_fail_open``).
    guardrails_timeout_ms: int = Field(default=200, ge=1, le=10_000)
    guardrails_fail_open: bool = False
    #: Subagents service (async tools); empty: agents cannot use ``subagent`` tools.
    subagents_address: str = "127.0.0.1:50055"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    tts_voice: str = ""
    #: TTS model id (Cartesia ``sonic-2``); empty: the provider's default.
    tts_model: str = ""
    #: The conversation's language, sent to STT and TTS.
    stt_language: str = "en-US"
    #: Terms STT should favour (Deepgram keyterms), from the agent file.
    stt_keyterms: tuple[str, ...] = ()
    speaking_rate: float = Field(default=1.0, ge=0.5, le=2.0)
    max_tokens: int = Field(default=120, ge=1, le=4096)
    #: Tool rounds (call, result, continue) the LLM may take in one turn.
    max_tool_steps: int = Field(default=2, ge=0, le=10)
    temperature: float = Field(default=0.3, ge=0, le=2)
    #: Seconds active calls get to finish after SIGTERM before they are ended.
    drain_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    #: Put what was said on turn spans, PII-redacted. Off: traces carry no transcript text.
    trace_transcripts: bool = False

    # Turn-taking. Probabilities are Silero's speech probability per 32 ms window.
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    #: Speech this long starts a user turn (and, while the agent talks, interrupts it).
    min_speech_ms: int = Field(default=96, ge=32)
    #: A pause this long sends the utterance to STT speculatively.
    speculative_pause_ms: int = Field(default=160, ge=32)
    #: A pause this long ends the user's turn. People pause ~300 ms at a comma (Piper's comma
    #: pause measures 320-330 ms); 448 ms leaves a margin. Smarter turn detection can lower it.
    endpoint_silence_ms: int = Field(default=448, ge=64)
    #: How long to wait for a caller who stopped mid-sentence (○) or asked for time (◐).
    max_endpointing_ms: int = Field(default=5000, ge=64)
    long_pause_ms: int = Field(default=10000, ge=64)
    #: Text rules on the transcript spot unfinished turns ("my number is 555.").
    text_turn_detection: bool = True
    #: Ask the LLM for turn-completion marks (✓ ○ ◐); needs a capable model.
    turn_completion_tags: bool = False
    #: Caller sound shorter than this never interrupts the agent.
    min_interruption_ms: int = Field(default=320, ge=0)
    #: Speech this long pauses the agent's audio (tentatively: a blip that stops short of
    #: ``min_speech_ms`` resumes it at once). One 32 ms VAD window keeps barge-in fast.
    pause_speech_ms: int = Field(default=32, ge=32)
    #: While the agent's audio is paused by caller speech, this much speech confirms the
    #: interruption without waiting for its transcript.
    sure_interruption_ms: int = Field(default=1200, ge=0)
    #: Spoken when the call starts (the agent file's greeting).
    greeting: str = ""
    #: Disable to measure what speculative STT saves (bench only).
    speculative_stt: bool = True
    #: Audio kept before detected speech onset, so the first syllable is not clipped.
    preroll_ms: int = Field(default=320, ge=0, le=2000)
    #: The first piece of an answer goes to TTS at a comma once it has this many words. At 1,
    #: an opening "Sure," is spoken while the model writes the rest: on 2 cores that takes
    #: ~400 ms off the median voice-to-voice (the LLM writes ~25 tokens/s; Piper's cost grows
    #: with sentence length).
    first_clause_min_words: int = Field(default=1, ge=0)
    #: Agent audio sent ahead of real time, to absorb scheduling jitter.
    playout_lead_ms: int = Field(default=60, ge=0, le=1000)
    #: Agent audio per NATS message once an answer is under way (whole 20 ms frames; the
    #: first frame of an answer never waits). Each message costs the worker, NATS, the edge
    #: and the caller's socket a round of work: 40 ms halves it, within the 60 ms lead.
    playout_message_ms: int = Field(default=40, ge=20, le=200, multiple_of=20)
    #: Caller audio goes to STT in messages of this much audio (and before every finalize).
    #: Each message costs both ends a gRPC round of work; 100 ms is five times fewer than
    #: 20 ms frames and within what streaming recognizers take (Deepgram suggests 20-250 ms).
    #: Only interim transcripts wait for it: a final flushes what is buffered first.
    stt_chunk_ms: int = Field(default=100, ge=20, le=1000)


def apply_agent(settings: WorkerSettings, agent: AgentDefinition) -> WorkerSettings:
    """Settings with the agent file's values in place of the individual ones."""
    turns = agent.turn_taking
    return settings.model_copy(update={
        "agent": agent.name,
        "system_prompt": agent.system_prompt,
        "tts_voice": agent.voice.voice,
        "tts_model": agent.voice.model,
        "stt_language": agent.stt.language,
        "stt_keyterms": tuple(agent.stt.keyterms),
        "speaking_rate": agent.voice.speaking_rate,
        "max_tokens": agent.llm.max_tokens,
        "temperature": agent.llm.temperature,
        "vad_threshold": turns.vad_threshold,
        "min_speech_ms": turns.min_speech_ms,
        "speculative_pause_ms": turns.speculative_pause_ms,
        "endpoint_silence_ms": turns.min_endpointing_ms,
        "max_endpointing_ms": turns.max_endpointing_ms,
        "long_pause_ms": turns.long_pause_ms,
        "text_turn_detection": turns.text_turn_detection,
        "turn_completion_tags": turns.turn_completion_tags,
        "min_interruption_ms": turns.min_interruption_ms,
        "greeting": agent.greeting,
    })

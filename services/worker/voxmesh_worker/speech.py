"""The agent's voice for one turn: text in, paced audio out, and a record of what was heard.

A :class:`TurnSpeech` owns one TTS stream. Sentences go in as the LLM completes them; audio
chunks come back with (estimated) word timings and go to the playout. Because every word's
position in the turn's audio is known, :meth:`TurnSpeech.heard_text` can say exactly which words
the caller heard before an interruption (seed guide 5.9.2).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.trace import Span, SpanKind

from voxmesh.errors import error_from_rpc
from voxmesh.v1 import common_pb2, session_pb2, tts_pb2
from voxmesh_worker.clients import ServiceClients
from voxmesh_worker.playout import Playout
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.turn_trace import TurnTrace

INTERNAL_FORMAT = common_pb2.AudioFormat(
    encoding=common_pb2.AUDIO_ENCODING_PCM16, sample_rate_hz=16000, channels=1
)
_BYTES_PER_MS = 32  # PCM16 at 16 kHz


def ms_since(start: float) -> int:
    """Whole milliseconds from a monotonic ``start`` until now."""
    return max(0, int(round((time.monotonic() - start) * 1000)))


@dataclass
class Segment:
    """A sentence of the agent's answer, with word timings relative to its own audio."""

    text: str
    turn_offset_ms: int
    words: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class Turn:
    """One exchange: the caller's utterance and the agent's answer. Turn 0 is the greeting."""

    index: int
    transcript: asyncio.Future[str]
    speech_end: float
    speech_end_wall: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    decided_at: float = 0.0
    metrics: session_pb2.TurnMetrics = field(default_factory=session_pb2.TurnMetrics)
    generated: str = ""
    first_sentence_at: float = 0.0
    trace: TurnTrace | None = None
    playout_span: Span | None = None
    #: All of the answer has been played out (only its record in context is left to do).
    finished_speaking: bool = False
    #: Some of the answer reached the caller before it was interrupted.
    audible: bool = False
    #: Interrupted after some words but before the end: the caller missed the rest.
    cut_short: bool = False
    #: Filler and watchdog lines already said this turn (said once, not every tool round).
    tool_lines_said: set[str] = field(default_factory=set)

    def ref(self, session_id: str) -> common_pb2.TurnRef:
        """The turn as the model services know it."""
        return common_pb2.TurnRef(session_id=session_id, turn_index=self.index, turn_id=self.id)


class ServiceCallError(Exception):
    """A call to a model service failed; the turn is lost but the call goes on."""

    def __init__(self, component: str, exc: grpc.RpcError) -> None:
        """Wraps ``exc``, naming the service in the message."""
        detail = error_from_rpc(exc)
        detail.component = detail.component or component
        detail.message = f"{component} failed: {detail.message}"
        super().__init__(detail.message)
        self.detail = detail


async def guarded(call: AsyncIterator[Any], component: str) -> AsyncIterator[Any]:
    """Iterates a gRPC stream, naming the service in any failure."""
    try:
        async for item in call:
            yield item
    except grpc.RpcError as exc:
        raise ServiceCallError(component, exc) from exc


class TurnSpeech:
    """One turn's TTS stream, feeding the playout.

    Use as an async context manager; :meth:`finish` waits until the caller has heard it all.
    """

    def __init__(
        self,
        turn: Turn,
        *,
        session_id: str,
        clients: ServiceClients,
        settings: WorkerSettings,
        playout: Playout,
        on_sentence_audio: Callable[[str], Awaitable[None]],
    ) -> None:
        """Prepares the stream; entering the context opens it.

        Args:
            turn: The turn being spoken.
            session_id: The call.
            clients: Model service stubs.
            settings: Voice and playout settings.
            playout: Where the audio goes.
            on_sentence_audio: Awaited with the text spoken so far when a sentence's first
                audio arrives (for the agent's live transcript and state).
        """
        self._turn = turn
        self._session_id = session_id
        self._clients = clients
        self._settings = settings
        self._playout = playout
        self._on_sentence_audio = on_sentence_audio
        self._requests: asyncio.Queue[tts_pb2.SynthesizeRequest | None] = asyncio.Queue()
        self._segments: list[Segment] = []
        self._audio_ms = 0
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._span: Span | None = None
        self._started = time.monotonic()

    async def __aenter__(self) -> TurnSpeech:
        """Opens the TTS stream."""
        turn, settings = self._turn, self._settings
        first = tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(
            turn=turn.ref(self._session_id), format=INTERNAL_FORMAT, voice=settings.tts_voice,
            model=settings.tts_model, language=settings.stt_language,
            speaking_rate=settings.speaking_rate))

        async def requests() -> AsyncIterator[tts_pb2.SynthesizeRequest]:
            yield first
            while (request := await self._requests.get()) is not None:
                yield request

        metadata = None
        if turn.trace is not None:
            self._span = turn.trace.child("tts", kind=SpanKind.CLIENT)
            metadata = TurnTrace.metadata(self._span)
            self._playout.set_trace_headers(turn.index, TurnTrace.carrier(turn.trace.span))
        self._call = self._clients.tts.Synthesize(requests(), metadata=metadata)
        self._reader = asyncio.create_task(self._read(), name=f"tts-reader-{turn.index}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Cancels the stream if :meth:`finish` did not complete."""
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    @property
    def audible(self) -> bool:
        """True once any of this turn's audio has been published to the caller."""
        return self._playout.published_ms(self._turn.index) > 0

    async def say(self, text: str) -> None:
        """Speaks a sentence (or clause): synthesized at once, queued after earlier ones."""
        turn = self._turn
        if not turn.first_sentence_at:
            turn.first_sentence_at = time.monotonic()
            turn.metrics.first_sentence_ms = ms_since(self._started)
        await self._requests.put(tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(
            text=text + " ")))
        await self._requests.put(tts_pb2.SynthesizeRequest(flush=tts_pb2.Flush()))

    async def finish(self) -> None:
        """Closes the input, then waits until all the audio has been played out."""
        await self._requests.put(None)
        assert self._reader is not None
        await self._reader
        if self._span is not None:
            self._span.set_attribute("voxmesh.tts.first_audio_ms",
                                     self._turn.metrics.tts_first_audio_ms)
            self._span.end()
        self._playout.end_turn(self._turn.index)
        await self._playout.wait_drained()

    def heard_text(self) -> str:
        """Words whose (estimated) end the caller heard before the playout stopped."""
        heard_ms = self._playout.heard_ms(self._turn.index)
        return " ".join(
            word for segment in self._segments for word, _start, end in segment.words
            if segment.turn_offset_ms + end <= heard_ms)

    def spoken_text(self) -> str:
        """Every sentence that has reached the playout so far."""
        return " ".join(segment.text for segment in self._segments)

    async def _read(self) -> None:
        turn = self._turn
        async for response in guarded(self._call, "tts"):
            if response.WhichOneof("response") != "audio":
                continue
            audio = response.audio
            if not turn.metrics.tts_first_audio_ms and turn.first_sentence_at:
                turn.metrics.tts_first_audio_ms = ms_since(turn.first_sentence_at)
            if audio.text:  # first chunk of a segment
                self._segments.append(Segment(audio.text, self._audio_ms))
                await self._on_sentence_audio(self.spoken_text())
            if audio.words and self._segments:
                self._segments[-1].words.extend(
                    (w.word, w.start_ms, w.end_ms) for w in audio.words)
            self._audio_ms += len(audio.chunk.data) // _BYTES_PER_MS
            self._playout.enqueue(turn.index, audio.chunk.data)

"""What a Recognize stream hands to the provider that serves it (an *engine*), and back.

A :class:`~voxmesh_stt.service.RecognitionStream` validates input and keeps what a fallback
needs; an engine turns the stream's audio and control messages into transcripts with one
provider: :class:`~voxmesh_stt.batch_engine.BatchEngine` for Whisper-style providers,
:class:`~voxmesh_stt.streaming_engine.StreamingEngine` for Deepgram-style ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.trace import Span, SpanKind

from voxmesh.errors import InvalidInputError
from voxmesh.telemetry import extract, tracer
from voxmesh.v1 import common_pb2, stt_pb2
from voxmesh_stt.providers.base import WordTiming
from voxmesh_stt.settings import STTSettings

_tracer = tracer("stt")

PCM16_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})


@dataclass(frozen=True)
class AudioInput:
    """The validated audio format of a stream.

    Attributes:
        mulaw: G.711 mu-law (8 kHz) rather than PCM16.
        rate: Sample rate, in Hz.
        max_chunk_bytes: Largest chunk accepted.
    """

    mulaw: bool
    rate: int
    max_chunk_bytes: int

    @classmethod
    def from_config(cls, config: stt_pb2.StreamConfig, settings: STTSettings) -> AudioInput:
        """Checks ``config.format``.

        Raises:
            InvalidInputError: Unsupported encoding, rate or channel count.
        """
        fmt = config.format
        if fmt.encoding == common_pb2.AUDIO_ENCODING_PCM16:
            if fmt.sample_rate_hz not in PCM16_RATES:
                raise InvalidInputError(
                    f"sample rate {fmt.sample_rate_hz} Hz is not supported for PCM16; use one of "
                    f"{sorted(PCM16_RATES)}",
                    reason="SAMPLE_RATE_UNSUPPORTED", field="config.format.sample_rate_hz",
                    component="stt")
        elif fmt.encoding == common_pb2.AUDIO_ENCODING_MULAW:
            if fmt.sample_rate_hz != 8000:
                raise InvalidInputError(
                    f"mu-law audio must be 8000 Hz, got {fmt.sample_rate_hz} Hz",
                    reason="SAMPLE_RATE_UNSUPPORTED", field="config.format.sample_rate_hz",
                    component="stt")
        else:
            raise InvalidInputError(
                "config.format.encoding must be AUDIO_ENCODING_PCM16 or AUDIO_ENCODING_MULAW",
                reason="ENCODING_UNSUPPORTED", field="config.format.encoding", component="stt")
        channels = fmt.channels or 1
        if channels != 1:
            raise InvalidInputError(
                f"only mono audio is accepted, got {channels} channels",
                reason="CHANNELS_UNSUPPORTED", field="config.format.channels", component="stt")
        mulaw = fmt.encoding == common_pb2.AUDIO_ENCODING_MULAW
        rate = fmt.sample_rate_hz
        bytes_per_second = rate * (1 if mulaw else 2)
        return cls(mulaw, rate, bytes_per_second * settings.max_chunk_ms // 1000)

    @property
    def bytes_per_ms(self) -> float:
        """Bytes of audio per millisecond."""
        return self.rate * (1 if self.mulaw else 2) / 1000


@dataclass(eq=False)
class FinalRequest:
    """One Finalize of the client (or one the service adds: end of stream, longest utterance).

    Attributes:
        request_id: Echoed in the final.
        speculative: Keep the utterance open after answering.
        start_ms: Stream position where the utterance started.
        end_ms: Stream position when the final was asked for.
        trace_context: W3C context of the turn.
        submitted_at: ``time.monotonic()`` when the current engine got it (deadlines count
            from here).
        answered: A final was sent for it.
    """

    request_id: str
    speculative: bool
    start_ms: int
    end_ms: int
    trace_context: dict[str, str] = field(default_factory=dict)
    submitted_at: float = 0.0
    answered: bool = False


class EngineSink(Protocol):
    """Where an engine sends what it produces (the stream's output, in order)."""

    def final(self, request: FinalRequest, transcript: stt_pb2.Transcript) -> None:
        """The answer to ``request``."""

    def send(self, response: stt_pb2.RecognizeResponse) -> None:
        """An interim transcript or a speech event."""


class Engine(Protocol):
    """One provider serving a Recognize stream. Calls never block; :meth:`run` does the work.

    Attributes:
        provider_name: The provider's id.
        max_utterance_ms: Longest utterance the provider takes in one piece; None for no limit.
    """

    provider_name: str
    max_utterance_ms: float | None

    def push_audio(self, data: bytes) -> None:
        """Audio in the stream's format."""

    def finalize(self, request: FinalRequest) -> None:
        """Asks for a final; answered through :meth:`EngineSink.final`, in request order."""

    def reset(self) -> None:
        """Drops the open utterance."""

    def end_input(self) -> None:
        """No more input: :meth:`run` returns once everything asked for is answered."""

    async def run(self) -> None:
        """Produces results until the input ended and everything is answered.

        Raises:
            VoxmeshError: The provider failed; ``retryable`` tells whether to fall over.
        """

    async def aclose(self) -> None:
        """Releases the engine's connection, if any."""


def words_to_proto(words: tuple[WordTiming, ...] | list[WordTiming],
                   offset_ms: int = 0) -> list[common_pb2.WordTiming]:
    """Word timings as protobuf messages, shifted by ``offset_ms``."""
    return [common_pb2.WordTiming(word=w.word, start_ms=w.start_ms + offset_ms,
                                  end_ms=w.end_ms + offset_ms) for w in words]


@contextmanager
def final_span(request: FinalRequest, provider: str, *, start_ns: int | None = None,
               ) -> Iterator[Span]:
    """The ``stt.transcribe`` span of one final, in the trace of the turn that asked for it."""
    with _tracer.start_as_current_span(
        "stt.transcribe", context=extract(request.trace_context), kind=SpanKind.SERVER,
        start_time=start_ns if start_ns is not None else time.time_ns(),
        attributes={"voxmesh.stt.provider": provider,
                    "voxmesh.stt.audio_ms": request.end_ms - request.start_ms,
                    "voxmesh.stt.speculative": request.speculative},
    ) as span:
        yield span


@contextmanager
def fallback_span(trace_context: dict[str, str], from_provider: str, to_provider: str,
                  ) -> Iterator[Span]:
    """The ``stt.fallback`` span, in the trace of the turn whose final is being handed over."""
    with _tracer.start_as_current_span(
        "stt.fallback", context=extract(trace_context), kind=SpanKind.INTERNAL,
        attributes={"voxmesh.stt.from_provider": from_provider,
                    "voxmesh.stt.to_provider": to_provider},
    ) as span:
        yield span

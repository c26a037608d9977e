"""Base classes of STT providers: batch (whole utterance in, text out) and streaming.

* Batch providers (Whisper-style) implement :meth:`STTProvider._transcribe`; the service buffers
  each utterance and asks for its text when the client wants a final.
* Streaming providers (Deepgram-style) implement :meth:`StreamingSTTProvider._open_stream` and an
  :class:`STTStream`: audio goes to the vendor as it arrives, interim hypotheses and speech events
  come back, and a final is asked for with :meth:`STTStream.finalize`.

The base classes own what every provider needs: running inference off the event loop, retries
of retryable failures (a batch decode, a stream's connection), timing and error translation.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import grpc

from voxmesh.errors import ProviderError, VoxmeshError
from voxmesh.metrics import meter
from voxmesh.providers import ProviderBase

_CONNECT = meter("stt").create_histogram(
    "voxmesh.stt.stream.connect", unit="ms",
    description="Time to open a streaming provider's connection (attribute provider)")


class ProviderUnavailableError(ProviderError):
    """The provider could not be reached or dropped the connection; another may answer."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


@dataclass(frozen=True)
class WordTiming:
    """One recognized word and where it was heard, in milliseconds of stream audio."""

    word: str
    start_ms: int
    end_ms: int


@dataclass
class RecognitionResult:
    """Text of one utterance (or of the audio so far, for interims)."""

    text: str
    confidence: float = 0.0
    words: list[WordTiming] = field(default_factory=list)
    processing_ms: int = 0


class SpeechEventKind(enum.Enum):
    """Voice activity and endpointing a streaming provider reports."""

    SPEECH_STARTED = "speech_started"
    #: The provider's endpointer closed the utterance (Deepgram ``speech_final``).
    ENDPOINT = "endpoint"
    #: No words for the provider's utterance-end gap (Deepgram ``UtteranceEnd``).
    UTTERANCE_END = "utterance_end"


@dataclass(frozen=True)
class SpeechHint:
    """A speech event, at a position in the stream's audio."""

    kind: SpeechEventKind
    at_ms: int


@dataclass(frozen=True)
class InterimResult:
    """The provider's current hypothesis of the open utterance (finalized words plus interim)."""

    text: str
    start_ms: int
    end_ms: int
    confidence: float
    words: tuple[WordTiming, ...] = ()


StreamEvent: TypeAlias = InterimResult | SpeechHint


@dataclass(frozen=True)
class StreamOptions:
    """What a streaming provider needs to know about one stream.

    Attributes:
        encoding: ``"linear16"`` (PCM16 little-endian) or ``"mulaw"`` (G.711), sent as is.
        sample_rate: Rate of the audio, in Hz.
        language: BCP-47 language; empty for the provider's default.
        keyterms: Words and names to favour.
    """

    encoding: Literal["linear16", "mulaw"]
    sample_rate: int
    language: str = ""
    keyterms: tuple[str, ...] = ()

    @property
    def bytes_per_second(self) -> int:
        """Bytes of audio per second of sound."""
        return self.sample_rate * (1 if self.encoding == "mulaw" else 2)


class STTProvider(ProviderBase):
    """A batch speech-to-text provider.

    Attributes:
        sample_rate: The rate the provider wants; the service resamples to it.
        model: Model id reported to clients.
    """

    component = "stt"
    sample_rate: int = 16_000
    model: str = ""

    async def transcribe(self, pcm16: bytes, language: str = "") -> RecognitionResult:
        """Transcribes PCM16 mono audio at :attr:`sample_rate`.

        Args:
            pcm16: The utterance.
            language: BCP-47 language hint; empty for the provider default.
        """
        started = time.perf_counter()

        async def attempt() -> RecognitionResult:
            return await self._transcribe(pcm16, language)

        result = await self.with_retries(attempt)
        result.processing_ms = int((time.perf_counter() - started) * 1000)
        return result

    @abstractmethod
    async def _transcribe(self, pcm16: bytes, language: str) -> RecognitionResult:
        """Provider-specific transcription."""


class STTStream(ABC):
    """One live recognition stream of a :class:`StreamingSTTProvider`.

    Audio, finalize, reset and end-of-input calls are queued in order and never block; results
    come back from :meth:`events` (interims and speech events) and from the awaitable each
    :meth:`finalize` returns. Positions are milliseconds of this stream's audio. A failure ends
    :meth:`events` and every pending finalize with the same translated
    :class:`~voxmesh.errors.VoxmeshError`.
    """

    def __init__(self, provider: StreamingSTTProvider) -> None:
        """Creates the stream of ``provider`` (whose ``translate_error`` classifies failures)."""
        self.provider = provider

    @abstractmethod
    def send_audio(self, data: bytes) -> None:
        """Queues audio in the stream's encoding."""

    @abstractmethod
    def finalize(self, *, speculative: bool) -> Awaitable[RecognitionResult]:
        """Asks for the text of the open utterance.

        Args:
            speculative: Answer with the text so far without closing the utterance; a later
                finalize covers the same audio again.
        """

    @abstractmethod
    def reset(self) -> None:
        """Drops the open utterance: its text is never returned."""

    @abstractmethod
    def end_input(self) -> None:
        """No more audio: flush, answer pending finalizes, then end :meth:`events`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Closes the connection now; pending work is abandoned."""

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Interim results and speech events, until the stream ends.

        Raises:
            VoxmeshError: The provider failed (translated by the provider).
        """
        try:
            async for event in self._events():
                yield event
        except VoxmeshError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified by the provider
            raise self.provider.translate_error(exc) from exc

    @abstractmethod
    def _events(self) -> AsyncIterator[StreamEvent]:
        """Provider-specific event stream."""


class StreamingSTTProvider(ProviderBase):
    """A speech-to-text provider that transcribes audio as it streams in.

    Attributes:
        model: Model id reported to clients.
    """

    component = "stt"
    model: str = ""

    async def open_stream(self, options: StreamOptions) -> STTStream:
        """Opens a stream, retrying retryable connection failures.

        Raises:
            VoxmeshError: The connection failed (translated; ``retryable`` tells whether another
                provider may take over).
        """
        started = time.perf_counter()

        async def attempt() -> STTStream:
            return await self._open_stream(options)

        stream = await self.with_retries(attempt)
        _CONNECT.record((time.perf_counter() - started) * 1000, {"provider": self.name})
        return stream

    @abstractmethod
    async def _open_stream(self, options: StreamOptions) -> STTStream:
        """Provider-specific connection."""


#: Any STT provider, batch or streaming.
AnySTTProvider: TypeAlias = STTProvider | StreamingSTTProvider

"""Base class of STT providers.

Batch providers (Whisper-style: whole utterance in, text out) implement :meth:`_transcribe`.
The base class owns what every provider needs: running inference off the event loop,
retries of retryable failures, timing and error translation.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass, field

from voxmesh.providers import ProviderBase


@dataclass
class RecognitionResult:
    """Text of one utterance (or of the audio so far, for interims)."""

    text: str
    confidence: float = 0.0
    words: list[tuple[str, int, int]] = field(default_factory=list)
    processing_ms: int = 0


class STTProvider(ProviderBase):
    """A speech-to-text provider.

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

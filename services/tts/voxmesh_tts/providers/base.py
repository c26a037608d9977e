"""Base class of TTS providers.

A provider turns one piece of text (a sentence) into one or more :class:`SpeechPiece`. The base
class owns retries, timing and error translation; providers implement :meth:`_synthesize`.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from voxmesh.providers import ProviderBase


@dataclass
class SpeechPiece:
    """Audio for (part of) a text, PCM16 mono at the provider's :attr:`TTSProvider.sample_rate`.

    ``words`` holds (word, start_ms, end_ms) relative to the start of this piece.
    """

    pcm16: bytes
    words: list[tuple[str, int, int]] = field(default_factory=list)
    timings_estimated: bool = False


class TTSProvider(ProviderBase):
    """A text-to-speech provider."""

    component = "tts"
    sample_rate: int = 22_050
    default_voice: str = ""

    async def synthesize(
        self, text: str, *, voice: str = "", speaking_rate: float = 1.0
    ) -> AsyncIterator[SpeechPiece]:
        """Streams audio for ``text``. Retries happen only before the first piece was yielded."""
        pieces = await self.with_retries(lambda: self._synthesize(text, voice, speaking_rate))
        for piece in pieces:
            yield piece

    @abstractmethod
    async def _synthesize(self, text: str, voice: str, speaking_rate: float) -> list[SpeechPiece]:
        """Provider-specific synthesis of one sentence."""


def estimate_word_timings(text: str, duration_ms: int) -> list[tuple[str, int, int]]:
    """Spreads ``duration_ms`` over the words of ``text`` in proportion to their length.

    Used by providers that cannot align words. Punctuation counts as a short pause, which is
    where speech engines put one.
    """
    tokens = re.findall(r"\S+", text)
    if not tokens or duration_ms <= 0:
        return []
    weights = [len(re.sub(r"\W", "", t)) + 1 + (2 if re.search(r"[,.;:!?]$", t) else 0)
               for t in tokens]
    scale = duration_ms / sum(weights)
    timings, cursor = [], 0.0
    for token, weight in zip(tokens, weights, strict=True):
        start, cursor = cursor, cursor + weight * scale
        timings.append((token, int(start), int(cursor)))
    return timings

"""Base classes of TTS providers.

Two ways to synthesize, both owned by :class:`TTSProvider` (retries, timing and error
translation live here):

* sentence at a time: :meth:`TTSProvider.synthesize` turns one piece of text into one or more
  :class:`SpeechPiece` (Piper, the latency model). Providers implement :meth:`_synthesize`.
* streaming: :meth:`TTSProvider.open_stream` opens a :class:`TTSStream` for one agent turn. Text
  goes in segment by segment while audio of earlier segments comes back (Cartesia's WebSocket
  contexts). Providers that can do this set :attr:`TTSProvider.streaming` and implement
  :meth:`TTSProvider._open_stream`.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

from voxmesh.errors import VoxmeshError
from voxmesh.providers import ProviderBase


@dataclass
class SpeechPiece:
    """Audio for (part of) a text, PCM16 mono at the provider's :attr:`TTSProvider.sample_rate`.

    ``words`` holds (word, start_ms, end_ms) relative to the start of this piece.
    """

    pcm16: bytes
    words: list[tuple[str, int, int]] = field(default_factory=list)
    timings_estimated: bool = False


@dataclass
class StreamedPiece:
    """Audio and/or word timings of one segment, from a :class:`TTSStream`.

    Attributes:
        segment: The id the segment was pushed with.
        pcm16: PCM16 mono at the stream's :attr:`TTSStream.sample_rate`; may be empty when the
            piece only carries word timings or marks the end.
        words: (word, start_ms, end_ms) relative to the start of the segment's audio.
        last: The segment's audio is complete.
    """

    segment: int
    pcm16: bytes = b""
    words: list[tuple[str, int, int]] = field(default_factory=list)
    last: bool = False


class TTSStream(ABC):
    """One provider-side synthesis stream for one agent turn (a Cartesia context).

    Text is pushed as numbered segments and is synthesized in push order; pieces come back in
    segment order, and every segment ends with a piece whose ``last`` is set. Pushing never
    blocks: a failure (a dropped connection, a rejected request) surfaces from
    :meth:`next_piece`, translated by the provider into a :class:`VoxmeshError`.
    """

    #: Rate of the audio in the pieces, chosen when the stream was opened.
    sample_rate: int

    def __init__(self, provider: TTSProvider, sample_rate: int) -> None:
        """Creates the stream of ``provider``."""
        self.provider = provider
        self.sample_rate = sample_rate

    @abstractmethod
    def push_text(self, segment: int, text: str) -> None:
        """Queues the text of one segment (a speakable sentence or clause)."""

    @abstractmethod
    def end_input(self) -> None:
        """No more text: the provider finishes the segments already pushed."""

    @abstractmethod
    def cancel(self) -> None:
        """Stops synthesis of everything pushed (barge-in); no further pieces are produced."""

    @abstractmethod
    async def aclose(self) -> None:
        """Releases the stream, cancelling provider-side work that is still running."""

    async def next_piece(self) -> StreamedPiece | None:
        """The next piece, or None once the stream has ended (finished or cancelled).

        Raises:
            VoxmeshError: The provider failed; ``retryable`` tells whether another provider
                may take over.
        """
        try:
            return await self._next_piece()
        except (asyncio.CancelledError, VoxmeshError):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified by the provider
            raise self.provider.translate_error(exc) from exc

    @abstractmethod
    async def _next_piece(self) -> StreamedPiece | None:
        """Provider-specific: the next piece, or None at the end."""


class TTSProvider(ProviderBase):
    """A text-to-speech provider."""

    component = "tts"
    sample_rate: int = 22_050
    default_voice: str = ""
    #: Takes text incrementally over one :class:`TTSStream` per turn (see :meth:`open_stream`).
    streaming: ClassVar[bool] = False

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

    def open_stream(
        self,
        *,
        sample_rate: int,
        voice: str = "",
        model: str = "",
        language: str = "",
        speaking_rate: float = 1.0,
    ) -> TTSStream:
        """Opens a streaming synthesis for one turn (only where :attr:`streaming` is set).

        Args:
            sample_rate: Rate of the audio wanted back; the provider produces it natively.
            voice: Provider-specific voice id; empty means :attr:`default_voice`.
            model: Provider-specific model id; empty means the provider's default.
            language: BCP-47 language of the text; empty means the provider's default.
            speaking_rate: 1.0 is normal speed.
        """
        if not self.streaming:
            raise NotImplementedError(f"{self.name} synthesizes one sentence at a time")
        return self._open_stream(sample_rate=sample_rate, voice=voice or self.default_voice,
                                 model=model, language=language, speaking_rate=speaking_rate)

    def _open_stream(
        self, *, sample_rate: int, voice: str, model: str, language: str, speaking_rate: float
    ) -> TTSStream:
        """Provider-specific: creates the stream (connecting happens inside it, not here)."""
        raise NotImplementedError


def _word_key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class WordAligner:
    """Follows which words of a text have been spoken, from the words a provider reports.

    Providers report words their own way (Cartesia drops punctuation, may spell out numbers).
    Each reported word is matched to the next few words of the text; a match moves the
    cursor past it, so :meth:`remaining` is the text not yet covered by any spoken word.
    """

    #: How far ahead a reported word may match (a provider may skip or merge a token).
    LOOKAHEAD = 4

    def __init__(self, text: str) -> None:
        """Starts at the first word of ``text``."""
        self._tokens = text.split()
        self._keys = [_word_key(token) for token in self._tokens]
        self._cursor = 0

    def match(self, word: str) -> str:
        """Marks ``word`` spoken; returns the text's token for it (with its punctuation).

        A word that matches nothing (a number spelled out, say) is returned as reported and
        covers nothing.
        """
        key = _word_key(word)
        if key:
            stop = min(len(self._tokens), self._cursor + self.LOOKAHEAD)
            for index in range(self._cursor, stop):
                token_key = self._keys[index]
                if token_key == key or (token_key.startswith(key) and len(key) >= 2):
                    self._cursor = index + 1
                    return self._tokens[index]
        return word

    def remaining(self) -> str:
        """The words after the last one matched."""
        return " ".join(self._tokens[self._cursor :])


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

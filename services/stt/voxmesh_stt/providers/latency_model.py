"""Latency-model STT: a synthetic provider for capacity tests of the platform, not a model.

It answers every transcription with one of a fixed list of phrases after a first-byte delay
drawn from a :class:`~voxmesh.latency_model.DelayDistribution`, and reports itself as
``latency-model`` wherever provider names surface, so its figures are never mistaken for a
real recognizer's (docs/latency-model-providers.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Sequence

from voxmesh.errors import ConfigError
from voxmesh.latency_model import DelayDistribution
from voxmesh_stt.providers.base import RecognitionResult, STTProvider

#: Audio shorter than this (100 ms at 16 kHz, PCM16) gets an empty transcript, as Whisper
#: gives: there is nothing a recognizer could use.
_MIN_AUDIO_BYTES = 3200


class LatencyModelSTT(STTProvider):
    """Deterministic transcripts after a sampled first-byte delay; runs no model.

    The phrase is a pure function of the seed and the utterance's audio: the same audio gets
    the same phrase in every run and process, whatever else runs concurrently (a per-process
    counter would hand phrases out in arrival order, which concurrency makes random). Different
    utterances spread over the phrases.

    Transcriptions run concurrently (the delay is an :func:`asyncio.sleep`), unlike a local
    model's single inference thread: the platform around it is what is under test.
    """

    name = "latency-model"

    def __init__(
        self, *, first_byte: DelayDistribution, phrases: Sequence[str], seed: int = 0
    ) -> None:
        """Creates the provider.

        Args:
            first_byte: Delay before each result, in milliseconds.
            phrases: The transcripts to choose from.
            seed: Seeds the delays and the choice of phrase.

        Raises:
            ConfigError: If ``phrases`` is empty.
        """
        super().__init__()
        if not phrases:
            raise ConfigError("the latency-model STT provider needs at least one phrase")
        self._first_byte = first_byte
        self._phrases = tuple(phrases)
        self._seed = seed
        self._rng = random.Random(seed)
        # Reports print the model id next to the figures; it carries the synthetic settings.
        self.model = f"latency-model(first_byte={first_byte})"

    def phrase_for(self, pcm16: bytes) -> str:
        """The transcript for an utterance: empty under 100 ms, else a phrase keyed by the audio.

        Args:
            pcm16: The utterance, PCM16 mono at :attr:`sample_rate`.
        """
        if len(pcm16) < _MIN_AUDIO_BYTES:
            return ""
        digest = hashlib.blake2b(f"{self._seed}:".encode(), digest_size=8)
        digest.update(pcm16)
        return self._phrases[int.from_bytes(digest.digest(), "big") % len(self._phrases)]

    async def _transcribe(self, pcm16: bytes, language: str) -> RecognitionResult:
        await asyncio.sleep(self._first_byte.sample_s(self._rng))
        text = self.phrase_for(pcm16)
        return RecognitionResult(text=text, confidence=1.0 if text else 0.0)

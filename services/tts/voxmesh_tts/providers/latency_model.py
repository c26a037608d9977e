"""Latency-model TTS: a synthetic provider for capacity tests of the platform, not a voice.

Each sentence becomes a 220 Hz tone, one soft-edged burst per word, whose length follows a
speaking rate. It is audible on purpose (about -20 dBFS): callers and the worker tell agent
speech from silence by level. The audio comes after a delay drawn from a
:class:`~voxmesh.latency_model.DelayDistribution`, and the provider stays busy with the
sentence for as long as producing its audio at the configured real-time factor takes. It
reports itself as ``latency-model`` wherever provider names surface
(docs/latency-model-providers.md).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator

import numpy as np

from voxmesh.audio import float_to_pcm16
from voxmesh.errors import ConfigError
from voxmesh.latency_model import DelayDistribution
from voxmesh_tts.providers.base import SpeechPiece, TTSProvider, estimate_word_timings

TONE_HZ = 220.0
#: Peak of the tone: a steady sine at this peak has an RMS of -20 dBFS.
TONE_PEAK = math.sqrt(2) * 10 ** (-20 / 20)
# Each word is voiced for the first part of its slot and silent for the rest, so words stay
# apart as they do in speech; the ramps keep the edges from clicking.
_VOICED_SHARE = 0.85
_RAMP_S = 0.015


def speech_duration_ms(text: str, words_per_minute: float, speaking_rate: float = 1.0) -> int:
    """Duration of ``text`` spoken at ``words_per_minute``, scaled by ``speaking_rate``."""
    words = len(text.split())
    return round(words * 60_000 / words_per_minute / (speaking_rate or 1.0))


def render_tone(words: list[tuple[str, int, int]], duration_ms: int, sample_rate: int) -> bytes:
    """PCM16 tone bursts, one per (word, start_ms, end_ms), over ``duration_ms`` of audio."""
    total = duration_ms * sample_rate // 1000
    envelope = np.zeros(total, dtype=np.float32)
    for _word, start_ms, end_ms in words:
        start = start_ms * sample_rate // 1000
        voiced = int((end_ms - start_ms) * _VOICED_SHARE * sample_rate / 1000)
        stop = min(start + voiced, total)
        if stop <= start:
            continue
        ramp = min(int(_RAMP_S * sample_rate), (stop - start) // 2)
        envelope[start:stop] = 1.0
        if ramp > 0:
            rise = (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, ramp))).astype(np.float32)
            envelope[start : start + ramp] = rise
            envelope[stop - ramp : stop] = rise[::-1]
    phase = 2 * math.pi * TONE_HZ / sample_rate * np.arange(total, dtype=np.float32)
    return float_to_pcm16(TONE_PEAK * envelope * np.sin(phase))


class LatencyModelTTS(TTSProvider):
    """Tone audio with text-derived word timings after a sampled delay; runs no model.

    A sentence comes back as one piece (as Piper's does): the service resamples each piece
    as a whole. After handing the piece over, :meth:`synthesize` holds the segment until
    the audio's duration divided by the real-time factor has passed since the audio came
    out, so a stream's audio is produced at that factor and the next sentence starts after.
    Streams run concurrently; the platform around the provider is what is under test.
    """

    name = "latency-model"
    default_voice = "latency-model-tone"
    #: Piper's rate too, so the service does the same resampling work as with the real voice.
    sample_rate = 22_050

    def __init__(
        self,
        *,
        first_audio: DelayDistribution,
        words_per_minute: float = 165.0,
        realtime_factor: float = 20.0,
        seed: int = 0,
    ) -> None:
        """Creates the provider.

        Args:
            first_audio: Delay from a sentence's text to its audio, in milliseconds.
            words_per_minute: Speaking rate that sets the audio's duration.
            realtime_factor: Audio seconds produced per second of wall time.
            seed: Seeds the delays.

        Raises:
            ConfigError: If the rate or the factor is not positive.
        """
        super().__init__()
        if not words_per_minute > 0 or not realtime_factor > 0:
            raise ConfigError("words per minute and the real-time factor must be positive, got "
                              f"{words_per_minute} and {realtime_factor}")
        self._first_audio = first_audio
        self._words_per_minute = words_per_minute
        self._realtime_factor = realtime_factor
        self._rng = random.Random(seed)

    async def synthesize(
        self, text: str, *, voice: str = "", speaking_rate: float = 1.0
    ) -> AsyncIterator[SpeechPiece]:
        """Streams the sentence's audio, then waits out its production time (see the class)."""
        loop = asyncio.get_running_loop()
        async for piece in super().synthesize(text, voice=voice, speaking_rate=speaking_rate):
            audio_s = len(piece.pcm16) / (2 * self.sample_rate)
            produced_at = loop.time() + audio_s / self._realtime_factor
            yield piece
            await asyncio.sleep(max(0.0, produced_at - loop.time()))

    async def _synthesize(self, text: str, voice: str, speaking_rate: float) -> list[SpeechPiece]:
        await asyncio.sleep(self._first_audio.sample_s(self._rng))
        duration_ms = speech_duration_ms(text, self._words_per_minute, speaking_rate)
        if duration_ms <= 0:
            return []
        words = estimate_word_timings(text, duration_ms)
        # A few milliseconds of numpy per sentence, kept off the event loop all the same:
        # under load many streams render at once.
        pcm = await self.run_blocking(render_tone, words, duration_ms, self.sample_rate)
        return [SpeechPiece(pcm16=pcm, words=words, timings_estimated=True)]

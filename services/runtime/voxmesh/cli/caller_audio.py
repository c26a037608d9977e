"""Speech for the synthetic caller: Piper-synthesized sentences (cached) or WAV files."""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import numpy as np

from voxmesh.audio import INTERNAL_RATE, resample

_SILENCE_DBFS = -50.0


def trim_silence(pcm16: bytes, rate: int = INTERNAL_RATE) -> bytes:
    """Strips leading and trailing silence, so 'end of speech' is the end of the audio."""
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
    window = rate // 100
    if samples.size < window:
        return pcm16
    frames = samples[: samples.size // window * window].reshape(-1, window)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) / 32768.0
    level = 20 * np.log10(np.maximum(rms, 1e-9))
    voiced = np.flatnonzero(level > _SILENCE_DBFS)
    if voiced.size == 0:
        return b""
    start, end = voiced[0] * window, (voiced[-1] + 1) * window
    return samples[start:end].astype("<i2").tobytes()


def load_wav(path: Path) -> bytes:
    """Reads a PCM16 WAV (any rate, mono or stereo) as 16 kHz mono PCM16.

    Raises:
        ValueError: for files that are not 16-bit PCM WAV.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        rate, channels = wav.getframerate(), wav.getnchannels()
        data = wav.readframes(wav.getnframes())
    samples = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    return resample(samples.tobytes(), rate, INTERNAL_RATE)


def write_wav(path: Path, pcm16: bytes, rate: int = INTERNAL_RATE) -> None:
    """Writes mono PCM16 as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)


class CallerVoice:
    """Synthesizes caller sentences with the local Piper voice, caching the audio on disk."""

    def __init__(self, cache_dir: Path) -> None:
        """Creates the voice; Piper loads on first use."""
        self._cache_dir = cache_dir
        self._voice: object | None = None

    def speak(self, text: str) -> bytes:
        """Returns 16 kHz PCM16 of ``text`` with silence trimmed."""
        key = hashlib.sha256(f"joe-medium|{text}".encode()).hexdigest()[:20]
        cached = self._cache_dir / f"{key}.pcm"
        if cached.is_file():
            return cached.read_bytes()
        if self._voice is None:
            from piper import PiperVoice

            from voxmesh.models import piper_voice

            onnx, config = piper_voice()
            self._voice = PiperVoice.load(onnx, config_path=config)
        voice = self._voice
        pcm = b"".join(
            chunk.audio_int16_bytes for chunk in voice.synthesize(text)  # type: ignore[attr-defined]
        )
        rate = voice.config.sample_rate  # type: ignore[attr-defined]
        audio = trim_silence(resample(pcm, rate, INTERNAL_RATE))
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(audio)
        return audio

"""TTS providers. Each file holds one provider; :func:`create_provider` picks one by name."""

from __future__ import annotations

from voxmesh.errors import ConfigError
from voxmesh_tts.providers.base import TTSProvider
from voxmesh_tts.settings import TTSSettings


def create_provider(settings: TTSSettings) -> TTSProvider:
    """Builds the provider named by ``settings.provider``."""
    if settings.provider == "piper-local":
        from voxmesh_tts.providers.piper_local import PiperLocalTTS

        return PiperLocalTTS()
    if settings.provider == "latency-model":
        from voxmesh_tts.providers.latency_model import LatencyModelTTS

        return LatencyModelTTS(
            first_audio=settings.latency_first_audio,
            words_per_minute=settings.latency_words_per_minute,
            realtime_factor=settings.latency_realtime_factor,
            seed=settings.latency_seed,
        )
    raise ConfigError(
        f"unknown TTS provider {settings.provider!r}; choose one of: piper-local, latency-model"
    )

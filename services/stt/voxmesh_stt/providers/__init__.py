"""STT providers. Each file holds one provider; :func:`create_provider` picks one by name."""

from __future__ import annotations

from voxmesh.errors import ConfigError
from voxmesh_stt.providers.base import STTProvider
from voxmesh_stt.settings import STTSettings, split_phrases


def create_provider(settings: STTSettings) -> STTProvider:
    """Builds the provider named by ``settings.provider``."""
    if settings.provider == "whisper-local":
        from voxmesh_stt.providers.whisper_local import WhisperLocalSTT

        return WhisperLocalSTT(cpu_threads=settings.cpu_threads, beam_size=settings.beam_size)
    if settings.provider == "latency-model":
        from voxmesh_stt.providers.latency_model import LatencyModelSTT

        return LatencyModelSTT(
            first_byte=settings.latency_first_byte,
            phrases=split_phrases(settings.latency_phrases),
            seed=settings.latency_seed,
        )
    raise ConfigError(
        f"unknown STT provider {settings.provider!r}; choose one of: whisper-local, latency-model"
    )

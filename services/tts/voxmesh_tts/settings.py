"""Configuration of the TTS service (environment prefix ``VOXMESH_TTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voxmesh.config import GrpcServiceSettings
from voxmesh.latency_model import DelayDistribution


class TTSSettings(GrpcServiceSettings):
    """TTS service settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_TTS_", extra="ignore")

    port: int = Field(default=50053, ge=0, le=65535)
    provider: str = "piper-local"
    #: Longest text accepted in one TextChunk.
    max_chunk_chars: int = Field(default=2000, ge=1)
    #: Longest text buffered (not yet synthesized) in one stream.
    max_pending_chars: int = Field(default=8000, ge=1)
    #: Duration of the audio chunks streamed back.
    chunk_ms: int = Field(default=100, ge=10, le=1000)
    #: Latency-model provider (synthetic; capacity tests only): delay to a sentence's audio, ms.
    latency_first_audio: DelayDistribution = DelayDistribution.parse("normal:mean=80,sd=10")
    #: Latency-model provider: speaking rate that sets the audio's duration.
    latency_words_per_minute: float = Field(default=165.0, ge=30, le=600)
    #: Latency-model provider: audio seconds produced per second of wall time.
    latency_realtime_factor: float = Field(default=20.0, gt=0, le=10_000)
    #: Latency-model provider: seeds the delays.
    latency_seed: int = 0

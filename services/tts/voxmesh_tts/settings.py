"""Configuration of the TTS service (environment prefix ``VOXMESH_TTS_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from voxmesh.config import GrpcServiceSettings
from voxmesh.latency_model import DelayDistribution


class TTSSettings(GrpcServiceSettings):
    """TTS service settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_TTS_", extra="ignore")

    port: int = Field(default=50053, ge=0, le=65535)
    #: Providers in order of preference, comma-separated (``cartesia,piper-local``): a segment
    #: the first cannot speak (error, dropped connection, first-byte deadline) goes to the next.
    provider: str = "piper-local"
    #: Cloud provider key (``VOXMESH_TTS_API_KEY``; ``CARTESIA_API_KEY`` works too).
    api_key: SecretStr | None = None
    #: Cloud provider endpoint; empty is the vendor's production URL. ``http(s)://`` or
    #: ``ws(s)://``; tests point it at a local wire-compatible server.
    base_url: str = ""
    #: Time a provider that is not the last gets to start a segment's audio; 0 waits.
    first_byte_deadline_ms: int = Field(default=0, ge=0, le=60_000)
    #: With a streaming provider (Cartesia), the first clause of a turn is sent as soon as it
    #: has this many words and ends in a comma, so audio starts before the first full stop;
    #: 0 waits for sentence ends. Cartesia recommends at least 3-4 words for good prosody.
    first_clause_min_words: int = Field(default=4, ge=0, le=50)
    #: Seconds to open the provider's connection before counting it failed.
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
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

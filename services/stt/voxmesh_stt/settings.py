"""Configuration of the STT service (environment prefix ``VOXMESH_STT_``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from voxmesh.config import GrpcServiceSettings
from voxmesh.latency_model import DelayDistribution

#: Transcripts of the latency-model provider, separated by ``|``.
DEFAULT_LATENCY_PHRASES = (
    "I'd like to book a table for two tonight.|Around seven thirty, if you can.|"
    "The name is Alex Morgan.|Could we sit by the window?"
)


class STTSettings(GrpcServiceSettings):
    """STT service settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_STT_", extra="ignore")

    port: int = Field(default=50051, ge=0, le=65535)
    provider: str = "whisper-local"
    cpu_threads: int = Field(default=2, ge=1, le=64)
    beam_size: int = Field(default=1, ge=1, le=10)
    #: Seconds of new audio between interim hypotheses.
    interim_interval_s: float = Field(default=1.0, gt=0.1)
    #: Longest utterance buffered before a final is forced.
    max_utterance_s: float = Field(default=28.0, gt=1, le=30)
    #: Largest single audio chunk accepted.
    max_chunk_ms: int = Field(default=1000, ge=20, le=10000)
    #: Latency-model provider (synthetic; capacity tests only): delay before each final, ms.
    latency_first_byte: DelayDistribution = DelayDistribution.parse("normal:mean=120,sd=15")
    #: Latency-model provider: transcripts to answer with, separated by ``|``.
    latency_phrases: str = DEFAULT_LATENCY_PHRASES
    #: Latency-model provider: seeds the delays and the choice of phrase.
    latency_seed: int = 0

    @field_validator("latency_phrases")
    @classmethod
    def _has_phrases(cls, value: str) -> str:
        if not split_phrases(value):
            raise ValueError("give at least one phrase; separate phrases with '|'")
        return value


def split_phrases(value: str) -> tuple[str, ...]:
    """The non-empty ``|``-separated phrases of ``value``, stripped."""
    return tuple(phrase.strip() for phrase in value.split("|") if phrase.strip())

"""Configuration of the STT service (environment prefix ``VOXMESH_STT_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voxmesh.config import GrpcServiceSettings


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

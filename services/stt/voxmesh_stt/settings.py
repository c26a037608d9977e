"""Configuration of the STT service (environment prefix ``VOXMESH_STT_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
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
    #: Providers in order of preference, comma-separated (``deepgram,whisper-local``): a stream
    #: falls over to the next one when its provider fails or misses the first-byte deadline.
    provider: str = "whisper-local"
    #: Key of the cloud provider (``DEEPGRAM_API_KEY`` works too). Never logged.
    api_key: SecretStr | None = None
    #: The cloud provider's URL; empty for its production endpoint.
    base_url: str = ""
    #: Time a provider that is not the last in the list gets to answer a Finalize before the
    #: next one takes over; 0 waits as long as it takes.
    first_byte_deadline_ms: int = Field(default=0, ge=0, le=60_000)
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
    #: Deepgram: model id (keyterms need a nova-3 model).
    deepgram_model: str = "nova-3"
    #: Deepgram: language when the stream's config has none.
    deepgram_language: str = "en-US"
    #: Deepgram: silence that ends an utterance on Deepgram's side (ENDPOINT events); 0 = off.
    deepgram_endpointing_ms: int = Field(default=300, ge=0, le=10_000)
    #: Deepgram: word gap that sends an UTTERANCE_END event; 0 = off.
    deepgram_utterance_end_ms: int = Field(default=1000, ge=0, le=10_000)
    #: Deepgram: send SPEECH_STARTED events.
    deepgram_vad_events: bool = True
    #: Deepgram: format numbers, dates and punctuation.
    deepgram_smart_format: bool = True
    #: Deepgram: idle seconds before a KeepAlive (Deepgram closes idle streams after 10 s).
    deepgram_keepalive_s: float = Field(default=4.0, gt=0, le=9)
    #: Deepgram: longest wait for the result of a Finalize before interim words stand in.
    deepgram_finalize_timeout_ms: int = Field(default=1500, ge=50, le=30_000)
    #: Deepgram: a speculative Finalize flushes Deepgram (like a final one, but the utterance
    #: stays open). Off: it answers at once with the finals and the current interim, which
    #: trails the audio and can miss the caller's last word.
    deepgram_speculative_flush: bool = True
    #: Deepgram: longest wait for the WebSocket handshake.
    deepgram_connect_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("latency_phrases")
    @classmethod
    def _has_phrases(cls, value: str) -> str:
        if not split_phrases(value):
            raise ValueError("give at least one phrase; separate phrases with '|'")
        return value


def split_phrases(value: str) -> tuple[str, ...]:
    """The non-empty ``|``-separated phrases of ``value``, stripped."""
    return tuple(phrase.strip() for phrase in value.split("|") if phrase.strip())

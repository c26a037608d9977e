"""Configuration of the LLM service (environment prefix ``VOXMESH_LLM_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from voxmesh.config import GrpcServiceSettings
from voxmesh.latency_model import DelayDistribution

DEFAULT_SYSTEM_PROMPT = (
    "You are Vox, a friendly voice assistant on a phone call. Answer in one or two short, "
    "plain sentences that sound natural when spoken. Never use lists, markdown, emojis or "
    "abbreviations. If you do not know something, say so briefly."
)
#: Answer of the latency-model provider.
DEFAULT_LATENCY_TEXT = (
    "Sure, I can book that table for you tonight. What time would you like to come in?"
)


class LLMSettings(GrpcServiceSettings):
    """LLM service settings."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_LLM_", extra="ignore")

    port: int = Field(default=50052, ge=0, le=65535)
    #: Providers in order of preference, comma-separated (``openai,llama-local``): a turn goes
    #: to the next one when a provider fails retryably or misses ``first_byte_deadline_ms``
    #: before its first token.
    provider: str = "llama-local"
    #: Time a provider gets to produce its first output before the next one of the list takes
    #: the turn; 0 waits as long as it takes. The last provider of the list never has one.
    first_byte_deadline_ms: int = Field(default=0, ge=0, le=120_000)
    #: Tries of a request that fails retryably (network, timeout, 429, 5xx) before its first
    #: token, per provider; the SDK's own retries are off.
    request_attempts: int = Field(default=2, ge=1, le=5)
    #: OpenAI provider: API key (the Helm chart sets it from a Secret); ``OPENAI_API_KEY`` is
    #: read when this is unset.
    api_key: SecretStr | None = None
    #: OpenAI provider: whether a key is required at startup. Set false for a self-hosted
    #: server started without one (vLLM or llama.cpp without ``--api-key``).
    api_key_required: bool = True
    #: OpenAI provider: API root ending in ``/v1`` (vLLM, llama.cpp server); empty for OpenAI.
    base_url: str = ""
    #: OpenAI provider: model id.
    model: str = "gpt-4o-mini"
    #: OpenAI provider: limit on connecting, on the wait for the response and on each gap
    #: between streamed chunks, in seconds.
    request_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: OpenAI provider: ``native`` tool calls (OpenAI, vLLM with a tool parser) or ``text``
    #: (tools described in the prompt and calls parsed from the text, for small models behind
    #: servers without a tool parser).
    tool_format: Literal["native", "text"] = "native"
    #: OpenAI provider: name of the output limit parameter (OpenAI's reasoning models need
    #: ``max_completion_tokens``).
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: System prompt processed at startup so the first turn does not pay for it.
    warm_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    context_window: int = Field(default=2048, ge=256, le=32768)
    #: llama-local: threads for prompt and generation. One: llama.cpp's threads meet at a
    #: barrier after each small matrix product and wait for each other by spinning, so next to
    #: any busy process (TTS speaking the previous sentence, a noisy neighbour) a second thread
    #: makes a turn many times slower; see docs/latency.md. Raise it on dedicated cores only.
    cpu_threads: int = Field(default=1, ge=1, le=64)
    max_tokens_limit: int = Field(default=512, ge=1)
    max_user_text_chars: int = Field(default=4000, ge=1)
    #: Messages of history kept per session (older ones are dropped, oldest first). A last
    #: resort: summaries normally keep the history well below it.
    max_history_messages: int = Field(default=20, ge=2)
    #: Tokens of stored history above which the older turns are summarized in the background.
    context_token_budget: int = Field(default=900, ge=1)
    #: The most recent messages, never summarized.
    summary_keep_messages: int = Field(default=6, ge=1)
    #: Hours a session's context survives without activity.
    context_ttl_hours: float = Field(default=24.0, gt=0)
    #: Latency-model provider (synthetic; capacity tests only): delay to the first token, ms.
    latency_first_token: DelayDistribution = DelayDistribution.parse("normal:mean=250,sd=30")
    #: Latency-model provider: word tokens per second after the first.
    latency_tokens_per_s: float = Field(default=40.0, gt=0, le=10_000)
    #: Latency-model provider: the answer to every request, streamed word by word.
    latency_text: str = Field(default=DEFAULT_LATENCY_TEXT, pattern=r"\S")
    #: Latency-model provider: seeds the delays.
    latency_seed: int = 0

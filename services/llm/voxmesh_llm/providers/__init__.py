"""LLM providers. Each file holds one provider; :func:`create_chain` builds the ordered list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxmesh.credentials import resolve_api_key
from voxmesh.errors import ConfigError
from voxmesh.fallback import parse_provider_list
from voxmesh_llm.providers.base import LLMProvider
from voxmesh_llm.settings import LLMSettings

if TYPE_CHECKING:
    from voxmesh_llm.chain import LLMChain

#: Provider ids, the embedded default first.
PROVIDERS = ("llama-local", "openai", "latency-model")


def create_chain(settings: LLMSettings) -> LLMChain:
    """Builds the providers named by ``VOXMESH_LLM_PROVIDER``, in order.

    Raises:
        ConfigError: Unknown or repeated provider id, or a required API key is missing.
    """
    from voxmesh_llm.chain import LLMChain  # the chain imports the providers' base

    names = parse_provider_list(settings.provider, known=PROVIDERS,
                                variable="VOXMESH_LLM_PROVIDER")
    return LLMChain([create_provider(name, settings) for name in names],
                    first_byte_deadline_s=settings.first_byte_deadline_ms / 1000)


def create_provider(name: str, settings: LLMSettings) -> LLMProvider:
    """Builds one provider by id.

    Raises:
        ConfigError: Unknown id, or a required API key is missing.
    """
    provider: LLMProvider
    if name == "llama-local":
        from voxmesh_llm.providers.llama_local import LlamaLocalLLM

        provider = LlamaLocalLLM(
            context_window=settings.context_window,
            cpu_threads=settings.cpu_threads,
            warm_system_prompt=settings.warm_system_prompt,
        )
    elif name == "openai":
        from voxmesh_llm.providers.openai_compatible import (
            SETTING_ENV,
            VENDOR_ENV,
            OpenAICompatibleLLM,
        )

        try:
            key = resolve_api_key(provider="openai", configured=settings.api_key,
                                  setting_env=SETTING_ENV, vendor_env=VENDOR_ENV)
        except ConfigError:
            if settings.api_key_required:
                raise
            key = None
        provider = OpenAICompatibleLLM(
            api_key=key,
            base_url=settings.base_url,
            model=settings.model,
            request_timeout_s=settings.request_timeout_s,
            tool_format=settings.tool_format,
            max_tokens_param=settings.max_tokens_param,
        )
    elif name == "latency-model":
        from voxmesh_llm.providers.latency_model import LatencyModelLLM

        provider = LatencyModelLLM(
            first_token=settings.latency_first_token,
            tokens_per_s=settings.latency_tokens_per_s,
            text=settings.latency_text,
            seed=settings.latency_seed,
        )
    else:
        raise ConfigError(
            f"unknown LLM provider {name!r}; choose one of: {', '.join(PROVIDERS)}")
    provider.max_attempts = settings.request_attempts
    return provider

"""LLM providers. Each file holds one provider; :func:`create_provider` picks one by name."""

from __future__ import annotations

from voxmesh.errors import ConfigError
from voxmesh_llm.providers.base import LLMProvider
from voxmesh_llm.settings import LLMSettings


def create_provider(settings: LLMSettings) -> LLMProvider:
    """Builds the provider named by ``settings.provider``."""
    if settings.provider == "llama-local":
        from voxmesh_llm.providers.llama_local import LlamaLocalLLM

        return LlamaLocalLLM(
            context_window=settings.context_window,
            cpu_threads=settings.cpu_threads,
            warm_system_prompt=settings.warm_system_prompt,
        )
    if settings.provider == "latency-model":
        from voxmesh_llm.providers.latency_model import LatencyModelLLM

        return LatencyModelLLM(
            first_token=settings.latency_first_token,
            tokens_per_s=settings.latency_tokens_per_s,
            text=settings.latency_text,
            seed=settings.latency_seed,
        )
    raise ConfigError(
        f"unknown LLM provider {settings.provider!r}; choose one of: llama-local, latency-model"
    )

"""STT providers. Each file holds one provider; :func:`create_provider_chain` builds the list."""

from __future__ import annotations

import logging

from voxmesh.credentials import resolve_api_key
from voxmesh.errors import VoxmeshError
from voxmesh.fallback import ProviderChain, parse_provider_list
from voxmesh_stt.providers.base import AnySTTProvider
from voxmesh_stt.settings import STTSettings, split_phrases

log = logging.getLogger("voxmesh.stt")

#: Provider ids, as ``VOXMESH_STT_PROVIDER`` lists them.
KNOWN_PROVIDERS = ("whisper-local", "deepgram", "latency-model")


def create_provider(name: str, settings: STTSettings) -> AnySTTProvider:
    """Builds one provider by id.

    Raises:
        ConfigError: Unknown id, missing API key or a malformed setting.
    """
    if name == "whisper-local":
        from voxmesh_stt.providers.whisper_local import WhisperLocalSTT

        return WhisperLocalSTT(cpu_threads=settings.cpu_threads, beam_size=settings.beam_size)
    if name == "latency-model":
        from voxmesh_stt.providers.latency_model import LatencyModelSTT

        return LatencyModelSTT(
            first_byte=settings.latency_first_byte,
            phrases=split_phrases(settings.latency_phrases),
            seed=settings.latency_seed,
        )
    if name == "deepgram":
        from voxmesh_stt.providers.deepgram import (
            SETTING_ENV,
            VENDOR_ENV,
            DeepgramOptions,
            DeepgramSTT,
        )

        key = resolve_api_key(provider="deepgram", configured=settings.api_key,
                              setting_env=SETTING_ENV, vendor_env=VENDOR_ENV)
        return DeepgramSTT(api_key=key, base_url=settings.base_url, options=DeepgramOptions(
            model=settings.deepgram_model,
            language=settings.deepgram_language,
            endpointing_ms=settings.deepgram_endpointing_ms,
            utterance_end_ms=settings.deepgram_utterance_end_ms,
            vad_events=settings.deepgram_vad_events,
            smart_format=settings.deepgram_smart_format,
            keepalive_s=settings.deepgram_keepalive_s,
            finalize_timeout_s=settings.deepgram_finalize_timeout_ms / 1000,
            connect_timeout_s=settings.deepgram_connect_timeout_s,
            speculative_flush=settings.deepgram_speculative_flush,
        ))
    parse_provider_list(name, known=KNOWN_PROVIDERS, variable="VOXMESH_STT_PROVIDER")
    raise AssertionError(f"provider {name!r} is listed as known but not built")


def create_provider_chain(settings: STTSettings) -> ProviderChain[AnySTTProvider]:
    """The providers ``VOXMESH_STT_PROVIDER`` lists, in order.

    Raises:
        ConfigError: An unknown or repeated id, or a cloud provider without its key.
    """
    names = parse_provider_list(settings.provider, known=KNOWN_PROVIDERS,
                                variable="VOXMESH_STT_PROVIDER")
    deadline_ms = settings.first_byte_deadline_ms
    return ProviderChain("stt", [create_provider(name, settings) for name in names],
                         first_byte_deadline_s=deadline_ms / 1000 if deadline_ms else None)


async def load_providers(chain: ProviderChain[AnySTTProvider]) -> None:
    """Loads every provider before the service reports SERVING.

    A provider that is unreachable now (a retryable failure) is skipped with a warning while a
    later one can serve: streams try it first anyway and fall over until it answers. A rejected
    key, or the last provider failing, stops the start.

    Raises:
        RuntimeError: A provider failed to load; the message names it and the cause.
    """
    for index, provider in enumerate(chain.providers):
        try:
            await provider.load()
        except VoxmeshError as exc:
            if exc.retryable and index < len(chain.providers) - 1:
                log.warning("%s is unavailable at startup (%s: %s); streams fall over to %s "
                            "until it answers", provider.name, exc.reason, exc.message,
                            chain.providers[index + 1].name)
                continue
            raise RuntimeError(f"{provider.name} failed to load: {exc.message}") from None

"""TTS providers. Each file holds one provider; :func:`create_provider` builds the ordered list."""

from __future__ import annotations

import asyncio
import logging

from voxmesh.credentials import resolve_api_key
from voxmesh.errors import VoxmeshError
from voxmesh.fallback import ProviderChain, initialize_fallback_metrics, parse_provider_list
from voxmesh.providers import ProviderBase
from voxmesh_tts.providers.base import TTSProvider
from voxmesh_tts.settings import TTSSettings

log = logging.getLogger("voxmesh.tts")

#: Provider ids accepted in ``VOXMESH_TTS_PROVIDER``.
KNOWN_PROVIDERS = ("cartesia", "piper-local", "latency-model")


class TTSProviders(ProviderBase):
    """The service's providers in order of preference, loaded and closed together.

    The gRPC bootstrap loads one object before reporting SERVING; this is that object. Every
    provider loads before the service is ready: a fallback that cannot load (a missing voice)
    must fail at startup, not in the middle of the call that needs it.
    """

    name = "tts-providers"
    component = "tts"

    def __init__(self, chain: ProviderChain[TTSProvider]) -> None:
        """Wraps ``chain``."""
        super().__init__()
        self.chain = chain

    @property
    def primary(self) -> TTSProvider:
        """The most preferred provider."""
        return self.chain.primary

    async def load(self) -> None:
        """Loads every provider concurrently (a WebSocket handshake while Piper loads).

        A provider that is unreachable now (a retryable failure) is skipped with a warning
        while a later one can serve: streams try it first anyway and fall over until it
        answers. A rejected key, or the last provider failing, stops the start.

        Raises:
            RuntimeError: A provider failed to load; the message names it and the cause.
        """
        initialize_fallback_metrics()
        providers = self.chain.providers
        results = await asyncio.gather(*(provider.load() for provider in providers),
                                       return_exceptions=True)
        for index, (provider, result) in enumerate(zip(providers, results, strict=True)):
            if isinstance(result, VoxmeshError):
                if result.retryable and index < len(providers) - 1:
                    log.warning("%s is unavailable at startup (%s: %s); streams fall over to "
                                "%s until it answers", provider.name, result.reason,
                                result.message, providers[index + 1].name)
                    continue
                raise RuntimeError(f"{provider.name} failed to load: {result.message}") from None
            if isinstance(result, BaseException):
                raise result

    async def aclose(self) -> None:
        """Closes every provider."""
        await asyncio.gather(*(provider.aclose() for provider in self.chain.providers),
                             return_exceptions=True)
        await super().aclose()


def create_one(name: str, settings: TTSSettings) -> TTSProvider:
    """Builds one provider by id.

    Raises:
        ConfigError: A cloud provider without a key, or a malformed base URL.
    """
    if name == "cartesia":
        from voxmesh_tts.providers.cartesia import SETTING_ENV, VENDOR_ENV, CartesiaTTS

        key = resolve_api_key(provider=name, configured=settings.api_key,
                              setting_env=SETTING_ENV, vendor_env=VENDOR_ENV)
        return CartesiaTTS(api_key=key, base_url=settings.base_url,
                           connect_timeout_s=settings.connect_timeout_s)
    if name == "piper-local":
        from voxmesh_tts.providers.piper_local import PiperLocalTTS

        return PiperLocalTTS()
    from voxmesh_tts.providers.latency_model import LatencyModelTTS

    return LatencyModelTTS(
        first_audio=settings.latency_first_audio,
        words_per_minute=settings.latency_words_per_minute,
        realtime_factor=settings.latency_realtime_factor,
        seed=settings.latency_seed,
    )


def create_provider(settings: TTSSettings) -> TTSProviders:
    """Builds the providers named by ``settings.provider``, in order.

    Raises:
        ConfigError: An unknown or repeated id, or a provider that cannot be configured.
    """
    names = parse_provider_list(settings.provider, known=KNOWN_PROVIDERS,
                                variable="VOXMESH_TTS_PROVIDER")
    providers = [create_one(name, settings) for name in names]
    return TTSProviders(ProviderChain(
        "tts", providers, first_byte_deadline_s=settings.first_byte_deadline_ms / 1000))

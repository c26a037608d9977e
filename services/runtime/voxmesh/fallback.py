"""Ordered provider lists: fall over to the next provider within the same turn.

Each service takes an ordered list (``VOXMESH_STT_PROVIDER=deepgram,whisper-local``). A provider
that fails with a retryable error, or misses its first-byte deadline, hands the turn to the next
one. Every fallback is a span event (``provider.fallback``) on the current span, a metric
(``voxmesh_provider_fallbacks_total``) and one warning line, so a degraded cloud provider shows up
on the dashboards before callers complain.

What can be handed over depends on the capability: an LLM or TTS request can be re-sent whole
while nothing has been streamed (:func:`stream_with_fallback`); STT keeps the audio of the open
utterance so the next provider can transcribe it (see ``voxmesh_stt.service``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace

from voxmesh.errors import ConfigError, ProviderError, VoxmeshError
from voxmesh.metrics import meter

T = TypeVar("T")
ProviderT = TypeVar("ProviderT")

log = logging.getLogger("voxmesh.fallback")

_FALLBACKS = meter("providers").create_counter(
    "voxmesh.provider.fallbacks",
    description="Turns handed from a failing provider to the next in its list "
    "(attributes component, from, to, reason)",
)


class FirstByteTimeout(ProviderError):
    """A provider sent nothing before its first-byte deadline."""

    retryable = True


def parse_provider_list(value: str, *, known: Sequence[str], variable: str) -> tuple[str, ...]:
    """Splits ``"deepgram, whisper-local"`` into provider ids, checking each one.

    Args:
        value: Comma-separated provider ids, most preferred first.
        known: The ids this service implements.
        variable: The environment variable the value came from, for the error message.

    Raises:
        ConfigError: Empty list, unknown id or a repeated id.
    """
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise ConfigError(f"{variable}: give at least one provider, e.g. {known[0]!r}")
    for name in names:
        if name not in known:
            raise ConfigError(
                f"{variable}: unknown provider {name!r}; choose from: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{variable}: a provider is listed twice in {value!r}")
    return names


def can_fall_over(error: BaseException) -> bool:
    """Whether the next provider may take over after ``error``.

    Retryable provider errors (network, 5xx, rate limits, deadlines) fall over. Rejected input
    and rejected keys do not: the next provider would either fail the same way, or hide a
    configuration fault that must be fixed.
    """
    if isinstance(error, VoxmeshError):
        return error.retryable
    return isinstance(error, (ConnectionError, TimeoutError, OSError))


def record_fallback(component: str, from_provider: str, to_provider: str, reason: str) -> None:
    """Makes one fallback visible: span event, metric and a log line (no request content)."""
    attributes = {"component": component, "from": from_provider, "to": to_provider,
                  "reason": reason}
    _FALLBACKS.add(1, attributes)
    trace.get_current_span().add_event(
        "provider.fallback",
        {f"voxmesh.fallback.{key}": value for key, value in attributes.items()},
    )
    log.warning("%s: %s failed (%s); falling over to %s", component, from_provider, reason,
                to_provider)


def initialize_fallback_metrics() -> None:
    """Exports the fallback counter at 0 so dashboards show a flat line, not "no data"."""
    _FALLBACKS.add(0)


class ProviderChain(Generic[ProviderT]):
    """An ordered list of providers of one capability, most preferred first.

    Attributes:
        component: ``"stt"``, ``"llm"`` or ``"tts"``.
        providers: The providers, in order.
        first_byte_deadline_s: Time a provider gets to produce its first result before the
            next one takes over; ``None`` waits as long as the provider takes.
    """

    def __init__(
        self,
        component: str,
        providers: Sequence[ProviderT],
        *,
        first_byte_deadline_s: float | None = None,
    ) -> None:
        """Creates the chain.

        Args:
            component: Capability name used in metrics and span events.
            providers: At least one provider.
            first_byte_deadline_s: See the class attributes; 0 or ``None`` disables it.
        """
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        self.component = component
        self.providers = list(providers)
        self.first_byte_deadline_s = first_byte_deadline_s or None

    @property
    def primary(self) -> ProviderT:
        """The most preferred provider."""
        return self.providers[0]

    def deadline_for(self, index: int) -> float | None:
        """The first-byte deadline of the provider at ``index``.

        The last provider has none: nothing is left to fall over to.
        """
        return self.first_byte_deadline_s if index < len(self.providers) - 1 else None


async def stream_with_fallback(
    chain: ProviderChain[ProviderT],
    start: Callable[[ProviderT], AsyncIterator[T]],
    *,
    name_of: Callable[[ProviderT], str],
) -> AsyncGenerator[T, None]:
    """Streams from the first provider that produces something, in chain order.

    A provider is abandoned for the next one when it raises a fall-over-able error (see
    :func:`can_fall_over`) or misses the first-byte deadline, but only while nothing has been
    yielded: once part of an answer reached the caller, sending the request elsewhere would
    repeat or contradict it, so later errors propagate.

    Args:
        chain: The providers.
        start: Opens the stream of one provider.
        name_of: Provider id for metrics and events.
    """
    for index, provider in enumerate(chain.providers):
        is_last = index == len(chain.providers) - 1
        stream = start(provider)
        yielded = False
        try:
            deadline = chain.deadline_for(index)
            try:
                async with asyncio.timeout(deadline):
                    first = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise FirstByteTimeout(
                    f"{name_of(provider)} sent nothing within {deadline:.2f} s",
                    reason="FIRST_BYTE_DEADLINE", component=name_of(provider)) from None
            yielded = True
            yield first
            async for item in stream:
                yield item
            return
        except Exception as exc:  # noqa: BLE001 - classified by can_fall_over
            if yielded or is_last or not can_fall_over(exc):
                raise
            reason = exc.reason if isinstance(exc, VoxmeshError) else type(exc).__name__
            record_fallback(chain.component, name_of(provider),
                            name_of(chain.providers[index + 1]), reason)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

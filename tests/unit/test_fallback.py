"""Ordered provider chains: when the next provider takes over, and how that is made visible."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voxmesh.errors import ConfigError, InvalidInputError, ProviderError
from voxmesh.fallback import (
    ProviderChain,
    can_fall_over,
    parse_provider_list,
    stream_with_fallback,
)


class ScriptedProvider:
    """Yields its items after ``delay_s``, or raises ``error`` after ``fail_after`` items."""

    def __init__(self, name: str, items: list[str], *, delay_s: float = 0.0,
                 error: Exception | None = None, fail_after: int = 0) -> None:
        self.name, self.items, self.delay_s = name, items, delay_s
        self.error, self.fail_after = error, fail_after
        self.closed = False

    async def stream(self) -> AsyncIterator[str]:
        try:
            await asyncio.sleep(self.delay_s)
            for index, item in enumerate(self.items):
                if self.error is not None and index == self.fail_after:
                    raise self.error
                yield item
            if self.error is not None and self.fail_after >= len(self.items):
                raise self.error
        finally:
            self.closed = True


def _retryable(reason: str = "PROVIDER_DISCONNECTED") -> ProviderError:
    return ProviderError("connection dropped", reason=reason, retryable=True)


async def _collect(chain: ProviderChain[ScriptedProvider]) -> list[str]:
    return [item async for item in stream_with_fallback(
        chain, lambda provider: provider.stream(), name_of=lambda provider: provider.name)]


def test_provider_list_is_parsed_in_order_and_checked() -> None:
    known = ("deepgram", "whisper-local")
    assert parse_provider_list(" deepgram , whisper-local", known=known,
                               variable="VOXMESH_STT_PROVIDER") == ("deepgram", "whisper-local")
    with pytest.raises(ConfigError, match="VOXMESH_STT_PROVIDER: unknown provider 'dg'"):
        parse_provider_list("dg,whisper-local", known=known, variable="VOXMESH_STT_PROVIDER")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_provider_list("deepgram,deepgram", known=known, variable="VOXMESH_STT_PROVIDER")
    with pytest.raises(ConfigError, match="at least one provider"):
        parse_provider_list(" , ", known=known, variable="VOXMESH_STT_PROVIDER")


def test_only_retryable_failures_fall_over() -> None:
    assert can_fall_over(_retryable())
    assert can_fall_over(ConnectionResetError())
    assert not can_fall_over(InvalidInputError("bad", reason="BAD"))
    assert not can_fall_over(ProviderError("401", reason="PROVIDER_AUTH_FAILED"))
    assert not can_fall_over(ValueError("bug"))


async def test_failure_before_the_first_item_goes_to_the_next_provider() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    primary = ScriptedProvider("cloud", ["never"], error=_retryable(), fail_after=0)
    backup = ScriptedProvider("local", ["a", "b"])
    chain = ProviderChain("tts", [primary, backup])
    with provider.get_tracer("test").start_as_current_span("turn"):
        assert await _collect(chain) == ["a", "b"]
    assert primary.closed and backup.closed
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert event.name == "provider.fallback"
    assert dict(event.attributes or {}) == {
        "voxmesh.fallback.component": "tts", "voxmesh.fallback.from": "cloud",
        "voxmesh.fallback.to": "local", "voxmesh.fallback.reason": "PROVIDER_DISCONNECTED"}


async def test_missed_first_byte_deadline_falls_over_but_the_last_provider_may_take_its_time(
) -> None:
    slow_primary = ScriptedProvider("cloud", ["late"], delay_s=5.0)
    slow_backup = ScriptedProvider("local", ["slow but sure"], delay_s=0.1)
    chain = ProviderChain("llm", [slow_primary, slow_backup], first_byte_deadline_s=0.05)
    assert await _collect(chain) == ["slow but sure"]
    assert slow_primary.closed


async def test_failure_after_the_first_item_is_not_retried_elsewhere() -> None:
    # The caller already heard "a": sending the request to another provider would repeat it.
    primary = ScriptedProvider("cloud", ["a", "b"], error=_retryable(), fail_after=1)
    backup = ScriptedProvider("local", ["x"])
    with pytest.raises(ProviderError, match="connection dropped"):
        await _collect(ProviderChain("llm", [primary, backup]))
    assert not backup.closed  # never started


async def test_non_retryable_failure_and_the_last_provider_failure_propagate() -> None:
    auth = ScriptedProvider("cloud", ["x"], error=ProviderError(
        "rejected", reason="PROVIDER_AUTH_FAILED", retryable=False))
    with pytest.raises(ProviderError, match="rejected"):
        await _collect(ProviderChain("stt", [auth, ScriptedProvider("local", ["y"])]))
    last = ScriptedProvider("local", [], delay_s=0.2)
    chain = ProviderChain("stt", [ScriptedProvider("cloud", [], error=_retryable()), last],
                          first_byte_deadline_s=0.01)
    assert await _collect(chain) == []  # the last one has no deadline: it ends empty, in time
    with pytest.raises(ProviderError, match="connection dropped"):
        await _collect(ProviderChain("stt", [ScriptedProvider("only", ["z"], error=_retryable())]))

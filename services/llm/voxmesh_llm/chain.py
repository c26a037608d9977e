"""The LLM service's ordered providers: a turn falls over to the next before its first token.

Each provider gets the prompt built for it (a native-tools provider takes tools as API
parameters, a text provider reads them in its system prompt), so a turn that moves from
``openai`` to ``llama-local`` is re-sent in the form the local model understands. Falling over
is a ``provider.fallback`` event on the request's span and a count in
``voxmesh_provider_fallbacks_total`` (:func:`voxmesh.fallback.record_fallback`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing

from opentelemetry import trace
from opentelemetry.trace import Span

from voxmesh.fallback import ProviderChain, stream_with_fallback
from voxmesh_llm.providers.base import ChatMessage, Completion, LLMOutput, LLMProvider, ToolSpec

log = logging.getLogger("voxmesh.llm")

#: What one provider is sent: the chat and the tools to pass as API parameters.
Prompt = tuple[list[ChatMessage], Sequence[ToolSpec]]


class LLMChain:
    """Ordered LLM providers, most preferred first."""

    def __init__(
        self, providers: Sequence[LLMProvider], *, first_byte_deadline_s: float | None = None
    ) -> None:
        """Creates the chain.

        Args:
            providers: At least one provider.
            first_byte_deadline_s: Time a provider (all but the last) gets to produce its
                first output; ``None`` or 0 waits as long as it takes.
        """
        self._chain = ProviderChain("llm", providers, first_byte_deadline_s=first_byte_deadline_s)

    @property
    def providers(self) -> list[LLMProvider]:
        """The providers, in order."""
        return self._chain.providers

    @property
    def primary(self) -> LLMProvider:
        """The most preferred provider."""
        return self._chain.primary

    @property
    def names(self) -> str:
        """Provider ids joined by commas, as configured."""
        return ",".join(provider.name for provider in self.providers)

    async def load(self) -> None:
        """Loads every provider (models, key checks) before the service reports SERVING."""
        for provider in self.providers:
            await provider.load()

    async def aclose(self) -> None:
        """Releases every provider."""
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception as exc:  # noqa: BLE001 - the others must still be closed
                log.warning("closing %s failed: %s", provider.name, exc)

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for the primary provider's model."""
        return await self.primary.count_tokens(text)

    async def stream(
        self,
        prompt_for: Callable[[LLMProvider], Prompt],
        *,
        max_tokens: int,
        temperature: float,
        completion: Completion,
        span: Span | None = None,
    ) -> AsyncGenerator[LLMOutput, None]:
        """Streams from the first provider that produces output.

        Args:
            prompt_for: Builds the prompt for one provider.
            max_tokens: Most tokens to generate.
            temperature: Sampling temperature.
            completion: Filled in by the provider that answers (``provider``, ``model``).
            span: Where a fallback is recorded; the current span if None.

        Raises:
            VoxmeshError: The last provider tried failed, or one failed after its first token.
        """

        def start(provider: LLMProvider) -> AsyncGenerator[LLMOutput, None]:
            completion.restart(provider.name, provider.model)
            messages, tools = prompt_for(provider)
            return provider.stream(messages, tools=tools, max_tokens=max_tokens,
                                   temperature=temperature, completion=completion)

        target = span if span is not None else trace.get_current_span()
        outputs = stream_with_fallback(self._chain, start, name_of=lambda p: p.name)
        async with aclosing(outputs):
            while True:
                # The span is current only while the chain works, never across a yield: a
                # context attached inside a generator must be detached before it suspends.
                with trace.use_span(target, end_on_exit=False, record_exception=False,
                                    set_status_on_exception=False):
                    try:
                        output = await anext(outputs)
                    except StopAsyncIteration:
                        return
                yield output
